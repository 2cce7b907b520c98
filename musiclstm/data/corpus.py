"""A corpus: which files it has, their split (train/valid/test) and style, the pieces as token ids.

`Corpus` and `Piece` are what `preparation.prepare` returns; `sequence` frames a piece as the model reads
it (BOS [STYLE] ids EOS, `Tokenizer.frame`); `fingerprint` is the one data fingerprint.
May import: errors, io, encodings, data (sequences, store). Not: models, training, generation, evaluation, app.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..encodings.tokenizer import Tokenizer
from ..encodings.traits import count_notes, note_ranges
from ..io.midi import MIDI_SUFFIXES, NOTATION_SUFFIXES
from . import store as st
from .sequences import Sequences


def default_cache_dir() -> Path:
    return Path(os.environ.get("MUSICLSTM_CACHE", Path.home() / ".cache" / "musiclstm"))


@dataclass
class Piece:
    """One usable file (or tune of an ABC book): where it came from, its content hash, style, split and ids.

    `ids` (n,) are the token ids without BOS/EOS; for a prepared corpus a read-only view into its token store
    (uint16 or int32)."""

    path: Path
    sha: str
    style: str | None
    split: str
    ids: np.ndarray
    seconds: float
    meter_repaired: bool = False  # a one-beat meter throughout, read as 4/4 (remi v2)
    tune: int | None = None  # the tune's reference number (X:) in a multi-tune ABC file

    @property
    def name(self) -> str:
        """The file, and the tune number for a tune of an ABC book (as reports name it)."""
        return str(self.path) if self.tune is None else f"{self.path}#X:{self.tune}"


class Corpus:
    """The prepared data and its report.

    A corpus from `prepare` is backed by its token store: `sequences(split)` reads it through a memory map,
    and the report comes from its index, so neither holds the corpus in memory. `pieces` (made on first use,
    their ids viewing the store) is for code that wants them one by one. A corpus can also be built from a
    list of pieces in memory (as `benchmark jsb` does).
    """

    def __init__(self, pieces: list[Piece] | None = None, skipped=None, duplicates=None, fingerprint: str = "",
                 tokenizer: Tokenizer | None = None, *, store: st.TokenStore | None = None):
        self._pieces = pieces
        self.skipped: list[tuple[str, str]] = [tuple(s) for s in skipped or []]  # (file, reason)
        self.duplicates: list[tuple[str, str]] = [tuple(d) for d in duplicates or []]  # (file, same as file)
        self.fingerprint = fingerprint
        self.tokenizer = tokenizer  # the tokenizer the ids were made with
        self.store = store
        self.tokenized = 0  # pieces this process tokenized while preparing (the rest came from the cache)

    @property
    def pieces(self) -> list[Piece]:
        if self._pieces is None and self.store is None:
            self._pieces = []
        if self._pieces is None:
            s = self.store
            ix, styles = s.index, s.meta["styles"]
            self._pieces = [Piece(Path(s.path(k)), ix["sha"][k].decode(),
                                  styles[ix["style"][k]] if ix["style"][k] >= 0 else None,
                                  st.SPLITS[ix["split"][k]], s.ids(k), float(ix["seconds"][k]),
                                  bool(ix["repaired"][k]), int(ix["tune"][k]) if ix["tune"][k] >= 0 else None)
                            for k in range(len(s))]
        return self._pieces

    def split(self, name: str) -> list[Piece]:
        return [p for p in self.pieces if p.split == name]

    def sequences(self, split: str) -> Sequences:
        """The split's pieces as the model reads them (BOS [STYLE] ids EOS), laid end to end."""
        if self.store is not None:
            return self.store.sequences(split)
        return Sequences.of([sequence(p, self.tokenizer) for p in self.split(split)])

    def _columns(self) -> dict[str, np.ndarray]:
        """Per piece: split (0 train, 1 valid), tokens (ids only), seconds, repaired, notes."""
        if self.store is not None:
            ix = self.store.index
            return {"split": ix["split"], "tokens": ix["length"] - ix["head"] - 1, "seconds": ix["seconds"],
                    "repaired": ix["repaired"], "notes": ix["notes"]}
        ranges = note_ranges(self.tokenizer)
        ps = self.pieces
        return {"split": np.array([st.SPLITS.index(p.split) if p.split in st.SPLITS else 2 for p in ps]),
                "tokens": np.array([len(p.ids) for p in ps], np.int64),
                "seconds": np.array([p.seconds for p in ps], np.float64),
                "repaired": np.array([p.meter_repaired for p in ps], bool),
                "notes": np.array([count_notes(p.ids, ranges) for p in ps], np.int64)}

    def report(self) -> str:
        c = self._columns()
        lines = [f"{len(c['split'])} pieces read ({int((c['split'] == 0).sum())} train, "
                 f"{int((c['split'] == 1).sum())} valid), {int(c['tokens'].sum()):,} tokens, "
                 f"{sum(c['seconds'].tolist()) / 3600:.2f} hours of music; "
                 f"{len(self.skipped)} skipped, {len(self.duplicates)} duplicates"]
        repaired = int(c["repaired"].sum())
        if repaired:
            lines.append(f"  {repaired} files with one-beat bars throughout (such as 1/4) read as 4/4")
        lines += [f"  skipped {f}: {why}" for f, why in self.skipped[:50]]
        if len(self.skipped) > 50:
            lines.append(f"  ... and {len(self.skipped) - 50} more skipped")
        lines += [f"  duplicate {f} (same as {g})" for f, g in self.duplicates[:20]]
        return "\n".join(lines)

    def programs(self) -> list[int]:
        """The General MIDI programs (128 = drums) the training pieces use; [] for encodings without them."""
        v = self.tokenizer.vocab if self.tokenizer is not None else None
        if v is None or "PROGRAM" not in v.offset:
            return []
        if self.store is not None:
            return list(self.store.meta["programs"])
        o = v.offset["PROGRAM"]
        used = {int(i) - o for p in self.split("train") for i in np.unique(p.ids) if o <= i < o + 129}
        return sorted(used)

    def pitch_range(self) -> list[int] | None:
        """The lowest and highest pitched note (drums aside) in the training pieces; None when unknown."""
        v = self.tokenizer.vocab if self.tokenizer is not None else None
        kind = next((k for k in ("PITCH", "NOTE_ON") if v is not None and k in v.offset), None)
        if kind is None:
            return None
        if self.store is not None:
            return self.store.meta.get("pitch_range")
        o = v.offset[kind]
        used = [int(i) - o for p in self.split("train") for i in np.unique(p.ids) if o <= i < o + 128]
        return [min(used), max(used)] if used else None

    def density_p99(self) -> float | None:
        """99th percentile of notes per second over the training pieces (what a runaway sample exceeds)."""
        c = self._columns()
        train = (c["split"] == 0) & (c["seconds"] > 0)
        if not note_ranges(self.tokenizer) or not train.any():
            return None
        return float(np.percentile(c["notes"][train] / np.maximum(c["seconds"][train], 1.0), 99))

    def to_json(self) -> dict:
        c = self._columns()
        return {"files": len(c["split"]), "tokens": int(c["tokens"].sum()), "hours": sum(c["seconds"].tolist()) / 3600,
                "programs": self.programs(), "density_p99": self.density_p99(), "pitch_range": self.pitch_range(),
                "meter_repaired": int(c["repaired"].sum()), "skipped": self.skipped,
                "duplicates": self.duplicates, "fingerprint": self.fingerprint}


def as_paths(corpus) -> list[Path]:
    """A folder, a file, or a list of them -> a list of paths."""
    return [Path(c) for c in (corpus if isinstance(corpus, list | tuple) else [corpus])]


def _walk(root: Path):
    """Yield (path, size, mtime_ns, ctime_ns) of every music file under `root` (recursive, case-insensitive suffixes,
    no hidden files, symlinked folders not followed), sorted as `find_files` sorts them, one stat each."""
    if root.is_file():
        s = root.stat()
        yield str(root), s.st_size, s.st_mtime_ns, s.st_ctime_ns
        return
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    for e in entries:  # sorted by name, a folder's files in its place: the order of sorted(Path.parts)
        if e.is_dir(follow_symlinks=False):
            yield from _walk(Path(e.path))
        elif not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in _SUFFIXES and e.is_file():
            s = e.stat()
            yield e.path, s.st_size, s.st_mtime_ns, s.st_ctime_ns


def find_files(corpus: Path) -> list[Path]:
    """Music files under `corpus` (recursive, case-insensitive suffixes), sorted."""
    return [Path(p) for p, *_ in _walk(Path(corpus))]


def style_of(path: Path, root: Path, mode: str) -> str | None:
    if mode == "none":
        return None
    if mode == "corpus" or path == root:
        return root.name
    rel = path.relative_to(root).parts
    return rel[0] if len(rel) > 1 else root.name


def _csv_splits(root: Path) -> dict[str, str]:
    """A MAESTRO-style csv at the corpus root: {relative file name: split}."""
    out: dict[str, str] = {}
    for f in root.glob("*.csv") if root.is_dir() else []:
        with f.open(newline="", encoding="utf-8", errors="replace") as fh:
            for row in csv.DictReader(fh):
                name = row.get("midi_filename") or row.get("filename") or row.get("file")
                split = (row.get("split") or "").strip().lower()
                if name and split:
                    out[name] = {"validation": "valid", "val": "valid"}.get(split, split)
    return out


def _hash_split(sha: str, val_fraction: float) -> str:
    return "valid" if int(sha[:8], 16) / 0xFFFFFFFF < val_fraction else "train"


def sequence(piece: Piece, tokenizer: Tokenizer) -> np.ndarray:
    """One piece as the model reads it: BOS [STYLE] ids EOS (`Tokenizer.frame`; a style the tokenizer
    does not know is left out)."""
    return tokenizer.frame(piece.ids, style=piece.style, strict=False)


def fingerprint(tok_dict: dict, rows) -> str:
    """The data fingerprint a run records and `evaluate` checks: the tokenizer config and every piece's
    (content sha1, split, style), in sha order (16 hex digits of a sha256)."""
    h = hashlib.sha256(json.dumps(tok_dict, sort_keys=True).encode())
    for sha, split, style in sorted(rows, key=lambda r: r[0]):
        h.update(f"{sha}:{split}:{style}".encode())
    return h.hexdigest()[:16]


_SUFFIXES = MIDI_SUFFIXES | NOTATION_SUFFIXES
