"""Fuzz the reader and training preparation with mutated copies of real MIDI files.

    python bench/fuzz.py [--count 1000] [--seed 0] [--data ../shared/data] [--encoding remi] [--keep DIR]

Every file of DATA/edge plus `--count` mutated copies of real files (byte flips, truncations,
inserted, duplicated and deleted chunks, damaged header and track-length fields, runs of 0xFF in
variable-length numbers; chosen and placed by a seeded generator, so a seed names a set of files)
goes through `musiclstm.data.tokenizing._prepare_one`, the per-file step of `musiclstm train`'s preparation (read with
`midi.read`, encode, write the cache entry). Each file must either read or raise `MidiReadError`
(reported as a skip reason), within 10 s, with the worker's memory under 1 GB.

The files run in a worker process that the parent watches: a file that takes over --timeout seconds
is a hang, a worker that dies (a segfault in a parser, an out-of-memory kill) is a crash, any other
exception is a bug; in each case the worker is restarted and the run goes on. The summary prints
counts by mutation and outcome, the slowest file and the worker's peak memory; exit status 1 if
any file crashed, hung, raised something other than MidiReadError or went over the memory limit.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

MUTATIONS = ("flip", "truncate", "insert", "duplicate", "delete", "header", "ff_run", "track_length")


def mutate(data: bytes, rng: np.random.Generator, kind: str) -> bytes:
    b = bytearray(data)
    n = len(b)
    pos = int(rng.integers(0, max(1, n)))
    if kind == "flip":
        for p in rng.integers(0, n, int(rng.integers(1, 21))):
            b[p] ^= int(rng.integers(1, 256))
    elif kind == "truncate":
        b = b[:pos]
    elif kind == "insert":
        b[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 201))).astype(np.uint8).tobytes()
    elif kind == "duplicate":
        a = int(rng.integers(0, n))
        b[pos:pos] = b[a:a + int(rng.integers(1, 2001))]
    elif kind == "delete":
        del b[pos:pos + int(rng.integers(1, 501))]
    elif kind == "header":  # format, track count, division
        for p in range(8, min(14, n)):
            if rng.random() < 0.5:
                b[p] = int(rng.integers(0, 256))
    elif kind == "ff_run":  # huge variable-length numbers (delta times, meta lengths)
        b[pos:pos + 4] = b"\xff\xff\xff\x7f"
    elif kind == "track_length":
        starts = [i for i in range(n - 8) if b[i:i + 4] == b"MTrk"] or [0]
        s = starts[int(rng.integers(0, len(starts)))] + 4
        b[s:s + 4] = rng.integers(0, 256, 4).astype(np.uint8).tobytes()
    return bytes(b)


def make_files(data_dir: Path, out: Path, count: int, seed: int) -> list[tuple[Path, str]]:
    """The edge files as they are, then `count` mutated copies of real files (seeded)."""
    files = [(p, "edge") for p in sorted((data_dir / "edge").rglob("*")) if p.is_file()]
    sources = [p for sub in ("nottingham", "pop909", "fixtures") for p in sorted((data_dir / sub).rglob("*.mid"))]
    rng = np.random.default_rng(seed)
    sources = [sources[i] for i in rng.choice(len(sources), min(60, len(sources)), replace=False)]
    blobs = [p.read_bytes() for p in sources]
    out.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        kind = MUTATIONS[i % len(MUTATIONS)]
        path = out / f"{i:05d}_{kind}.mid"
        path.write_bytes(mutate(blobs[int(rng.integers(0, len(blobs)))], rng, kind))
        files.append((path, kind))
    return files


def worker(encoding: str, cache: str) -> None:
    """Read paths from stdin, one per line; answer each with one JSON line."""
    import resource

    from musiclstm.data.tokenizing import _prepare_one
    from musiclstm.encodings.tokenizer import Tokenizer

    tok = Tokenizer(encoding).to_dict()
    for line in sys.stdin:
        t = time.perf_counter()
        try:
            _, _, error, _, _ = _prepare_one((line.strip(), tok, cache))
            status, reason = ("read", "") if error is None else ("skipped", error)
        except Exception as e:  # a bug: anything but a clean skip
            status, reason = "exception", f"{type(e).__name__}: {e}"[:200]
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"status": status, "reason": reason, "seconds": time.perf_counter() - t, "rss_mb": rss}),
              flush=True)


def run(files: list[tuple[Path, str]], *, encoding: str = "remi", timeout: float = 10.0,
        memory_mb: float = 1024) -> dict:
    cache = tempfile.mkdtemp(prefix="fuzzcache-")
    try:
        return _run(files, cache, encoding=encoding, timeout=timeout, memory_mb=memory_mb)
    finally:
        shutil.rmtree(cache, ignore_errors=True)  # nothing left behind


def _run(files: list[tuple[Path, str]], cache: str, *, encoding: str, timeout: float, memory_mb: float) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--encoding", encoding, "--cache", cache]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = None
    results = []
    for path, kind in files:
        if proc is None or proc.poll() is not None:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        proc.stdin.write(f"{path}\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], timeout + 20 * (len(results) == 0))  # + worker start
        line = proc.stdout.readline() if ready else ""
        if not ready:
            proc.kill()
            proc.wait()
            r = {"status": "hang", "reason": f"no answer in {timeout:g} s", "seconds": timeout, "rss_mb": 0}
        elif not line:
            code = proc.wait()
            r = {"status": "crash", "reason": f"worker died with exit status {code}", "seconds": 0, "rss_mb": 0}
        else:
            r = json.loads(line)
            if r["seconds"] > timeout:
                r["status"] = "slow"
        results.append({"file": str(path), "kind": kind, **r})
    if proc is not None and proc.poll() is None:
        proc.stdin.close()
        proc.wait()
    bad = [r for r in results if r["status"] not in ("read", "skipped") or r["rss_mb"] > memory_mb]
    return {"files": len(results), "bad": bad, "results": results,
            "by_kind": {k: dict(Counter(r["status"] for r in results if r["kind"] == k))
                        for k in dict.fromkeys(r["kind"] for r in results)},
            "slowest": max(results, key=lambda r: r["seconds"]) if results else None,
            "peak_rss_mb": max((r["rss_mb"] for r in results), default=0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--encoding", default="remi")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--keep", type=Path, help="write the mutated files here (default: a temporary folder)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.encoding, a.cache)
        return
    if not (a.data / "edge").is_dir():
        sys.exit(f"{a.data} has no edge/ folder: give --data (the shared data folder)")
    out = a.keep or Path(tempfile.mkdtemp(prefix="fuzz-"))
    t = time.time()
    files = make_files(a.data, out, a.count, a.seed)
    s = run(files, encoding=a.encoding, timeout=a.timeout)
    statuses = Counter(r["status"] for r in s["results"])
    print(f"{s['files']} files ({a.count} mutated, seed {a.seed}; {s['files'] - a.count} edge) through "
          f"read + {a.encoding} preparation in {time.time() - t:.0f} s: " + ", ".join(f"{k} {v}" for k, v in
                                                                                  sorted(statuses.items())))
    for kind, c in s["by_kind"].items():
        print(f"  {kind:13s} " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
    sl = s["slowest"]
    print(f"slowest file {sl['seconds']:.2f} s ({Path(sl['file']).name}, {sl['status']}); worker peak memory "
          f"{s['peak_rss_mb']:.0f} MB (limit 1024)")
    for r in s["bad"]:
        print(f"FAIL {r['file']}: {r['status']} {r['reason']}")
    print("goal: every file reads or is skipped with a reason, < 10 s, < 1 GB: " + ("met" if not s["bad"] else
                                                                                      f"NOT met ({len(s['bad'])})"))
    sys.exit(1 if s["bad"] else 0)


if __name__ == "__main__":
    main()
