"""The prepared corpus on disk: a cache entry per piece, and a token store per corpus read through a memory map.

Two forms, both under the cache folder and keyed by the tokenizer:

* **Entries** (`packs.py`): one piece's token ids, or the reason it cannot be read, keyed by its content hash.
  Made once, in worker processes, each of which writes the entries of a batch of files into one pack file
  (`<tok key>/packs/<name>.pack`, indexed by `<name>.idx`); a corpus that gains files tokenizes only those.
* **Stores** (`<tok key>/stores/<scan key>/`): nanoGPT's `train.bin` for music. Each split's pieces are laid
  end to end as the model reads them (BOS [STYLE] ids EOS) in one flat file, uint16 when the vocabulary
  fits (else int32), beside an index of the pieces (offset and length in their split, file, tune, sha,
  style, split, seconds, ...). Training reads the files through `np.memmap`, so its memory does not grow
  with the corpus: pages come from the operating system's page cache as windows touch them (each split
  read as `sequences.Sequences`).

A store is keyed by everything that decides its contents short of reading a file: each file's path, size,
modification and change times, the split and style options and the tokenizer. Preparing the same corpus
again opens the store after one `stat` per file, without reading any file. Here the stores: opened
(`TokenStore`, `find`), written (`StoreWriter`) and pruned with the packs no store needs (`prune`).
May import: encodings (the EOS id), data.packs, data.sequences. Not: io, data.corpus, models, training,
generation, evaluation, app.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from ..encodings.tokenizer import EOS
from .packs import remove_unneeded_packs
from .sequences import Sequences

try:
    import fcntl
except ImportError:  # Windows: no leases; prune then goes by the idle time alone
    fcntl = None

FORMAT = 1  # bump when the layout of entries or stores changes
SPLITS = ("train", "valid")


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (as nanoGPT's train.bin), else int32."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.int32)


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
    remove_unneeded_packs(packs, needed, now, max_idle)
