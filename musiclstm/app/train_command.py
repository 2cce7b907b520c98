"""`musiclstm train`: a corpus (MIDI folders or files) in, checkpoints out, for either model kind.

Checks the corpus paths (a built-in collection's name points to `corpus export`), keeps the harmonizer's
options apart from the language model's, and reports Ctrl-C in one line (registered on `cli.cli`).
May import: every room below (lazily, inside the command). Not imported by any room.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import MusiclstmError
from .cli import DEFAULT_THREADS, EXISTING, cli, set_threads, wants_progress


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
@click.option("--init", help="Start from this checkpoint's weights (a file or bundled name): fine-tuning; "
                             "its network sizes and tokens are kept.")
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
    musiclstm train my_tunes --out runs/mine --init folk --lr 5e-4   # fine-tune a bundled model
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
        best = run(paths, out, resume=resume, force=force, progress=wants_progress(quiet), config_file=config_file,
                   preset=preset, cache_dir=cache_dir, **options) if kind == "lm" else \
            run(paths, out, force=force, progress=wants_progress(quiet), config_file=config_file, preset=preset,
                cache_dir=cache_dir, **options)
    except KeyboardInterrupt:
        then = "continue with --resume" if kind == "lm" else \
            "a harmonizer run cannot be resumed; best.pt holds its best weights so far"
        click.echo(f"interrupted: saved {out / 'last.pt'}; {then}", err=True)
        sys.exit(130)
    click.echo(f"best checkpoint: {best}")

