"""The per-piece cache entries: one piece's token ids, or the reason it cannot be read, keyed by its content hash.

Made once, in worker processes, each of which writes the entries of a batch of files into one pack file
(`<tok key>/packs/<name>.pack`, indexed by `<name>.idx`); a corpus that gains files tokenizes only those.
An entry is a small header (magic, flags, bytes per token, seconds) and the ids or the reason; its layout is
versioned by `store.FORMAT` with the stores'.
May import: nothing of musiclstm (numpy only). Not: io, encodings, data.corpus, models, training, generation,
evaluation, app.
"""

from __future__ import annotations

import os
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_HEADER = struct.Struct("<4sBBxxd")  # magic, flags, bytes per token, seconds
_MAGIC = b"MLT1"
_REPAIRED, _FAILED = 1, 2


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


def remove_unneeded_packs(packs: Path, needed: set[bytes], now: float, max_idle: float) -> None:
    """Remove the packs in `packs` written over `max_idle` seconds before `now` none of whose entries is in
    `needed` (sha hex strings as bytes, as a store's index holds them)."""
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
