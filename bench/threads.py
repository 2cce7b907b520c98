"""Training tokens/s against CPU threads, on an idle machine and with one core busy elsewhere.

    python bench/threads.py [--hidden 256 --layers 2 --batch 32 --seq-len 256] [--seconds 10] [--repeats 2]

Figure: steady-state training tokens/s (forward, cross-entropy, backward, AdamW step) of the
project's `MusicLSTM` at the `small` preset's shapes (2x256 LSTM, batch 32 x 256 tokens), on
random token ids, in a fresh process per measurement whose threads are set by
`musiclstm.app.cli.set_threads(N)` (what `--threads N` does). Each cell is measured for 1 and 2
threads, with OpenMP's default (spinning) wait policy and with OMP_WAIT_POLICY=PASSIVE, once on
the machine as it is ("idle") and once while a busy-loop process (`while True: pass`) holds a core
("busy"). A cell is the median over --repeats of (tokens in the timed steps) / (their wall time),
after two warm-up steps. The load average before the run is printed: "idle" means no load added
by this bench, not an empty machine.

The question it answers: which `--threads` default holds up when another process uses a core.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(a) -> None:
    """One measurement in this process: prints {"tokens_per_s": ...}."""
    sys.path.insert(0, str(ROOT))
    import torch
    import torch.nn.functional as F

    from musiclstm.app.cli import set_threads
    from musiclstm.models.lstm import ModelConfig, MusicLSTM

    set_threads(a.threads)
    torch.manual_seed(0)
    net = MusicLSTM(ModelConfig(a.vocab, a.hidden, a.hidden, a.layers, 0.1)).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq_len + 1))

    def step():
        logits, _ = net(ids[:, :-1])  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, a.vocab), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < a.seconds:
        step()
        n += 1
    print(json.dumps({"tokens_per_s": n * a.batch * a.seq_len / (time.perf_counter() - t0)}))


def measure(a, threads: int, passive: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    cmd = [sys.executable, __file__, "--worker", "--threads", str(threads), "--seconds", str(a.seconds),
           "--hidden", str(a.hidden), "--layers", str(a.layers), "--batch", str(a.batch), "--seq-len", str(a.seq_len),
           "--vocab", str(a.vocab)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["tokens_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--vocab", type=int, default=300)
    p.add_argument("--seconds", type=float, default=10.0, help="Timed seconds per measurement.")
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    if a.worker:
        worker(a)
        return
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} before the run; "
          f"{a.layers}x{a.hidden} LSTM, batch {a.batch} x {a.seq_len} tokens, {a.seconds:g} s x {a.repeats}")
    cells = [(t, passive) for t in (1, 2) for passive in (False, True)]
    results: dict[tuple[int, bool, bool], list[float]] = {}
    for _ in range(a.repeats):
        for busy in (False, True):
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
            try:
                for t, passive in cells:
                    results.setdefault((t, passive, busy), []).append(measure(a, t, passive))
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
    print(f"\n{'threads':>7}  {'OpenMP wait':>11}  {'idle tok/s':>10}  {'busy tok/s':>10}  {'busy/idle':>9}")
    for t, passive in cells:
        idle = statistics.median(results[t, passive, False])
        busy = statistics.median(results[t, passive, True])
        print(f"{t:>7}  {'passive' if passive else 'default':>11}  {idle:>10.0f}  {busy:>10.0f}  {busy / idle:>8.0%}")


if __name__ == "__main__":
    main()
