"""Peak memory of `musiclstm evaluate` on POP909 (reliability item 8: the n-gram counts and the decoded
training pieces that evaluate holds).

    nice -n 10 python bench/eval_rss.py                      # the pop model on ../shared/data/pop909
    nice -n 10 python bench/eval_rss.py --code /tmp/old      # another copy of the package (before/after)

The corpus is prepared first in its own process (a warm cache under --cache, so preparation's workers
are not what is measured), then `python -m musiclstm evaluate CHECKPOINT DATA --samples N --json` runs
alone; its peak resident set (`wait4`'s ru_maxrss) and wall time are printed. The machine may be busy:
the time is not a speed figure, the memory is.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(cmd: list[str], env: dict) -> tuple[int, float, float]:
    """(exit status, peak RSS in MiB, seconds) of one process and what it waited for."""
    t0 = time.time()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if status:
        print(err[-2000:], file=sys.stderr)
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024, time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "pop909"))
    ap.add_argument("--checkpoint", default="pop")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--cache", default="/tmp/musiclstm-eval-rss-cache")
    ap.add_argument("--code", default=str(REPO), help="folder holding the musiclstm package to measure")
    a = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": a.code, "OMP_NUM_THREADS": "1", "MUSICLSTM_CACHE": a.cache}
    prep = (f"import musiclstm as ml; from musiclstm import data; m = ml.load({a.checkpoint!r}); "
            f"data.prepare([{a.data!r}], m.tokenizer, val_fraction=m.meta['train'].get('val_fraction', 0.1), "
            "jobs=1, progress=False)")
    code, _, secs = run([sys.executable, "-c", prep], env)
    print(f"prepared (warm cache) in {secs:.0f} s, exit {code}")
    code, rss, secs = run([sys.executable, "-m", "musiclstm", "evaluate", a.checkpoint, a.data, "--samples",
                           str(a.samples), "--json"], env)
    print(f"evaluate {a.checkpoint} on {a.data} (--samples {a.samples}), code {a.code}: exit {code}, "
          f"peak RSS {rss:,.0f} MiB, {secs:.0f} s")


if __name__ == "__main__":
    main()
