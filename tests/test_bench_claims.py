"""The benches print what the README quotes: sampling timed with the grammar compose uses, the window
figure marked as extrapolated, and the TBPTT comparison scored both with carried and fresh state."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from musiclstm.models.lstm import ModelConfig, MusicLSTM

ROOT = Path(__file__).resolve().parents[1]


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sample_speed_times_generate_with_and_without_the_grammar():
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "sample_speed.py"), "--layers", "1", "--hidden", "16",
                          "--embed", "16", "--tokens", "24", "--repeats", "1"],
                         capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "with the remi grammar (as compose)" in out and "with the grammar: batch 1" in out
    assert "EXTRAPOLATED" in out and "not run" in out
    assert "with the remi grammar:" in out.split("3. against")[1]


def test_windows_summary_reports_both_scorings_with_a_verdict_each():
    w = _bench("windows")
    results = {("tbptt", 0): {"best": 0.58, "fresh": 0.75}, ("random", 0): {"best": 0.71, "fresh": 0.70},
               ("tbptt", 1): {"best": 0.60, "fresh": 0.76}, ("random", 1): {"best": 0.70, "fresh": 0.72}}
    text = w.summary(results, [0, 1])
    assert "mean over seeds, fresh state per window" in text
    carried = next(x for x in text.splitlines() if x.startswith("winner, carried state"))
    fresh = next(x for x in text.splitlines() if x.startswith("winner, fresh state"))
    assert "tbptt by 0.1150" in carried and "lower on 2 of 2 seeds" in carried
    assert "random by 0.0450" in fresh and "lower on 2 of 2 seeds" in fresh


def test_fresh_state_nll_scores_each_window_from_a_zero_state():
    w = _bench("windows")
    torch.manual_seed(0)
    net = MusicLSTM(ModelConfig(20, embed=8, hidden=8, layers=1, dropout=0.0)).eval()
    ids = torch.randint(3, 20, (2 * 10 + 1,))
    got = w.fresh_state_nll(net, ids, seq_len=4, lanes=2)
    x, y = ids[:20].view(2, 10), ids[1:21].view(2, 10)
    total = 0.0
    with torch.no_grad():
        for s in (0, 4, 8):
            logits, _ = net(x[:, s:s + 4], None)
            total += F.cross_entropy(logits.flatten(0, 1), y[:, s:s + 4].flatten(), reduction="sum").item()
    assert abs(got - total / 20) < 1e-6
