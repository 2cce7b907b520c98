"""Fine-tuning from a checkpoint (`train --init`) and the harmonizer's fermata channel (DeepBach's metadata)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import musiclstm
from musiclstm.app.cli import cli
from musiclstm.data.collections import FERMATAS, export, fermatas_of
from musiclstm.encodings.tokenizer import Tokenizer
from musiclstm.errors import MusiclstmError
from musiclstm.generation import harmonize as C
from musiclstm.models import checkpoint
from musiclstm.models import harmonizer as HN
from musiclstm.training import harmonizer as chorale_train
from tests.conftest import scale_corpus
from tests.test_chorale import four_part

SMALL = dict(hidden=16, embed=8, layers=1, batch_size=4, seq_len=32, warmup_steps=1)


def _weights(path):
    return {k: v.float() for k, v in checkpoint.read(path)["weights"].items()}


@pytest.fixture(scope="module")
def chorales(tmp_path_factory):
    root = tmp_path_factory.mktemp("chorales")
    for i, shift in enumerate((-2, 0, 2, 3, 5, -4)):
        four_part(root / f"c{i}.mid", shift, bars=4 + i % 3)
    return root


def test_a_harmonizer_fine_tune_starts_from_the_checkpoints_weights(chorales, tmp_path):
    first = chorale_train.train(chorales, tmp_path / "a", progress=False, max_steps=3, eval_every=3, **SMALL)
    sizes = {k: v for k, v in SMALL.items() if k not in ("hidden", "embed", "layers")}
    again = chorale_train.train(chorales, tmp_path / "b", init=first, progress=False, max_steps=1, eval_every=1,
                                lr=1e-12, **sizes)
    before, after = _weights(first), _weights(again)
    assert before.keys() == after.keys()
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)  # lr ~0: the same weights
    meta = checkpoint.read(again)["meta"]
    assert meta["init"]["path"] == str(first) and meta["train"]["hidden"] == 16
    r = CliRunner().invoke(cli, ["info", str(again)])
    assert r.exit_code == 0 and f"fine-tuned from {first}" in r.output, r.output
    fresh = chorale_train.train(chorales, tmp_path / "c", progress=False, max_steps=1, eval_every=1, lr=1e-12,
                                **sizes, hidden=16, embed=8, layers=1)
    assert not all(torch.allclose(before[k], v, atol=1e-6) for k, v in _weights(fresh).items())
    with pytest.raises(MusiclstmError, match="--hidden does not apply with --init"):
        chorale_train.train(chorales, tmp_path / "d", init=first, progress=False, max_steps=1, hidden=32)


def test_train_init_fine_tunes_a_language_model_and_refuses_what_cannot_apply(tmp_path):
    corpus = scale_corpus(tmp_path / "corpus", files=6)
    base = ["train", str(corpus), "--preset", "tiny", "--embed", "16", "--hidden", "32", "--layers", "1",
            "--seq-len", "32", "--batch-size", "4", "--device", "cpu", "-q"]
    r = CliRunner().invoke(cli, base + ["-o", str(tmp_path / "a"), "--max-steps", "3"])
    assert r.exit_code == 0, r.output
    tuned = ["train", str(corpus), "--preset", "tiny", "--seq-len", "32", "--batch-size", "4", "--device", "cpu",
             "-q", "--init", str(tmp_path / "a" / "best.pt")]
    r = CliRunner().invoke(cli, tuned + ["-o", str(tmp_path / "b"), "--max-steps", "1", "--lr", "1e-12"])
    assert r.exit_code == 0, r.output
    before, after = _weights(tmp_path / "a" / "best.pt"), _weights(tmp_path / "b" / "best.pt")
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)
    assert checkpoint.read(tmp_path / "b" / "best.pt")["meta"]["train"]["hidden"] == 32  # the checkpoint's size
    for extra, says in ((["--hidden", "64"], "--hidden does not apply with --init"),
                        (["--encoding", "grid"], "--encoding does not apply with --init"),
                        (["--resume"], "--init starts a new run")):
        r = CliRunner().invoke(cli, tuned + ["-o", str(tmp_path / "c"), "--max-steps", "1"] + extra)
        assert r.exit_code == 1 and says in r.output and "Traceback" not in r.output, r.output
    r = CliRunner().invoke(cli, tuned[:-1] + ["harmonizer", "-o", str(tmp_path / "c")])
    assert r.exit_code == 1 and "is a harmonizer model, not a lm model" in r.output, r.output
    assert not (tmp_path / "c" / "best.pt").exists()


def test_the_fermata_channel_covers_the_soprano_note_under_each_mark():
    cells = HN.Cells(Tokenizer("grid", hold=True))
    p = np.repeat(np.r_[[72] * 4, [74] * 6, [76] * 2][:, None], 4, 1) - [0, 5, 12, 24]
    onset = np.zeros((12, 4), bool)
    onset[[0, 4, 10], :] = True  # the soprano's notes: steps 0-3, 4-9 (under the fermata at quarter 1), 10-11
    grid = cells.from_pitches(p, onset)
    ch = HN.fermata_channel(grid, cells, [1.0])
    assert ch.tolist() == [HN.FERMATA_NONE] * 4 + [HN.FERMATA_HERE] * 6 + [HN.FERMATA_NONE] * 2
    assert (HN.fermata_channel(grid, cells, None) == HN.FERMATA_UNKNOWN).all()
    assert (HN.fermata_channel(grid, cells, []) == HN.FERMATA_NONE).all()


def test_the_channel_starts_at_zero_so_a_model_without_it_is_unchanged():
    torch.manual_seed(0)
    old = HN.Harmonizer(HN.HarmonizerConfig(133, 8, 16, 1, 0.0)).eval()
    new = HN.Harmonizer(HN.HarmonizerConfig(133, 8, 16, 1, 0.0, fermatas=True)).eval()
    missing, unexpected = new.load_state_dict(old.state_dict(), strict=False)
    assert missing == ["fermata.weight"] and not unexpected
    x, beat = torch.randint(0, 133, (2, 20, 4)), torch.arange(20)[None].repeat(2, 1) % 4
    here = torch.full((2, 20), HN.FERMATA_HERE)
    assert torch.allclose(old(x, beat), new(x, beat, here)) and torch.allclose(old(x, beat), new(x, beat))
    with torch.no_grad():
        new.fermata.weight[HN.FERMATA_HERE] = 1.0
    assert not torch.allclose(new(x, beat, here), new(x, beat))


def test_a_harmonizer_learns_the_channel_where_the_corpus_marks_fermatas(chorales, tmp_path):
    plain = chorale_train.train(chorales, tmp_path / "plain", progress=False, max_steps=1, eval_every=1, **SMALL)
    assert not C.load(plain).net.config.fermatas  # nothing marks fermatas: no channel
    marked = tmp_path / "marked"
    marked.mkdir()
    for f in chorales.glob("*.mid"):
        (marked / f.name).write_bytes(f.read_bytes())
    (marked / FERMATAS).write_text(json.dumps({"c0.mid": [3.0, 7.0], "c1.mid": []}))
    assert fermatas_of(marked / "c0.mid") == [3.0, 7.0] and fermatas_of(marked / "c2.mid") is None
    best = chorale_train.train(marked, tmp_path / "run", progress=False, max_steps=2, eval_every=1, **SMALL)
    h = C.load(best)
    assert h.net.config.fermatas and h.meta["data"]["with_fermatas"] == 2
    assert h.net.fermata.weight.abs().sum() > 0  # trained: the channel moved from zero
    r = CliRunner().invoke(cli, ["info", str(best)])
    assert r.exit_code == 0 and "bidirectional lstm 1x16, embed 8, fermata channel" in r.output, r.output


def test_harmonize_gives_the_network_the_fermatas_of_a_musicxml_melody(chorales, tmp_path, monkeypatch):
    import music21

    marked = tmp_path / "marked"
    marked.mkdir()
    for f in chorales.glob("*.mid"):
        (marked / f.name).write_bytes(f.read_bytes())
    (marked / FERMATAS).write_text(json.dumps({"c0.mid": [3.0]}))
    h = C.load(chorale_train.train(marked, tmp_path / "run", progress=False, max_steps=1, eval_every=1, **SMALL))
    part = music21.stream.Part()
    part.append(music21.meter.TimeSignature("4/4"))
    for k, p in enumerate([72, 74, 76, 74, 72, 71, 69, 71]):
        n = music21.note.Note(p, quarterLength=1)
        if k == 3:
            n.expressions.append(music21.expressions.Fermata())
        part.append(n)
    part.write("musicxml", tmp_path / "m.musicxml")
    seen = []
    forward = HN.Harmonizer.forward
    monkeypatch.setattr(HN.Harmonizer, "forward",
                        lambda self, x, beat, fermata=None: seen.append(fermata) or forward(self, x, beat, fermata))
    musiclstm.harmonize(tmp_path / "m.musicxml", model=h, seed=0, iterations=2)
    here = seen[0][0].tolist()
    assert [t for t, v in enumerate(here) if v == HN.FERMATA_HERE] == [12, 13, 14, 15, 28, 29, 30, 31]  # 3rd, last
    assert set(here) == {HN.FERMATA_NONE, HN.FERMATA_HERE}
    r = CliRunner().invoke(cli, ["harmonize", str(tmp_path / "m.musicxml"), "-c", str(h.model.path), "-o",
                                 str(tmp_path / "h.mid"), "--iterations", "2", "--seed", "0"])
    assert r.exit_code == 0 and "phrases close at its 1 fermata(s)" in r.output, r.output
    seen.clear()
    musiclstm.harmonize(tmp_path / "m.musicxml", model=h, seed=0, iterations=2, cadences="")  # no marks read
    assert seen[0] is None  # nothing says where phrases close: the channel is unknown


def test_export_keeps_the_fermatas_midi_drops(tmp_path):
    report = export("bach", tmp_path / "bach", limit=3, jobs=1, progress=False)
    assert len(report.written) == 3
    marks = json.loads((tmp_path / "bach" / FERMATAS).read_text())
    assert sorted(marks) == sorted(p.name for p in report.written)
    assert any(marks.values())
    name, qs = next((k, v) for k, v in marks.items() if v)
    score = musiclstm.io.midi.read(tmp_path / "bach" / name)
    starts = set(np.round(score.start, 3).tolist())
    assert all(round(q, 3) in starts for q in qs)  # each mark is where the exported MIDI's notes start


def test_a_run_fine_tuned_from_a_bundled_model_records_its_name_not_this_machines_path(tmp_path):
    import shutil

    bundled = checkpoint.load("jsb_quarter")
    assert checkpoint.origin(bundled) == {"path": "bundled jsb_quarter", "fingerprint": bundled.fingerprint}
    copy = tmp_path / "mine.pt"
    shutil.copy(bundled.path, copy)
    assert checkpoint.origin(checkpoint.load(copy))["path"] == str(copy.resolve())


def test_merging_restrikes_makes_a_repeated_pitch_a_hold_and_nothing_else():
    cells = HN.Cells(Tokenizer("grid", hold=True))
    P, H, R = (lambda p: cells.pitch0 + p), cells.hold, cells.rest
    voice = [P(60), P(60), H, P(60), R, P(60), P(62), H, P(62), P(60)]
    want = [P(60), H, H, H, R, P(60), P(62), H, H, P(60)]  # after a rest, the same pitch is a new note
    x = torch.tensor(voice)[None, :, None].repeat(2, 1, 4)
    x[1, :, 2] = torch.tensor(want)  # already merged: unchanged
    out = cells.merge_restrikes(x)
    assert out[0, :, 0].tolist() == want and out[1, :, 2].tolist() == want
    assert (cells.pitches(out[0].numpy()) == cells.pitches(x[0].numpy())).all()  # the same pitches sound


def test_a_batch_with_nothing_masked_is_skipped_not_called_diverged(chorales, tmp_path, monkeypatch):
    real, calls = chorale_train._masks, []

    def sometimes_empty(*args, **kwargs):  # the first two training batches mask no cell (NaN cross-entropy)
        calls.append(1)
        m = real(*args, **kwargs)
        return torch.zeros_like(m) if len(calls) <= 2 else m

    monkeypatch.setattr(chorale_train, "_masks", sometimes_empty)
    best = chorale_train.train(chorales, tmp_path / "a", progress=False, max_steps=4, eval_every=4, **SMALL)
    metrics = checkpoint.read(best)["meta"]["metrics"]
    assert len(calls) > 2 and np.isfinite(metrics["train_nll"]) and np.isfinite(metrics["val_nll"])
