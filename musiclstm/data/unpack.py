"""`corpus fetch`'s unpacking: zip and tar(.gz) archives member by member into a fresh folder (no absolute
paths, no `..`, no symlinks, hardlinks or devices, caps on members and unpacked bytes), and the one-step swap of
the checked folder into place.

May import: errors, data.sources, data.download (its chunk size). Not: io, encodings, models, training,
generation, evaluation, app.
"""

from __future__ import annotations

import os
import re
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from ..errors import MusiclstmError
from .download import CHUNK
from .sources import Source


def _member(raw: str, source: Source) -> PurePosixPath | None:
    """The path under DIR of archive member `raw` (None: the top folder itself), or an error for any name
    that could land outside DIR."""
    name = raw.replace("\\", "/")
    p = PurePosixPath(name)
    if not name or name.startswith("/") or re.match(r"^[A-Za-z]:", name) or "\0" in name:
        raise MusiclstmError(f"{source.name}: archive member {raw!r} has an absolute path; refused")
    parts = [s for s in p.parts if s not in ("", ".")]
    if ".." in parts:
        raise MusiclstmError(f"{source.name}: archive member {raw!r} points outside the folder (..); refused")
    if source.top is not None:
        if not parts or parts[0] != source.top:
            raise MusiclstmError(f"{source.name}: archive member {raw!r} is outside {source.top}/, "
                                 f"not the release's layout")
        parts = parts[1:]
    return PurePosixPath(*parts) if parts else None


class _Budget:
    """Counts members and unpacked bytes against the source's caps."""

    def __init__(self, source: Source):
        self.source, self.members, self.bytes = source, 0, 0

    def member(self) -> None:
        self.members += 1
        if self.members > self.source.max_members:
            raise MusiclstmError(f"{self.source.name}: archive has more than {self.source.max_members:,} members; "
                                 f"refused")

    def add(self, n: int) -> None:
        self.bytes += n
        if self.bytes > self.source.max_unpacked:
            raise MusiclstmError(f"{self.source.name}: archive unpacks to more than {self.source.max_unpacked:,} "
                                 f"bytes; refused")


def _write(fileobj, target: Path, budget: _Budget, raw: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(target, "xb") as out:
            while block := fileobj.read(CHUNK):
                budget.add(len(block))
                out.write(block)
    except FileExistsError:
        raise MusiclstmError(f"{budget.source.name}: archive member {raw!r} appears twice; refused") from None


def unpack(archive: Path, into: Path, source: Source) -> None:
    """Unpack a zip or tar(.gz) into the fresh folder `into`, member by member, refusing unsafe members."""
    budget = _Budget(source)
    try:
        if source.archive == "zip":
            _unzip(archive, into, source, budget)
        else:
            _untar(archive, into, source, budget)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise MusiclstmError(f"{source.name}: cannot unpack {archive.name} ({type(e).__name__}: {e})") from None


def _unzip(archive: Path, into: Path, source: Source, budget: _Budget) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:  # every member is checked before anything is written
            budget.member()
            _member(info.filename, source)
            kind = stat.S_IFMT(info.external_attr >> 16) if info.create_system == 3 else 0
            if kind == stat.S_IFLNK:
                raise MusiclstmError(f"{source.name}: archive member {info.filename!r} is a symlink; refused")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise MusiclstmError(f"{source.name}: archive member {info.filename!r} is a special file; refused")
            if info.flag_bits & 0x1:
                raise MusiclstmError(f"{source.name}: archive member {info.filename!r} is encrypted; refused")
        declared = sum(i.file_size for i in infos)
        if declared > source.max_unpacked:
            raise MusiclstmError(f"{source.name}: archive unpacks to {declared:,} bytes, over the cap of "
                                 f"{source.max_unpacked:,}; refused")
        for info in infos:
            rel = _member(info.filename, source)
            if rel is None:
                continue
            if info.is_dir():
                (into / rel).mkdir(parents=True, exist_ok=True)
            else:
                with zf.open(info) as f:
                    _write(f, into / rel, budget, info.filename)


def _untar(archive: Path, into: Path, source: Source, budget: _Budget) -> None:
    with tarfile.open(archive, "r:*") as tf:  # streamed: each member checked as it comes
        for m in tf:
            budget.member()
            rel = _member(m.name, source)
            if m.issym() or m.islnk():
                raise MusiclstmError(f"{source.name}: archive member {m.name!r} is a "
                                     f"{'symlink' if m.issym() else 'hardlink'}; refused")
            if not (m.isfile() or m.isdir()):
                raise MusiclstmError(f"{source.name}: archive member {m.name!r} is a special file; refused")
            if rel is None:
                continue
            if m.isdir():
                (into / rel).mkdir(parents=True, exist_ok=True)
                continue
            if budget.bytes + m.size > source.max_unpacked:
                budget.add(m.size)  # raises with the message
            f = tf.extractfile(m)
            _write(f, into / rel, budget, m.name)


def swap(new: Path, dest: Path, staging: Path) -> None:
    """Put `new` at `dest` in one rename; an existing `dest` is moved aside first and restored on failure."""
    old = staging / "replaced"
    try:
        if dest.exists():
            os.rename(dest, old)
        try:
            os.rename(new, dest)
        except OSError:
            if old.exists():
                os.rename(old, dest)
            raise
    except OSError as e:
        raise MusiclstmError(f"cannot move the unpacked corpus to {dest}: {e.strerror or e}") from None
