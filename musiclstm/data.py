"""Corpus preparation: find files, tokenize once into a cache, report, split, and cut windows.

The cache holds one `.npy` of token ids per (file content, tokenizer config): a second run, or a
run on an overlapping corpus, reads ids instead of MIDI. An ABC book (several `X:` tunes in one file)
gives one piece per tune, cached per (file content, tune). Files are read in worker processes so
a file that crashes or hangs a parser cannot take the run down with it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .encodings import remi
from .errors import ConfigError, MidiReadError, MusiclstmError
from .midi import NOTATION_SUFFIXES, abc_tunes, is_music_file
from .tokenizer import Tokenizer

ENCODERS_VERSION = 3  # bump when an encoder's output changes for the same config: old cache entries are ignored
NOTATION_VERSION = 2  # the same for midi.read's music21 path (MusicXML, ABC, Humdrum files only)


def default_cache_dir() -> Path:
    return Path(os.environ.get("MUSICLSTM_CACHE", Path.home() / ".cache" / "musiclstm"))


@dataclass
class Piece:
    """One usable file: where it came from, its content hash, style, split and token ids."""

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


@dataclass
class Corpus:
    """The prepared data and its report."""

    pieces: list[Piece]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (file, same as file)
    fingerprint: str = ""
    tokenizer: Tokenizer | None = None  # the tokenizer the ids were made with

    def split(self, name: str) -> list[Piece]:
        return [p for p in self.pieces if p.split == name]

    def report(self) -> str:
        tokens = sum(len(p.ids) for p in self.pieces)
        hours = sum(p.seconds for p in self.pieces) / 3600
        lines = [f"{len(self.pieces)} pieces read ({len(self.split('train'))} train, "
                 f"{len(self.split('valid'))} valid), {tokens:,} tokens, {hours:.2f} hours of music; "
                 f"{len(self.skipped)} skipped, {len(self.duplicates)} duplicates"]
        repaired = sum(p.meter_repaired for p in self.pieces)
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
        o = v.offset["PROGRAM"]
        used = {int(i) - o for p in self.split("train") for i in np.unique(p.ids) if o <= i < o + 129}
        return sorted(used)

    def density_p99(self) -> float | None:
        """99th percentile of notes per second over the training pieces (what a runaway sample exceeds)."""
        v = self.tokenizer.vocab if self.tokenizer is not None else None
        kinds = [k for k in ("PITCH", "DRUM", "NOTE_ON") if v is not None and k in v.offset]
        pieces = [p for p in self.split("train") if p.seconds > 0]
        if not kinds or not pieces:
            return None
        def notes(ids):  # noqa: E306
            return sum(int(((ids >= v.offset[k]) & (ids < v.offset[k] + 128)).sum()) for k in kinds)
        return float(np.percentile([notes(p.ids) / max(p.seconds, 1.0) for p in pieces], 99))

    def to_json(self) -> dict:
        return {"files": len(self.pieces), "tokens": int(sum(len(p.ids) for p in self.pieces)),
                "hours": sum(p.seconds for p in self.pieces) / 3600, "programs": self.programs(),
                "density_p99": self.density_p99(),
                "meter_repaired": sum(p.meter_repaired for p in self.pieces), "skipped": self.skipped,
                "duplicates": self.duplicates, "fingerprint": self.fingerprint}


def as_paths(corpus) -> list[Path]:
    """A folder, a file, or a list of them -> a list of paths."""
    return [Path(c) for c in (corpus if isinstance(corpus, list | tuple) else [corpus])]


def find_files(corpus: Path) -> list[Path]:
    """Music files under `corpus` (recursive, case-insensitive suffixes), sorted."""
    if corpus.is_file():
        return [corpus]
    return sorted(p for p in corpus.rglob("*") if p.is_file() and is_music_file(p) and not p.name.startswith("."))


def _style_of(path: Path, root: Path, mode: str) -> str | None:
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


def _tunes(path: Path) -> list[int | None]:
    """The pieces of a file: [None] (the whole file), or each tune's number for an ABC file with several."""
    if path.suffix.lower() != ".abc":
        return [None]
    try:
        tunes = abc_tunes(path.read_text(encoding="latin-1"))
    except OSError:
        return [None]  # _prepare_one reports it
    return tunes if len(tunes) > 1 else [None]


def _prepare_one(args: tuple) -> tuple[str, str, str | None, float, bool]:
    """Worker: (path, tokenizer dict, cache dir[, tune]) -> (sha, cache file or "", error, seconds, meter repaired).

    A tune of an ABC book has the sha of the file's content and its number, so it is cached (and split) alone.
    """
    path, tok_dict, cache_dir, *tune = args
    tune = tune[0] if tune else None
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return "", "", f"cannot read: {e.strerror or e}", 0.0, False
    key = json.dumps(tok_dict, sort_keys=True) + f"/encoders-v{ENCODERS_VERSION}"
    if Path(path).suffix.lower() in NOTATION_SUFFIXES:
        key += f"/notation-v{NOTATION_VERSION}"
    tok_key = hashlib.sha1(key.encode()).hexdigest()[:12]
    sha = hashlib.sha1(data if tune is None else data + f"\0X:{tune}".encode()).hexdigest()
    out = Path(cache_dir) / tok_key / sha[:2] / f"{sha}.npz"
    if out.exists():
        try:
            with np.load(out) as z:
                return sha, str(out), None, float(z["seconds"]), bool(z["meter_repaired"])
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is simply rebuilt
    tok = Tokenizer.from_dict(tok_dict)
    try:
        from .midi import read

        notation = Path(path).suffix.lower() in NOTATION_SUFFIXES
        score = read(path if notation else data, name=path if tune is None else f"{path}#X:{tune}", tune=tune)
        if len(score) == 0:
            return sha, "", "no notes", 0.0, False
        ids = tok.codec.encode(score, tok.vocab)
    except MidiReadError as e:
        return sha, "", e.reason, 0.0, False
    if len(ids) == 0:
        return sha, "", f"no notes the {tok.encoding} encoding keeps", 0.0, False
    repaired = getattr(tok.config, "version", 1) >= 2 and tok.encoding == "remi" and \
        not remi.plausible_meter(score.time_signatures)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, ids=ids.astype(np.int32), seconds=score.duration_seconds, meter_repaired=repaired)
    os.replace(tmp, out)
    return sha, str(out), None, score.duration_seconds, repaired


def prepare(corpora: list[Path], tokenizer: Tokenizer, *, val_fraction: float = 0.1, styles: str = "none",
            jobs: int | None = None, cache_dir: Path | None = None, progress: bool = True) -> Corpus:
    """Tokenize every music file (every tune of an ABC book) of `corpora`, cached, and split it by piece,
    deterministically."""
    from tqdm.auto import tqdm

    cache_dir = Path(cache_dir or default_cache_dir())
    jobs = max(1, jobs or os.cpu_count() or 1)
    items: list[tuple[Path, Path, int | None]] = []
    for root in corpora:
        root = Path(root)
        if not root.exists():
            raise ConfigError(f"corpus {root} does not exist")
        items += [(f, root, tune) for f in find_files(root) for tune in _tunes(f)]
    if not items:
        raise MusiclstmError(f"no music files (.mid, .midi, .kar, MusicXML, ABC) in {', '.join(map(str, corpora))}")
    tok_dict = tokenizer.to_dict()
    args = [(str(f), tok_dict, str(cache_dir), tune) for f, _, tune in items]
    bar = dict(total=len(args), desc="preparing", unit="file", disable=not progress, leave=False)
    if jobs == 1 or len(args) < 8:
        results = [_prepare_one(a) for a in tqdm(args, **bar)]
    else:
        with ProcessPoolExecutor(jobs) as pool:
            results = list(tqdm(pool.map(_prepare_one, args, chunksize=8), **bar))

    corpus = Corpus([], tokenizer=tokenizer)
    seen: dict[str, str] = {}
    splits = {root: _csv_splits(root) for root in {r for _, r, _ in items}}
    for (f, root, tune), (sha, cached, err, seconds, repaired) in zip(items, results, strict=True):
        name = str(f) if tune is None else f"{f}#X:{tune}"
        if err is not None:
            corpus.skipped.append((name, err))
            continue
        if sha in seen:
            corpus.duplicates.append((name, seen[sha]))
            continue
        seen[sha] = name
        with np.load(cached) as z:
            ids = z["ids"].astype(np.int64)
        rel = f.relative_to(root).as_posix() if root.is_dir() else f.name
        split = splits[root].get(rel) or _hash_split(sha, val_fraction)
        if split not in ("train", "valid"):
            continue  # e.g. MAESTRO's test split is left out of training
        corpus.pieces.append(Piece(f, sha, _style_of(f, root, styles), split, ids, seconds, repaired, tune))
    if not corpus.pieces:
        reasons = "; ".join(sorted({why for _, why in corpus.skipped}))[:200]
        raise MusiclstmError(f"no readable music in {', '.join(map(str, corpora))} ({reasons or 'all duplicates'})")
    if not corpus.split("train"):  # tiny corpora: keep at least one training file
        corpus.pieces[0].split = "train"
    if val_fraction > 0 and not corpus.split("valid") and len(corpus.pieces) > 1:
        corpus.pieces[-1].split = "valid"
    h = hashlib.sha256(json.dumps(tok_dict, sort_keys=True).encode())
    for p in sorted(corpus.pieces, key=lambda p: p.sha):
        h.update(f"{p.sha}:{p.split}:{p.style}".encode())
    corpus.fingerprint = h.hexdigest()[:16]
    return corpus


def sequence(piece: Piece, tokenizer: Tokenizer) -> np.ndarray:
    """One piece as the model reads it: BOS [STYLE] ids EOS (int64)."""
    from .tokenizer import BOS, EOS

    head = [BOS] + ([tokenizer.style_id(piece.style)] if piece.style is not None and tokenizer.styles else [])
    return np.concatenate([np.array(head, np.int64), piece.ids, np.array([EOS], np.int64)])


def stream(pieces: list[Piece], tokenizer: Tokenizer) -> torch.Tensor:
    """All pieces laid end to end, each as BOS [STYLE] ids EOS: a 1-D int64 tensor."""
    parts = [sequence(p, tokenizer) for p in pieces]
    return torch.from_numpy(np.concatenate(parts)) if parts else torch.zeros(0, dtype=torch.long)


class PieceWindows:
    """Training windows that start every piece from a fresh state, as generation does.

    Each piece (BOS [STYLE] ... EOS) is cut into windows of `length` next-token pairs, its last window
    padded with PAD (which the loss ignores). Pieces are dealt to `batch` lanes, the next piece to the
    lane with the fewest windows, in an order shuffled once per epoch from (seed, epoch) alone, so a
    resumed run deals the same way. Within a piece the LSTM state runs on from window to window
    (truncated BPTT); at a piece's first window the lane's state is reset to zeros: the model never
    sees a piece begin from the end of another, which is the only start `compose` can give it.
    """

    def __init__(self, sequences: list[np.ndarray], batch: int, length: int, *, rank: int = 0, world: int = 1,
                 seed: int = 0, shuffle: bool = True):
        from .tokenizer import PAD

        if not sequences:
            raise MusiclstmError("corpus too small: no pieces")
        self.batch, self.length, self.rank, self.world = batch, length, rank, world
        self.seed, self.shuffle = seed, shuffle
        xs, ys, first, owner = [], [], [], []
        for k, seq in enumerate(sequences):
            n = len(seq) - 1
            w = max(1, -(-n // length))
            x = np.full(w * length, PAD, np.int64)
            y = np.full(w * length, PAD, np.int64)
            x[:n], y[:n] = seq[:-1], seq[1:]
            xs.append(x.reshape(w, length))
            ys.append(y.reshape(w, length))
            first += [True] + [False] * (w - 1)
            owner += [k] * w
        self.x = torch.from_numpy(np.concatenate(xs))  # (windows, T)
        self.y = torch.from_numpy(np.concatenate(ys))
        self.first = torch.tensor(first + [True])  # the last row is the all-PAD window that fills short lanes
        self.x = torch.cat([self.x, torch.full((1, length), PAD)])
        self.y = torch.cat([self.y, torch.full((1, length), PAD)])
        self.starts = np.r_[0, np.cumsum([len(x) for x in xs])]  # piece k's windows: starts[k] .. starts[k+1]
        # dealing to the shortest lane never exceeds the mean by more than the longest piece: every epoch fits
        sizes = np.diff(self.starts)
        self.batches_per_epoch = int(-(-sizes.sum() // (batch * world)) + sizes.max())
        self._cached = (0, self._layout(0))

    def _layout(self, epoch: int) -> np.ndarray:
        """(lanes, steps) window indices for an epoch; the PAD window where a lane has run out."""
        lanes = self.batch * self.world
        n = len(self.starts) - 1
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        rows, sizes = [[] for _ in range(lanes)], np.zeros(lanes, np.int64)
        for k in order:
            lane = int(np.argmin(sizes))
            rows[lane].extend(range(self.starts[k], self.starts[k + 1]))
            sizes[lane] += self.starts[k + 1] - self.starts[k]
        out = np.full((lanes, self.batches_per_epoch), len(self.x) - 1, np.int64)  # the PAD window
        for lane, r in enumerate(rows):
            out[lane, : len(r)] = r
        return out[self.rank * self.batch:(self.rank + 1) * self.batch]

    def get(self, i: int, generator=None, epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batch `i` of `epoch` -> (x (B, T), y (B, T), reset (B,): lanes whose state starts from zeros)."""
        if self._cached[0] != epoch:
            self._cached = (epoch, self._layout(epoch))
        idx = torch.from_numpy(self._cached[1][:, i])
        return self.x[idx], self.y[idx], self.first[idx]


class Windows:
    """Training windows from one token stream, in one of two orders (`PieceWindows` is the default).

    * `tbptt`: the stream is cut into `batch` contiguous lanes and windows are taken in order,
      so the LSTM state can be carried (and detached) from one window to the next.
    * `random`: each batch is `batch` windows at random offsets, state starting from zero.
    `batches_per_epoch` and `get(i, generator)` let a run resume at an exact position.
    """

    def __init__(self, data: torch.Tensor, batch: int, length: int, mode: str = "tbptt", rank: int = 0,
                 world: int = 1):
        if mode not in ("tbptt", "random"):
            raise ConfigError(f"unknown window mode {mode!r}")
        self.mode, self.batch, self.length = mode, batch, length
        if mode == "tbptt":
            lanes = batch * world
            n = (len(data) - 1) // lanes
            if n < 2:
                raise MusiclstmError(f"corpus too small: {len(data)} tokens for {lanes} lanes")
            x = data[: n * lanes].view(lanes, n)[rank * batch:(rank + 1) * batch]
            y = data[1: n * lanes + 1].view(lanes, n)[rank * batch:(rank + 1) * batch]
            self.x, self.y = x, y
            self.batches_per_epoch = max(1, (n - 1) // length + 1)
        else:
            if len(data) < 2:
                raise MusiclstmError("corpus too small")
            self.data = data
            self.length = min(length, len(data) - 1)
            self.batches_per_epoch = max(1, (len(data) - 1) // (batch * self.length * world))

    def get(self, i: int, generator: torch.Generator,
            epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batch `i` of an epoch -> (x (B, T), y (B, T), reset (B,): lanes whose state starts from zeros)."""
        if self.mode == "tbptt":
            s = i * self.length
            x = self.x[:, s: s + self.length]
            return x, self.y[:, s: s + self.length], torch.full((x.shape[0],), i == 0)
        starts = torch.randint(0, len(self.data) - self.length, (self.batch,), generator=generator)
        idx = starts[:, None] + torch.arange(self.length + 1)
        w = self.data[idx]
        return w[:, :-1], w[:, 1:], torch.ones(self.batch, dtype=torch.bool)
