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

May import: errors, io, encodings (and data's own corpus). Not: models, training, generation, evaluation, app.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import os
import re
import shutil
import stat
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import ConfigError, MusiclstmError

MIRROR_ENV = "MUSICLSTM_FETCH_MIRROR"
TIMEOUT_S = 60.0  # per socket operation (connect, each read), not for the whole download
CHUNK = 1 << 16
MB = 1 << 20


@dataclass(frozen=True)
class Remote:
    """One file of a release: its public URL, the name it is stored (and mirrored) under, its sha256 if
    the publisher states one (None: none published, so the layout check is all we have)."""

    url: str
    filename: str
    sha256: str | None = None


@dataclass(frozen=True)
class Source:
    """A public corpus. `archive`: "zip", "tar.gz" or "files" (the remotes are the files themselves);
    `top`: the folder every archive member sits in, dropped on unpacking (DIR holds its contents);
    `expect`: pieces the layout check requires (at least, except where the check says exactly);
    `splits`: JSB only, chorales per split; `train_on`: the folder under DIR to train on."""

    name: str
    description: str
    licence: str
    remotes: tuple[Remote, ...]
    archive: str
    top: str | None
    layout: str
    expect: int
    train_on: str = "."
    splits: dict[str, int] | None = None
    max_download: int = 1024 * MB  # bytes downloaded, all remotes together
    max_unpacked: int = 4096 * MB  # bytes unpacked
    max_members: int = 50_000


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


_GH = "https://github.com"
_JSB = "https://raw.githubusercontent.com/czhuang/JSB-Chorales-dataset/master"
SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("pop909", "POP909: 909 Chinese pop songs as piano arrangements (MELODY, BRIDGE, PIANO tracks), "
           "with beat, chord and key annotations", "MIT (repository LICENSE)",
           (Remote(f"{_GH}/music-x-lab/POP909-Dataset/archive/refs/heads/master.zip", "POP909-Dataset-master.zip"),),
           "zip", "POP909-Dataset-master", "POP909/NNN/NNN.mid (one folder per song; versions/ holds alternatives)",
           expect=909, train_on="POP909", max_download=1024 * MB),
    Source("nottingham", "Nottingham folk tunes, Jukedeck's cleaned MIDI (melody + chords)",
           "GPLv3 (Jukedeck repository); the tunes themselves: no formal licence",
           (Remote(f"{_GH}/jukedeck/nottingham-dataset/archive/refs/heads/master.zip",
                   "nottingham-dataset-master.zip"),),
           "zip", "nottingham-dataset-master", "MIDI/<collection><n>.mid (melody/ and chords/ below it split the same "
           "tunes)", expect=1034, train_on="MIDI", max_download=512 * MB),
    Source("jsb", "JSB Chorales, the Boulanger-Lewandowski split as JSON (quarter, 8th, 16th piano rolls) and "
           "Coconet's four-voice 16th grid (Jsb16thSeparated.json), the files `benchmark jsb` reads",
           "none stated (the music is public domain)",
           tuple(Remote(f"{_JSB}/{f}", f) for f in ("Jsb16thSeparated.json", "jsb-chorales-quarter.json",
                                                    "jsb-chorales-8th.json", "jsb-chorales-16th.json")),
           "files", None, "Jsb16thSeparated.json, jsb-chorales-{quarter,8th,16th}.json: train/valid/test 229/76/77",
           expect=382, splits={"train": 229, "valid": 76, "test": 77}, max_download=256 * MB,
           max_unpacked=256 * MB, max_members=8),
    Source("lmd-clean", "Lakh MIDI v0.1 `clean_midi`: about 17,000 songs named <Artist>/<Title>.mid "
           "(some files are corrupt; musiclstm skips them)", "dataset CC BY 4.0; the songs: their owners'",
           (Remote("http://hog.ee.columbia.edu/craffel/lmd/clean_midi.tar.gz", "clean_midi.tar.gz"),),
           "tar.gz", "clean_midi", "<Artist>/<Title>.mid", expect=15_000, max_download=1024 * MB,
           max_unpacked=4096 * MB, max_members=40_000),
    Source("maestro", "MAESTRO v3.0.0 (MIDI only): 1,276 piano performances with pedals, split column in the CSV",
           "CC BY-NC-SA 4.0 (non-commercial)",
           (Remote("https://storage.googleapis.com/magentadata/datasets/maestro/v3.0.0/maestro-v3.0.0-midi.zip",
                   "maestro-v3.0.0-midi.zip"),),
           "zip", "maestro-v3.0.0", "<year>/<name>.midi listed in maestro-v3.0.0.csv (midi_filename, split)",
           expect=1276, max_download=512 * MB, max_unpacked=2048 * MB, max_members=5_000),
)}


def list_sources() -> list[Source]:
    """Every fetchable corpus, in a fixed order."""
    return list(SOURCES.values())


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
    if dest.exists() and not force and not (dest.is_dir() and not any(dest.iterdir())):
        raise MusiclstmError(f"{dest} already exists: give --force to replace it")
    if dest.exists() and not dest.is_dir():
        raise MusiclstmError(f"{dest} is a file, not a folder")
    if Path.cwd().resolve().is_relative_to(dest.resolve()):
        raise MusiclstmError(f"{dest} holds the current folder: fetch into a new folder")
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    staging = dest.parent / f".musiclstm-fetch-{dest.name}"
    if (staging / "replaced").exists():  # a run stopped between the two renames of `_swap`
        raise MusiclstmError(f"{staging / 'replaced'} is the {dest} an interrupted fetch moved aside: "
                             f"move it back or delete it, then run again")
    try:
        staging.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MusiclstmError(f"cannot create {staging}: {e.strerror or e}") from e
    keep_staging = False
    try:
        downloaded, verified, budget = [], [], source.max_download
        for remote in source.remotes:
            url = f"{mirror.rstrip('/')}/{name}/{remote.filename}" if mirror else remote.url
            path = staging / remote.filename
            try:
                if not path.is_file():  # a file finished by an earlier, interrupted run is kept
                    _download(url, path, max_bytes=budget, timeout=timeout, retries=retries, progress=progress,
                              label=f"{name}: {remote.filename}")
            except (_Interrupted, KeyboardInterrupt):
                keep_staging = True  # the .part files are what the next run continues
                raise
            budget -= path.stat().st_size
            if remote.sha256:
                _verify(path, remote.sha256, name)
                verified.append(remote.filename)
            downloaded.append(path)
        unpacked = staging / "unpacked"
        if unpacked.exists():
            shutil.rmtree(unpacked)
        unpacked.mkdir()
        if source.archive == "files":
            for path in downloaded:
                os.replace(path, unpacked / path.name)
        else:
            _unpack(downloaded[0], unpacked, source)
        pieces, summary = _check(unpacked, source)
        _swap(unpacked, dest, staging)
    finally:
        if not keep_staging:
            shutil.rmtree(staging, ignore_errors=True)
    train_on = dest / source.train_on if source.train_on != "." else dest
    return FetchReport(name, dest, pieces, train_on, verified, summary)


# ---- download ------------------------------------------------------------------------------------------------

class _Interrupted(MusiclstmError):
    """A download stopped part-way; the `.part` file is kept for the next run."""


def _download(url: str, path: Path, *, max_bytes: int, timeout: float, retries: int, progress: bool,
              label: str) -> None:
    """Fetch `url` to `path` through `path.part`, continuing an existing `.part` with Range; at most
    `max_bytes`. Tries again (continuing) up to `retries` times when the connection drops."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https", "file"):
        raise MusiclstmError(f"{label}: only http, https and file URLs are fetched, not {url}")
    for attempt in range(retries + 1):
        try:
            return _download_once(url, path, max_bytes=max_bytes, timeout=timeout, progress=progress, label=label)
        except _Interrupted:
            if attempt == retries:
                raise


def _download_once(url: str, path: Path, *, max_bytes: int, timeout: float, progress: bool, label: str) -> None:
    from tqdm import tqdm

    part = path.with_name(path.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    if have > max_bytes:  # a .part from a run with other caps: start over
        part.unlink()
        have = 0
    headers = {"User-Agent": "musiclstm-corpus-fetch", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and have:  # the .part no longer matches the file: start over
            part.unlink()
            return _download_once(url, path, max_bytes=max_bytes, timeout=timeout, progress=progress, label=label)
        raise MusiclstmError(f"{label}: HTTP {e.code} {e.reason} from {url}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or e
        raise MusiclstmError(f"{label}: cannot reach {url} ({reason})") from None
    with resp:
        status = getattr(resp, "status", None)
        content_range = resp.headers.get("Content-Range", "")
        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", content_range.strip())
        if have and status == 206 and m and int(m[1]) == have:
            total = int(m[3]) if m[3] != "*" else None
            mode = "ab"
        elif have and status == 206:  # a range we did not ask for: start over
            part.unlink()
            return _download_once(url, path, max_bytes=max_bytes, timeout=timeout, progress=progress, label=label)
        else:  # 200: the server sent the whole file (it ignored Range, or there was no .part)
            have, mode = 0, "wb"
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        if total is not None and total > max_bytes:
            raise MusiclstmError(f"{label}: {total:,} bytes is over the cap of {max_bytes:,}")
        try:
            with open(part, mode) as f, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                             unit_divisor=1024, desc=label, disable=not progress) as bar:
                while chunk := resp.read(CHUNK):
                    have += len(chunk)
                    if have > max_bytes:
                        raise MusiclstmError(f"{label}: download passed the cap of {max_bytes:,} bytes")
                    f.write(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as e:
            if isinstance(e, OSError) and e.filename:  # our own write failed (disk full ...), not the network
                raise MusiclstmError(f"{label}: cannot write {part}: {e.strerror or e}") from None
            raise _Interrupted(f"{label}: download interrupted after {have:,} bytes ({type(e).__name__}); "
                               f"run the same command again to continue it") from None
        except MusiclstmError:
            part.unlink(missing_ok=True)  # over the cap: nothing worth continuing
            raise
    if total is not None and have < total:
        raise _Interrupted(f"{label}: download interrupted at {have:,} of {total:,} bytes; "
                           f"run the same command again to continue it")
    os.replace(part, path)


def _verify(path: Path, expected: str, name: str) -> None:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MB):
            h.update(block)
    if h.hexdigest() != expected.lower():
        path.unlink()
        raise MusiclstmError(f"{name}: sha256 of {path.name} is {h.hexdigest()}, expected {expected} "
                             f"(file deleted; the download was corrupted or the release changed)")


# ---- unpacking ------------------------------------------------------------------------------------------------

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


def _unpack(archive: Path, into: Path, source: Source) -> None:
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


def _swap(new: Path, dest: Path, staging: Path) -> None:
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


# ---- layout checks -------------------------------------------------------------------------------------------

def _check(root: Path, source: Source) -> tuple[int, str]:
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

