"""Training, checkpoints, sampling and composing on tiny corpora built in code (seconds on CPU)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import torch
from click.testing import CliRunner

import musiclstm as ml
from musiclstm.app.cli import cli
from musiclstm.encodings.grammar import Controls
from musiclstm.encodings.registry import grammar_for
from musiclstm.generation.compose import compose
from musiclstm.generation.sample import draw, filter_logits, generate
from musiclstm.models import checkpoint
from musiclstm.models.lstm import ModelConfig, MusicLSTM
from musiclstm.training.lm import train

TINY = dict(preset="tiny", embed=16, hidden=32, layers=1, seq_len=32, batch_size=4, max_steps=6, eval_every=3,
            sample_tokens=16, jobs=1, progress=False)


def _tune(path: Path, seed: int, program: int = 0) -> None:
    rng = np.random.default_rng(seed)
    pm = pretty_midi.PrettyMIDI(initial_tempo=110)
    inst = pretty_midi.Instrument(program)
    t = 0.0
    for p in 60 + rng.choice([0, 2, 4, 5, 7, 9, 11, 12], 40):
        inst.notes.append(pretty_midi.Note(90, int(p), t, t + 0.25))
        t += 0.27
    pm.instruments.append(inst)
    pm.write(str(path))


@pytest.fixture(autouse=True)
def _own_cwd(tmp_path, monkeypatch):
    """Each test runs in its own empty folder: files in the caller's working directory change nothing."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    for style in ("folk", "jazz"):
        (root / style).mkdir()
        for i in range(6):
            _tune(root / style / f"{i}.mid", i + (100 if style == "jazz" else 0), 0 if style == "folk" else 24)
    (root / "folk" / "broken.mid").write_bytes(b"MThd garbage")
    (root / "folk" / "dup.mid").write_bytes((root / "folk" / "0.mid").read_bytes())
    return root


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "r"
    train(corpus, out, cache_dir=out.parent / "cache", styles="folder", **TINY)
    return out


def test_train_writes_a_self_contained_run(run):
    for name in ("last.pt", "best.pt", "config.json", "metrics.jsonl", "loss.png", "data_report.json"):
        assert (run / name).is_file(), name
    report = json.loads((run / "data_report.json").read_text())
    assert report["files"] == 12
    assert [Path(f).name for f, _ in report["skipped"]] == ["broken.mid"]
    assert [Path(f).name for f, _ in report["duplicates"]] == ["dup.mid"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6]
    assert all(np.isfinite(r["val_nll"]) and r["val_nll"] > 0 for r in rows)
    assert list((run / "samples").glob("*.mid"))
    model = ml.load(run)
    assert model.tokenizer.styles == ("folk", "jazz")
    assert model.net.config.vocab_size == model.tokenizer.vocab_size


def test_info_json(run):
    res = CliRunner().invoke(cli, ["info", str(run / "last.pt"), "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["step"] == 6 and d["config"]["train"]["hidden"] == 32 and "val_nll" in d["metrics"]


def test_second_run_uses_cache_and_resume_continues(corpus, run, tmp_path):
    out = tmp_path / "again"
    train(corpus, out, cache_dir=run.parent / "cache", styles="folder", **{**TINY, "max_steps": 3})
    first = checkpoint.read(out / "last.pt")
    assert first["meta"]["step"] == 3
    train(corpus, out, resume=True, cache_dir=run.parent / "cache", max_steps=6, progress=False)
    assert checkpoint.read(out / "last.pt")["meta"]["step"] == 6
    # a straight 6-step run reaches the same weights as 3 + resume 3 (exact resume)
    straight = checkpoint.read(run / "last.pt")["weights"]
    resumed = checkpoint.read(out / "last.pt")["weights"]
    for k in straight:
        assert torch.allclose(straight[k], resumed[k], atol=1e-5), k


def test_refuses_to_clobber_a_run(corpus, run):
    with pytest.raises(ml.MusiclstmError, match="--resume"):
        train(corpus, run, cache_dir=run.parent / "cache", **TINY)


def test_unsafe_and_foreign_checkpoints_are_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": "musiclstm-checkpoint", "x": Evil()}))
    with pytest.raises(ml.CheckpointError, match="refused"):
        ml.load(evil)
    assert not marker.exists()
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ml.CheckpointError):
        ml.load(tmp_path / "text.pt")
    torch.save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(ml.CheckpointError, match="not a musiclstm"):
        ml.load(tmp_path / "other.pt")


def test_truncated_checkpoint(run, tmp_path):
    data = (run / "best.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ml.CheckpointError, match="truncated"):
        ml.load(tmp_path / "cut.pt")


class Uniform(torch.nn.Module):
    """A mock model with uniform (or fixed) logits, for the sampler."""

    def __init__(self, v=10, logits=None):
        super().__init__()
        self.v, self.w = v, torch.nn.Parameter(torch.zeros(1))
        self.fixed = logits

    def zero_state(self, b, device=None):
        return torch.zeros(b)

    def forward(self, ids, state):
        return torch.zeros(*ids.shape, self.v), state

    def step(self, ids, state):
        out = torch.zeros(len(ids), self.v) if self.fixed is None else self.fixed.repeat(len(ids), 1)
        return out, state


def test_sampler_seed_temperature_and_filters():
    m = Uniform(10)
    a = generate(m, [1], max_tokens=50, seed=3, eos=None, batch=4)
    assert a == generate(m, [1], max_tokens=50, seed=3, eos=None, batch=4)
    assert a != generate(m, [1], max_tokens=50, seed=4, eos=None, batch=4)
    assert len(set(tuple(s) for s in a)) > 1
    fixed = Uniform(10, torch.tensor([[0.0, 1, 2, 3, 4, 5, 6, 7, 8, 9.5]]))
    assert set(generate(fixed, [1], max_tokens=20, temperature=0, eos=None)[0][1:]) == {9}
    got = {t for s in generate(fixed, [1], max_tokens=300, top_k=2, eos=None, batch=2) for t in s[1:]}
    assert got <= {8, 9} and len(got) == 2
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(filter_logits(logits, top_p=0.7))
    assert kept.tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=1e-6)).sum() == 1
    with pytest.raises(ml.ConfigError):
        generate(m, [1], temperature=-1)
    with pytest.raises(ml.ConfigError):
        generate(m, [1], top_p=0)


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, None, None), (0.7, None, 0.8), (1.3, 5, None),
                                                     (1.0, 6, 0.6), (1.0, None, 1e-6)])
def test_draw_follows_the_filtered_distribution(temperature, top_k, top_p):
    # draw() picks in ranked order; over an even grid of uniforms it must reproduce, id by id, the
    # probabilities of softmax(filter_logits(logits / T)) in vocabulary order.
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 12, generator=g) * 2
    logits[1, 4] = float("-inf")  # a masked id stays impossible
    n = 20000
    u = ((torch.arange(n) + 0.5) / n)[:, None]
    for row in range(3):
        want = torch.softmax(filter_logits(logits[row:row + 1] / temperature, top_k=top_k, top_p=top_p), -1)[0]
        got = torch.bincount(draw(logits[row:row + 1].expand(n, -1), u, temperature, top_k, top_p), minlength=12)
        assert torch.allclose(got / n, want, atol=2 / n), (row, got / n, want)


def test_fused_step_matches_nn_lstm():
    net = MusicLSTM(ModelConfig(50, 16, 24, 2, 0.0)).eval()
    ids = torch.randint(0, 50, (3, 12))
    full, _ = net(ids)
    state, outs = net.zero_state(3), []
    for t in range(12):
        logits, state = net.step(ids[:, t], state)
        outs.append(logits)
    assert torch.allclose(torch.stack(outs, 1), full, atol=1e-5)


@pytest.mark.parametrize("encoding", ["performance", "remi", "grid"])
def test_random_model_output_is_valid_by_construction(encoding):
    """Thousands of tokens from an untrained model under the grammar: no stuck, empty or bad notes."""
    tok = ml.Tokenizer(encoding)
    torch.manual_seed(0)
    net = MusicLSTM(ModelConfig(tok.vocab_size, 16, 32, 1, 0.0))
    model = checkpoint.Model(net.eval(), tok, {})
    controls = Controls(key="D minor", pitch_range=(50, 80), max_polyphony=3)
    g = grammar_for(tok, controls)
    seqs = generate(model, [1], max_tokens=1500, batch=4, seed=1, constraint=g, eos=None)
    cap = {"performance": 10.0, "grid": 64 / 4 * 60 / 100}.get(encoding)
    d_minor = {2, 4, 5, 7, 9, 10, 0}
    for ids in seqs:
        names = tok.names(ids)
        score = tok.decode_score(ids)
        assert len(score) > 0
        assert (score.end > score.start).all()
        secs = score.seconds(score.end) - score.seconds(score.start)
        if encoding == "remi":  # the longest DURATION is 32 quarters, whatever TEMPO the piece chose
            assert (score.end - score.start).max() <= 32 + 1e-6
        else:
            assert secs.max() <= cap + 1e-6
        pitched = ~score.is_drum
        assert set((score.pitch[pitched] % 12).tolist()) <= d_minor
        assert score.pitch[pitched].min() >= 50 and score.pitch[pitched].max() <= 80
        if encoding == "performance":  # every NOTE_OFF closes an open note; no same-step off
            open_ = set()
            for n in names:
                if n.startswith("NOTE_ON_"):
                    open_.add(n[8:])
                elif n.startswith("NOTE_OFF_"):
                    assert n[9:] in open_
                    open_.discard(n[9:])
                assert len(open_) <= 3
        if encoding == "remi":  # positions increase within a bar
            last = -1
            for n in names:
                if n.startswith("BAR"):
                    last = -1
                elif n.startswith("POSITION_"):
                    assert int(n[9:]) > last
                    last = int(n[9:])


def test_compose_primer_continues_and_controls(run):
    model = ml.load(run)
    prime = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(0)
    for i, p in enumerate([60, 62, 64, 65]):
        inst.notes.append(pretty_midi.Note(80, p, i * 0.5, i * 0.5 + 0.4))
    prime.instruments.append(inst)
    pm = compose(model, prime, seconds=4, seed=5, style="jazz")
    score = ml.read(pm)  # compare in quarter notes: remi keeps beats exactly, tempo to its nearest bin
    notes = set(zip(np.round(score.start, 3).tolist(), score.pitch.tolist(), strict=True))
    assert {(0.0, 60), (1.0, 62), (2.0, 64), (3.0, 65)} <= notes  # the primer comes first, unchanged
    assert min(s for s, _ in notes - {(0.0, 60), (1.0, 62), (2.0, 64)}) >= 3.0
    assert pm.get_end_time() >= 4
    again = compose(model, prime, seconds=4, seed=5, style="jazz")
    assert [(n.start, n.pitch) for n in again.instruments[0].notes] == [(n.start, n.pitch)
                                                                        for n in pm.instruments[0].notes]
    with pytest.raises(ml.ConfigError, match="unknown style"):
        compose(model, seconds=2, style="metal")
    with pytest.raises(ml.ConfigError, match="instrument"):
        compose(model, seconds=2, instruments="kazoo-x")
    many = compose(model, seconds=3, num=3, prime_notes="60 64 67")
    assert len(many) == 3 and all(m.instruments[0].notes[0].pitch == 60 for m in many)


def test_compose_command_end_to_end(corpus, tmp_path):
    """Train a few steps with the command, then compose with it: files, sidecar, reproducibility."""
    r = CliRunner()
    res = r.invoke(cli, ["train", str(corpus), "--out", str(tmp_path / "run"), "--preset", "tiny", "--hidden", "32",
                         "--embed", "16", "--layers", "1", "--seq-len", "32", "--batch-size", "4", "--max-steps", "4",
                         "--jobs", "1", "--threads", "1", "-q"], env={"MUSICLSTM_CACHE": str(tmp_path / "cache")})
    assert res.exit_code == 0, res.output
    out = tmp_path / "song.mid"
    args = ["compose", "-c", str(tmp_path / "run"), "--seconds", "5", "--seed", "9", "-o", str(out), "--png"]
    res = r.invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert out.is_file() and out.with_suffix(".png").is_file()
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["options"]["seed"] == 9 and side["model_fingerprint"]
    first = out.read_bytes()
    res = r.invoke(cli, args)
    assert res.exit_code == 1 and "--force" in res.output
    res = r.invoke(cli, args + ["--force"])
    assert res.exit_code == 0 and out.read_bytes() == first  # same command, same bytes
    pm = pretty_midi.PrettyMIDI(str(out))
    assert pm.get_end_time() > 0 and pm.instruments  # (a 4-step model may leave its last bars silent)


@pytest.mark.parametrize("args,message", [
    (["train", "/nonexistent/dir", "--out", "x"], "does not exist"),
    (["compose", "-c", "/nonexistent.pt"], "no checkpoint"),
    (["compose", "--temperature", "-1"], "temperature"),
    (["compose", "--top-p", "1.5"], "top-p"),
    (["corpus", "export", "nope", "x"], "unknown"),
])
def test_bad_input_is_one_line_no_traceback(args, message):
    res = CliRunner().invoke(cli, args)
    assert res.exit_code != 0
    assert message in res.output
    assert "Traceback" not in res.output


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(cli, ["train", str(tmp_path / "empty"), "--out", str(tmp_path / "r")])
    assert res.exit_code == 1 and "no music files" in res.output


def test_two_process_ddp(corpus, tmp_path):
    """torchrun with two CPU processes (gloo) trains a few steps and writes one checkpoint."""
    env = {**os.environ, "MUSICLSTM_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "musiclstm",
           "train", str(corpus), "--out", str(tmp_path / "ddp"), "--preset", "tiny", "--hidden", "32", "--embed",
           "16", "--layers", "1", "--seq-len", "16", "--batch-size", "2", "--max-steps", "3", "--jobs", "1", "-q"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-6000:]
    meta = checkpoint.read(tmp_path / "ddp" / "last.pt")["meta"]
    assert meta["step"] == 3 and meta["world_size"] == 2


def test_tempo_stretch_augmentation(corpus, tmp_path):
    from musiclstm.encodings.augment import stretch

    remi = ml.Tokenizer("remi")
    ids = torch.tensor([1, remi.vocab.id("TEMPO", 120 - 30), remi.vocab.id("PITCH", 60), remi.vocab.id("BAR")])
    out = stretch(remi, ids, 2.0)  # twice as slow: 120 qpm -> 60 qpm; nothing else moves
    assert out.tolist() == [1, remi.vocab.id("TEMPO", 60 - 30), *ids[2:].tolist()]
    assert stretch(remi, ids, 100.0)[1] == remi.vocab.id("TEMPO", 0)  # clamped at the slowest tempo
    perf = ml.Tokenizer("performance")
    ids = torch.tensor([perf.vocab.id("TIME_SHIFT", 9), perf.vocab.id("NOTE_ON", 60), perf.vocab.id("TIME_SHIFT", 99)])
    out = stretch(perf, ids, 1.5)  # 100 ms -> 150 ms; the longest shift stays the longest
    assert out.tolist() == [perf.vocab.id("TIME_SHIFT", 14), ids[1].item(), perf.vocab.id("TIME_SHIFT", 99)]
    grid = ml.Tokenizer("grid")
    assert torch.equal(stretch(grid, torch.tensor([5, 6, 7]), 2.0), torch.tensor([5, 6, 7]))
    best = train(corpus, tmp_path / "s", cache_dir=tmp_path / "cache", augment_stretch=0.2, augment_transpose=2,
                 **TINY)
    assert checkpoint.read(best)["meta"]["train"]["augment_stretch"] == 0.2


def test_length_in_bars_for_grid_and_a_clear_error_for_performance():
    torch.manual_seed(0)
    grid = ml.Tokenizer("grid")
    model = ml.Model(MusicLSTM(ModelConfig(grid.vocab_size, 8, 16, 1, 0.0)).eval(), grid, {})
    pm, (ids,) = ml.compose(model, bars=2, seed=0, return_ids=True)
    steps = sum(1 for i in ids if grid.vocab.split(i)[0] in ("PITCH", "REST", "HOLD")) // 4
    assert 2 * 16 < steps <= 3 * 16 + 1  # stops once more than 2 whole 4/4 bars of 16ths are written
    perf = ml.Tokenizer("performance")
    model = ml.Model(MusicLSTM(ModelConfig(perf.vocab_size, 8, 16, 1, 0.0)).eval(), perf, {})
    with pytest.raises(ml.ConfigError, match="bars"):
        ml.compose(model, bars=2)


def test_augmentation_holds_each_lane_for_an_epoch():
    """A lane's carried state must not see its key jump between windows (it would learn to wander)."""
    from musiclstm.training.lm import TrainConfig, _augment

    tok = ml.Tokenizer("remi")
    cfg = TrainConfig(augment_transpose=5, augment_stretch=0.1)
    base = torch.full((8, 4), tok.vocab.id("PITCH", 60))
    a, _ = _augment(tok, cfg, base, base, epoch=0)
    b, _ = _augment(tok, cfg, base.clone(), base, epoch=0)  # the next window of the same epoch
    c, _ = _augment(tok, cfg, base, base, epoch=1)
    assert torch.equal(a, b)  # same shift per lane within an epoch
    assert (a == a[:, :1]).all()  # one shift across a window
    assert len(set(a[:, 0].tolist())) > 1 and not torch.equal(a, c)  # lanes differ; epochs redraw
    shifts = a[:, 0] - tok.vocab.id("PITCH", 60)
    assert shifts.abs().max() <= 5


def test_force_starts_a_clean_run(corpus, tmp_path):
    out = tmp_path / "f"
    train(corpus, out, cache_dir=tmp_path / "cache", **{**TINY, "max_steps": 6})
    train(corpus, out, cache_dir=tmp_path / "cache", force=True, **{**TINY, "max_steps": 3})
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3]  # the first run's rows are gone
    assert checkpoint.read(out / "best.pt")["meta"]["step"] == 3
    assert len(list((out / "samples").glob("*.mid"))) == 1


def test_one_piece_of_several_short_of_the_length_is_an_error_not_a_silent_cut():
    folk = ml.load("folk")
    # seed 1, 6 s, a budget of 40 tokens: some pieces reach 6 s within it, one does not: the error names it
    with pytest.raises(ml.MusiclstmError, match=r"piece \d of 4: the model wrote 40 tokens without reaching"):
        compose(folk, seconds=6, num=4, seed=1, max_tokens=40)
    pieces = compose(folk, seconds=6, num=4, seed=1, max_tokens=200)
    assert len(pieces) == 4 and all(p.get_end_time() >= 5 for p in pieces)  # ended within the last bar at most


def test_the_last_bar_is_measured_from_where_the_piece_is():
    """compose lets the model end a piece in its last bar. That bar was taken as a whole bar at the tempo now, so
    a tempo of 33 set at beat 3.5 of bar 1 (a whole 4/4 bar at 33 qpm: 7.3 s) let a tiny model end a 4 s piece
    at 2.66 s. The time left in the bar is counted from the latest position."""
    tok = ml.Tokenizer("remi")
    names = ["BAR", "TIMESIG_4/4", "KEY_C", "POSITION_0", "TEMPO_120", "POSITION_42", "TEMPO_33"]
    ids = [1] + [next(i for i in range(tok.vocab_size) if tok.names([i]) == [n]) for n in names]
    g = grammar_for(tok, Controls())
    g(torch.tensor([ids]), torch.zeros(1, tok.vocab_size))
    assert float(g.seconds()[0]) == pytest.approx(42 / 12 * 0.5)  # 3.5 quarters at 120 qpm
    assert float(g.bar_seconds_left()[0]) == pytest.approx(6 / 12 * 60 / 33)  # half a quarter to go, at 33 qpm
    assert float(g.bar_seconds()[0]) == pytest.approx(4 * 60 / 33)  # the whole bar, as before
