"""Precision: what auto means where, bf16 training on CPU, and the record of it in the checkpoint."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import scale_corpus

import musiclstm as ml
from musiclstm.app.cli import cli
from musiclstm.models import checkpoint

loop_mod = importlib.import_module("musiclstm.training.loop")

TINY = dict(preset="tiny", embed=16, hidden=32, layers=2, seq_len=32, batch_size=4, warmup_steps=2,
            sample_tokens=0, jobs=1, progress=False, cache=False, max_steps=4, eval_every=2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return scale_corpus(tmp_path_factory.mktemp("corpus"), 6, qpm=110, notes=30, more=5, step=0.25, length=0.2)


@pytest.mark.parametrize("native,cuda,asked,want", [
    (True, False, "auto", "bf16"), (False, False, "auto", "fp32"), (True, False, "fp32", "fp32"),
    (False, False, "bf16", "bf16"), (True, False, "fp16", "fp32"), (False, True, "auto", "bf16"),
])
def test_what_auto_means_where(monkeypatch, native, cuda, asked, want):
    monkeypatch.setattr(loop_mod, "native_bf16", lambda: native)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    device = torch.device("cuda" if cuda else "cpu")
    assert loop_mod.resolve_precision(asked, device) == want


def test_bf16_trains_without_nan_and_the_checkpoint_records_it(corpus, tmp_path):
    best = ml.train(corpus, tmp_path / "bf16", cache_dir=tmp_path / "cache", precision="bf16", **TINY)
    meta = checkpoint.read(best)["meta"]
    assert meta["precision"] == "bf16" and meta["train"]["precision"] == "bf16"
    rows = [json.loads(line) for line in (tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(math.isfinite(r["train_nll"]) and math.isfinite(r["val_nll"]) for r in rows)
    assert all(torch.isfinite(w).all() and w.dtype == torch.float32 for w in checkpoint.read(best)["weights"].values())
    res = CliRunner().invoke(cli, ["info", str(tmp_path / "bf16")])
    assert res.exit_code == 0 and "trained in bf16 precision (--precision bf16) by 1 process(es)" in res.output
    assert json.loads(CliRunner().invoke(cli, ["info", str(best), "--json"]).output)["precision"] == "bf16"


def test_fp32_is_recorded_too(corpus, tmp_path):
    best = ml.train(corpus, tmp_path / "fp32", cache_dir=tmp_path / "cache", precision="fp32", **TINY)
    assert checkpoint.read(best)["meta"]["precision"] == "fp32"
