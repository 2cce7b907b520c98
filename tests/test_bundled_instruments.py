"""The bundled models refuse instruments they never saw, in one line before any work, and play those they know."""

from __future__ import annotations

import pretty_midi
import pytest
from click.testing import CliRunner

import musiclstm as ml
from musiclstm.app.cli import cli


@pytest.fixture(autouse=True)
def _own_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_bundled_models_record_what_they_were_trained_on():
    known = {name: ml.load(name).meta["data"] for name in ("folk", "bach", "pop")}
    assert {k: v["programs"] for k, v in known.items()} == {"folk": [0], "bach": [0, 40, 41, 42, 43], "pop": [0]}
    assert all(v["density_p99"] > 1 for v in known.values())  # what a runaway sample is redrawn against


@pytest.mark.parametrize("args,refused", [
    (["--instruments", "piano,strings,drums"], "String Ensemble 1 (48), drums"),  # README's example, on folk
    (["--style", "bach", "--instruments", "strings"], "String Ensemble 1 (48)"),
    (["--style", "bach", "--instruments", "24"], "Acoustic Guitar (nylon) (24)"),
    (["--style", "pop", "--drums"], "drums"),
])
def test_an_instrument_the_model_never_saw_is_one_line_before_any_work(args, refused, tmp_path):
    res = CliRunner().invoke(cli, ["compose", *args, "-o", "x.mid"])
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [res.output.strip()]
    assert f"never saw {refused} in training; it knows: " in res.output
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_bach_plays_the_string_quartet_it_knows(tmp_path):
    res = CliRunner().invoke(cli, ["compose", "--style", "bach", "--instruments", "violin,viola,cello,contrabass",
                                   "--seconds", "10", "--seed", "1", "-o", "q.mid"])
    assert res.exit_code == 0, res.output
    pm = pretty_midi.PrettyMIDI("q.mid")
    assert sorted(i.program for i in pm.instruments if i.notes) == [40, 41, 42, 43]
    ts = pm.time_signature_changes[-1]
    bar = ts.numerator * 4 / ts.denominator * 60 / pm.get_tempo_changes()[1][-1]  # seconds
    assert pm.get_end_time() >= 10 - bar - 1e-6  # into its last bar (the model may close the piece within it)


def _bars_with_music(pm) -> int:
    """Bars up to the last note's end, counted from the file's own meters (in quarter notes)."""
    from musiclstm.io.midi import read

    score = read(pm)
    end, q, bars = float(score.end.max()), 0.0, 0
    sigs = [(float(t), float(n) * 4 / float(d)) for t, n, d in score.time_signatures] or [(0.0, 4.0)]
    while q < end - 1e-6:
        q += next(length for t, length in reversed(sigs) if t <= q + 1e-6)
        bars += 1
    return bars


@pytest.mark.parametrize("bars", [1, 3, 8])
def test_bars_n_are_n_bars_even_from_a_model_eager_to_end(bars):
    """A model that would end at every chance (EOS logit raised) still plays its last bar: EOS is not allowed
    right at the last bar line, which left that bar empty and cut the piece one bar short."""
    import torch

    from musiclstm.encodings.tokenizer import EOS
    from musiclstm.models.checkpoint import Model
    from musiclstm.models.lstm import ModelConfig, MusicLSTM

    tok = ml.Tokenizer("remi")
    torch.manual_seed(0)
    net = MusicLSTM(ModelConfig(tok.vocab_size, 16, 32, 1, 0.0)).eval()
    with torch.no_grad():
        net.head.bias[EOS] += 30.0
    pm, (ids,) = ml.compose(Model(net, tok, {}), bars=bars, seed=1, return_ids=True)
    assert tok.names(ids).count("BAR") == bars and ids[-1] == EOS  # it did end itself, in bar N
    assert _bars_with_music(pm) == bars


@pytest.mark.parametrize("seed", [2, 4])
def test_the_last_bar_is_played_out_not_piled_onto_one_onset(seed):
    """Past the length asked, the bar in progress runs to its bar line as the model writes it. Refusing new
    positions there made the pop model, which wanted one, pile notes on one onset: seeds 2 and 4 ended in
    chords of 128 and 127 notes (pitches 0-127)."""
    import collections

    pm = ml.compose(ml.load("pop"), seconds=30, seed=seed)
    notes = [n for i in pm.instruments for n in i.notes]
    per_onset = collections.Counter(round(n.start, 3) for n in notes)
    assert max(per_onset.values()) <= 10
    assert 21 <= min(n.pitch for n in notes) and max(n.pitch for n in notes) <= 108
    assert 30 - 4 <= pm.get_end_time() <= 30 + 4  # within a bar (4/4 at the 60 qpm it chose) of 30 s


@pytest.mark.slow
def test_a_piece_starts_with_music_not_empty_bars():
    """POP909 songs open with silent bars; once the grammar allowed them (a position holding only a TEMPO),
    3 of these 64 pop pieces were 30 s of empty bars (0 notes). No bar line and no end before the first note."""
    from musiclstm.io.midi import read

    pieces = ml.compose(ml.load("pop"), seconds=30, seed=1, num=64)
    for pm in pieces:
        score = read(pm)
        assert len(score) > 0
        num, den = score.time_signatures[0, 1:]
        assert score.start.min() < num * 4 / den  # the first note is in the first bar
