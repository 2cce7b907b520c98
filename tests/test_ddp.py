"""Exact DDP: two processes (gloo, CPU) stopped mid-epoch by one rank, resumed, match a straight run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import scale_corpus

import musiclstm as ml
from musiclstm.models import checkpoint

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> Path:
    """Runs tests/ddp_worker.py on two ranks: for each window order a straight run and one stopped at
    step 6 by rank 1 alone (Ctrl-C for `pieces`, its clock passing max_time for `random`), then resumed."""
    root = tmp_path_factory.mktemp("ddp")
    corpus = scale_corpus(root / "corpus")
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", OMP_NUM_THREADS="1",
               # the workers import this checkout's package (tests/ is their sys.path[0], not the repository)
               PYTHONPATH=os.pathsep.join([str(WORKER.parents[1]), *filter(None, [os.environ.get("PYTHONPATH")])]))
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(corpus), str(root)],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(2)]
    try:
        logs = [p.communicate(timeout=180)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for r, (p, log) in enumerate(zip(procs, logs, strict=True)):
        assert p.returncode == 0, f"rank {r}:\n{log[-3000:]}\nother rank:\n{logs[1 - r][-3000:]}"
    return root


@pytest.mark.parametrize("windows", ["pieces", "random"])
def test_two_ranks_stop_together_and_resume_exactly(ddp_runs, windows):
    stopped = checkpoint.read(ddp_runs / f"{windows}-split" / "stopped.pt")
    assert stopped["meta"]["step"] == 6 and stopped["meta"]["world_size"] == 2  # rank 0 stopped with rank 1
    ranks = stopped["resume"]["ranks"]
    assert len(ranks) == 2  # each rank's own generator, dropout stream and carried state
    assert not torch.equal(ranks[0]["torch_rng"], ranks[1]["torch_rng"])
    if windows == "pieces":
        assert not torch.equal(ranks[0]["carry_h"], ranks[1]["carry_h"])
    else:
        assert not torch.equal(ranks[0]["generator"], ranks[1]["generator"])
    straight = checkpoint.read(ddp_runs / f"{windows}-straight" / "last.pt")
    resumed = checkpoint.read(ddp_runs / f"{windows}-split" / "last.pt")
    assert resumed["meta"]["step"] == straight["meta"]["step"] > 6
    for k, w in straight["weights"].items():
        assert torch.equal(w, resumed["weights"][k]), k  # bit for bit
    for a, b in zip(straight["resume"]["ranks"], resumed["resume"]["ranks"], strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_with_another_number_of_processes_is_refused(ddp_runs):
    with pytest.raises(ml.ConfigError, match=r"trained by 2 process\(es\) and cannot resume with 1"):
        ml.train(ddp_runs / "corpus", ddp_runs / "pieces-split", resume=True, cache_dir=ddp_runs / "cache",
                 progress=False)


def test_a_resumed_time_budget_is_not_started_over(ddp_runs):
    first = checkpoint.read(ddp_runs / "budget" / "first.pt")
    again = checkpoint.read(ddp_runs / "budget" / "last.pt")
    assert 0 < first["meta"]["step"] < 50 * 8  # stopped by the clock, long before its epochs were done
    assert again["meta"]["step"] == first["meta"]["step"]  # the budget was spent: the resumed run took no step

