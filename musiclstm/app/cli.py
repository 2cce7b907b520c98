"""The `musiclstm` command: a thin layer over the Python API (parse options, call, print one line).

May import: every room below (lazily, inside each command, so `--help` stays fast). Not imported by any room.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from ..errors import MusiclstmError

EXISTING = click.Path(exists=True, path_type=Path)


class Group(click.Group):
    """Turns project errors and bad options into one line on stderr and a non-zero exit, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as e:  # click's own would add a usage block: keep the one line that matters
            where = e.ctx.command_path if e.ctx else ctx.command_path
            click.echo(f"error: {e.format_message()} (see '{where} -h')", err=True)
            sys.exit(e.exit_code)
        except MusiclstmError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except OSError as e:  # a file or folder the system refused: one line too, never a traceback
            where = f" {e.filename}" if e.filename else ""
            click.echo(f"error: cannot use{where}: {e.strerror or e}", err=True)
            sys.exit(1)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="musiclstm")
def cli() -> None:
    """musiclstm: train an LSTM on any MIDI folder and compose new music with it.

    \b
    musiclstm compose                          # a new piece from the bundled model
    musiclstm train my_midis/ --out runs/mine  # train your own
    musiclstm compose --checkpoint runs/mine
    """


# CPU threads for PyTorch when --threads is not given. bench/threads.py on the 2-core machine (training
# tokens/s, idle -> one core busy): 1 thread 8,107 -> 4,498; 2 threads 1,688 -> 428 (OpenMP spin-waits
# for the busy core); 2 threads with OMP_WAIT_POLICY=PASSIVE 10,534 -> 4,777. One thread holds up best.
DEFAULT_THREADS = 1


def set_threads(threads: int | None = None) -> int:
    """Run PyTorch's CPU math on `threads` threads (None: DEFAULT_THREADS, at most the cores); returns it.

    Inter-op parallelism is set to 1: an LSTM runs one operator at a time, so extra inter-op
    workers only compete for cores.
    """
    import torch

    n = threads or min(DEFAULT_THREADS, os.cpu_count() or 1)
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # set once per process, before any inter-op work; a second call is refused
        pass
    return n


def _quiet(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


@cli.command()
@click.argument("corpus", nargs=-1, required=True)
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Run folder to write.")
@click.option("--encoding", type=click.Choice(["remi", "performance", "grid"]), help="Token encoding [remi].")
@click.option("--preset", type=click.Choice(["tiny", "small", "medium", "large"]), default="small", show_default=True)
@click.option("--config", "config_file", type=EXISTING, help="TOML file of training options.")
@click.option("--embed", type=click.IntRange(1), help="Embedding width.")
@click.option("--hidden", type=click.IntRange(1), help="LSTM state size.")
@click.option("--layers", type=click.IntRange(1), help="LSTM layers.")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True))
@click.option("--cell", type=click.Choice(["lstm", "gru", "rnn"]), help="Recurrent cell [lstm].")
@click.option("--tie-weights/--no-tie-weights", default=None, help="Share embedding and output weights.")
@click.option("--seq-len", type=click.IntRange(2), help="Tokens per training window.")
@click.option("--batch-size", type=click.IntRange(1))
@click.option("--lr", type=click.FloatRange(0, min_open=True), help="Peak learning rate.")
@click.option("--epochs", type=click.IntRange(1))
@click.option("--max-steps", type=click.IntRange(1))
@click.option("--max-time", type=click.FloatRange(0, min_open=True), help="Seconds of training at most.")
@click.option("--anneal-by-time", is_flag=True, default=None,
              help="With --max-time: the learning-rate decay follows the clock and ends at --max-time.")
@click.option("--windows", type=click.Choice(["pieces", "tbptt", "random"]),
              help="pieces: each piece from a fresh state, as compose starts [pieces]; tbptt: one stream; random.")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True))
@click.option("--val-tokens", type=click.IntRange(0),
              help="Validation scores held-out pieces up to this many tokens [250000; 0: all of them].")
@click.option("--eval-every", type=click.IntRange(1), help="Steps between validations [an epoch].")
@click.option("--patience", type=click.IntRange(1), help="Validations without improvement before stopping.")
@click.option("--augment", "augment_transpose", type=click.IntRange(0, 12),
              help="Transpose each piece by a random -N..N semitones (key tokens move with it).")
@click.option("--stretch", "augment_stretch", type=click.FloatRange(0, 1),
              help="Stretch each window's tempo by a random factor in [1/(1+S), 1+S] (remi, performance).")
@click.option("--styles", type=click.Choice(["none", "folder", "corpus"]), help="Style conditioning tokens.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
              help="Autocast: auto = bf16 on GPUs and CPUs with native bf16 (AVX512-BF16, AMX), else fp32 [auto].")
@click.option("--device", help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--seed", type=int)
@click.option("--jobs", type=click.IntRange(1), help="Worker processes for preparation.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--force", is_flag=True, help="Start over in an --out that already holds a run.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--model", "kind", type=click.Choice(["lm", "harmonizer"]), default="lm", show_default=True,
              help="lm: the left-to-right LSTM that composes; harmonizer: the bidirectional chorale model.")
@click.option("--holdout", type=EXISTING, help="harmonizer: a JSB Chorales .json whose test chorales are left out.")
@click.option("--threads", type=click.IntRange(1),
              help=f"CPU threads for PyTorch, per process [{DEFAULT_THREADS}]; more pay only on idle cores.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Token cache and stores [$MUSICLSTM_CACHE or ~/.cache/musiclstm]; shared storage for several nodes.")
def train(corpus, out, preset, config_file, resume, force, quiet, threads, kind, holdout, cache_dir,
          **options) -> None:
    """Train on CORPUS (MIDI folders or files) and write checkpoints to --out.

    \b
    musiclstm corpus export bach corpora/bach
    musiclstm train corpora/bach --out runs/bach --preset small
    musiclstm train corpora/bach --out runs/bach --resume      # after Ctrl-C
    torchrun --nproc_per_node=2 -m musiclstm train corpora/bach --out runs/ddp
    musiclstm train corpora/bach --model harmonizer --out runs/harmonizer   # for harmonize / infill
    """
    from ..training.lm import train as run

    paths = []
    for c in corpus:
        p = Path(c)
        if not p.exists():
            from ..data.collections import COLLECTIONS

            if c in COLLECTIONS:
                raise MusiclstmError(f"{c} is a built-in collection: export it first with "
                                     f"'musiclstm corpus export {c} corpora/{c}'")
            raise MusiclstmError(f"corpus {c} does not exist")
        paths.append(p)
    set_threads(threads)
    if kind == "harmonizer":
        from ..training.harmonizer import UNUSED
        from ..training.harmonizer import train as run

        given = [k for k in UNUSED if options.get(k) is not None and not (k == "encoding" and options[k] == "grid")]
        if given or resume:
            name = "--resume" if resume else "--" + given[0].replace("_", "-")
            raise MusiclstmError(f"{name} does not apply to --model harmonizer")
        options = {k: v for k, v in options.items() if k not in UNUSED}
        options["holdout"] = holdout
    elif holdout is not None:
        raise MusiclstmError("--holdout applies to --model harmonizer only")
    try:
        best = run(paths, out, resume=resume, force=force, progress=_quiet(quiet), config_file=config_file,
                   preset=preset, cache_dir=cache_dir, **options) if kind == "lm" else \
            run(paths, out, force=force, progress=_quiet(quiet), config_file=config_file, preset=preset,
                cache_dir=cache_dir, **options)
    except KeyboardInterrupt:
        then = "continue with --resume" if kind == "lm" else \
            "a harmonizer run cannot be resumed; best.pt holds its best weights so far"
        click.echo(f"interrupted: saved {out / 'last.pt'}; {then}", err=True)
        sys.exit(130)
    click.echo(f"best checkpoint: {best}")


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
              "precision": meta.get("precision"), "world_size": meta.get("world_size")}
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    m, t = report["config"]["model"] or {}, report["config"]["tokenizer"] or {}
    epoch = f" (epoch {report['epoch']:.2f})" if report["epoch"] is not None else ""
    data = f", data {report['fingerprint']}" if report["fingerprint"] else ""
    click.echo(f"{path}\n  step {report['step']}{epoch}{data}")
    cell = "harmonizer: bidirectional lstm" if m.get("kind") == "harmonizer" else m.get("cell")
    click.echo(f"  model: {cell} {m.get('layers')}x{m.get('hidden')}, embed {m.get('embed')}, "
               f"vocab {m.get('vocab_size')}; encoding {t.get('encoding')}, styles {t.get('styles') or 'none'}")
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
              pieces=pieces, order=order, seed=seed, jobs=jobs, progress=not as_json and _quiet(False), warn=warn,
              harmonizer=harmonizer)
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
@click.argument("midi", type=EXISTING)
@click.option("--wav", is_flag=True, help="Audio (FluidSynth + a GM soundfont, else a plain synthesizer).")
@click.option("--png", is_flag=True, help="A piano-roll image.")
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Output stem [MIDI's own name].")
@click.option("--soundfont", type=EXISTING, help="A .sf2 file [the first in /usr/share/sounds/sf2].")
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def render(midi, wav, png, out, soundfont, force) -> None:
    """Render MIDI (or MusicXML/ABC) as audio and/or a piano roll.

    \b
    musiclstm render composition.mid --wav --png     # composition.wav, composition.png
    """
    from ..io.midi import read, to_pretty_midi
    from ..io.outputs import check_targets, synthesizer, write_wav
    from ..io.plot import save_piano_roll

    if not (wav or png):
        raise MusiclstmError("nothing to do: give --wav and/or --png")
    stem = out or midi
    targets = [stem.with_suffix(s) for s, on in ((".wav", wav), (".png", png)) if on]
    check_targets(targets, force=force)
    pm = to_pretty_midi(read(midi))
    sf = str(soundfont) if soundfont else None
    import shutil
    import tempfile

    # all or nothing, and an old file replaced only by a new one: each file is written into a hidden folder
    # beside the target and moved into place once every one exists (as compose writes its outputs)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".musiclstm-", dir=stem.parent))
    try:
        staged = []
        if wav:
            src = midi if midi.suffix.lower() in (".mid", ".midi") else None
            staged.append(write_wav(pm, stage / stem.with_suffix(".wav").name, midi_path=src, soundfont=sf))
        if png:
            staged.append(save_piano_roll(pm, stage / stem.with_suffix(".png").name))
        for src_file, dst in zip(staged, targets, strict=True):
            os.replace(src_file, dst)
    except OSError as e:
        raise MusiclstmError(f"cannot write {e.filename or targets[0]}: {e.strerror or e}") from e
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    click.echo("wrote " + ", ".join(str(p) for p in targets) + (f" (audio by {synthesizer(sf)})" if wav else ""))


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
              progress=not as_json and _quiet(quiet), **extra)
    click.echo(json.dumps(r, indent=2) if as_json else b.table(r))


@cli.group()
def corpus() -> None:
    """Corpora: music21's public-domain collections written out as MIDI; public MIDI corpora downloaded."""


@corpus.command("list")
def corpus_list() -> None:
    """List the built-in collections."""
    from ..data.collections import list_collections

    for c in list_collections():
        click.echo(f"{c.name:12} {c.description}")


@corpus.command("export")
@click.argument("name")
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--jobs", type=click.IntRange(1), help="Worker processes [all cores].")
@click.option("--limit", type=click.IntRange(1), help="Export at most this many pieces.")
@click.option("--force", is_flag=True, help="Overwrite files already exported.")
@click.option("--quiet", "-q", is_flag=True)
def corpus_export(name, out_dir, jobs, limit, force, quiet) -> None:
    """Write collection NAME as MIDI files into OUT_DIR (e.g. `musiclstm corpus export bach corpora/bach`)."""
    from ..data.collections import export

    r = export(name, out_dir, jobs=jobs, limit=limit, force=force, progress=_quiet(quiet))
    click.echo(f"{len(r.written)} written, {r.existing} already there, {len(r.skipped)} skipped"
               f"{_reasons(r.skipped)} -> {out_dir}")


def _reasons(skipped, most: int = 4) -> str:
    """' (12 ×: reason; 3 ×: other; ...)': the skip reasons counted, the commonest first, in one line."""
    import collections
    import re

    if not skipped:
        return ""
    # a reason names its piece's details (bar numbers, offsets): counted by its words
    counts = collections.Counter(re.sub(r"\b\d+(\.\d+)?\b", "N", why).strip()[:80] for _, why in skipped)
    parts = [f"{n} × {why}" for why, n in counts.most_common(most)]
    if len(counts) > most:
        parts.append(f"{sum(n for _, n in counts.most_common()[most:])} × {len(counts) - most} other reasons")
    return f" ({'; '.join(parts)})"


@corpus.command("fetch")
@click.argument("name")
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace OUT_DIR if it exists (once the new corpus passed its checks).")
@click.option("--mirror", help="Base URL to download from instead of the public release: MIRROR/NAME/FILE "
              "[$MUSICLSTM_FETCH_MIRROR].")
@click.option("--quiet", "-q", is_flag=True)
def corpus_fetch(name, out_dir, force, mirror, quiet) -> None:
    """Download public corpus NAME, unpack it safely into OUT_DIR and check its layout.

    \b
    NAME: pop909, nottingham, jsb, lmd-clean, maestro
    musiclstm corpus fetch pop909 corpora/pop909     # then: musiclstm train corpora/pop909/POP909 ...
    musiclstm corpus fetch jsb corpora/jsb           # then: musiclstm benchmark jsb corpora/jsb
    """
    from ..data.fetch import fetch

    r = fetch(name, out_dir, force=force, mirror=mirror, progress=_quiet(quiet))
    checked = f"; sha256 checked: {', '.join(r.verified)}" if r.verified else "; no published sha256 to check"
    click.echo(f"{name}: {r.summary}{checked} -> {out_dir} (train on {r.train_on})")


@cli.command()
@click.argument("runs", nargs=-1, type=EXISTING)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (others: with care).")
@click.option("--port", type=click.IntRange(0, 65535), default=7860, show_default=True, help="0: a free one.")
@click.option("--threads", type=click.IntRange(1), help=f"CPU threads for PyTorch [{DEFAULT_THREADS}].")
def studio(runs, host, port, threads) -> None:
    """A local web page to compose, listen and download: the bundled models and any RUNS folders.

    \b
    pip install -e ".[studio]"
    musiclstm studio                      # then open http://127.0.0.1:7860/
    musiclstm studio runs/mine --port 8000
    """
    try:
        from .studio import serve
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in ("fastapi", "starlette", "uvicorn", "multipart", "python_multipart"):
            raise MusiclstmError("the studio needs its extra: pip install 'musiclstm[studio]' "
                                 "(in a checkout: pip install -e '.[studio]')") from e
        raise
    set_threads(threads)
    serve(runs, host=host, port=port, echo=lambda m: click.echo(m, err=m.startswith("warning")))


def main() -> None:
    cli(prog_name="musiclstm")



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

from . import music_commands  # noqa: E402, F401  (registers compose, harmonize and infill on `cli`)
