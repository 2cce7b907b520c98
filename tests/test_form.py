"""Form: remi 3's REPEAT tokens in the grammar and in composition, and the form statistics of `evaluate`.

Unit tests build their music in code; one integration test reads real Nottingham tunes from ../shared/data.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import musiclstm as ml
from musiclstm.encodings.grammar import Controls
from musiclstm.encodings.registry import grammar_for
from musiclstm.evaluation import music
from musiclstm.evaluation.evaluate import repeat_probe
from musiclstm.io.score import Score, Track
from musiclstm.models.checkpoint import Model
from musiclstm.models.lstm import ModelConfig, MusicLSTM

A = [(0, 1, 60), (1, 1, 62), (2, 2, 64)]
B = [(0, 2, 67), (2, 2, 65)]


def _bars(*bars, sig=None) -> Score:
    notes = [(4 * i + on, 4 * i + on + d, p, 80) for i, bar in enumerate(bars) for on, d, p in bar]
    a = np.asarray(notes, dtype=np.float64).reshape(-1, 4)
    return Score(a[:, 0], a[:, 1], a[:, 2], a[:, 3], np.zeros(len(a)), tracks=[Track(0)],
                 **({"time_signatures": sig} if sig is not None else {}))


def _allowed(tok, ids, controls=None) -> list[str]:
    g = grammar_for(tok, controls or Controls())
    a = g(torch.tensor([ids]), torch.zeros(1, tok.vocab_size))[0]
    names = tok.names(range(tok.vocab_size))
    return [names[i] for i in a.nonzero().squeeze(1).tolist()]


def test_grammar_offers_repeat_only_after_a_bar_line_and_only_of_bars_with_notes():
    tok = ml.Tokenizer("remi")
    ids = tok.encode(_bars(A, [], B), eos=False)  # bar 2 is empty
    opening = [n for n in _allowed(tok, ids[:4]) if n.startswith("REPEAT")]  # BOS BAR TIMESIG KEY
    assert opening == []  # nothing to repeat before the first bar is played
    with_bar = ids + [tok.vocab.id("BAR")]
    assert [n for n in _allowed(tok, with_bar) if n.startswith("REPEAT")] == ["REPEAT_1", "REPEAT_3"]
    mid_bar = [n for n in _allowed(tok, ids) if n.startswith("REPEAT")]  # after a note: no repeat
    assert mid_bar == []
    after = _allowed(tok, with_bar + [tok.vocab.id("REPEAT", 0)])
    assert set(after) == {"BAR", "EOS"}


def test_grammar_repeats_only_bars_of_the_same_length():
    tok = ml.Tokenizer("remi")
    s = _bars(A, sig=[[0, 4, 4]])
    three = Score(np.r_[s.start, 4.0], np.r_[s.end, 5.0], np.r_[s.pitch, 60], np.r_[s.velocity, 80],
                  np.zeros(4), tracks=[Track(0)], time_signatures=[[0, 4, 4], [4, 3, 4]])
    ids = tok.encode(three, eos=False)
    names = tok.names(ids)
    assert "TIMESIG_3/4" in names
    nxt = ids + [tok.vocab.id("BAR")]  # bar 3, in 3/4: bar 2 (3/4) may repeat, bar 1 (4/4) may not
    assert [n for n in _allowed(tok, nxt) if n.startswith("REPEAT")] == ["REPEAT_1"]


def test_grammar_counts_a_repeated_bars_notes_for_the_polyphony_cap():
    """A copied bar's notes sound: a held note from the copy occupies its key in the next bar."""
    tok = ml.Tokenizer("remi")
    long_tail = [(0, 1, 60), (3, 4, 67)]  # the G sounds into the next bar
    ids = tok.encode(_bars(long_tail), eos=False) + [tok.vocab.id("BAR"), tok.vocab.id("REPEAT", 0),
                                                       tok.vocab.id("BAR"), tok.vocab.id("POSITION", 0)]
    allowed = _allowed(tok, ids, Controls(max_polyphony=1))
    assert not any(n.startswith(("PITCH", "PROGRAM", "VELOCITY")) for n in allowed)  # the copy's G still sounds
    # without the cap the G is busy but other keys are free
    free = _allowed(tok, ids)
    assert "PITCH_60" in free and "PITCH_67" not in free


def test_grammar_does_not_repeat_into_a_bar_with_notes_sounding_under_a_polyphony_cap():
    tok = ml.Tokenizer("remi")
    with_bar = tok.encode(_bars([(0, 1, 60), (3, 4, 67)]), eos=False) + [tok.vocab.id("BAR")]
    assert "REPEAT_1" in _allowed(tok, with_bar)
    assert "REPEAT_1" not in _allowed(tok, with_bar, Controls(max_polyphony=2))  # the G rings across the line


def test_the_grammar_follows_real_tunes_with_repeats(data_dir):
    tok = ml.Tokenizer("remi")
    g_ids = []
    for f in sorted((data_dir / "nottingham").glob("*.mid"))[:4]:
        ids = tok.encode(f)
        names = tok.names(ids)
        assert any(n.startswith("REPEAT") for n in names), f  # these tunes repeat whole bars
        g = grammar_for(tok, Controls())
        t = torch.tensor([ids])
        bad = [(j, names[j]) for j in range(1, len(ids)) if not g(t[:, :j], torch.zeros(1, tok.vocab_size))[0, ids[j]]]
        assert bad == [], (f, bad[:5])
        g_ids.append(ids)
        v2 = ml.Tokenizer("remi", version=2)
        a, b = tok.decode_score(ids), v2.decode_score(v2.encode(f))
        assert sorted(zip(a.start, a.end, a.pitch, strict=True)) == sorted(zip(b.start, b.end, b.pitch, strict=True))
    assert g_ids


def _repeater_model(tok) -> Model:
    net = MusicLSTM(ModelConfig(tok.vocab_size, 8, 16, 1, 0.0)).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        out = [m for m in net.modules() if isinstance(m, torch.nn.Linear) and m.out_features == tok.vocab_size][-1]
        out.bias[tok.vocab.id("REPEAT", 0)] = 8.0
        out.bias[tok.vocab.id("BAR")] = 3.0
        out.bias[tok.vocab.id("DURATION", 2)] = 10.0  # short notes: nothing rings across a bar line
    return Model(net, tok, {})


def test_compose_expands_repeats_and_keeps_the_asked_length():
    tok = ml.Tokenizer("remi")
    model = _repeater_model(tok)
    pm, (ids,) = ml.compose(model, bars=8, seed=1, return_ids=True)
    names = tok.names(ids)
    assert names.count("REPEAT_1") >= 5  # the model wants to repeat: every bar after the first is a copy
    score = ml.read(pm)
    bars = music.bar_contents(score)
    assert len([b for b in bars if len(b)]) == 8  # eight bars of music, the copies expanded
    assert all(np.array_equal(b, bars[0]) for b in bars[1:7])
    lines = [i for i, n in enumerate(names) if n == "BAR"]
    last = lines[7]  # the eighth bar's line (a ninth closes the piece)
    assert not names[last + 1].startswith("REPEAT")  # the closing bar is written out (it ends on the tonic)
    assert music.returns(score)["looping"] == 1.0  # and evaluate calls that a loop


def test_form_statistics_on_built_scores():
    s = _bars(A, B, A, B, A, B, A, B, A, B, A, B, A, B, A, B, [(0, 4, 72)])
    assert music.repeat_distances(s).tolist() == [0, 0] + [2] * 14 + [0]
    r = music.returns(s)
    assert r["repeated_bars_exact"] == pytest.approx(14 / 17)
    assert r["longest_repeat_run"] == 14 and r["looping"] == 1.0
    assert r["phrases_return"] == pytest.approx(0.5)  # bars 1-8 come back as bars 9-16; bars 9-16 do not
    new = _bars(*[[(0, 4, 60 + i)] for i in range(16)])
    r = music.returns(new)
    assert r["repeated_bars_exact"] == 0 and r["longest_repeat_run"] == 0 and r["phrases_return"] == 0
    assert music.distance_overlap([2, 2, 4, 8], [2, 4, 4, 16]) == pytest.approx(0.5)
    assert music.distance_overlap([2, 4], [2, 4]) == pytest.approx(1.0)
    assert np.isnan(music.distance_overlap([], [2]))


def test_repeat_probe_counts_whole_bars_in_nats_per_note():
    """The probe reads the same for v2 and v3: a repeated bar costs what its tokens cost, per note."""
    for tok in (ml.Tokenizer("remi", version=2), ml.Tokenizer("remi")):
        seq = np.array(tok.encode(_bars(A, B, A, B)))
        nll = np.ones(len(seq) - 1)  # one nat per token
        p = repeat_probe(tok, [seq], [nll])
        names = tok.names(seq[1:])
        bar_of = np.cumsum([n == "BAR" for n in names]) - 1
        rep_tokens = int((bar_of >= 2).sum() - (names[-1] == "EOS"))  # bars 3 and 4 repeat, EOS is in bar 4
        rep_tokens += int(names[-1] == "EOS")
        assert p["repeated_bars"] == 2
        assert p["per_note"]["repeated"] == pytest.approx(rep_tokens / 5)  # 3 + 2 notes in the repeated bars
