"""Lakh-scale corpora: preparation speed, memory and disk on a synthetic 100,000-file corpus.

    python bench/scale.py                    # 100,000 files (the figures in the README)
    python bench/scale.py --files 2000       # a quick look while developing

A seeded script writes the corpus from the MIDI files in ../shared/data (Nottingham, POP909 and the
fixtures): each file is one source piece, cropped to a random span of whole bars, a random subset of
its tracks, transposed, its tempo scaled and its velocities shifted, so no two files are the same
(Lakh MIDI's LMD-full has 176,581). About 1 in 500 files is cut short, as Lakh holds a few thousand
corrupt files. The corpus goes to --scratch (default /tmp/musiclstm-scale, outside the project) and
is reused by later runs.

It then measures, each in its own process on this machine:
* preparation (`data.prepare`) with a cold cache, warm (the same files again: the token store is opened
  after one stat per file) and with 1 % new files (only they are read and tokenized), files/s, the CPU
  time of all its processes and peak RSS;
* `musiclstm train` for 50 steps on the big corpus and on a 1,000-file corpus (the same first 1,000
  files), peak RSS; validation is a small held-out share (--val-fraction 0.002), no samples, no cache
  tuning: the bench measures memory, not models;
* the disk the corpus, the cache (entry packs and stores) and the stores take;
* `musiclstm train CORPUS --preset tiny --max-steps 20 --jobs 2` end to end from a cold cache, as a user
  types it (default validation, cache tuning, samples), on the small and the big corpus: wall time and peak
  RSS (`--only-e2e`: these alone);
and prints each figure beside its goal. Peak RSS is the largest resident set among the process's tree
(`wait4`'s ru_maxrss); it counts the pages of the memory-mapped store that were read.
The machine is shared: the CPU-time line says what the cold preparation costs, whatever the load.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SOURCES = ("nottingham", "pop909", "fixtures/miditok-multitrack", "fixtures/miditok-one-track")
CORRUPT_EVERY = 500  # about one file in this many is truncated
GOALS = dict(cold=1000.0, warm_speedup=10.0, train_rss=2 * 2**30, rss_growth=0.20)

# ---- the synthetic corpus ---------------------------------------------------------------------------

_sources: list = []


def _load_sources() -> None:
    import symusic

    for name in SOURCES:
        for f in sorted((SHARED / name).rglob("*")):
            if f.suffix.lower() in (".mid", ".midi") and f.stat().st_size > 100:
                try:
                    s = symusic.Score.from_midi(f.read_bytes())
                except RuntimeError:
                    continue
                if s.note_num() > 20 and s.ticks_per_quarter > 0:
                    _sources.append(s)


def _variant(i: int, seed: int) -> bytes:
    """File `i` of the corpus: a transformed copy of one source piece (MIDI bytes)."""
    import symusic

    rng = np.random.default_rng([seed, i])
    src = _sources[int(rng.integers(len(_sources)))]
    bar = 4 * src.ticks_per_quarter
    bars = max(1, -(-src.end() // bar))
    span = int(rng.integers(max(1, bars // 3), bars + 1))  # a crop of whole bars
    first = int(rng.integers(0, bars - span + 1))
    s = src.clip(first * bar, (first + span) * bar, clip_end=False).shift_time(-first * bar)
    # the tempo and meter in force at the cut start the crop
    cut = first * bar
    tempo = [e for e in src.tempos if e.time <= cut]
    if tempo and not any(e.time == 0 for e in s.tempos):
        s.tempos.insert(0, symusic.Tempo(0, qpm=tempo[-1].qpm))
    meter = [e for e in src.time_signatures if e.time <= cut]
    if meter and not any(e.time == 0 for e in s.time_signatures):
        s.time_signatures.insert(0, symusic.TimeSignature(0, meter[-1].numerator, meter[-1].denominator))
    tracks = [t for t in s.tracks if t.note_num() > 0]
    if len(tracks) > 1:  # a random non-empty subset of the tracks
        keep = rng.random(len(tracks)) < 0.7
        keep[int(rng.integers(len(tracks)))] = True
        tracks = [t for t, k in zip(tracks, keep, strict=True) if k]
    s.tracks.clear()
    s.tracks.extend(tracks)
    pitches = np.concatenate([t.notes.numpy()["pitch"] for t in tracks if not t.is_drum] or [np.zeros(1, np.int8)])
    lo, hi = max(-6, -int(pitches.min())), min(6, 127 - int(pitches.max()))
    k = int(rng.integers(lo, hi + 1)) if lo <= hi else 0
    dv = int(rng.integers(-12, 13))
    for t in tracks:
        if not t.is_drum:
            t.shift_pitch(k, inplace=True)
        vel = t.notes.numpy()["velocity"].astype(np.int64)
        if len(vel):
            t.shift_velocity(int(np.clip(dv, 1 - vel.min(), 127 - vel.max())), inplace=True)
    f = float(np.exp(rng.uniform(np.log(0.7), np.log(1.4))))
    tempos = [symusic.Tempo(e.time, qpm=e.qpm * f) for e in s.tempos] or [symusic.Tempo(0, qpm=120 * f)]
    s.tempos.clear()
    s.tempos.extend(tempos)
    data = bytes(s.dumps_midi())
    if rng.integers(CORRUPT_EVERY) == 0:  # a damaged file, as Lakh has
        data = data[: int(rng.integers(14, max(15, len(data) // 2)))]
    return data


def _write_chunk(args: tuple[str, int, int, int]) -> list[str]:
    root, seed, lo, hi = args
    if not _sources:
        _load_sources()
    shas = []
    for i in range(lo, hi):
        data = _variant(i, seed)
        path = Path(root) / f"{i % 16:x}" / f"{i:06d}.mid"
        path.write_bytes(data)
        shas.append(hashlib.sha1(data).hexdigest())
    return shas


def make_corpus(scratch: Path, files: int, seed: int, jobs: int) -> tuple[Path, dict]:
    """Write (or reuse) the corpus of `files` files; return its folder and what was written."""
    root = scratch / f"corpus-{files}-seed{seed}"
    marker = root / "corpus.json"
    if marker.exists():
        return root, json.loads(marker.read_text())
    if root.exists():
        shutil.rmtree(root)
    for d in range(16):
        (root / f"{d:x}").mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    step = 500
    chunks = [(str(root), seed, lo, min(files, lo + step)) for lo in range(0, files, step)]
    with ProcessPoolExecutor(jobs) as pool:
        shas = [s for part in pool.map(_write_chunk, chunks) for s in part]
    info = dict(files=files, seed=seed, unique=len(set(shas)), seconds=round(time.perf_counter() - t, 1),
                bytes=sum(f.stat().st_size for f in root.rglob("*.mid")))
    marker.write_text(json.dumps(info))
    return root, info


# ---- measurements -------------------------------------------------------------------------------------

PEAK = """
import os, resource, subprocess, sys, json
p = subprocess.Popen(sys.argv[1:])
_, status, ru = os.wait4(p.pid, 0)
print(json.dumps({"peak_rss": ru.ru_maxrss * 1024, "status": os.waitstatus_to_exitcode(status)}), file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def measured(cmd: list[str]) -> tuple[str, float, int]:
    """Run `cmd` in its own process; return (stdout, wall seconds, peak RSS in bytes)."""
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", PEAK, *cmd], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.perf_counter() - t
    last = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "{}"
    if p.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd[:6]))} ... failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return p.stdout, wall, json.loads(last)["peak_rss"]


PREPARE = """
import json, resource, sys, time
from pathlib import Path
from musiclstm import data
from musiclstm.encodings.tokenizer import Tokenizer
root, cache, val, jobs = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
cpu = lambda who: (lambda r: r.ru_utime + r.ru_stime)(resource.getrusage(who))
t, p0, w0 = time.perf_counter(), cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
c = data.prepare([Path(root)], Tokenizer("remi"), val_fraction=val, jobs=jobs, cache_dir=Path(cache), progress=False)
secs, parent, workers = time.perf_counter() - t, cpu(resource.RUSAGE_SELF) - p0, cpu(resource.RUSAGE_CHILDREN) - w0
print(json.dumps({"seconds": secs, "cpu": parent + workers, "cpu_parent": parent, "cpu_workers": workers,
                  "pieces": len(c.pieces), "skipped": len(c.skipped),
                  "duplicates": len(c.duplicates), "tokens": c.to_json()["tokens"], "fingerprint": c.fingerprint,
                  "tokenized": c.tokenized, "store": str(c.store.folder)}))
"""


def prepare(root: Path, cache: Path, val: float, jobs: int) -> tuple[dict, int]:
    out, _, rss = measured([sys.executable, "-c", PREPARE, str(root), str(cache), str(val), str(jobs)])
    return json.loads(out.strip().splitlines()[-1]), rss


def train(root: Path, cache: Path, run: Path, steps: int, val: float, jobs: int, preset: str) -> tuple[float, int]:
    config = run.with_suffix(".toml")
    config.write_text(f"sample_tokens = 0\ncache = false\nval_fraction = {val}\nmax_steps = {steps}\n"
                      f"eval_every = {steps}\njobs = {jobs}\nprecision = \"fp32\"\n")
    cmd = [sys.executable, "-m", "musiclstm", "train", str(root), "--out", str(run), "--force", "--quiet",
           "--preset", preset, "--config", str(config)]
    _, wall, rss = measured(["env", f"MUSICLSTM_CACHE={cache}", *cmd])
    return wall, rss


def train_cold(root: Path, cache: Path, run: Path, steps: int, jobs: int) -> tuple[float, int]:
    """`musiclstm train ROOT --preset tiny --max-steps STEPS --jobs JOBS` end to end as a user types it (default
    validation, cache tuning, samples and report) from a cold cache: (wall seconds, peak RSS)."""
    shutil.rmtree(cache, ignore_errors=True)
    cmd = [sys.executable, "-m", "musiclstm", "train", str(root), "--out", str(run), "--force", "--quiet",
           "--preset", "tiny", "--max-steps", str(steps), "--jobs", str(jobs)]
    _, wall, rss = measured(["env", f"MUSICLSTM_CACHE={cache}", *cmd])
    shutil.rmtree(cache, ignore_errors=True)
    return wall, rss


def grow(root: Path, extra: int, seed: int) -> Path:
    """`extra` new files (variants past the corpus's own numbers) in root/new/, for the incremental run."""
    folder = root / "new"
    folder.mkdir(exist_ok=True)
    if not _sources:
        _load_sources()
    for i in range(extra):
        (folder / f"{10**7 + i}.mid").write_bytes(_variant(10**7 + i, seed))
    return folder


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=100_000, help="files in the big corpus (default 100000)")
    ap.add_argument("--small", type=int, default=1000, help="files in the small corpus (default 1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (default 2: the goal is for 2 cores)")
    ap.add_argument("--steps", type=int, default=50, help="training steps per run (default 50)")
    ap.add_argument("--preset", default="small", help="model preset of the training runs (default small)")
    ap.add_argument("--val-fraction", type=float, default=0.002,
                    help="held out for validation (default 0.002: the bench measures memory, not models)")
    ap.add_argument("--scratch", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "musiclstm-scale")
    ap.add_argument("--e2e-steps", type=int, default=20,
                    help="steps of the end-to-end `musiclstm train --preset tiny` runs from a cold cache (default 20)")
    ap.add_argument("--only-e2e", action="store_true",
                    help="only the end-to-end training runs (cold cache) on the small and the big corpus")
    args = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"no source MIDI at {SHARED}")
    args.scratch.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()

    big, made = make_corpus(args.scratch, args.files, args.seed, args.jobs)
    small, _ = make_corpus(args.scratch, args.small, args.seed, args.jobs)
    print(f"corpus {big}: {made['files']:,} files ({made['unique']:,} distinct), {made['bytes'] / 2**20:,.0f} MB, "
          f"written in {made['seconds']:.0f} s (reused when present)", flush=True)

    e2e = []  # musiclstm train, end to end from a cold cache, as a user types it: what grows with the corpus
    for root, count in ((small, args.small), (big, args.files)):
        wall, rss = train_cold(root, args.scratch / "cache-e2e", args.scratch / "run-e2e", args.e2e_steps, args.jobs)
        e2e.append((f"musiclstm train --preset tiny --max-steps {args.e2e_steps}, {count:,} files, cold",
                    f"{wall:.0f} s, peak RSS {rss / 2**20:,.0f} MB", "-", ""))
        print(f"e2e: {e2e[-1][0]}: {e2e[-1][1]}", flush=True)
    if args.only_e2e:
        return

    cache = args.scratch / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    cold, cold_rss = prepare(big, cache, args.val_fraction, args.jobs)
    print(f"cold: {json.dumps(cold)}", flush=True)
    warm, warm_rss = prepare(big, cache, args.val_fraction, args.jobs)
    print(f"warm: {json.dumps(warm)}", flush=True)
    extra = max(1, args.files // 100)
    added = grow(big, extra, args.seed)
    try:
        more, _ = prepare(big, cache, args.val_fraction, args.jobs)
        print(f"incremental: {json.dumps(more)}", flush=True)
    finally:
        shutil.rmtree(added)
    disk_cache, disk_store = du(cache), du(Path(cold["store"]))
    disk_packs = sum(du(p) for p in cache.rglob("packs"))
    t_big, rss_big = train(big, cache, args.scratch / "run-big", args.steps, args.val_fraction, args.jobs, args.preset)
    t_small, rss_small = train(small, cache, args.scratch / "run-small", args.steps, args.val_fraction, args.jobs,
                               args.preset)
    load1 = os.getloadavg()

    n = args.files
    cold_rate, warm_rate = n / cold["seconds"], n / warm["seconds"]
    idle_rate = n / max(cold["cpu_parent"] + cold["cpu_workers"] / args.jobs, 1e-9)  # workers in parallel
    growth = rss_big / rss_small - 1
    mb = lambda b: f"{b / 2**20:,.0f} MB"  # noqa: E731
    ok = lambda c: "MET" if c else "SHORT"  # noqa: E731
    rows = [
        ("preparation, cold cache (wall clock)", f"{cold_rate:,.0f} files/s ({cold['seconds']:.1f} s)",
         f">= {GOALS['cold']:,.0f} files/s", ok(cold_rate >= GOALS["cold"])),
        ("  CPU time (workers + parent)", f"{cold['cpu'] / n * 1e3:.2f} ms/file: {idle_rate:,.0f} files/s "
         f"were the {args.jobs} cores free", "-", ""),
        ("preparation, warm (same files again)", f"{warm_rate:,.0f} files/s ({warm['seconds']:.2f} s), "
         f"{cold['seconds'] / warm['seconds']:.0f}x cold", f">= {GOALS['warm_speedup']:.0f}x cold",
         ok(cold["seconds"] / warm["seconds"] >= GOALS["warm_speedup"])),
        (f"preparation, {extra:,} files added", f"{more['seconds']:.1f} s, {more['tokenized']:,} tokenized", "-", ""),
        ("preparation peak RSS, cold / warm", f"{mb(cold_rss)} / {mb(warm_rss)}", "-", ""),
        (f"train {args.steps} steps ({args.preset}), {n:,} files: peak RSS", f"{mb(rss_big)} ({t_big:.0f} s)",
         f"<= {mb(GOALS['train_rss'])}", ok(rss_big <= GOALS["train_rss"])),
        (f"train {args.steps} steps ({args.preset}), {args.small:,} files: peak RSS",
         f"{mb(rss_small)} ({t_small:.0f} s)", "-", ""),
        (f"RSS growth, {n:,} vs {args.small:,} files", f"{growth:+.1%}", f"<= +{GOALS['rss_growth']:.0%}",
         ok(growth <= GOALS["rss_growth"])),
        ("disk: corpus / entry packs / the corpus's store", f"{mb(made['bytes'])} / {mb(disk_packs)} / "
         f"{mb(disk_store)}", "-", ""),
        ("disk: the whole cache (both stores, manifest)", mb(disk_cache), "-", ""),
        *e2e,
    ]
    print()
    print(f"python bench/scale.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"{cold['pieces']:,} pieces, {cold['tokens']:,} tokens, {cold['skipped']} skipped, "
          f"{cold['duplicates']} duplicates; {args.jobs} worker processes, {os.cpu_count()} cores")
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"{'measure':{w[0]}}  {'figure':{w[1]}}  {'goal':{w[2]}}  verdict")
    for r in rows:
        print(f"{r[0]:{w[0]}}  {r[1]:{w[1]}}  {r[2]:{w[2]}}  {r[3]}")
    print(f"load average (1 min) {load0[0]:.2f} at start, {load1[0]:.2f} at end, on {os.cpu_count()} cores "
          f"shared with other work; this bench ran at niceness {os.nice(0)}")


if __name__ == "__main__":
    main()
