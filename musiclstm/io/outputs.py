"""Writing a piece: MIDI, its JSON sidecar, WAV, PNG and MusicXML, all of them or none; notebook audio.

`write_pieces` is the one "write these outputs or none" that `musiclstm compose`, `harmonize`, `infill`
and the studio use; `sidecar` the one provenance record written beside each file.
May import: errors, io. Not: encodings, data, models, training, generation, evaluation, app.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from ..errors import MusiclstmError
from ..version import __version__


def find_fluidsynth(soundfont: str | None = None) -> tuple[str, str] | None:
    """(fluidsynth executable, General MIDI soundfont) when both are installed, else None."""
    exe = shutil.which("fluidsynth")
    sf = soundfont or next((str(p) for d in ("/usr/share/sounds/sf2", "/usr/share/soundfonts")
                            for p in sorted(Path(d).glob("*.sf2")) if Path(d).is_dir()), None)
    return (exe, sf) if exe and sf else None


def synthesizer(soundfont: str | None = None) -> str:
    """Which synthesizer `write_wav` uses here, in words (for the command's message)."""
    found = find_fluidsynth(soundfont)
    if found:
        return f"FluidSynth with {Path(found[1]).name}"
    return "pretty_midi's sine synthesizer (install fluidsynth and a GM soundfont for real instruments)"


def write_wav(pm, wav_path: Path, *, midi_path: Path | None = None, soundfont: str | None = None,
              rate: int = 44100) -> Path:
    """A PrettyMIDI as a 16-bit WAV at `rate` Hz: FluidSynth with a General MIDI soundfont when both are
    installed, otherwise pretty_midi's pure-Python sine synthesizer (mono, drums silent). Always works.

    `midi_path`: the same music already written as MIDI, for FluidSynth to read.
    """
    if find_fluidsynth(soundfont):
        if midi_path is not None:
            return render_wav(midi_path, wav_path, soundfont=soundfont, rate=rate)
        with tempfile.TemporaryDirectory() as d:
            pm.write(str(Path(d) / "a.mid"))
            return render_wav(Path(d) / "a.mid", wav_path, soundfont=soundfont, rate=rate)
    samples = pm.synthesize(fs=rate)
    peak = float(np.abs(samples).max()) if len(samples) else 0.0
    pcm = (samples * (0.9 * 32767 / peak if peak > 0 else 0)).astype(np.int16)
    try:  # the file opened first: wave.open on a path it cannot create leaves a half-made Wave_write behind
        with open(wav_path, "wb") as f, wave.open(f, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(pcm.tobytes())
    except OSError as e:
        raise MusiclstmError(f"cannot write {wav_path}: {e.strerror or e}") from e
    return Path(wav_path)


def render_wav(midi_path: Path, wav_path: Path, *, soundfont: str | None = None, rate: int = 44100) -> Path:
    """Synthesize a MIDI file with FluidSynth and a General MIDI soundfont (an error when either is missing)."""
    found = find_fluidsynth(soundfont)
    if found is None:
        raise MusiclstmError("--wav needs FluidSynth and a General MIDI soundfont: "
                             "apt-get install fluidsynth fluid-soundfont-gm")
    exe, sf = found
    res = subprocess.run([exe, "-ni", "-q", "-F", str(wav_path), "-r", str(rate), sf, str(midi_path)],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    if res.returncode != 0 or not wav_path.exists():
        raise MusiclstmError(f"fluidsynth failed: {(res.stderr or res.stdout).strip()[:200]}")
    return wav_path


def audio(pm, *, rate: int = 22050, soundfont: str | None = None):
    """An inline audio player for a PrettyMIDI (or a MIDI path) in a notebook.

    Renders with FluidSynth and a General MIDI soundfont when both are installed, otherwise with
    pretty_midi's simple sine synthesizer. Returns `IPython.display.Audio`, or (samples, rate)
    where IPython is not installed.
    """
    import tempfile
    import wave

    import numpy as np
    import pretty_midi

    if not isinstance(pm, pretty_midi.PrettyMIDI):
        from .midi import read, to_pretty_midi

        pm = to_pretty_midi(read(pm))
    try:
        with tempfile.TemporaryDirectory() as d:
            mid, wav = Path(d) / "a.mid", Path(d) / "a.wav"
            pm.write(str(mid))
            render_wav(mid, wav, soundfont=soundfont, rate=rate)
            with wave.open(str(wav)) as w:
                raw = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).reshape(-1, w.getnchannels())
                samples, rate = raw.mean(1) / 32768.0, w.getframerate()
    except MusiclstmError:  # no FluidSynth or soundfont: a plain synthesizer
        samples = pm.synthesize(fs=rate)
    try:
        from IPython.display import Audio
    except ImportError:
        return samples, rate
    return Audio(samples, rate=rate)


def output_paths(path: Path, *, wav: bool = False, png: bool = False, musicxml: bool = False) -> list[Path]:
    """The files one piece is written as: the MIDI, its JSON sidecar, then the WAV, PNG, MusicXML asked for."""
    path = Path(path)
    extra = [path.with_suffix(s) for s, on in ((".wav", wav), (".png", png), (".musicxml", musicxml)) if on]
    return [path, path.with_suffix(".json"), *extra]


def check_targets(paths, *, force: bool = False) -> None:
    """Refuse, before any work, a target that is a folder, sits under a file, or exists (without `force`)."""
    for p in map(Path, paths):
        if p.is_dir():
            raise MusiclstmError(f"{p} is a folder; give a file name such as {p / 'composition.mid'}")
        if p.exists() and not force:
            raise MusiclstmError(f"{p} exists; use --force to overwrite")
        above = next(a for a in p.parents if a.exists() or a == a.parent)
        if not above.is_dir():
            raise MusiclstmError(f"cannot write {p}: {above} is a file, not a folder")
        if not os.access(above, os.W_OK):
            raise MusiclstmError(f"cannot write {p}: {above} is not writable")


def write_pieces(pieces, *, force: bool = False, wav: bool = False, png: bool = False, musicxml: bool = False,
                 soundfont: str | None = None) -> list[Path]:
    """Write each (PrettyMIDI, path, sidecar dict) as its `output_paths`: every file, or none.

    The files are written into a hidden staging folder beside each target and moved into place only
    once all of them exist, so a failure (music21, a full disk) leaves nothing behind. Returns the
    paths written, in order.
    """
    pieces = [(pm, Path(path), info) for pm, path, info in pieces]
    targets = [output_paths(path, wav=wav, png=png, musicxml=musicxml) for _, path, _ in pieces]
    check_targets([t for ts in targets for t in ts], force=force)
    created = [a for a in {a for _, path, _ in pieces for a in path.parents} if not a.exists()]
    stages: dict[Path, Path] = {}
    moves: list[tuple[Path, Path]] = []
    ok = False
    try:
        for (pm, path, info), ts in zip(pieces, targets, strict=True):
            if path.parent not in stages:
                path.parent.mkdir(parents=True, exist_ok=True)
                stages[path.parent] = Path(tempfile.mkdtemp(prefix=".musiclstm-", dir=path.parent))
            staged = _write_files(pm, stages[path.parent] / path.name, info=info, wav=wav, png=png,
                                  musicxml=musicxml, soundfont=soundfont)
            moves += list(zip(staged, ts, strict=True))
        for src, dst in moves:
            os.replace(src, dst)
        ok = True
    except OSError as e:
        raise MusiclstmError(f"cannot write {e.filename or targets[0][0]}: {e.strerror or e}") from e
    finally:
        for d in stages.values():
            shutil.rmtree(d, ignore_errors=True)
        if not ok:
            for a in sorted(created, key=lambda a: len(a.parts), reverse=True):
                shutil.rmtree(a, ignore_errors=True)
    return [dst for _, dst in moves]


def write_outputs(pm, path: Path, *, force: bool, info: dict, wav: bool = False, png: bool = False,
                  musicxml: bool = False, soundfont: str | None = None) -> list[Path]:
    """Write one piece's MIDI and sidecar (and optional WAV, PNG, MusicXML): all of them or none."""
    return write_pieces([(pm, path, info)], force=force, wav=wav, png=png, musicxml=musicxml, soundfont=soundfont)


def _write_files(pm, path: Path, *, info: dict, wav: bool, png: bool, musicxml: bool,
                 soundfont: str | None) -> list[Path]:
    """Write `output_paths(path)` (no checks: `write_pieces` stages them); returns them in that order."""
    from .midi import write_midi

    written = [write_midi(pm, path)]
    try:
        path.with_suffix(".json").write_text(json.dumps(info, indent=2, default=str))
    except OSError as e:
        raise MusiclstmError(f"cannot write {path.with_suffix('.json')}: {e.strerror or e}") from e
    written.append(path.with_suffix(".json"))
    if wav:
        written.append(write_wav(pm, path.with_suffix(".wav"), midi_path=path, soundfont=soundfont))
    if png:
        from .plot import save_piano_roll

        written.append(save_piano_roll(pm, path.with_suffix(".png")))
    if musicxml:
        import music21

        try:
            parsed = music21.converter.parse(str(path), forceSource=True, storePickle=False)  # no pickle cache
            parsed.write("musicxml", fp=str(path.with_suffix(".musicxml")))
        except Exception as e:  # music21 raises many types; report, don't crash
            raise MusiclstmError(f"music21 could not write MusicXML: {e}") from e
        written.append(path.with_suffix(".musicxml"))
    return written


def sidecar(model, options: dict, source=None, *, source_key: str = "input", ids=None) -> dict:
    """The one provenance record written beside a composed, harmonized or infilled file: the package
    version, the checkpoint and the fingerprint of its weights, its data fingerprint and step, every
    option (the seed among them), the hash of the input file (`source`, recorded under `source_key`:
    "prime" for a primer) and how many tokens were written (`ids`). `model` is a loaded `Model`."""
    info = {"musiclstm": __version__, "checkpoint": str(model.path), "model_fingerprint": model.fingerprint,
            "data_fingerprint": model.meta.get("fingerprint"), "step": model.meta.get("step"), "options": options}
    if ids is not None:
        info["tokens"] = len(ids)
    if isinstance(source, str | Path):
        info[source_key] = {"path": str(source), "sha1": hashlib.sha1(Path(source).read_bytes()).hexdigest()}
    return info


def write_with_sidecars(pieces, model, options: dict, *, source=None, source_key: str = "input",
                        force: bool = False, wav: bool = False, png: bool = False, musicxml: bool = False,
                        soundfont: str | None = None) -> list[Path]:
    """Write each (PrettyMIDI, path, ids or None) made by `model` with `options` from `source` as its
    `output_paths`, each with its `sidecar`: every file, or none (`write_pieces`). The one "made music
    to files" step of `musiclstm compose`, `harmonize`, `infill` and the studio."""
    return write_pieces([(pm, path, sidecar(model, options, source, source_key=source_key, ids=ids))
                         for pm, path, ids in pieces], force=force, wav=wav, png=png, musicxml=musicxml,
                        soundfont=soundfont)
