"""The commands to hear and see music: `render` (a file as audio and a piano roll) and `studio` (a local web
page to compose and listen), registered on `cli.cli`.

May import: errors, app.cli, io and, for `studio`, app.studio (lazily, inside each command). Not imported by
any room.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..errors import MusiclstmError
from .cli import DEFAULT_THREADS, EXISTING, cli, set_threads


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

