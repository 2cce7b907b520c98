"""The commands that look at trained models: `info`, `evaluate`, `gates` and `benchmark jsb` (registered on
`cli.cli`).

May import: every room below (lazily, inside each command). Not imported by any room.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import MusiclstmError
from .cli import DEFAULT_THREADS, EXISTING, cli, set_threads, wants_progress


@cli.command()
@click.argument("checkpoint", default=None, required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(checkpoint, as_json) -> None:
    """What a checkpoint (file, run folder or bundled name) holds: configs, step, metrics, data."""
    from ..models import checkpoint as ck

    path = ck.resolve(checkpoint)
    meta = ck.read(path)["meta"]
    report = {"path": str(path), "step": meta.get("step"), "epoch": meta.get("epoch"),
              "config": {"train": meta.get("train"), "model": meta.get("model"), "tokenizer": meta.get("tokenizer")},
              "metrics": meta.get("metrics", {}), "best_val_nll": meta.get("best_val_nll"),
              "fingerprint": meta.get("fingerprint"), "data": meta.get("data"),
              "precision": meta.get("precision"), "world_size": meta.get("world_size"), "init": meta.get("init")}
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    m, t = report["config"]["model"] or {}, report["config"]["tokenizer"] or {}
    epoch = f" (epoch {report['epoch']:.2f})" if report["epoch"] is not None else ""
    data = f", data {report['fingerprint']}" if report["fingerprint"] else ""
    click.echo(f"{path}\n  step {report['step']}{epoch}{data}")
    cell = "harmonizer: bidirectional lstm" if m.get("kind") == "harmonizer" else m.get("cell")
    channel = ", fermata channel" if m.get("fermatas") else ""
    click.echo(f"  model: {cell} {m.get('layers')}x{m.get('hidden')}, embed {m.get('embed')}{channel}, "
               f"vocab {m.get('vocab_size')}; encoding {t.get('encoding')}, styles {t.get('styles') or 'none'}")
    if report["init"]:
        click.echo(f"  fine-tuned from {report['init']['path']} (weights {report['init']['fingerprint']})")
    metrics = dict(report["metrics"])
    if isinstance(metrics.get("time"), int | float):  # a unix time: when the metrics were taken, in words
        import datetime

        metrics["time"] = datetime.datetime.fromtimestamp(metrics["time"], datetime.UTC).strftime(
            "%Y-%m-%d %H:%M UTC")
    click.echo(f"  metrics: {json.dumps(metrics)}")
    if report["precision"] or report["world_size"]:  # older checkpoints lack these
        asked = (report["config"]["train"] or {}).get("precision", "?")
        how = f"in {report['precision']} precision" if report["precision"] else "before precision was recorded"
        click.echo(f"  trained {how} (--precision {asked}) by {report['world_size'] or 1} process(es)")



@cli.command()
@click.argument("checkpoint")
@click.argument("data", nargs=-1, required=True, type=EXISTING)
@click.option("--train-data", multiple=True, type=EXISTING,
              help="Fit the n-gram baseline here and hold out all of DATA [default: DATA's own split].")
@click.option("--samples", type=click.IntRange(0), default=20, show_default=True,
              help="Samples to generate for the statistics (0: NLL and the repeat probe only).")
@click.option("--seconds", type=click.FloatRange(1), default=30.0, show_default=True, help="Length of each sample.")
@click.option("--quarters", type=click.FloatRange(1), default=60.0, show_default=True,
              help="Length (in quarters) at which samples and held-out pieces are compared.")
@click.option("--pieces", type=click.IntRange(1), default=60, show_default=True,
              help="Held-out pieces (a seeded draw) for the music statistics.")
@click.option("--compare", "compare", help="A second checkpoint, evaluated alike and shown side by side.")
@click.option("--order", type=click.IntRange(1, 6), default=5, show_default=True, help="n-gram order.")
@click.option("--seed", type=int, default=0, show_default=True, help="Fixes the samples and the draws.")
@click.option("--jobs", type=click.IntRange(1), help="Worker processes for preparation.")
@click.option("--threads", type=click.IntRange(1), help=f"CPU threads for PyTorch [{DEFAULT_THREADS}].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (everything the table shows, and more).")
@click.option("--cache/--no-cache", "use_cache", default=True, show_default=True,
              help="Score with the model's continuous cache (its memory of the piece); samples are drawn as "
                   "compose draws them, without it.")
@click.option("--harmonizer/--no-harmonizer", default=None,
              help="Samples of a chorale model: soprano by the model, lower voices by the harmonizer, as compose "
                   "writes them [on for chorale models].")
def evaluate(checkpoint, data, train_data, samples, seconds, quarters, pieces, compare, order, seed, jobs,
             threads, as_json, use_cache, harmonizer) -> None:
    """Held-out NLL against a Kneser-Ney n-gram, the repeat probe, music statistics of samples beside
    held-out and pitch-shuffled pieces, memorisation.

    \b
    musiclstm evaluate folk corpora/folk                  # held out: the run's validation files
    musiclstm evaluate runs/new corpora/folk --compare folk --seed 1
    musiclstm evaluate pop ../POP909 --samples 40 --json
    """
    from ..evaluation.evaluate import evaluate as run
    from ..evaluation.evaluate import jsonable, report
    from ..models import checkpoint as ck

    warn = lambda m: click.echo(f"warning: {m}", err=True)
    set_threads(threads)
    kw = dict(train_corpus=list(train_data) or None, samples=samples, sample_seconds=seconds, quarters=quarters,
              pieces=pieces, order=order, seed=seed, jobs=jobs, progress=not as_json and wants_progress(False),
              warn=warn, harmonizer=harmonizer)
    model = ck.load(checkpoint)
    if not use_cache:
        model.meta.pop("cache", None)
    r = {"checkpoint": str(model.path), "cache": model.meta.get("cache"), **run(model, list(data), **kw)}
    other = None
    if compare:
        second = ck.load(compare)
        other = {"checkpoint": str(second.path), **run(second, list(data), **kw)}
        r["compare"] = other
    if as_json:
        click.echo(json.dumps(jsonable(r), indent=2))
    else:
        click.echo(report(r, other, names=(checkpoint, compare or "")))



@cli.command()
@click.argument("checkpoint")
@click.argument("music", type=EXISTING)
@click.option("--out", "-o", type=click.Path(path_type=Path), default=Path("gates.png"), show_default=True)
@click.option("--layer", type=click.IntRange(0), default=0, show_default=True)
@click.option("--units", type=click.IntRange(1), default=48, show_default=True, help="Most active units to show.")
@click.option("--steps", type=click.IntRange(1), default=400, show_default=True, help="Tokens of MUSIC to trace.")
@click.option("--force", is_flag=True, help="Overwrite --out.")
def gates(checkpoint, music, out, layer, units, steps, force) -> None:
    """Heatmaps of the LSTM's input, forget and output gates and cell state over MUSIC's tokens.

    \b
    musiclstm gates bach corpora/bach/bwv1.6.mid -o gates.png --layer 1
    """
    from ..evaluation.gates import gate_trace
    from ..io.outputs import check_targets
    from ..io.plot import save_gates
    from ..models import checkpoint as ck

    if out.exists() and not force:
        raise MusiclstmError(f"{out} exists; use --force to overwrite")
    model = ck.load(checkpoint)
    if layer >= model.net.config.layers:
        raise MusiclstmError(f"--layer {layer}: the model has {model.net.config.layers} layers (0-based)")
    check_targets([out], force=force)
    trace = gate_trace(model, music, max_steps=steps)
    created = _make_folder(out)  # as compose and harmonize: a missing output folder is created
    try:
        save_gates(trace, out, layer=layer, units=units)
    except BaseException:
        _remove_folders(created)
        raise
    click.echo(f"wrote {out} ({len(trace.ids)} steps, layer {layer})")


def _make_folder(path: Path) -> list[Path]:
    """Create the folder `path` goes in (every command creates a missing output folder); returns the
    folders created, deepest first, for `_remove_folders` to undo after a failure."""
    created = [a for a in Path(path).parents if not a.exists()]
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MusiclstmError(f"cannot create {Path(path).parent}: {e.strerror or e}") from e
    return created


def _remove_folders(created: list[Path]) -> None:
    import shutil

    for a in created:  # deepest first
        shutil.rmtree(a, ignore_errors=True)


@cli.group()
def benchmark() -> None:
    """Published comparisons."""


@benchmark.command("jsb")
@click.argument("directory", type=EXISTING)
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Where to train the two models.")
@click.option("--evaluate-only", is_flag=True, help="Score the bundled benchmark models (or --checkpoints).")
@click.option("--checkpoints", type=EXISTING, help="Folder with jsb16.pt and jsb_quarter.pt.")
@click.option("--max-time", type=click.FloatRange(0, min_open=True), help="Seconds of training per model at most.")
@click.option("--force", is_flag=True, help="Retrain into an --out that already holds the models.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def benchmark_jsb(directory, out, evaluate_only, checkpoints, max_time, force, as_json, quiet) -> None:
    """JSB Chorales: the Music Transformer (16th grid) and Boulanger-Lewandowski (quarter frames) tables.

    \b
    musiclstm benchmark jsb ../shared/data/jsb --evaluate-only   # minutes: the bundled models
    musiclstm benchmark jsb ../shared/data/jsb --out runs/jsb    # retrain both (~10-20 min on 2 cores)
    """
    from ..evaluation import benchmark as b

    if not evaluate_only:
        if out is None:
            raise MusiclstmError("give --out to train the benchmark models, or --evaluate-only")
        if any((out / f"{n}.pt").exists() for n in b.NAMES.values()) and not force:
            raise MusiclstmError(f"{out} already holds benchmark models; use --force to retrain")
    extra = {"max_time": max_time} if max_time else {}
    r = b.jsb(directory, out=out, evaluate_only=evaluate_only, checkpoints=checkpoints,
              progress=not as_json and wants_progress(quiet), **extra)
    click.echo(json.dumps(r, indent=2) if as_json else b.table(r))

