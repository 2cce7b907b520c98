"""One rank of tests/test_ddp.py: straight, stopped and resumed two-process runs (gloo, CPU).

Started twice by the test with RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set. The process
group is made once here and shared by every `train()` call (train leaves a caller's group alone).
Each stop is raised on rank 1 only, so the runs pass only if the ranks agree on when to stop.

    python tests/ddp_worker.py CORPUS ROOT
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import time
import types
from pathlib import Path

import torch

import musiclstm as ml

train_mod = importlib.import_module("musiclstm.training.loop")  # the shared loop: its clock and lr_at

TINY = dict(preset="tiny", embed=16, hidden=32, layers=1, seq_len=16, batch_size=2, warmup_steps=2, epochs=2,
            sample_tokens=0, jobs=1, progress=False, cache=False, eval_every=16)
STOP_AT = 5  # the stop arrives while this step is computed (mid-epoch: an epoch is longer)


def stop_on_rank1(how: str):
    """Patch train's clock or lr_at so that rank 1 alone asks to stop during step STOP_AT."""
    real_lr, real_time = train_mod.lr_at, time.time
    ahead = [0.0]
    train_mod.time = types.SimpleNamespace(time=lambda: real_time() + ahead[0])

    def lr_at(step, *args):
        if step == STOP_AT and os.environ["RANK"] == "1":
            if how == "ctrl-c":
                os.kill(os.getpid(), signal.SIGINT)
            else:  # max_time: rank 1's clock leaps past it
                ahead[0] = 1e6
        return real_lr(step, *args)

    train_mod.lr_at = lr_at

    def undo():
        train_mod.lr_at, train_mod.time = real_lr, time

    return undo


def main(corpus: str, root: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    root = Path(root)
    cache = root / "cache"
    for windows, how in (("pieces", "ctrl-c"), ("random", "max_time")):
        opts = dict(TINY, windows=windows, max_time=1e5)
        ml.train(corpus, root / f"{windows}-straight", cache_dir=cache, **opts)
        undo = stop_on_rank1(how)
        try:
            ml.train(corpus, root / f"{windows}-split", cache_dir=cache, **opts)
            assert how == "max_time", "Ctrl-C on rank 1 did not stop rank 0"
        except KeyboardInterrupt:
            assert how == "ctrl-c"
        undo()
        torch.distributed.barrier()  # rank 0 has written last.pt (a stopped run's ranks leave without waiting)
        split = root / f"{windows}-split"
        if os.environ["RANK"] == "0":  # keep the stopped run's last.pt for the test to look at
            (split / "stopped.pt").write_bytes((split / "last.pt").read_bytes())
        torch.distributed.barrier()
        ml.train(corpus, split, resume=True, cache_dir=cache, progress=False)
    time_budget(corpus, root, cache)
    torch.distributed.destroy_process_group()


def time_budget(corpus: str, root: Path, cache: Path) -> None:
    """A run stopped by its --max-time, resumed: the budget is spent, so the resumed run takes no step.
    Each rank's clock advances one second each time train reads it."""
    now = [0.0]

    def tick():
        now[0] += 1.0
        return now[0]

    train_mod.time = types.SimpleNamespace(time=tick)
    try:
        out = root / "budget"
        opts = dict(TINY, windows="pieces", max_time=40.0, epochs=50)
        ml.train(corpus, out, cache_dir=cache, **opts)
        torch.distributed.barrier()
        if os.environ["RANK"] == "0":
            (out / "first.pt").write_bytes((out / "last.pt").read_bytes())
        torch.distributed.barrier()
        ml.train(corpus, out, resume=True, cache_dir=cache, progress=False)
    finally:
        train_mod.time = time


if __name__ == "__main__":
    main(*sys.argv[1:])
