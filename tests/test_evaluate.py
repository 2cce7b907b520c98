"""Evaluation (n-gram baseline, sample statistics, memorisation) and the JSB benchmark."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from test_train_compose import TINY, _tune

from musiclstm import benchmark as bm
from musiclstm import checkpoint as ck
from musiclstm.cli import cli
from musiclstm.evaluate import KneserNey, evaluate, longest_copy, overlap_area
from musiclstm.train import train


def test_kneser_ney_is_a_distribution_and_learns():
    rng = np.random.default_rng(0)
    pattern = [1, 5, 6, 7, 8, 5, 6, 7, 8, 5, 6, 7, 9]
    seqs = [pattern + list(rng.integers(3, 12, 5)) for _ in range(30)]
    kn = KneserNey(3, 12).fit(seqs)
    for ctx in [(5, 6), (7, 8), (11, 11), (4, 3), ()]:  # seen, unseen and empty contexts
        total = sum(kn.prob(ctx, w) for w in range(12))
        assert math.isclose(total, 1.0, rel_tol=1e-9), (ctx, total)
        assert all(kn.prob(ctx, w) > 0 for w in range(12))
    assert kn.prob((5, 6), 7) > 0.9  # 6 is always followed by 7 after 5
    held = kn.nlls(pattern)
    assert held.shape == (len(pattern) - 1,) and held.mean() < math.log(12) / 3
    assert kn.nlls([1, 11, 3, 10, 4]).mean() > held.mean()


def test_overlap_area_and_longest_copy():
    rng = np.random.default_rng(1)
    same = [rng.normal(0, 1, 1) for _ in range(40)]
    also = [rng.normal(0, 1, 1) for _ in range(40)]
    far = [rng.normal(50, 1, 1) for _ in range(40)]
    assert overlap_area(same, also) > 0.8
    assert overlap_area(same, far) < 0.05
    training = [np.array([1, 2, 3, 4, 5, 6]), np.array([9, 8, 7])]
    assert longest_copy(np.array([0, 2, 3, 4, 0, 9, 8]), training) == 3
    assert longest_copy(np.array([0, 0]), training) == 0


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalcorpus")
    for i in range(24):
        _tune(root / f"{i}.mid", i)
    out = root.parent / "evalrun"
    train(root, out, cache_dir=root.parent / "cache", val_fraction=0.25, **{**TINY, "max_steps": 20})
    return root, out


def test_evaluate_reports_nll_against_ngram_and_statistics(small_run):
    root, out = small_run
    r = evaluate(ck.load(out), root, samples=3, sample_seconds=8, cache_dir=root.parent / "cache")
    assert r["held_out_files"] >= 1 and r["training_files"] >= 10 and r["tokens"] > 50
    assert 0 < r["nll_nats_per_token"] < 10 and 0 < r["ngram_nll_nats_per_token"] < 10
    assert math.isclose(r["bits_per_token"], r["nll_nats_per_token"] / math.log(2))
    assert sum(v["tokens"] for v in r["by_type"].values()) == r["tokens"]
    oa = r["samples"]["overlapping_area"]
    assert set(oa) >= {"pitch_class_histogram", "pitch_range", "note_density", "polyphony", "velocity"}
    assert all(0 <= v <= 1.01 for v in oa.values() if not math.isnan(v))
    assert r["validity"]["invalid_tokens"] == 0 and r["validity"]["zero_length_notes"] == 0
    assert r["memorisation"]["longest_copied_notes"] >= 0
    assert 0.5 <= r["samples"]["in_key"]["data"] <= 1  # the tunes are built on one scale
    assert r["samples"]["in_key"]["data"] == 1.0


def test_evaluate_command_json(small_run):
    root, out = small_run
    res = CliRunner().invoke(cli, ["evaluate", str(out), str(root), "--samples", "0", "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    assert {"nll_nats_per_token", "ngram_nll_nats_per_token", "perplexity", "by_type"} <= set(r)
    res = CliRunner().invoke(cli, ["evaluate", str(out), str(root / "0.mid"), "--samples", "0"])
    assert res.exit_code == 1 and "held-out" in res.output and "Traceback" not in res.output


def test_jsb_tokens_follow_the_published_layouts(data_dir):
    c16 = bm.jsb_corpus(data_dir / "jsb", "16th")
    # every step is four voice tokens; the published valid split is only scored, never trained on
    assert sum(len(p.ids) - 2 for p in c16.split("report")) == 4 * 18408
    assert len(c16.split("report")) == 76 and len(c16.split("train")) + len(c16.split("valid")) == 229
    cq = bm.jsb_corpus(data_dir / "jsb", "quarter")
    first = cq.split("report")[0]
    names = cq.tokenizer.names(first.ids[1:9])
    assert len(cq.split("report")) == 77 and len(cq.split("valid")) == 76
    pitches = [int(n.split("_")[-1]) for n in names[:4] if n.startswith("PITCH")]
    assert pitches == sorted(pitches, reverse=True)  # a frame: its pitches from the top, then rests


def test_benchmark_jsb_trains_and_evaluates(data_dir, tmp_path):
    res = CliRunner().invoke(cli, ["benchmark", "jsb", str(data_dir / "jsb"), "--evaluate-only", "--checkpoints",
                                   str(tmp_path)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    r = bm.jsb(data_dir / "jsb", out=tmp_path, progress=False, max_steps=2, embed=16, hidden=16, layers=1)
    assert 0 < r["jsb16_valid_nll_per_note"] < 10 and 0 < r["jsb_quarter_test_nll_per_frame"] < 40
    res = CliRunner().invoke(cli, ["benchmark", "jsb", str(data_dir / "jsb"), "--evaluate-only", "--checkpoints",
                                   str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    again = json.loads(res.output)
    assert again["jsb16_valid_nll_per_note"] == pytest.approx(r["jsb16_valid_nll_per_note"], rel=1e-3)  # fp16 copy
    assert again["16th"]["published"]["Transformer"] == 0.417


@pytest.mark.skipif(not ck.bundled_models().get("jsb16"), reason="the bundled JSB benchmark models are not built")
def test_bundled_jsb_models_reproduce_the_readme(data_dir):
    r = bm.jsb(data_dir / "jsb", evaluate_only=True)
    readme = (ck.BUNDLED_DIRS[1].parent / "README.md").read_text()
    assert f"{r['jsb16_valid_nll_per_note']:.3f}" in readme
    assert f"{r['jsb_quarter_test_nll_per_frame']:.3f}" in readme


def test_overlap_area_of_identical_constant_features_is_one():
    assert overlap_area([np.array([90.0])] * 5, [np.array([90.0])] * 3) == 1.0
    assert overlap_area([np.array([90.0])] * 5, [np.array([60.0])] * 3) < 0.05
