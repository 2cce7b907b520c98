"""Inside the LSTM: gate traces, plots, audio, and the `gates` command."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_train_compose import _tune, corpus, run  # noqa: F401  (module fixtures)

import musiclstm as ml
from musiclstm.app.cli import cli
from musiclstm.models.lstm import ModelConfig, MusicLSTM


def test_gate_trace_reproduces_nn_lstm():
    torch.manual_seed(0)
    net = MusicLSTM(ModelConfig(40, 12, 20, 3, 0.0)).eval()
    ids = torch.randint(0, 40, (57,))
    tr = ml.gate_trace(net, ids)
    with torch.no_grad():
        y, (h, c) = net.rnn(net.embed(ids[None]))
    for name in ("input_gate", "forget_gate", "output_gate", "candidate", "cell", "hidden"):
        assert getattr(tr, name).shape == (3, 57, 20)
    np.testing.assert_allclose(tr.hidden[-1], y[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(tr.cell[:, -1], c[:, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(tr.cell, tr.forget_gate * np.concatenate([np.zeros((3, 1, 20)), tr.cell[:, :-1]], 1)
                               + tr.input_gate * tr.candidate, atol=1e-6)
    assert 0 <= tr.forget_gate.min() and tr.forget_gate.max() <= 1
    with pytest.raises(ml.ConfigError):
        ml.gate_trace(MusicLSTM(ModelConfig(40, 12, 20, 1, 0.0, cell="gru")), ids)


def test_gate_trace_of_a_midi_file_plots_and_command(run, tmp_path):  # noqa: F811
    model = ml.load(run)
    _tune(tmp_path / "t.mid", 7)
    tr = ml.gate_trace(model, tmp_path / "t.mid", max_steps=60)
    assert len(tr.ids) == 60 and tr.names[0] == "BOS" and any(n.startswith("PITCH") for n in tr.names)
    from musiclstm.io import plot

    png = plot.save_gates(tr, tmp_path / "g.png", units=8)
    assert png.stat().st_size > 5000
    assert plot.save_loss_curve(run, tmp_path / "l.png").stat().st_size > 3000
    r = CliRunner().invoke(cli, ["gates", str(run), str(tmp_path / "t.mid"), "-o", str(tmp_path / "g.png")])
    assert r.exit_code == 1 and "exists" in r.output
    r = CliRunner().invoke(cli, ["gates", str(run), str(tmp_path / "t.mid"), "-o", str(tmp_path / "g2.png"),
                                 "--units", "4", "--steps", "30"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "g2.png").stat().st_size > 5000
    r = CliRunner().invoke(cli, ["gates", str(run), str(tmp_path / "t.mid"), "-o", str(tmp_path / "g3.png"),
                                 "--layer", "5"])
    assert r.exit_code == 1 and "layers" in r.output


def test_audio_renders_with_or_without_fluidsynth(tmp_path):
    import pretty_midi

    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(0)
    inst.notes.append(pretty_midi.Note(90, 60, 0.0, 0.5))
    pm.instruments.append(inst)
    from musiclstm.io.outputs import audio

    for sf in (None, str(tmp_path / "missing.sf2")):  # the second falls back to the sine synthesizer
        out = audio(pm, rate=8000, soundfont=sf)
        samples = out[0] if isinstance(out, tuple) else None
        if samples is None:  # IPython's Audio: check it holds sound
            assert len(out.data) > 1000
        else:
            assert len(samples) >= 0.5 * 8000 and np.abs(samples).max() > 0.01


def test_compose_wav_renders_with_fluidsynth_or_the_fallback(run, tmp_path):  # noqa: F811
    import wave

    from musiclstm.io.outputs import find_fluidsynth

    args = ["compose", "-c", str(run), "--seconds", "3", "-o", str(tmp_path / "w.mid"), "--wav"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output  # FluidSynth when installed, else the pure-Python synthesizer
    with wave.open(str(tmp_path / "w.wav")) as w:
        assert w.getnframes() > w.getframerate() and w.getnchannels() in (1, 2)
        frames = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    assert np.abs(frames).max() > 100  # not silence
    assert ("FluidSynth" if find_fluidsynth() else "sine synthesizer") in res.output


def test_render_command(run, tmp_path):  # noqa: F811
    _tune(tmp_path / "t.mid", 3)
    r = CliRunner().invoke(cli, ["render", str(tmp_path / "t.mid")])
    assert r.exit_code == 1 and "nothing to do" in r.output
    r = CliRunner().invoke(cli, ["render", str(tmp_path / "t.mid"), "--png"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "t.png").stat().st_size > 3000
    r = CliRunner().invoke(cli, ["render", str(tmp_path / "t.mid"), "--png"])
    assert r.exit_code == 1 and "--force" in r.output
    r = CliRunner().invoke(cli, ["render", str(tmp_path / "t.mid"), "--wav", "-o", str(tmp_path / "a")])
    assert r.exit_code == 0 and (tmp_path / "a.wav").stat().st_size > 1000, r.output
