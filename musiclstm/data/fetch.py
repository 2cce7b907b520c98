"""`musiclstm corpus fetch NAME DIR`: download a public MIDI corpus, unpack it safely, check what came out.

One table of sources (`SOURCES`): where each public release lives, its archive format, the folder its archive
unpacks to, the layout musiclstm's readers expect and, where the publisher states one, a sha256. `fetch()`:

1. downloads each file into a staging folder beside DIR (`.musiclstm-fetch-<DIR name>`), resumably: a `.part`
   file is continued with an HTTP Range request, and started again when the server ignores the Range;
   timeouts on every socket operation and a size cap per source;
2. checks the sha256 where one is known;
3. unpacks zip and tar(.gz) archives member by member into a temporary folder inside the staging folder:
   no absolute paths, no `..`, no symlinks, hardlinks or devices, caps on members and unpacked bytes;
4. checks the layout (counts of pieces where the readers expect them, a sample read by `midi.read`, or the
   JSB splits read by `load_jsb`), then renames the folder to DIR in one step.

A failure leaves no DIR (and with `force`, the old DIR untouched); an interrupted download keeps its `.part`
so the same command continues it. `mirror` (or $MUSICLSTM_FETCH_MIRROR) replaces every URL by
`<mirror>/<source name>/<file name>`: a local copy of the releases, and the tests' local server.

The steps live beside this module: `sources` (the table), `download` (1, 2), `unpack` (3 and the final rename),
`layouts` (4); here `fetch()` runs them in order.
May import: errors, io, encodings (and data's own corpus, sources, download, unpack, layouts). Not: models,
training, generation, evaluation, app.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, MusiclstmError
from .download import TIMEOUT_S, Interrupted, download, verify_sha256
from .layouts import check_layout
from .sources import SOURCES, Remote, Source, list_sources
from .unpack import swap, unpack

__all__ = ["MIRROR_ENV", "SOURCES", "TIMEOUT_S", "FetchReport", "Remote", "Source", "fetch", "list_sources"]

MIRROR_ENV = "MUSICLSTM_FETCH_MIRROR"


@dataclass
class FetchReport:
    """What `fetch` did: the folder written, pieces found, the folder to train on, files whose sha256 was
    checked, and a one-line summary."""

    name: str
    dest: Path
    pieces: int
    train_on: Path
    verified: list[str]
    summary: str


def fetch(name: str, dest: str | Path, *, force: bool = False, mirror: str | None = None,
          progress: bool = False, timeout: float = TIMEOUT_S, retries: int = 2) -> FetchReport:
    """Download, verify, unpack and check corpus `name` into folder `dest`; returns what was found.

    `mirror`: base URL replacing the public ones (`<mirror>/<name>/<file>`) [$MUSICLSTM_FETCH_MIRROR].
    `retries`: how many times an interrupted download is continued (by Range) before giving up; the
    `.part` file stays either way, so running again continues it. An existing `dest` (not an empty
    folder) is refused unless `force`, and replaced only once the new one has passed its checks.
    """
    if name not in SOURCES:
        raise ConfigError(f"unknown corpus {name!r}; known: {', '.join(SOURCES)}")
    source, dest = SOURCES[name], Path(dest)
    _check_dest(dest, force)
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    staging = _make_staging(dest)
    keep_staging = False
    try:
        downloaded, verified, budget = [], [], source.max_download
        for remote in source.remotes:
            url = f"{mirror.rstrip('/')}/{name}/{remote.filename}" if mirror else remote.url
            path = staging / remote.filename
            try:
                if not path.is_file():  # a file finished by an earlier, interrupted run is kept
                    download(url, path, max_bytes=budget, timeout=timeout, retries=retries, progress=progress,
                             label=f"{name}: {remote.filename}")
            except (Interrupted, KeyboardInterrupt):
                keep_staging = True  # the .part files are what the next run continues
                raise
            budget -= path.stat().st_size
            if remote.sha256:
                verify_sha256(path, remote.sha256, name)
                verified.append(remote.filename)
            downloaded.append(path)
        unpacked = _unpack_downloads(downloaded, staging, source)
        pieces, summary = check_layout(unpacked, source)
        swap(unpacked, dest, staging)
    finally:
        if not keep_staging:
            shutil.rmtree(staging, ignore_errors=True)
    train_on = dest / source.train_on if source.train_on != "." else dest
    return FetchReport(name, dest, pieces, train_on, verified, summary)


def _check_dest(dest: Path, force: bool) -> None:
    """Refuse a `dest` that holds something (unless `force`), is a file, or holds the current folder."""
    if dest.exists() and not force and not (dest.is_dir() and not any(dest.iterdir())):
        raise MusiclstmError(f"{dest} already exists: give --force to replace it")
    if dest.exists() and not dest.is_dir():
        raise MusiclstmError(f"{dest} is a file, not a folder")
    if Path.cwd().resolve().is_relative_to(dest.resolve()):
        raise MusiclstmError(f"{dest} holds the current folder: fetch into a new folder")


def _make_staging(dest: Path) -> Path:
    """The staging folder beside `dest` (`.musiclstm-fetch-<name>`), created; refused while it still holds the
    `dest` an interrupted run moved aside."""
    staging = dest.parent / f".musiclstm-fetch-{dest.name}"
    if (staging / "replaced").exists():  # a run stopped between the two renames of `swap`
        raise MusiclstmError(f"{staging / 'replaced'} is the {dest} an interrupted fetch moved aside: "
                             f"move it back or delete it, then run again")
    try:
        staging.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MusiclstmError(f"cannot create {staging}: {e.strerror or e}") from e
    return staging


def _unpack_downloads(downloaded: list[Path], staging: Path, source: Source) -> Path:
    """The downloaded files unpacked (or, for a source of plain files, moved) into a fresh `staging/unpacked`."""
    unpacked = staging / "unpacked"
    if unpacked.exists():
        shutil.rmtree(unpacked)
    unpacked.mkdir()
    if source.archive == "files":
        for path in downloaded:
            os.replace(path, unpacked / path.name)
    else:
        unpack(downloaded[0], unpacked, source)
    return unpacked
