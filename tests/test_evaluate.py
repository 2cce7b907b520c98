"""Evaluation (n-gram baseline, sample statistics, memorisation) and the JSB benchmark."""

from __future__ import annotations

import importlib
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from test_train_compose import TINY, _tune

from musiclstm import data
from musiclstm.app.cli import cli
from musiclstm.encodings.tokenizer import BOS, EOS, Tokenizer
from musiclstm.evaluation import benchmark as bm
from musiclstm.evaluation.evaluate import KneserNey, evaluate, repeat_probe
from musiclstm.evaluation.samples import longest_copies, longest_copy, overlap_area
from musiclstm.io.score import Score
from musiclstm.models import checkpoint as ck
from musiclstm.training.lm import train

ev = importlib.import_module("musiclstm.evaluation.evaluate")  # the module (musiclstm.evaluate is also the function)


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


def test_kneser_ney_counts_in_numpy_arrays_not_python_dicts():
    import tracemalloc

    rng = np.random.default_rng(0)
    seqs = [rng.integers(3, 300, 2000) for _ in range(100)]  # 200,000 tokens, ~1M distinct n-grams
    tracemalloc.start()
    try:
        kn = KneserNey(5, 300).fit(seqs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Python dicts took ~150 MB here (about 100 bytes an n-gram); numpy arrays take ~30 MB
    assert peak < 60 * 2**20, peak / 2**20
    # the same numbers as one context at a time
    s = np.r_[1, seqs[0][:50]]
    hist = [1] * 4 + s.tolist()
    assert np.allclose(kn.nlls(s), [-math.log(kn.prob(hist[i - 4:i], hist[i])) for i in range(5, len(hist))])


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


def test_evaluate_reports_nll_against_ngram_and_statistics(small_run, monkeypatch):
    root, out = small_run
    model = ck.load(out)
    cache = root.parent / "cache"
    prepared = data.prepare([root], model.tokenizer, val_fraction=0.25, cache_dir=cache, progress=False)
    held, train_piece = prepared.split("valid"), prepared.split("train")[0]
    compose_module = importlib.import_module("musiclstm.generation.compose")
    real_compose = compose_module.compose
    copied = data.sequence(train_piece, model.tokenizer)

    def compose_with_a_copy(*args, **kw):  # the first sample is a training piece note for note
        pms, seqs = real_compose(*args, **kw)
        return pms, [copied.tolist(), *seqs[1:]]

    monkeypatch.setattr(compose_module, "compose", compose_with_a_copy)
    warned = []
    r = evaluate(model, root, samples=3, sample_seconds=8, cache_dir=cache, warn=warned.append)
    assert r["held_out_files"] == len(held) >= 1 and r["training_files"] >= 10
    # every held-out piece is scored after BOS from a zero state: its ids and its EOS are predicted
    assert r["tokens"] == sum(len(p.ids) + 1 for p in held) and r["by_type"]["EOS"]["tokens"] == len(held)
    assert r["data_check"]["match"] is True and not warned and not r["warnings"]
    assert 0 < r["nll_nats_per_token"] < 10 and 0 < r["ngram_nll_nats_per_token"] < 10
    assert math.isclose(r["bits_per_token"], r["nll_nats_per_token"] / math.log(2))
    assert sum(v["tokens"] for v in r["by_type"].values()) == r["tokens"]
    oa = r["samples"]["overlapping_area"]
    assert set(oa) >= {"pitch_class_histogram", "pitch_range", "note_density", "polyphony", "velocity"}
    assert all(0 <= v <= 1.01 for v in oa.values() if not math.isnan(v))
    assert r["validity"]["invalid_tokens"] == 0 and r["validity"]["zero_length_notes"] == 0
    notes = len(model.tokenizer.decode_score(copied))
    assert r["memorisation"]["longest_copied_notes"] == notes  # the copied sample, found whole
    assert r["memorisation"]["mean_longest_copied_notes"] >= notes / 3
    assert 0.5 <= r["samples"]["in_key"]["data"] <= 1  # the tunes are built on one scale
    assert r["samples"]["in_key"]["data"] == 1.0


def test_evaluate_command_json(small_run):
    root, out = small_run
    res = CliRunner().invoke(cli, ["evaluate", str(out), str(root), "--samples", "0", "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    assert {"nll_nats_per_token", "ngram_nll_nats_per_token", "perplexity", "by_type", "repeat_probe",
            "data_check"} <= set(r)
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


def _strict_json(text: str) -> dict:
    def refuse(name):
        raise ValueError(f"{name} in JSON")

    return json.loads(text, parse_constant=refuse)


def test_evaluate_compare_seed_and_table(small_run):
    root, out = small_run
    args = ["evaluate", str(out), str(root), "--samples", "2", "--seconds", "4", "--quarters", "8", "--seed", "3"]
    res = CliRunner().invoke(cli, [*args, "--compare", str(out), "--json"])
    assert res.exit_code == 0, res.output
    r = _strict_json(res.stdout)  # NaN statistics are written as null
    a, b = r["music"]["statistics"], r["compare"]["music"]["statistics"]
    assert set(a) >= {"in_scale", "steps", "empty_beat_rate", "repeated_bars", "last_bass_on_tonic"}
    assert a["in_scale"]["model"] == b["in_scale"]["model"]  # the same seed: the same samples
    assert a["in_scale"]["real"]["mean"] == 1.0 and a["in_scale"]["real"]["n"] == r["music"]["pieces"]
    res = CliRunner().invoke(cli, [*args, "--compare", str(out)])
    assert res.exit_code == 0, res.output
    table = res.stdout
    assert "repeat probe" in table and "shuffled" in table and table.count(f"LSTM {out}") == 2
    assert "in_scale" in table and "steps" in table and "repeated_bars" in table


def test_evaluate_warns_on_a_fingerprint_mismatch_and_train_overlap(small_run, tmp_path):
    root, out = small_run
    model = ck.load(out)
    model.meta["fingerprint"] = "0123456789abcdef"  # as if trained on another export
    warned = []
    r = evaluate(model, root, samples=0, cache_dir=root.parent / "cache", warn=warned.append)
    assert r["data_check"]["match"] is False and len(warned) == 1 and "0123456789abcdef" in warned[0]
    assert r["warnings"] == warned
    res = CliRunner().invoke(cli, ["evaluate", str(out), str(root), "--samples", "0"])
    assert res.exit_code == 0 and "warning" not in res.stderr  # the run's own data matches
    train = tmp_path / "train"
    train.mkdir()
    for i in range(3):
        (train / f"{i}.mid").write_bytes((root / f"{i}.mid").read_bytes())
    res = CliRunner().invoke(cli, ["evaluate", str(out), str(root), "--train-data", str(train), "--samples", "0",
                                   "--json"])
    assert res.exit_code == 0, res.output
    r = _strict_json(res.stdout)
    assert r["data_check"]["train_overlap_files"] == 3 and r["held_out_files"] == 21
    assert r["data_check"]["match"] is False
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2 and all(x.startswith("warning: ") for x in lines)  # overlap, fingerprint


def test_sequences_start_with_bos_and_the_style():
    tok = Tokenizer("remi", styles=("folk", "bach"))
    ids = np.array([tok.vocab.offset["BAR"]], np.int64)
    piece = data.Piece(path=None, sha="0" * 40, style="bach", split="valid", ids=ids, seconds=1.0)
    assert data.sequence(piece, tok).tolist() == [BOS, tok.style_id("bach"), ids[0], EOS]
    piece.style = None
    assert data.sequence(piece, tok).tolist() == [BOS, ids[0], EOS]
    piece.style = "jazz"  # a style the model never saw: no STYLE token (the one builder, `Tokenizer.frame`)
    assert data.sequence(piece, tok).tolist() == [BOS, ids[0], EOS]


def test_repeat_probe_splits_a_repeated_bar_from_the_others():
    tok = Tokenizer("remi", version=2)  # token by token: remi 3 writes these repeated bars as REPEAT tokens
    a = [(0, 1, 60), (1, 2, 64), (2, 3, 67), (3, 4, 72)]
    b = [(0, 2, 62), (2, 4, 65)]
    bars = [a, b, a, b, [(0, 4, 59)]]  # bars 3 and 4 repeat bars 1 and 2
    rows = [(4 * i + s, 4 * i + e, p, 80) for i, bar in enumerate(bars) for s, e, p in bar]
    seq = np.array(tok.encode(Score.from_notes(rows)))
    target = seq[1:]
    bar_of = np.cumsum(target == tok.vocab.offset["BAR"]) - 1
    nll = np.where((bar_of == 2) | (bar_of == 3), 1.0, 3.0)  # cheap tokens exactly in the repeated bars
    p = repeat_probe(tok, [seq], [nll])
    assert p["bars"] == 5 and p["repeated_bars"] == 2
    pitch = p["by_type"]["PITCH"]
    assert (pitch["repeated_tokens"], pitch["other_tokens"]) == (6, 7)
    assert pitch["repeated"] == 1.0 and pitch["other"] == 3.0
    assert p["all"]["repeated_tokens"] == int(((bar_of == 2) | (bar_of == 3)).sum())
    # the same piece with nothing repeated: every bar counts as other
    rows = [(4 * i + s, 4 * i + e, p + i, 80) for i, bar in enumerate(bars) for s, e, p in bar]
    seq = np.array(tok.encode(Score.from_notes(rows)))
    p = repeat_probe(tok, [seq], [np.ones(len(seq) - 1)])
    assert p["repeated_bars"] == 0 and p["by_type"]["PITCH"]["other_tokens"] == 13
    assert repeat_probe(Tokenizer("performance"), [seq], [np.ones(len(seq) - 1)]) is None


def test_music_statistics_reads_real_model_and_shuffled_alike():
    tok = Tokenizer("remi")
    phrase = [60, 62, 64, 65, 67, 65, 64, 62, 64, 64, 67, 72, 71, 67, 62, 60]
    tune = [(8 + i, 9 + i, p, 80) for i, p in enumerate(phrase + phrase)]  # two empty bars, then the tune twice
    scale = [(i, i + 1, p, 80) for i, p in enumerate([60, 62, 64, 65, 67, 69, 71, 72] * 4)]
    real = [np.array(tok.encode(Score.from_notes(tune)))] * 3
    model = [np.array(tok.encode(Score.from_notes(scale)))] * 2
    m = ev.music_statistics(tok, real, model, quarters=24, seconds=16, seed=0)
    st = m["statistics"]
    assert m["pieces"] == 3 and m["samples"] == 2 and m["voices"] == 1
    # cut to 24 quarters after the empty bars: bars 5-6 repeat bars 1-2 (of 6 bars)
    assert st["repeated_bars"]["real"]["mean"] == pytest.approx(2 / 6)
    # the scale's second bar (G A B C) is its first (C D E F) a fifth higher: 5 of 6 bars repeat
    assert st["repeated_bars"]["model"]["mean"] == pytest.approx(5 / 6)
    assert st["in_scale"]["model"]["mean"] == 1.0 and st["leaps"]["model"]["mean"] == pytest.approx(2 / 23)
    assert st["in_scale"]["shuffled"]["mean"] == st["in_scale"]["real"]["mean"]  # the same pitch collection
    assert st["empty_beat_rate"]["shuffled"]["mean"] == st["empty_beat_rate"]["real"]["mean"] == 0  # trimmed
    assert st["time_signature"]["real"]["mean"] == 1.0 and st["time_signature"]["shuffled"]["n"] == 0
    assert st["length_vs_asked"]["model"]["mean"] == pytest.approx(1.0)  # 32 quarters at 120 qpm, 16 s asked
    assert st["in_scale"]["d_model"] == 0.0 and st["repeated_bars"]["d_model"] == math.inf  # no spread at all
    assert st["parallel_fifths"]["real"]["n"] == 0  # one voice: no voice statistics


@given(st.lists(st.lists(st.integers(0, 3), max_size=30), min_size=1, max_size=6),
       st.lists(st.lists(st.integers(0, 3), max_size=30), min_size=1, max_size=4))
@settings(max_examples=60, deadline=None)
def test_longest_copies_reads_the_training_pieces_once_and_agrees_with_brute_force(training, samples):
    def brute(s, t):
        return max((k for k in range(len(s) + 1) for a in range(len(s) - k + 1) for b in range(len(t) - k + 1)
                    if s[a:a + k] == t[b:b + k]), default=0)

    read = []
    stream = (read.append(1) or np.array(t, np.int64) for t in training)
    got = longest_copies([np.array(s, np.int64) for s in samples], stream)
    assert got == [max(brute(s, t) for t in training) for s in samples]
    assert len(read) == len(training)
