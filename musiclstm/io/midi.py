"""Reading and writing music files: the only module that touches MIDI and notation libraries.

`read` is the one way music comes in, for corpus files and primers alike: a MIDI path (parsed by
symusic's C++ reader, ~150x faster than pretty_midi and exact at any resolution, including
music21's 10,080 ticks per quarter), a `pretty_midi.PrettyMIDI`, raw MIDI bytes, or a
MusicXML / ABC / Humdrum file through music21. `to_pretty_midi` is the way out.
May import: errors, io.score. Not: encodings, data, models, training, generation, evaluation, app.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np

from ..errors import MidiReadError, MusiclstmError
from .score import Score, Track

MIDI_SUFFIXES = {".mid", ".midi", ".kar", ".smf"}
NOTATION_SUFFIXES = {".xml", ".mxl", ".musicxml", ".abc", ".krn"}
MAX_FILE_BYTES = 64 * 2**20  # larger "MIDI" files are not music we can learn from
MAX_HOURS = 6.0  # a file lasting longer is treated as corrupt (e.g. a 268M-tick gap)
MAX_NOTES = 2_000_000
WRITE_TPQ = 480


def is_music_file(path: Path) -> bool:
    """Whether `path` has a suffix `read` understands (case-insensitive)."""
    return path.suffix.lower() in MIDI_SUFFIXES | NOTATION_SUFFIXES


def warm_up() -> None:
    """Import the libraries `read` uses for MIDI, so that worker processes forked afterwards need not."""
    import pretty_midi  # noqa: F401
    import symusic  # noqa: F401


def abc_tunes(text: str) -> list[int]:
    """The tunes of an ABC file: its reference numbers (`X:` lines), once each, in file order."""
    return list(dict.fromkeys(int(n) for n in re.findall(r"^\s*X:\s*(\d+)\s*$", text, flags=re.M)))


def read(source, *, name: str | None = None, tune: int | None = None) -> Score:
    """Read a path (MIDI, MusicXML, ABC, Humdrum), MIDI bytes or a PrettyMIDI into a `Score`.

    `tune`: the reference number (`X:`) of one tune of a multi-tune ABC file (see `abc_tunes`).
    Raises `MidiReadError` naming the file and the reason for anything unreadable.
    """
    import pretty_midi

    if isinstance(source, pretty_midi.PrettyMIDI):
        buf = io.BytesIO()
        try:
            source.write(buf)
        except (ValueError, TypeError, OverflowError) as e:
            raise MidiReadError(name or "<PrettyMIDI>", f"pretty_midi could not serialize it: {e}") from e
        return _from_bytes(buf.getvalue(), name or "<PrettyMIDI>")
    if isinstance(source, bytes | bytearray):
        if len(source) > MAX_FILE_BYTES:  # the same cap as for a path
            raise MidiReadError(name or "<bytes>", f"file is {len(source) / 2**20:.0f} MB "
                                                   f"(limit {MAX_FILE_BYTES // 2**20} MB)")
        return _from_bytes(bytes(source), name or "<bytes>")
    if not isinstance(source, str | os.PathLike):
        raise MidiReadError(str(name or source), f"expected a path, bytes or PrettyMIDI, got {type(source).__name__}")
    path = Path(source)
    label = name or str(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise MidiReadError(label, e.strerror or str(e)) from e
    if path.is_dir():
        raise MidiReadError(label, "is a folder, not a file")
    if size > MAX_FILE_BYTES:
        raise MidiReadError(label, f"file is {size / 2**20:.0f} MB (limit {MAX_FILE_BYTES // 2**20} MB)")
    if path.suffix.lower() in NOTATION_SUFFIXES:
        return _from_bytes(_notation_to_midi(path, label, tune), label)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MidiReadError(label, e.strerror or str(e)) from e
    return _from_bytes(data, label)


def _notation_to_midi(path: Path, label: str, tune: int | None = None) -> bytes:
    """MusicXML / ABC / Humdrum (one ABC tune when `tune` is given) -> MIDI bytes through music21."""
    import music21

    try:
        # never music21's pickle cache: it would unpickle (and write) files in its scratch folder
        parsed = music21.converter.parse(str(path), number=tune, forceSource=True, storePickle=False)
        clean_music21(parsed)
        mf = music21.midi.translate.music21ObjectToMidiFile(parsed)
        return mf.writestr()
    except Exception as e:  # music21 raises many unrelated types (StreamException, ExpanderException, ...)
        raise MidiReadError(label, " ".join(f"music21: {type(e).__name__}: {e}".split())[:300]) from e


def fermatas(source) -> list[float]:
    """Where a MusicXML / ABC / Humdrum file's notes carry a fermata (quarters from the start, as `read` places
    them): the phrase ends a chorale melody marks. [] for MIDI and anything else (MIDI has no fermatas)."""
    if not isinstance(source, str | Path) or Path(source).suffix.lower() not in NOTATION_SUFFIXES:
        return []
    import music21

    path = Path(source)
    try:
        parsed = music21.converter.parse(str(path), forceSource=True, storePickle=False)
    except Exception as e:  # as in `read`: music21 raises many unrelated types
        raise MidiReadError(path.name, " ".join(f"music21: {type(e).__name__}: {e}".split())[:300]) from e
    return sorted({float(n.getOffsetInHierarchy(parsed)) for n in parsed.recurse().notes
                   if any(isinstance(x, music21.expressions.Fermata) for x in n.expressions)})


def clean_music21(score) -> None:
    """Work around two music21 MIDI-writer flaws, in place. Zero-length notes (grace notes, chord
    symbols) are dropped: written note-off before note-on, they hang until the next note of that pitch.
    Meter/key/tempo objects placed in two measures (its ABC reader does, e.g. after a pickup bar) are
    copied: shared, they fail the export with "StreamException: ... is already found in this Stream"."""
    import copy

    seen: set[int] = set()
    for stream in score.recurse(streamsOnly=True, includeSelf=True):
        zero = [n for n in stream.notes if n.duration.quarterLength == 0]
        if zero:
            stream.remove(zero)
        for el in list(stream.getElementsByClass(("TimeSignature", "KeySignature", "MetronomeMark"))):
            if id(el) in seen:
                stream.replace(el, copy.deepcopy(el))
            seen.add(id(el))


def _from_bytes(data: bytes, label: str) -> Score:
    import symusic

    if len(data) < 14 or data[:4] != b"MThd":
        raise MidiReadError(label, "not a MIDI file (no MThd header)")
    try:
        s = symusic.Score.from_midi(data)
    except (RuntimeError, ValueError, OverflowError) as e:
        raise MidiReadError(label, _parser_reason(str(e))) from e
    tpq = s.ticks_per_quarter
    if tpq <= 0:
        raise MidiReadError(label, f"unsupported time division ({tpq} ticks per quarter)")
    return _from_symusic(s, tpq, label)


def _parser_reason(message: str) -> str:
    """symusic's parser message -> a reason a user can act on."""
    message = message.replace("MiniMidi: ", "").replace(": iostream error", "").strip()
    m = re.fullmatch(r"Get (\w+)=(\d+)", message)
    if m:
        return f"corrupt MIDI data: a {m[1].replace('_', ' ')} of {m[2]} (must be 0-127)"
    if "Division type is not ticks per quarter" in message:
        return "SMPTE time division (frames per second) is not supported; resave with ticks per quarter note"
    return f"corrupt MIDI data: {message}" if message else "corrupt MIDI data"


def _from_symusic(s, tpq: int, label: str) -> Score:
    starts, ends, pitches, vels, track_ix, tracks, pedals = [], [], [], [], [], [], []
    for t in s.tracks:
        n = t.notes.numpy()
        ok = (n["pitch"] >= 0) & (n["velocity"] > 0) & (n["duration"] >= 0)  # int8: >127 wraps < 0
        if ok.any():
            k = len(tracks)
            time = n["time"][ok].astype(np.int64)
            starts.append(time)
            ends.append(time + np.maximum(n["duration"][ok].astype(np.int64), 1))
            pitches.append(n["pitch"][ok])
            vels.append(n["velocity"][ok])
            track_ix.append(np.full(ok.sum(), k))
            tracks.append(Track(int(t.program), bool(t.is_drum), str(t.name)))
            if len(t.pedals):
                p = t.pedals.numpy()
                down = p["time"].astype(np.int64)
                pedals.append(np.stack([np.full(len(down), k), down, down + p["duration"]], axis=1))
    cat = (lambda xs, dt: np.concatenate(xs).astype(dt)) if starts else (lambda xs, dt: np.zeros(0, dt))
    start, end = cat(starts, np.int64), cat(ends, np.int64)
    if len(start) > MAX_NOTES:
        raise MidiReadError(label, f"{len(start):,} notes (limit {MAX_NOTES:,})")

    tempo = s.tempos.numpy()
    tempos = np.stack([tempo["time"] / tpq, 6e7 / np.maximum(tempo["mspq"], 1)], axis=1)
    tempos = tempos[(tempos[:, 1] >= 1) & (tempos[:, 1] <= 2000)]
    tempos = tempos[np.argsort(tempos[:, 0], kind="stable")]
    ts = s.time_signatures.numpy()
    sigs = np.stack([ts["time"] / tpq, ts["numerator"], ts["denominator"]], axis=1).astype(np.float64)
    sigs = sigs[(sigs[:, 1] > 0) & (sigs[:, 2] > 0)]
    ks = s.key_signatures.numpy()
    minor = ks["tonality"].astype(np.int64)
    tonic = (ks["key"].astype(np.int64) * 7 + 9 * minor) % 12
    keys = np.stack([ks["time"] / tpq, tonic, minor], axis=1).astype(np.float64)
    score = Score(start / tpq, end / tpq, cat(pitches, np.int64), cat(vels, np.int64), cat(track_ix, np.int64),
                  tracks, tempos, sigs, keys,
                  np.concatenate(pedals).astype(np.float64) / [1, tpq, tpq] if pedals else np.zeros((0, 3)),
                  label)
    hours = score.duration_seconds / 3600
    if hours > MAX_HOURS:
        raise MidiReadError(label, f"music lasts {hours:,.0f} hours (limit {MAX_HOURS:g}); likely corrupt")
    return score


def to_pretty_midi(score: Score):
    """A `Score` -> `pretty_midi.PrettyMIDI` with its tempo, meter, key and named instruments."""
    import pretty_midi

    return pretty_midi.PrettyMIDI(io.BytesIO(to_midi_bytes(score)))


def to_midi_bytes(score: Score) -> bytes:
    """A `Score` -> standard MIDI file bytes at 480 ticks per quarter."""
    import symusic
    from symusic import KeySignature, Note, Tempo, TimeSignature

    tick = lambda q: np.round(np.asarray(q) * WRITE_TPQ).astype(np.int64)  # noqa: E731
    s = symusic.Score(WRITE_TPQ)
    for q, qpm in score.tempos:
        s.tempos.append(Tempo(int(tick(q)), qpm=float(qpm)))
    for q, num, den in score.time_signatures:
        s.time_signatures.append(TimeSignature(int(tick(q)), int(num), int(den)))
    for q, tonic, minor in score.key_signatures:
        sharps = int(((int(tonic) - 9 * int(minor)) * 7) % 12)  # circle of fifths position 0..11
        s.key_signatures.append(KeySignature(int(tick(q)), sharps - 12 if sharps > 6 else sharps, int(minor)))
    for k, tr in enumerate(score.tracks):
        m = score.track == k
        if not m.any():
            continue
        on, off = tick(score.start[m]), tick(score.end[m])
        t = symusic.Track(tr.name or _program_name(tr), int(tr.program), bool(tr.is_drum))
        t.notes = Note.from_numpy(on.astype(np.int32), np.maximum(off - on, 1).astype(np.int32),
                                  np.clip(score.pitch[m], 0, 127).astype(np.int8),
                                  np.clip(score.velocity[m], 1, 127).astype(np.int8))
        s.tracks.append(t)
    return bytes(s.dumps_midi())


def _program_name(track: Track) -> str:
    import pretty_midi

    return "Drums" if track.is_drum else pretty_midi.program_to_instrument_name(int(track.program))


def write_midi(midi, path, *, force: bool = False) -> Path:
    """Write a PrettyMIDI or Score to `path`; refuse to overwrite without `force`."""
    path = Path(path)
    if path.exists() and not force:
        raise MusiclstmError(f"{path} exists; use --force to overwrite")
    data = to_midi_bytes(midi) if isinstance(midi, Score) else _pm_bytes(midi)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise MusiclstmError(f"cannot write {path}: {e.strerror or e}") from e
    return path


def _pm_bytes(pm) -> bytes:
    buf = io.BytesIO()
    pm.write(buf)
    return buf.getvalue()
