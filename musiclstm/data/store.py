"""The prepared corpus on disk: a cache entry per piece, and a token store per corpus read through a memory map.

Two forms, both under the cache folder and keyed by the tokenizer:

* **Entries**: one piece's token ids, or the reason it cannot be read, keyed by its content hash. Made once,
  in worker processes, each of which writes the entries of a batch of files into one pack file
  (`<tok key>/packs/<name>.pack`, indexed by `<name>.idx`); a corpus that gains files tokenizes only those.
* **Stores** (`<tok key>/stores/<scan key>/`): nanoGPT's `train.bin` for music. Each split's pieces are laid
  end to end as the model reads them (BOS [STYLE] ids EOS) in one flat file, uint16 when the vocabulary
  fits (else int32), beside an index of the pieces (offset and length in their split, file, tune, sha,
  style, split, seconds, ...). Training reads the files through `np.memmap`, so its memory does not grow
  with the corpus: pages come from the operating system's page cache as windows touch them.

A store is keyed by everything that decides its contents short of reading a file: each file's path, size,
modification and change times, the split and style options and the tokenizer. Preparing the same corpus
again opens the store after one `stat` per file, without reading any file.
May import: encodings (the EOS id). Not: io, data.corpus, models, training, generation, evaluation, app.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import struct
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..encodings.tokenizer import EOS

try:
    import fcntl
except ImportError:  # Windows: no leases; prune then goes by the idle time alone
    fcntl = None

FORMAT = 1  # bump when the layout of entries or stores changes
_HEADER = struct.Struct("<4sBBxxd")  # magic, flags, bytes per token, seconds
_MAGIC = b"MLT1"
_REPAIRED, _FAILED = 1, 2
SPLITS = ("train", "valid")


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (as nanoGPT's train.bin), else int32."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.int32)


# ---- per-piece entries, in packs -----------------------------------------------------------------------------

@dataclass
class Entry:
    """One piece's cache entry: its ids (empty when it failed), seconds, one-beat meter repaired, or the reason."""

    ids: np.ndarray
    seconds: float = 0.0
    repaired: bool = False
    error: str | None = None


_INDEX = np.dtype([("sha", "V20"), ("offset", "<u8"), ("length", "<u8")])  # a pack's index (V: raw bytes, NULs kept)


def _entry_bytes(entry: Entry, dtype: np.dtype) -> bytes:
    flags = (_REPAIRED if entry.repaired else 0) | (_FAILED if entry.error is not None else 0)
    body = entry.error.encode() if entry.error is not None else np.asarray(entry.ids).astype(dtype).tobytes()
    return _HEADER.pack(_MAGIC, flags, dtype.itemsize, float(entry.seconds)) + body


def _entry_from(blob: bytes, *, ids: bool = True) -> Entry | None:
    if len(blob) < _HEADER.size:
        return None
    magic, flags, width, seconds = _HEADER.unpack_from(blob)
    if magic != _MAGIC or width not in (2, 4):
        return None
    if flags & _FAILED:
        return Entry(np.zeros(0, np.int64), 0.0, False, blob[_HEADER.size:].decode(errors="replace"))
    arr = np.frombuffer(blob, np.uint16 if width == 2 else np.int32, offset=_HEADER.size) if ids else np.zeros(0)
    return Entry(arr, seconds, bool(flags & _REPAIRED))


def write_pack(folder: str | Path, entries: list[tuple[str, Entry]], dtype: np.dtype) -> dict[str, tuple]:
    """Write entries [(sha hex, Entry)] into one new pack file in `folder` (one file for many pieces: creating
    a file costs more than tokenizing a small one on some disks). Returns {sha: (pack, offset, length)}.

    The pack is published by renaming it, then its index beside it (`.idx`): an index means a whole pack."""
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    name = os.path.join(folder, f"{os.getpid()}-{uuid.uuid4().hex[:16]}")
    blobs = [_entry_bytes(e, np.dtype(dtype)) for _, e in entries]
    offsets = np.r_[0, np.cumsum([len(b) for b in blobs])].astype(np.uint64)
    index = np.zeros(len(blobs), _INDEX)
    index["sha"] = [bytes.fromhex(sha) for sha, _ in entries]
    index["offset"], index["length"] = offsets[:-1], [len(b) for b in blobs]
    for suffix, data in ((".pack", b"".join(blobs)), (".idx", _MAGIC + index.tobytes())):
        with open(name + suffix + ".tmp", "wb") as fh:
            fh.write(data)
        os.replace(name + suffix + ".tmp", name + suffix)
    return {sha: (name + ".pack", int(offsets[k]), len(blobs[k])) for k, (sha, _) in enumerate(entries)}


def read_index(folder: str | Path) -> dict[str, tuple]:
    """{sha: (pack, offset, length)} of every entry in the packs of `folder`."""
    out: dict[str, tuple] = {}
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".idx"))
    except OSError:
        return out
    for n in names:
        try:
            with open(os.path.join(folder, n), "rb") as fh:
                blob = fh.read()
        except OSError:
            continue
        if blob[:4] != _MAGIC or (len(blob) - 4) % _INDEX.itemsize:
            continue
        pack = os.path.join(folder, n[:-4] + ".pack")
        for sha, off, length in np.frombuffer(blob, _INDEX, offset=4).tolist():
            out[bytes(sha).hex()] = (pack, off, length)
    return out


class EntryReader:
    """Reads entries out of packs by (pack, offset, length), keeping a few packs open."""

    def __init__(self):
        self._open: dict[str, int] = {}

    def read(self, where: tuple, *, ids: bool = True) -> Entry | None:
        """The entry at `where`, or None when its pack is missing or damaged (it is then made again).
        `ids=False` reads only the header (and a failure's reason)."""
        pack, offset, length = where
        try:
            fd = self._open.get(pack)
            if fd is None:
                if len(self._open) >= 16:
                    os.close(self._open.pop(next(iter(self._open))))
                fd = self._open[pack] = os.open(pack, os.O_RDONLY)
            head = os.pread(fd, _HEADER.size, offset)
            if len(head) == _HEADER.size and not ids and not _HEADER.unpack(head)[1] & _FAILED:
                return _entry_from(head, ids=False)
            blob = os.pread(fd, length, offset)
        except OSError:
            return None
        return _entry_from(blob, ids=ids) if len(blob) == length else None

    def close(self) -> None:
        for fd in self._open.values():
            os.close(fd)
        self._open.clear()


# ---- sequences laid end to end -------------------------------------------------------------------------------

class Sequences:
    """Pieces laid end to end in one token array: piece k is `tokens[starts[k]:starts[k + 1]]`.

    Reads as a list of pieces (len, iteration, `seqs[k]` an int64 copy of piece k, `seqs[a:b]` a list of
    them); the windows of `data` read `tokens` (often a read-only memory map, uint16 or int32) directly.
    """

    def __init__(self, tokens: np.ndarray, starts: np.ndarray):
        self.tokens = tokens  # (N,)
        self.starts = np.asarray(starts, np.int64)  # (n + 1,)

    @classmethod
    def of(cls, sequences) -> Sequences:
        """A list of 1-D id arrays (or a Sequences, returned as it is) -> Sequences, in memory."""
        if isinstance(sequences, Sequences):
            return sequences
        seqs = [np.asarray(s, np.int64) for s in sequences]
        tokens = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
        return cls(tokens, np.r_[0, np.cumsum([len(s) for s in seqs], dtype=np.int64)])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.starts)

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        k = range(len(self))[k]
        return np.array(self.tokens[self.starts[k]:self.starts[k + 1]], np.int64)

    def __iter__(self):
        return (self[k] for k in range(len(self)))


def gather(tokens: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """(B,) start offsets -> (B, length) int64 windows `tokens[start : start + length]`, indices clipped to the
    array. A memory-mapped `tokens` is read through a fresh map closed afterwards (as nanoGPT does every
    batch), so the pages read do not pile up in the process's resident set over a run."""
    src = tokens
    if isinstance(tokens, np.memmap) and isinstance(tokens.base, mmap.mmap):  # a whole map, not a view of one
        src = np.memmap(tokens.filename, tokens.dtype, mode="r", offset=tokens.offset, shape=tokens.shape)
    idx = np.minimum(np.asarray(starts, np.int64)[:, None] + np.arange(length), len(tokens) - 1)  # (B, length)
    out = np.asarray(src[idx], np.int64)
    del src
    return out


# ---- the store -----------------------------------------------------------------------------------------------

class TokenStore:
    """A store opened from its folder: `sequences(split)`, the piece index `index` (numpy columns) and `meta`.

    index columns, one row per piece in corpus order: split (0 train, 1 valid), start and length (of the
    sequence in its split's array, BOS to EOS), head (tokens before the ids: BOS [STYLE]), seconds,
    repaired, notes (note tokens), tune (-1: the whole file), style (index into meta["styles"], -1: none),
    sha (S40), and the files as UTF-8 text between path_offsets.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._lease = _lease(self.folder)  # a shared lock held while this store is open: `prune` leaves it
        self.meta = json.loads((self.folder / "meta.json").read_text())
        with np.load(self.folder / "index.npz", allow_pickle=False) as z:
            self.index = {k: z[k] for k in z.files}
        self._maps: dict[str, np.ndarray] = {}

    def __getstate__(self):
        return {**self.__dict__, "_lease": None}  # a copy in another process holds no lease of its own

    def __del__(self):
        if getattr(self, "_lease", None) is not None:
            try:
                os.close(self._lease)
            except OSError:
                pass

    def tokens(self, split: str) -> np.ndarray:
        """The split's flat token array, a read-only memory map (an empty array for an empty split)."""
        if split not in self._maps:
            f = self.folder / f"{split}.bin"
            dtype = np.dtype(self.meta["dtype"])
            self._maps[split] = np.memmap(f, dtype, mode="r") if f.stat().st_size else np.zeros(0, dtype)
        return self._maps[split]

    def sequences(self, split: str) -> Sequences:
        rows = self.index["split"] == SPLITS.index(split)
        start, length = self.index["start"][rows], self.index["length"][rows]
        return Sequences(self.tokens(split), np.r_[start, start[-1] + length[-1]] if rows.any() else np.zeros(1))

    def path(self, k: int) -> str:
        o = self.index["path_offsets"]
        return self.index["path_blob"][o[k]:o[k + 1]].tobytes().decode()

    def ids(self, k: int) -> np.ndarray:
        """Piece k's ids (without BOS [STYLE] and EOS): a read-only view into the memory map."""
        s, n, h = (int(self.index[c][k]) for c in ("start", "length", "head"))
        return self.tokens(SPLITS[self.index["split"][k]])[s + h: s + n - 1]

    def __len__(self) -> int:
        return len(self.index["split"])


class StoreWriter:
    """Writes a store into a temporary folder, piece by piece, and publishes it with one rename."""

    def __init__(self, stores: Path, key: str, dtype: np.dtype, note_ranges: list[tuple[int, int]],
                 program_range: tuple[int, int] | None, *, pitch_ids: tuple[int, int] | None = None):
        self.stores, self.key, self.dtype = Path(stores), key, np.dtype(dtype)
        self.tmp = self.stores / f".{key}.{os.getpid()}.tmp"
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.files = {s: open(self.tmp / f"{s}.bin", "wb") for s in SPLITS}
        self.size = dict.fromkeys(SPLITS, 0)
        self.note_ranges, self.program_range = note_ranges, program_range
        self.rows: dict[str, list] = {c: [] for c in ("split", "start", "length", "head", "seconds", "repaired",
                                                        "notes", "tune", "style", "sha")}
        self.paths: list[bytes] = []
        self.programs: set[int] = set()
        self.pitch_ids, self.pitches = pitch_ids, [128, -1]  # the lowest and highest pitch in training pieces

    def add(self, split: str, head: list[int], ids: np.ndarray, *, path: str, sha: str, tune: int | None,
            style: int, seconds: float, repaired: bool) -> None:
        seq = np.concatenate([np.asarray(head, self.dtype), np.asarray(ids).astype(self.dtype, copy=False),
                              np.asarray([EOS], self.dtype)])
        self.files[split].write(seq.tobytes())
        r = self.rows
        r["split"].append(SPLITS.index(split))
        r["start"].append(self.size[split])
        r["length"].append(len(seq))
        r["head"].append(len(head))
        r["seconds"].append(seconds)
        r["repaired"].append(repaired)
        r["notes"].append(sum(int(((ids >= a) & (ids < b)).sum()) for a, b in self.note_ranges))
        r["tune"].append(-1 if tune is None else tune)
        r["style"].append(style)
        r["sha"].append(sha)
        self.paths.append(path.encode())
        self.size[split] += len(seq)
        if split == "train" and self.program_range is not None:
            a, b = self.program_range
            self.programs.update(int(i) - a for i in np.unique(ids[(ids >= a) & (ids < b)]))
        if split == "train" and self.pitch_ids is not None:
            a, b = self.pitch_ids
            used = ids[(ids >= a) & (ids < b)]
            if len(used):
                self.pitches = [min(self.pitches[0], int(used.min()) - a), max(self.pitches[1], int(used.max()) - a)]

    def finish(self, meta: dict) -> Path:
        """Close, write the index and meta, rename into place; returns the store's folder."""
        for f in self.files.values():
            f.close()
        r = self.rows
        lengths = np.array([len(p) for p in self.paths], np.int64)
        index = dict(split=np.array(r["split"], np.uint8), start=np.array(r["start"], np.int64),
                     length=np.array(r["length"], np.int64), head=np.array(r["head"], np.uint8),
                     seconds=np.array(r["seconds"], np.float64), repaired=np.array(r["repaired"], bool),
                     notes=np.array(r["notes"], np.int64), tune=np.array(r["tune"], np.int64),
                     style=np.array(r["style"], np.int32), sha=np.array(r["sha"], "S40"),
                     path_blob=np.frombuffer(b"".join(self.paths), np.uint8),
                     path_offsets=np.r_[0, np.cumsum(lengths)].astype(np.int64))
        np.savez(self.tmp / "index.npz", **index)
        meta = {**meta, "format": FORMAT, "dtype": self.dtype.name, "programs": sorted(self.programs),
                "pitch_range": self.pitches if self.pitches[1] >= 0 else None,
                "tokens": {s: self.size[s] for s in SPLITS}, "created": time.time()}
        (self.tmp / "meta.json").write_text(json.dumps(meta))
        final = self.stores / self.key
        if final.exists() and find(self.stores, self.key) is None:  # a damaged store: replaced, said in one line
            print(f"musiclstm: the token store {final} was damaged; rebuilt it", file=sys.stderr)
            aside = self.stores / f".{self.key}.{os.getpid()}.damaged.tmp"
            try:
                os.rename(final, aside)
            except OSError:
                pass
            shutil.rmtree(aside, ignore_errors=True)
        try:
            os.rename(self.tmp, final)
        except OSError:  # another process published the same store first: theirs is as good
            shutil.rmtree(self.tmp, ignore_errors=True)
        return final


def _lease(folder: Path, exclusive: bool = False) -> int | None:
    """An open descriptor of the store's meta.json holding a lock on it (shared: a reader; exclusive: prune),
    or None where locks are not available. Raises BlockingIOError when the other kind is held."""
    if fcntl is None:
        return None
    fd = os.open(folder / "meta.json", os.O_RDONLY)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise
    except OSError:  # a file system without flock: no lease
        pass
    return fd


def find(stores: Path, key: str) -> TokenStore | None:
    """The published store `key`, or None. Marks it used (its meta's modification time) for `prune`."""
    folder = Path(stores) / key
    if not (folder / "meta.json").is_file():
        return None
    try:
        store = TokenStore(folder)
    except Exception:  # noqa: BLE001 - missing, truncated (BadZipFile), garbled or being pruned: made again
        return None
    if store.meta.get("format") != FORMAT:
        return None
    try:
        os.utime(folder / "meta.json")
    except OSError:
        pass  # a read-only cache is fine
    return store


def prune(stores: Path, keep: str, roots: list[str], max_idle: float = 86400.0, tmp_idle: float = 3600.0) -> None:
    """Remove stores of the same corpus folders as `keep` that no run has opened for `max_idle` seconds
    (older versions of a corpus that has since gained or lost files) and that no process holds open (its
    lease), the temporary folders of interrupted preparations (a dead process's, or any idle `tmp_idle`
    seconds), then the entry packs no store left needs that were written `max_idle` seconds ago."""
    stores = Path(stores)
    now = time.time()
    for folder in stores.iterdir() if stores.is_dir() else []:
        if folder.name == keep:
            continue
        if folder.name.startswith("."):
            if folder.name.endswith(".tmp") and _abandoned(folder, now, tmp_idle):
                shutil.rmtree(folder, ignore_errors=True)
            continue
        try:
            meta = json.loads((folder / "meta.json").read_text())
            idle = now - (folder / "meta.json").stat().st_mtime
        except (OSError, ValueError):
            continue
        if meta.get("roots") != roots or idle <= max_idle:
            continue
        try:
            lock = _lease(folder, exclusive=True)
        except OSError:  # BlockingIOError: a run is reading it
            continue
        try:
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            if lock is not None:
                os.close(lock)
    _collect_packs(stores, now, max_idle)


def _abandoned(folder: Path, now: float, tmp_idle: float) -> bool:
    """A `.{key}.{pid}[...].tmp` folder whose writer died on this machine, or that nothing wrote to lately."""
    try:
        newest = max([folder.stat().st_mtime] + [f.stat().st_mtime for f in folder.iterdir()])
    except OSError:
        return False
    if now - newest > tmp_idle:
        return True
    parts = folder.name.split(".")
    if len(parts) >= 3 and parts[2].isdigit() and now - newest > 60:
        try:
            os.kill(int(parts[2]), 0)
        except ProcessLookupError:
            return True
        except OSError:
            pass
    return False


def _collect_packs(stores: Path, now: float, max_idle: float) -> None:
    """Remove the packs (`../packs`, beside `stores`) older than `max_idle` none of whose entries a store needs."""
    packs = stores.parent / "packs"
    if not packs.is_dir():
        return
    needed: set[bytes] = set()
    for folder in stores.iterdir() if stores.is_dir() else []:
        if folder.name.startswith("."):
            continue
        try:
            with np.load(folder / "index.npz", allow_pickle=False) as z:
                needed.update(z["sha"].tolist())
        except Exception:  # noqa: BLE001 - a damaged store needs nothing
            continue
    for idx in packs.glob("*.idx"):
        try:
            if now - idx.stat().st_mtime <= max_idle:
                continue
            blob = idx.read_bytes()
        except OSError:
            continue
        if blob[:4] != _MAGIC or (len(blob) - 4) % _INDEX.itemsize:
            continue
        shas = {bytes(s).hex().encode() for s in np.frombuffer(blob, _INDEX, offset=4)["sha"].tolist()}
        if not shas & needed:
            for f in (idx, idx.with_suffix(".pack")):
                try:
                    f.unlink()
                except OSError:
                    pass
