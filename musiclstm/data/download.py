"""`corpus fetch`'s downloads: a URL to a file through a resumable `.part` (HTTP Range), with timeouts on every
socket operation and a size cap, and the sha256 check.

May import: errors, data.sources (its byte unit). Not: io, encodings, models, training, generation, evaluation, app.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..errors import MusiclstmError
from .sources import MB

TIMEOUT_S = 60.0  # per socket operation (connect, each read), not for the whole download
CHUNK = 1 << 16


class Interrupted(MusiclstmError):
    """A download stopped part-way; the `.part` file is kept for the next run."""


def download(url: str, path: Path, *, max_bytes: int, timeout: float, retries: int, progress: bool,
             label: str) -> None:
    """Fetch `url` to `path` through `path.part`, continuing an existing `.part` with Range; at most
    `max_bytes`. Tries again (continuing) up to `retries` times when the connection drops."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https", "file"):
        raise MusiclstmError(f"{label}: only http, https and file URLs are fetched, not {url}")
    for attempt in range(retries + 1):
        try:
            return _download_once(url, path, max_bytes=max_bytes, timeout=timeout, progress=progress, label=label)
        except Interrupted:
            if attempt == retries:
                raise


def _download_once(url: str, path: Path, *, max_bytes: int, timeout: float, progress: bool, label: str) -> None:
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
        have = _receive(resp, part, mode, have, total, max_bytes=max_bytes, progress=progress, label=label)
    if total is not None and have < total:
        raise Interrupted(f"{label}: download interrupted at {have:,} of {total:,} bytes; "
                          f"run the same command again to continue it")
    os.replace(part, path)


def _receive(resp, part: Path, mode: str, have: int, total: int | None, *, max_bytes: int, progress: bool,
             label: str) -> int:
    """Append (mode "ab") or write ("wb") the body of `resp` to `part`, `have` bytes already there; returns the
    bytes there now. A dropped connection raises `Interrupted` (the `.part` kept), passing the cap deletes it."""
    from tqdm import tqdm

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
        raise Interrupted(f"{label}: download interrupted after {have:,} bytes ({type(e).__name__}); "
                          f"run the same command again to continue it") from None
    except MusiclstmError:
        part.unlink(missing_ok=True)  # over the cap: nothing worth continuing
        raise
    return have


def verify_sha256(path: Path, expected: str, name: str) -> None:
    """Delete `path` and raise unless its sha256 is `expected`."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MB):
            h.update(block)
    if h.hexdigest() != expected.lower():
        path.unlink()
        raise MusiclstmError(f"{name}: sha256 of {path.name} is {h.hexdigest()}, expected {expected} "
                             f"(file deleted; the download was corrupted or the release changed)")
