"""The commands that write music: `musiclstm compose`, `harmonize` and `infill` (registered on `cli.cli`).

Each checks its output paths first, draws and records a fresh seed, calls one function of
`generation`, and writes every file with its sidecar or none (`io.outputs.write_with_sidecars`).
May import: every room below (lazily, inside each command). Not imported by any room.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import MusiclstmError
from .cli import DEFAULT_THREADS, EXISTING, cli, set_threads


@cli.command()
@click.option("--checkpoint", "-c", help="Checkpoint file, run folder or bundled model name [default].")
@click.option("--out", "-o", type=click.Path(path_type=Path),
              help="MIDI file to write [composition.mid, else the next free composition-N.mid] "
                   "(with --num N: OUT-1.mid ... OUT-N.mid).")
@click.option("--num", "-n", type=click.IntRange(1, 256), default=1, show_default=True)
@click.option("--seconds", type=click.FloatRange(0, 1800, min_open=True),
              help="Length in seconds at the piece's tempo, ending at a bar line [30; at most 1800].")
@click.option("--bars", type=click.IntRange(1, 900), help="Length in bars (remi, grid models; at most 900).")
@click.option("--tokens", type=click.IntRange(1, 200_000), help="Length in tokens (at most 200,000).")
@click.option("--temperature", "-t", type=click.FloatRange(0, 3), default=1.0, show_default=True,
              help="0 = always the most likely token; at most 3 (hotter is only noise).")
@click.option("--top-k", type=click.IntRange(1))
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=0.95, show_default=True)
@click.option("--repetition-penalty", type=click.FloatRange(1), default=1.0, show_default=True)
@click.option("--seed", type=int, help="Random seed [a fresh one each run, recorded in the JSON sidecar].")
@click.option("--prime", type=EXISTING, help="MIDI, MusicXML or ABC file to continue.")
@click.option("--prime-seconds", type=click.FloatRange(0, min_open=True), help="Use the primer's first N seconds.")
@click.option("--prime-bars", type=click.FloatRange(0, min_open=True), help="Use the primer's first N bars.")
@click.option("--prime-notes", help="Start from these MIDI pitches, e.g. '60 64 67' (instead of --prime).")
@click.option("--style", help="Conditioning style of the model (see `musiclstm info`); without --checkpoint, "
              "a bundled model's name: bach, folk or pop.")
@click.option("--key", help="Keep notes in a key, e.g. 'D minor'.")
@click.option("--instruments", help="Names or GM program numbers the model learned (see `musiclstm info`), e.g. "
              "'piano', or 'violin,viola,cello,contrabass' with --style bach.")
@click.option("--drums/--no-drums", default=None, help="Allow drums (remi models).")
@click.option("--tempo", type=click.FloatRange(10, 400), help="Tempo in quarter notes per minute.")
@click.option("--max-polyphony", type=click.IntRange(1), help="Most notes sounding at once.")
@click.option("--cache/--no-cache", default=False, show_default=True,
              help="Mix the model's continuous cache into sampling (it copies the piece so far, silences too).")
@click.option("--harmonizer/--no-harmonizer", default=None,
              help="Chorale models (the bundled bach): the model writes the soprano, the bundled harmonizer the alto, "
                   "tenor and bass by the voice-leading rules [on for chorale models]; --no-harmonizer: the model's "
                   "own four voices.")
@click.option("--wav", is_flag=True, help="Also render audio (FluidSynth + GM soundfont, else a plain synthesizer).")
@click.option("--png", is_flag=True, help="Also draw a piano roll.")
@click.option("--musicxml", is_flag=True, help="Also write MusicXML (music21).")
@click.option("--force", is_flag=True, help="Overwrite existing files.")
@click.option("--threads", type=click.IntRange(1),
              help=f"CPU threads for PyTorch [{DEFAULT_THREADS}]; more pay only on idle cores.")
def compose(checkpoint, out, num, wav, png, musicxml, force, prime, threads, **options) -> None:
    """Compose new music (MIDI plus a JSON sidecar that reproduces it).

    \b
    musiclstm compose                                  # a new 30 s piece from the bundled default model (folk)
    musiclstm compose --style bach                     # the bundled chorale model (also: pop)
    musiclstm compose -c runs/bach --seconds 45 --seed 7 -o chorale.mid
    musiclstm compose --prime intro.mid --prime-seconds 8 --temperature 0.9 --top-p 0.9
    musiclstm compose --num 4 --key "D minor" --png --wav
    """
    import secrets

    from ..generation.compose import check_options_agree, prime_score
    from ..generation.compose import compose as run
    from ..io.outputs import check_targets, output_paths, sidecar, synthesizer, write_pieces
    from ..models import checkpoint as ck

    cut = {k: options.pop(k) for k in ("prime_seconds", "prime_bars", "prime_notes")}
    check_options_agree(prime=prime, seconds=options["seconds"], bars=options["bars"], tokens=options["tokens"],
                        **cut)
    if options["seconds"] is None and options["bars"] is None and options["tokens"] is None:
        options["seconds"] = 30.0
    extras = dict(wav=wav, png=png, musicxml=musicxml)
    if out is None:
        targets = _free_names(Path("composition.mid"), num)
    else:
        targets = [out] if num == 1 else [out.with_name(f"{out.stem}-{i + 1}{out.suffix}") for i in range(num)]
    check_targets([p for t in targets for p in output_paths(t, **extras)], force=force)
    checkpoint, options["style"] = _bundled_style(checkpoint, options["style"])
    if options["seed"] is None:
        options["seed"] = secrets.randbelow(2**31)
    threads = set_threads(threads)
    pscore = prime_score(prime, **cut)  # the primer read and cut once: an empty one is an error here
    model = ck.load(checkpoint)
    options["style"] = _model_style(model, options["style"], bundled=checkpoint is None or checkpoint in
                                    ck.bundled_models() or checkpoint in ck.bundled_models().values())
    if options["temperature"] == 0:
        click.echo("note: --temperature 0 always takes the most likely token; an LSTM's single most likely "
                   "continuation tends to repeat one figure (try 0.5-1.0)", err=True)
    # piece k of --num N is the piece of seed S+k, composed on its own: `--seed S+k` alone remakes it
    seeds = [options["seed"] + k for k in range(num)]
    pms, seqs = [], []
    for s in seeds:
        pm, ids = run(model, pscore, return_ids=True, progress=sys.stderr.isatty(), **{**options, "seed": s})
        pms.append(pm)
        seqs.append(ids[0])
    record = {**options, **cut, "prime": str(prime) if prime else None, "checkpoint": checkpoint,
              "threads": threads}
    written = write_pieces([(pm, path, sidecar(model, {**record, "seed": s}, prime, source_key="prime", ids=ids))
                            for pm, ids, path, s in zip(pms, seqs, targets, seeds, strict=True)], force=force,
                           **extras)
    per = len(written) // num
    primer = f", of which primer {pscore.duration_seconds:.1f} s, {len(pscore)} notes" if pscore is not None else ""
    for k, pm in enumerate(pms):
        click.echo(f"wrote {', '.join(str(p) for p in written[k * per:(k + 1) * per])} "
                   f"({pm.get_end_time():.1f} s, {sum(len(i.notes) for i in pm.instruments)} notes{primer}; "
                   f"seed {seeds[k]})")
    if wav:
        click.echo(f"audio by {synthesizer()}")


def _chorale_command(kind: str, source: Path, out, force, extras, seed, threads, run, options) -> None:
    """Shared by harmonize and infill: outputs checked first, a fresh seed recorded, all files or none."""
    import secrets

    from ..generation.harmonize import load
    from ..io.outputs import check_targets, output_paths, synthesizer, write_with_sidecars

    target = out or _free_names(Path(f"{source.stem}-{kind}.mid"), 1)[0]
    check_targets(output_paths(target, **extras), force=force)
    seed = secrets.randbelow(2**31) if seed is None else seed
    threads = set_threads(threads)
    h = load(options.pop("checkpoint"))
    info: dict = {}
    pm = run(source, model=h, seed=seed, info=info, **options)
    for w in info.get("warnings", ()):
        click.echo(f"warning: {w}", err=True)
    record = {**options, "seed": seed, "threads": threads, "input": str(source)}
    written = write_with_sidecars([(pm, target, None)], h.model, record, source=source, force=force, **extras)
    what = {k: v for k, v in info.items() if k in ("melody", "key", "bars", "voices")}
    said = "; ".join(str(v) if k == "melody" else f"{k} {v if k != 'bars' else '-'.join(map(str, v))}"
                     for k, v in what.items() if v)
    if info.get("fermatas"):  # read from a MusicXML / ABC melody: where its phrases close
        said += f"; phrases close at its {len(info['fermatas'])} fermata(s)"
    click.echo(f"wrote {', '.join(map(str, written))} ({pm.get_end_time():.1f} s, "
               f"{sum(len(i.notes) for i in pm.instruments)} notes; {said}; {info['seconds']:.1f} s; seed {seed})")
    if extras["wav"]:
        click.echo(f"audio by {synthesizer()}")


def _chorale_options(f):
    for deco in reversed([
        click.option("--out", "-o", type=click.Path(path_type=Path), help="MIDI file to write [INPUT-KIND.mid]."),
        click.option("--checkpoint", "-c", help="A harmonizer checkpoint or run folder [the bundled harmonizer]."),
        click.option("--seed", type=int, help="Random seed [a fresh one each run, recorded in the JSON sidecar]."),
        click.option("--temperature", type=click.FloatRange(0, 3), default=0.8, show_default=True,
                     help="At most 3."),
        click.option("--iterations", type=click.IntRange(1, 10000), default=64, show_default=True,
                     help="Pseudo-Gibbs passes (more: slower, more settled)."),
        click.option("--rules/--no-rules", default=True, show_default=True,
                     help="Avoid parallel fifths and octaves and crossed voices while sampling."),
        click.option("--wav", is_flag=True, help="Also render audio."),
        click.option("--png", is_flag=True, help="Also draw a piano roll."),
        click.option("--musicxml", is_flag=True, help="Also write MusicXML (music21)."),
        click.option("--force", is_flag=True, help="Overwrite existing files."),
        click.option("--threads", type=click.IntRange(1), help=f"CPU threads for PyTorch [{DEFAULT_THREADS}]."),
    ]):
        f = deco(f)
    return f


@cli.command()
@click.argument("melody", type=EXISTING)
@_chorale_options
@click.option("--key", help="The key to stay in, e.g. 'G major' [the melody's own].")
@click.option("--transpose", type=click.IntRange(-48, 48), default=0, show_default=True,
              help="Semitones to move the melody before harmonizing.")
@click.option("--top-voice", is_flag=True, help="Harmonize the top voice of a melody with chords.")
@click.option("--cadences", callback=lambda ctx, param, v: _cadences(v),
              help="Bars (from 1) where phrases close, e.g. 4,8,12: the bass takes the tonic or the dominant under "
                   "the bar's last melody note (the last chord's bass is always the tonic).")
def harmonize(melody, out, force, wav, png, musicxml, seed, threads, **options) -> None:
    """Harmonize a melody in four parts (soprano = the melody, then alto, tenor, bass).

    \b
    musiclstm harmonize tune.mid -o chorale.mid          # MIDI, MusicXML or ABC melody
    musiclstm harmonize tune.abc --key "D minor" --seed 3 --wav --png
    """
    from ..generation.harmonize import harmonize as run

    _chorale_command("harmonized", melody, out, force, dict(wav=wav, png=png, musicxml=musicxml), seed, threads,
                     run, options)


@cli.command()
@click.argument("piece", type=EXISTING)
@click.option("--bars", required=True, help="Bars to rewrite, counted from 1, e.g. 5-8.")
@click.option("--voices", default="SATB", show_default=True, help="Voices to rewrite, e.g. ATB.")
@_chorale_options
def infill(piece, out, force, wav, png, musicxml, seed, threads, **options) -> None:
    """Rewrite chosen bars (and voices) of a four-part piece; every other note stays as it is.

    \b
    musiclstm infill chorale.mid --bars 5-8 -o new.mid
    musiclstm infill chorale.mid --bars 3 --voices ATB --seed 1
    """
    from ..generation.harmonize import infill as run
    from ..generation.harmonize import parse_bars, parse_voices

    parse_bars(options["bars"]), parse_voices(options["voices"])  # bad ranges fail before any work
    _chorale_command("infill", piece, out, force, dict(wav=wav, png=png, musicxml=musicxml), seed, threads, run,
                     options)


def _cadences(value):
    from ..generation.harmonize import parse_cadences

    try:
        return parse_cadences(value) or None
    except MusiclstmError as e:
        raise click.BadParameter(str(e)) from None


def _free_names(first: Path, num: int) -> list[Path]:
    """The first `num` of first, first-2, first-3, ... whose files (MIDI, sidecar, any extra) are all absent."""
    from ..io.outputs import output_paths

    names, k = [], 1
    while len(names) < num:
        p = first if k == 1 else first.with_name(f"{first.stem}-{k}{first.suffix}")
        if not any(q.exists() for q in output_paths(p, wav=True, png=True, musicxml=True)):
            names.append(p)
        k += 1
    return names


def _bundled_style(checkpoint, style):
    """Without --checkpoint, --style names a bundled model (any case): --style Bach -> the bach model."""
    from ..models import checkpoint as ck

    if checkpoint is None and style is not None:
        bundled = ck.bundled_models()
        names = {n.lower(): n for n in bundled}
        if style.lower() in names:  # the bundled file itself: a folder of that name here is not looked at
            return bundled[names[style.lower()]], None
    return checkpoint, style


def _model_style(model, style, *, bundled: bool):
    """The model's own spelling of `style` (any case), or an error naming the styles and models known."""
    from ..models import checkpoint as ck

    if style is None:
        return None
    known = {s.lower(): s for s in model.tokenizer.styles}
    if style.lower() in known:
        return known[style.lower()]
    has = f"this model's styles: {', '.join(model.tokenizer.styles)}" if known else "this model has no styles"
    also = f"; bundled models: {', '.join(sorted(ck.bundled_models()))}" if bundled else ""
    raise MusiclstmError(f"unknown style {style!r}: {has}{also}")
