"""Training windows that start every piece from a fresh state, exact resume past warmup, divergence."""

from __future__ import annotations

import importlib
import json
import os
import signal
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import torch
from conftest import scale_corpus

import musiclstm as ml
from musiclstm.data.windows import PieceWindows
from musiclstm.encodings.tokenizer import BOS, EOS, PAD
from musiclstm.models import checkpoint

train_mod = importlib.import_module("musiclstm.training.lm")  # the module (musiclstm.train is also the function)
loop_mod = importlib.import_module("musiclstm.training.loop")  # the one training loop: its clock and rate
loop_mod = importlib.import_module("musiclstm.training.loop")  # the loop both model kinds share

TINY = dict(preset="tiny", embed=16, hidden=32, layers=1, seq_len=32, batch_size=4, warmup_steps=2,
            sample_tokens=0, jobs=1, progress=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return scale_corpus(tmp_path_factory.mktemp("corpus"))


def _pieces(lengths):
    return [np.r_[BOS, np.arange(10, 10 + n), EOS].astype(np.int64) for n in lengths]


def test_piece_windows_start_every_piece_from_a_reset_and_never_mix_pieces():
    seqs = _pieces([5, 40, 17, 64, 3, 33])
    win = PieceWindows(seqs, batch=2, length=8, seed=3)
    seen = []
    for epoch in (0, 1):
        lanes = [[] for _ in range(2)]
        for i in range(win.batches_per_epoch):
            x, y, reset = win.get(i, epoch=epoch)
            assert x.shape == y.shape == (2, 8)
            for b in range(2):
                if x[b, 0] == BOS:
                    assert reset[b]  # a piece begins: the state starts from zeros
                lanes[b].append((x[b], y[b], bool(reset[b])))
        # every (x, y) pair of every piece appears exactly once an epoch, PAD aside
        pairs = sorted((int(a), int(b)) for lane in lanes for x, y, _ in lane
                       for a, b in zip(x, y, strict=True) if b != PAD)
        want = sorted((int(a), int(b)) for s in seqs for a, b in zip(s[:-1], s[1:], strict=True))
        assert pairs == want
        seen.append([[int(x[0]) for x, _, _ in lane] for lane in lanes])
    assert seen[0] != seen[1]  # dealt in a new order each epoch ...
    again = PieceWindows(seqs, batch=2, length=8, seed=3)
    # ... from (seed, epoch) alone, so a resumed run deals the same
    assert [[int(again.get(i, epoch=1)[0][b, 0]) for i in range(again.batches_per_epoch)] for b in range(2)] == seen[1]


def test_a_window_never_carries_state_from_another_piece():
    seqs = _pieces([20, 20, 20, 20])
    win = PieceWindows(seqs, batch=1, length=8, shuffle=False)
    owner = []
    for i in range(win.batches_per_epoch):
        x, _, reset = win.get(i)
        if (x[0] == PAD).all():  # the lane has run out of pieces
            continue
        if reset[0]:
            owner.append([])
        owner[-1].append(x[0])
    assert len(owner) == 4 and all(o[0][0] == BOS and len(o) == 3 for o in owner)


def _straight_and_interrupted(corpus, tmp_path, monkeypatch, stop_at: int, total: int):
    straight = tmp_path / "straight"
    ml.train(corpus, straight, cache_dir=tmp_path / "cache", max_steps=total, eval_every=4, **TINY)

    out = tmp_path / "split"
    real_lr = loop_mod.lr_at

    def lr_then_ctrl_c(step, cfg, n, *elapsed):  # Ctrl-C arrives while step `stop_at` is being computed
        if step == stop_at:
            os.kill(os.getpid(), signal.SIGINT)
        return real_lr(step, cfg, n, *elapsed)

    monkeypatch.setattr(loop_mod, "lr_at", lr_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        ml.train(corpus, out, cache_dir=tmp_path / "cache", max_steps=total, eval_every=4, **TINY)
    monkeypatch.setattr(loop_mod, "lr_at", real_lr)
    return straight, out


def test_ctrl_c_mid_interval_past_warmup_resumes_exactly(corpus, tmp_path, monkeypatch):
    straight, out = _straight_and_interrupted(corpus, tmp_path, monkeypatch, stop_at=5, total=10)
    saved = checkpoint.read(out / "last.pt")
    assert saved["meta"]["step"] == 6  # the step in flight finished; weights, step and carry agree
    ml.train(corpus, out, resume=True, cache_dir=tmp_path / "cache", progress=False)
    a, b = checkpoint.read(straight / "last.pt")["weights"], checkpoint.read(out / "last.pt")["weights"]
    assert checkpoint.read(out / "last.pt")["meta"]["step"] == 10
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_nan_validation_never_becomes_best_and_stops_the_run(corpus, tmp_path, monkeypatch):
    out = tmp_path / "nan"
    calls = []
    real = train_mod.evaluate_nll

    def second_is_nan(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs) if len(calls) == 1 else float("nan")

    monkeypatch.setattr(train_mod, "evaluate_nll", second_is_nan)
    with pytest.raises(ml.MusiclstmError, match="diverged at step 4"):
        ml.train(corpus, out, cache_dir=tmp_path / "cache", max_steps=8, eval_every=2, **TINY)
    assert checkpoint.read(out / "best.pt")["meta"]["step"] == 2


def test_anneal_by_time_ends_the_decay_at_max_time():
    cfg = train_mod.TrainConfig.build("tiny", warmup_steps=10, max_steps=10_000, max_time=100.0, anneal_by_time=True)
    assert loop_mod.lr_at(50, cfg, 10_000, elapsed=100.0) == pytest.approx(0.1 * cfg.lr)  # the clock says: done
    assert loop_mod.lr_at(50, cfg, 10_000, elapsed=0.0) > 0.99 * cfg.lr  # the step count says: just begun
    plain = train_mod.TrainConfig.build("tiny", warmup_steps=10, max_time=100.0)
    assert loop_mod.lr_at(50, plain, 10_000, elapsed=100.0) > 0.99 * plain.lr


def test_report_counts_one_beat_meters_and_lists_programs(tmp_path):
    from musiclstm.data.preparation import prepare

    for i, (program, sig) in enumerate([(0, (1, 4)), (40, (3, 4))]):
        pm = pretty_midi.PrettyMIDI(initial_tempo=100)
        pm.time_signature_changes.append(pretty_midi.TimeSignature(*sig, 0))
        inst = pretty_midi.Instrument(program)
        inst.notes += [pretty_midi.Note(80, 60 + j, j * 0.6, j * 0.6 + 0.5) for j in range(12)]
        pm.instruments.append(inst)
        pm.write(str(tmp_path / f"{i}.mid"))
    corpus = prepare([tmp_path], ml.Tokenizer("remi"), val_fraction=0, jobs=1, cache_dir=tmp_path / "c",
                     progress=False)
    report = corpus.to_json()
    assert report["meter_repaired"] == 1 and "1 files with one-beat bars" in corpus.report()
    assert report["programs"] == [0, 40]


def test_compose_refuses_instruments_the_model_never_saw():
    from musiclstm.models.checkpoint import Model
    from musiclstm.models.lstm import ModelConfig, MusicLSTM

    tok = ml.Tokenizer("remi")
    model = Model(MusicLSTM(ModelConfig(tok.vocab_size, 8, 8, 1, 0.0)).eval(), tok, {"data": {"programs": [40, 41]}})
    with pytest.raises(ml.ConfigError, match=r"never saw String Ensemble 1 \(48\), drums.*knows: Violin \(40\)"):
        ml.compose(model, seconds=2, instruments="strings,drums")
    pm = ml.compose(model, seconds=4, instruments="violin", seed=0)
    assert {i.program for i in pm.instruments} <= {40}


def test_a_runaway_draw_is_drawn_again_from_a_derived_seed(monkeypatch):
    compose_mod = importlib.import_module("musiclstm.generation.compose")
    from musiclstm.models.checkpoint import Model
    from musiclstm.models.lstm import ModelConfig, MusicLSTM

    tok = ml.Tokenizer("remi")
    torch.manual_seed(0)
    model = Model(MusicLSTM(ModelConfig(tok.vocab_size, 8, 8, 1, 0.0)).eval(), tok, {"data": {"density_p99": 1e-3}})
    seeds = []
    real = compose_mod._sample

    def spy(*args, seed, **kwargs):
        seeds.append(seed)
        return real(*args, seed=seed, **kwargs)

    monkeypatch.setattr(compose_mod, "_sample", spy)
    ml.compose(model, seconds=3, seed=5)
    assert seeds == [5, 5 + 7919, 5 + 2 * 7919, 5 + 3 * 7919]  # every draw is "too dense" for this limit
    seeds.clear()
    model.meta["data"]["density_p99"] = 1e6
    a = ml.compose(model, seconds=3, seed=5)
    again = ml.compose(model, seconds=3, seed=5)
    assert seeds == [5, 5] and len(again.instruments[0].notes) == len(a.instruments[0].notes)  # never redrawn


def test_grid_voices_are_named_by_height():
    from musiclstm.generation.compose import _name_voices_by_height
    from musiclstm.io.score import Score, Track

    names = ["Soprano", "Alto", "Tenor", "Bass"]
    s = Score([0, 0, 0, 0], [1, 1, 1, 1], [48, 72, 60, 67], [80] * 4, [0, 1, 2, 3],
              tracks=[Track(52, False, n) for n in names])
    named = _name_voices_by_height(s)
    assert {int(p): named.tracks[k].name for p, k in zip(s.pitch, s.track, strict=True)} == {
        72: "Soprano", 67: "Alto", 60: "Tenor", 48: "Bass"}


def test_training_ends_by_tuning_the_continuous_cache(corpus, tmp_path):
    out = tmp_path / "cached"
    ml.train(corpus, out, cache_dir=tmp_path / "cache", max_steps=4, eval_every=4, val_fraction=0.3, **TINY)
    model = ml.load(out)
    c = model.meta["cache"]
    assert c["tuned_on_pieces"] >= 1 and c["val_nll_with"] <= c["val_nll_without"]
    assert model.cache is not None and model.cache.skip == 12


@pytest.mark.parametrize("qpm", [60, 120, 180])
def test_compose_lengths_are_exact_at_any_tempo_and_under_a_polyphony_limit(qpm):
    from musiclstm.models.checkpoint import Model
    from musiclstm.models.lstm import ModelConfig, MusicLSTM

    tok = ml.Tokenizer("remi")
    torch.manual_seed(1)
    model = Model(MusicLSTM(ModelConfig(tok.vocab_size, 16, 32, 1, 0.0)).eval(), tok, {})
    pm, (ids,) = ml.compose(model, seconds=12, tempo=qpm, seed=2, max_polyphony=1, return_ids=True)
    names = tok.names(ids)
    assert {n for n in names if n.startswith("TEMPO_")} == {f"TEMPO_{qpm}"}
    bar = 8 * 60 / qpm  # the longest bar the grammar allows (8 quarters)
    end = pm.get_end_time()
    assert 12 - 2 * bar <= end <= 12 + bar  # ends at a bar line within a bar of 12 s; nothing rings past it
    notes = [n for i in pm.instruments for n in i.notes]
    assert all(sum(m.start <= n.start < m.end for m in notes) <= 1 for n in notes)  # one note at a time
    _, (ids,) = ml.compose(model, bars=3, seed=2, return_ids=True)
    new = ["BAR" if n.startswith("BAR_") else n for n in tok.names(ids)]  # remi 3 numbers its bars
    # three bars: closed by the fourth bar line, or ended by the model itself within the third
    assert (new.count("BAR"), new[-1]) in ((4, "BAR"), (3, "EOS"))
    _, (ids,) = ml.compose(model, tokens=120, seed=2, return_ids=True)
    assert len(ids) == 1 + 120  # BOS and exactly 120 tokens


# ---- no step on padding; the clock survives a resume (reliability items 3 and 4) ----------------------------

def test_batches_of_padding_alone_move_no_weight_and_train_nll_is_per_real_token(corpus, tmp_path, monkeypatch):
    batches, real_get = [], PieceWindows.get

    def get(self, *args, **kw):
        x, y, reset = real_get(self, *args, **kw)
        if torch.is_grad_enabled():  # a training batch, not validation's
            batches.append(int((y != PAD).sum()))
        return x, y, reset

    steps = []
    real_step = torch.optim.AdamW.step
    monkeypatch.setattr(PieceWindows, "get", get)
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: (steps.append(1), real_step(self, *a, **k))[1])
    sums = []  # (nats, real targets) of each training batch the loss saw
    real_ce = train_mod.F.cross_entropy

    def ce(logits, y, *args, **kw):
        out = real_ce(logits, y, *args, **kw)
        if torch.is_grad_enabled():
            sums.append((out.item(), int((y != PAD).sum())))
        return out

    monkeypatch.setattr(train_mod.F, "cross_entropy", ce)
    out = tmp_path / "pad"
    ml.train(corpus, out, cache_dir=tmp_path / "cache", epochs=2, cache=False, **{**TINY, "batch_size": 3})
    assert 0 in batches  # the corpus makes batches of padding alone (the end of an epoch) ...
    assert len(steps) == sum(n > 0 for n in batches)  # ... and no optimizer step is taken on them
    assert all(n > 0 for _, n in sums)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first = [s for s in sums[:sum(n > 0 for n in batches[:rows[0]["step"]])]]
    assert rows[0]["train_nll"] == pytest.approx(sum(a for a, _ in first) / sum(n for _, n in first), rel=1e-4)


def test_a_resumed_time_budget_keeps_its_clock_and_the_logged_lr_is_the_one_applied(corpus, tmp_path, monkeypatch):
    import types

    now = [1000.0]

    def tick():  # a clock that advances a second each time it is read
        now[0] += 1.0
        return now[0]

    monkeypatch.setattr(loop_mod, "time", types.SimpleNamespace(time=tick, sleep=lambda s: None))
    seen, real_lr = [], loop_mod.lr_at

    def lr(step, cfg, n, elapsed=0.0):
        if step == 5 and not seen_resume:
            os.kill(os.getpid(), signal.SIGINT)
        value = real_lr(step, cfg, n, elapsed)
        seen.append((step, elapsed, value))
        return value

    seen_resume = []
    monkeypatch.setattr(loop_mod, "lr_at", lr)
    out = tmp_path / "clock"
    opts = {**TINY, "warmup_steps": 1, "max_time": 10_000.0, "anneal_by_time": True, "cache": False}
    with pytest.raises(KeyboardInterrupt):
        ml.train(corpus, out, cache_dir=tmp_path / "cache", max_steps=12, eval_every=4, **opts)
    before = [e for s, e, _ in seen]
    spent = json.loads(checkpoint.read(out / "last.pt")["resume"]["progress"])["elapsed"]
    assert spent >= max(before)
    seen_resume.append(1)
    seen.clear()
    ml.train(corpus, out, resume=True, cache_dir=tmp_path / "cache", progress=False)
    assert seen and min(e for _, e, _ in seen) >= spent  # the clock goes on from where it stopped
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    applied = {s: v for s, _, v in seen}
    assert rows[-1]["step"] == 12 and rows[-1]["lr"] == applied[max(applied)]  # the rate the last step applied


def test_a_resumed_run_stops_when_the_whole_budget_is_spent(corpus, tmp_path, monkeypatch):
    import types

    now = [0.0]

    def tick():
        now[0] += 1.0
        return now[0]

    monkeypatch.setattr(loop_mod, "time", types.SimpleNamespace(time=tick, sleep=lambda s: None))
    out = tmp_path / "budget"
    opts = {**TINY, "max_time": 40.0, "cache": False}
    ml.train(corpus, out, cache_dir=tmp_path / "cache", max_steps=1000, eval_every=1000, **opts)
    first = checkpoint.read(out / "last.pt")
    ml.train(corpus, out, resume=True, cache_dir=tmp_path / "cache", progress=False, max_steps=1000)
    again = checkpoint.read(out / "last.pt")
    assert again["meta"]["step"] == first["meta"]["step"]  # the budget was spent: no step more


def test_validation_reads_a_fixed_token_budget_not_the_whole_split(corpus, tmp_path, monkeypatch):
    assert train_mod.TrainConfig().val_tokens == 250_000  # by default: the cost does not grow with the corpus
    seen, real = [], train_mod.evaluate_nll

    def spy(net, seqs, *a, **k):
        seen.append(seqs.lengths.tolist())
        return real(net, seqs, *a, **k)

    monkeypatch.setattr(train_mod, "evaluate_nll", spy)
    opts = {**TINY, "val_fraction": 0.5, "cache": False}
    ml.train(corpus, tmp_path / "all", cache_dir=tmp_path / "cache", max_steps=2, val_tokens=0, **opts)
    everything = seen[-1]
    assert len(everything) >= 3
    budget = everything[0] + everything[1]
    ml.train(corpus, tmp_path / "some", cache_dir=tmp_path / "cache", max_steps=2, val_tokens=budget + 1, **opts)
    assert seen[-1] == everything[:2]  # the first held-out pieces, in their fixed order, up to the budget
    ml.train(corpus, tmp_path / "one", cache_dir=tmp_path / "cache", max_steps=2, val_tokens=1, **opts)
    assert seen[-1] == everything[:1]  # never none


def test_the_cache_is_tuned_on_a_fixed_token_budget(corpus, tmp_path, monkeypatch):
    import musiclstm.training.tune as tune_mod

    got, real = [], tune_mod.save_tuned
    monkeypatch.setattr(tune_mod, "save_tuned", lambda *a: (got.append(a[-1]), real(*a))[1])
    monkeypatch.setattr(train_mod, "TUNE_TOKENS", 1)  # the budget, made tiny: the first piece alone
    ml.train(corpus, tmp_path / "run", cache_dir=tmp_path / "cache", max_steps=2, val_fraction=0.5, **TINY)
    assert len(got) == 1 and len(got[0]) == 1
