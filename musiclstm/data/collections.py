"""Built-in training corpora: collections of music21's bundled corpus, exported to MIDI files.

`export("bach", out_dir)` writes one file per piece at 480 ticks per quarter, in worker processes, keeping
files already there and reporting pieces music21 cannot convert. Listing globs files and scans ABC `X:` lines.
MIDI drops fermatas: a collection that marks them (the chorales) also gets `fermatas.json` beside its files,
{file name: [quarters where a note under a fermata starts]}, which `fermatas_of` reads back.
May import: errors, io. Not: encodings, models, training, generation, evaluation, app.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from ..errors import ConfigError, MusiclstmError
from ..io.midi import abc_tunes, clean_music21

PIECE_TIMEOUT_S = 120  # seconds one piece may take to parse and write
EXPORT_TPQ = 480  # music21's default, 10,080, puts long pieces past pretty_midi's tick limit
MAX_EXPANSION = 4  # played/notated length above which music21's repeat expansion has gone wrong (ABC)
_M21_LICENCE = "see music21/corpus/license.txt: public-domain music or used by permission, some non-commercial"


@dataclass(frozen=True)
class Collection:
    """A named set of files in music21's corpus, given as globs relative to the corpus folder.

    `shared_numbering`: folders whose ABC books number tunes in one series (as the printed book does), so a
    number met again is another transcription of the same tune and is left out.
    """

    name: str
    description: str
    licence: str
    globs: tuple[str, ...]
    shared_numbering: tuple[str, ...] = ()
    fermatas: bool = False  # whether its pieces mark fermatas (kept in FERMATAS beside the MIDI files)

    def paths(self) -> list[Path]:
        """The collection's files, sorted; where two globs match a folder/stem pair the earlier glob wins."""
        root, seen, out = _corpus_root(), set(), []
        for pattern in self.globs:
            for path in sorted(root.glob(pattern)):
                if path.is_file() and (path.parent, path.stem) not in seen:
                    seen.add((path.parent, path.stem))
                    out.append(path)
        return out


class _Piece(NamedTuple):
    source: Path
    number: int | None  # ABC reference number (X:) inside a book
    stem: str  # output file name, without .mid
    label: str  # the name reports use


@dataclass
class ExportReport:
    """What `export` did: files written, pieces skipped (piece, reason) and files already present."""

    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    existing: int = 0


COLLECTIONS: dict[str, Collection] = {c.name: c for c in (
    Collection("bach", "J. S. Bach's four-part chorales (~410, MusicXML)", _M21_LICENCE,
               ("bach/bwv*.mxl", "bach/bwv*.xml"), fermatas=True),
    Collection("folk", "Irish/Scottish/American fiddle tunes: O'Neill's Music of Ireland (1850) and "
               "Ryan's Mammoth Collection (~2,900 ABC tunes, one melody each)", _M21_LICENCE,
               ("oneills1850/*.abc", "ryansMammoth/*.abc"), shared_numbering=("oneills1850",)),
    Collection("essen", "Essen folksong subset: German, other European and Chinese songs (~8,500 ABC melodies)",
               "legal status unclear (music21/corpus/essenFolksong/license.txt)", ("essenFolksong/*.abc",)),
    Collection("palestrina", "Palestrina mass movements (~1,300, Humdrum)",
               "Copyright 2000 John Miller, Humdrum licensing agreement (see each file's header)",
               ("palestrina/*.krn",)),
    Collection("monteverdi", "Monteverdi madrigals, books 3-5 (49, MusicXML)", _M21_LICENCE, ("monteverdi/*.mxl",)),
    Collection("trecento", "14th-century Italian polyphony (~100, MusicXML)", _M21_LICENCE,
               ("trecento/*.xml", "trecento/*.mxl")),
)}


def list_collections() -> list[Collection]:
    """All built-in collections, in a fixed order."""
    return list(COLLECTIONS.values())


def export(name: str, out_dir: Path, *, jobs: int | None = None, limit: int | None = None,
           force: bool = False, progress: bool = True) -> ExportReport:
    """Export collection `name` as `<corpus path>[_<tune>].mid` files into `out_dir`.

    Existing files are kept unless `force`; `limit` caps how many pieces are considered.
    """
    if name not in COLLECTIONS:
        raise ConfigError(f"unknown corpus {name!r}; known: {', '.join(COLLECTIONS)}")
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    if jobs < 1 or (limit is not None and limit < 0):
        raise ConfigError(f"jobs must be >= 1 and limit >= 0 (got jobs={jobs}, limit={limit})")
    pieces = _pieces(COLLECTIONS[name])
    if not pieces:
        raise MusiclstmError(f"music21's corpus at {_corpus_root()} has no files for {name!r}")
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MusiclstmError(f"cannot create {out_dir}: {e.strerror or e}") from e
    targets = [(piece, out_dir / f"{piece.stem}.mid") for piece in pieces[:limit]]
    todo = [(piece, dest) for piece, dest in targets if force or not dest.exists()]
    report = ExportReport(existing=len(targets) - len(todo))
    if todo:
        _run(todo, min(jobs, len(todo)), report, progress=progress and sys.stderr.isatty(), desc=name)
    report.written.sort()
    report.skipped.sort()
    if COLLECTIONS[name].fermatas and (todo or not (out_dir / FERMATAS).exists()):
        _write_fermatas(out_dir, [(p, d) for p, d in targets if d.exists()])
    return report


FERMATAS = "fermatas.json"  # beside an exported collection's MIDI files: {file name: [fermata quarters]}


def _write_fermatas(out_dir: Path, done: list[tuple[_Piece, Path]]) -> None:
    import json

    from ..io.midi import fermatas

    marks = {}
    for piece, dest in done:
        with contextlib.suppress(MusiclstmError):  # a piece whose marks cannot be read has none recorded
            marks[dest.name] = fermatas(piece.source)
    (out_dir / FERMATAS).write_text(json.dumps(marks, indent=0))


def fermatas_of(path: str | os.PathLike) -> list[float] | None:
    """Where the notes of a piece under a fermata start (quarters, as `io.midi.read` places them): a notation
    file's own marks, else its folder's `fermatas.json` (written by `export`); None when nothing says."""
    import json

    from ..io.midi import NOTATION_SUFFIXES, fermatas

    path = Path(path)
    if path.suffix.lower() in NOTATION_SUFFIXES:
        with contextlib.suppress(MusiclstmError):
            return fermatas(path)
        return None
    sidecar = path.parent / FERMATAS
    if not sidecar.is_file():
        return None
    try:
        marks = json.loads(sidecar.read_text()).get(path.name)
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(marks, list) or not all(isinstance(q, int | float) for q in marks):
        return None
    return [float(q) for q in marks]


def _run(todo: list[tuple[_Piece, Path]], jobs: int, report: ExportReport, *, progress: bool, desc: str) -> None:
    from tqdm import tqdm

    pool = ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker)
    try:
        futures = {pool.submit(_export_one, str(p.source), p.number, str(dest), PIECE_TIMEOUT_S): (p, dest)
                   for p, dest in todo}
        with tqdm(total=len(todo), desc=f"export {desc}", unit="piece", disable=not progress) as bar:
            for fut in as_completed(futures):
                piece, dest = futures[fut]
                try:
                    reason = fut.result()
                except BrokenProcessPool:
                    reason = "worker process died"
                except (Exception, _PieceTimeout) as e:  # e.g. the alarm firing as the piece finished
                    reason = f"{type(e).__name__}: {e}"
                if reason is None:
                    report.written.append(dest)
                else:
                    report.skipped.append((piece.label, reason))
                bar.update()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _corpus_root() -> Path:
    from music21.common import getCorpusFilePath

    return Path(getCorpusFilePath())


def _pieces(collection: Collection) -> list[_Piece]:
    """Every piece of the collection: one per file, or one per tune (X: number) of an ABC file."""
    root, out, seen = _corpus_root(), [], set()
    for path in collection.paths():
        rel = path.relative_to(root)
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(rel.with_suffix("").parts))
        if path.suffix.lower() != ".abc":
            out.append(_Piece(path, None, stem, rel.as_posix()))
            continue
        numbers = abc_tunes(path.read_text(encoding="latin-1"))
        for n in numbers:
            if rel.parts[0] in collection.shared_numbering and (rel.parts[0], n) in seen:
                continue
            seen.add((rel.parts[0], n))
            out.append(_Piece(path, n, stem if len(numbers) == 1 else f"{stem}_{n}", f"{rel.as_posix()}#X:{n}"))
    return out


class _PieceTimeout(BaseException):
    """Raised by the alarm; a BaseException so music21's own `except Exception` blocks cannot swallow it."""


def _on_alarm(signum: int, frame: object) -> None:
    raise _PieceTimeout


def _init_worker() -> None:
    """Worker set-up: music21 writes MIDI at EXPORT_TPQ, with a one-quarter start/end pad at that rate."""
    import music21

    music21.defaults.ticksPerQuarter = EXPORT_TPQ
    music21.defaults.ticksAtStart = EXPORT_TPQ
    if hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, _on_alarm)


# Chorale parts keep their own programs so that remi (which tells tracks apart by program) keeps four
# voices: a string quartet, highest to lowest, the voice name kept as the track name.
VOICE_PROGRAMS = {"soprano": 40, "alto": 41, "tenor": 42, "bass": 43}


def _pickup(score) -> float:
    """Quarter notes missing from an incomplete first bar (an anacrusis), 0 when the first bar is whole."""
    measure = score.recurse().getElementsByClass("Measure").first()
    return float(measure.paddingLeft) if measure is not None and measure.paddingLeft else 0.0


def _fix_midi(midi, pickup: float):
    """Put bar lines where the music has them and keep chorale voices apart.

    music21 starts the first bar at tick 0 even when it is a pickup, so every bar line lands off the real
    one; shifting the notes right by the missing part of the bar restores them (meter, key and tempo stay
    at tick 0). Tracks named Soprano/Alto/Tenor/Bass get distinct programs (`VOICE_PROGRAMS`); when all
    four are there, other parts (a doubling horn) and empty tracks are left out.
    """
    if pickup > 0:
        shift = round(pickup * midi.ticks_per_quarter)
        for track in midi.tracks:
            track.shift_time(shift, inplace=True)
        for events in (midi.tempos, midi.time_signatures, midi.key_signatures):
            for ev in events:
                if ev.time > 0:
                    ev.time += shift
    named = {t.name.strip().lower(): t for t in midi.tracks if t.notes and t.name.strip().lower() in VOICE_PROGRAMS}
    if len(named) == len(VOICE_PROGRAMS):
        keep = [named[v] for v in VOICE_PROGRAMS]
        for voice, track in zip(VOICE_PROGRAMS, keep, strict=True):
            track.program, track.name = VOICE_PROGRAMS[voice], voice.capitalize()
        midi.tracks = keep
    return midi


def _export_one(source: str, number: int | None, dest: str, timeout: float) -> str | None:
    """Convert one piece to MIDI at `dest`; None on success, else a one-line reason (error, timeout, runaway
    repeat expansion)."""
    import music21
    import symusic

    alarm = hasattr(signal, "SIGALRM")
    if alarm:
        signal.setitimer(signal.ITIMER_REAL, timeout)
    try:  # no pickle cache: nothing written outside out_dir, no races between workers
        score = music21.converter.parseFile(source, number=number, forceSource=True, storePickle=False)
        clean_music21(score)
        if next(iter(score.recurse().notes), None) is None:
            return "no notes"
        notated = float(score.highestTime)
        data = music21.midi.translate.music21ObjectToMidiFile(score).writestr()
    except _PieceTimeout:
        return f"timed out after {timeout:g} s"
    except Exception as e:  # music21 raises many unrelated types (StreamException, ExpanderException, ...)
        return " ".join(f"{type(e).__name__}: {e}".split())[:300]
    finally:
        if alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
    midi = symusic.Score.from_midi(data)
    played = midi.end() / EXPORT_TPQ
    if played > MAX_EXPANSION * notated + 1:
        return f"repeats expand {notated:g} quarter notes to {played:,.0f} (music21 repeat expansion)"
    data = _fix_midi(midi, _pickup(score)).dumps_midi()
    tmp = Path(dest).with_name(f".{Path(dest).name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, dest)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return f"cannot write {dest}: {e.strerror or e}"
    return None
