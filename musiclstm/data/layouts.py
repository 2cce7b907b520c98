"""`corpus fetch`'s layout checks: what an unpacked corpus must hold before it is moved into place (counts of
pieces where the readers expect them, a sample read by `midi.read`, or the JSB splits read by `load_jsb`).

May import: errors, io, encodings, data (corpus, sources). Not: models, training, generation, evaluation, app.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from pathlib import Path

from ..errors import MusiclstmError
from .sources import Source


def check_layout(root: Path, source: Source) -> tuple[int, str]:
    """Raise unless `root` holds the source's layout; returns (pieces, one-line summary)."""
    return _CHECKS[source.name](root, source)


def _fail(source: Source, what: str):
    raise MusiclstmError(f"{source.name}: {what} (expected {source.layout}); nothing was written")


def _readable(files: list[Path], root: Path, source: Source, sample: int = 5) -> None:
    """Read a spread-out sample with musiclstm's own reader; most of it must read (Lakh has corrupt files)."""
    from ..errors import MidiReadError
    from ..io.midi import read

    n = len(files)
    picks = files if n <= sample else [files[i * (n - 1) // (sample - 1)] for i in range(sample)]
    bad = []
    for p in picks:
        try:
            read(p)
        except MidiReadError as e:
            bad.append(f"{p.relative_to(root)}: {e.reason}")
    if len(bad) * 2 > len(picks):
        _fail(source, f"{len(bad)} of {len(picks)} sampled files do not read ({bad[0]})")


def _found(root: Path) -> list[Path]:
    from .corpus import find_files

    return find_files(root)


def _check_pop909(root: Path, source: Source) -> tuple[int, str]:
    songs = sorted(p for p in (root / "POP909").glob("*/*.mid") if re.fullmatch(r"\d{3}", p.parent.name)
                   and p.stem == p.parent.name)
    if len(songs) < source.expect:
        _fail(source, f"found {len(songs)} songs as POP909/NNN/NNN.mid, not {source.expect}")
    _readable(songs, root, source)
    versions = len(list((root / "POP909").glob("*/versions/*.mid")))
    return len(songs), f"{len(songs)} songs (POP909/NNN/NNN.mid) and {versions} alternative versions"


def _check_nottingham(root: Path, source: Source) -> tuple[int, str]:
    tunes = sorted((root / "MIDI").glob("*.mid"))
    if len(tunes) < source.expect:
        _fail(source, f"found {len(tunes)} tunes as MIDI/*.mid, not {source.expect}")
    _readable(tunes, root, source)
    return len(tunes), f"{len(tunes)} tunes (MIDI/*.mid; melody/ and chords/ below it split the same tunes)"


def _check_lmd(root: Path, source: Source) -> tuple[int, str]:
    songs = [p for p in _found(root) if len(p.relative_to(root).parts) == 2]
    if len(songs) < source.expect:
        _fail(source, f"found {len(songs)} songs as <Artist>/<Title>.mid, at least {source.expect:,} expected")
    _readable(songs, root, source)
    artists = len({p.parent.name for p in songs})
    return len(songs), f"{len(songs):,} songs by {artists:,} artists (<Artist>/<Title>.mid)"


def _check_maestro(root: Path, source: Source) -> tuple[int, str]:
    table = root / "maestro-v3.0.0.csv"
    if not table.is_file():
        _fail(source, "maestro-v3.0.0.csv is missing")
    with open(table, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    missing = [r.get("midi_filename") for r in rows if not r.get("midi_filename")
               or not (root / r["midi_filename"]).is_file()]
    if missing:
        _fail(source, f"{len(missing)} files listed in maestro-v3.0.0.csv are missing, e.g. {missing[0]}")
    found = _found(root)
    if len(rows) != source.expect or len(found) != source.expect:
        _fail(source, f"{len(rows)} rows in maestro-v3.0.0.csv and {len(found)} MIDI files, not {source.expect}")
    _readable(found, root, source)
    splits = {}
    for r in rows:
        splits[r.get("split", "?")] = splits.get(r.get("split", "?"), 0) + 1
    order = ["train", "validation", "test"]
    said = ", ".join(f"{k} {v}" for k, v in sorted(splits.items(), key=lambda kv: (order + [kv[0]]).index(kv[0])))
    return len(found), f"{len(found):,} performances (<year>/<name>.midi; {said})"


def _check_jsb(root: Path, source: Source) -> tuple[int, str]:
    from ..encodings.grid import load_jsb

    counts = None
    for remote in source.remotes:
        path = root / remote.filename
        try:
            splits = load_jsb(path)
        except (ValueError, KeyError, TypeError, OSError) as e:
            _fail(source, f"{remote.filename} is not a JSB Chorales file ({type(e).__name__}: {e})")
        counts = {k: len(v) for k, v in splits.items()}
        if counts != source.splits:
            _fail(source, f"{remote.filename} has train/valid/test {'/'.join(map(str, counts.values()))}, "
                          f"not {'/'.join(map(str, source.splits.values()))}")
        if "separated" in remote.filename.lower():
            bad = [a.shape for v in splits.values() for a in v if a.ndim != 2 or a.shape[1] != 4]
            if bad:
                _fail(source, f"{remote.filename} has chorales of shape {bad[0]}, not (steps, 4 voices)")
    n = sum(counts.values())
    return n, f"{n} chorales (train/valid/test {'/'.join(map(str, counts.values()))}) in {len(source.remotes)} files"


_CHECKS: dict[str, Callable[[Path, Source], tuple[int, str]]] = {
    "pop909": _check_pop909, "nottingham": _check_nottingham, "jsb": _check_jsb, "lmd-clean": _check_lmd,
    "maestro": _check_maestro,
}

