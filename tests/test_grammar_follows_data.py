"""The remi grammar allows every token the encoder writes: it must never force a model off its training data.

A bar that opens with a rest gets a position holding only a TEMPO (`POSITION TEMPO BAR`); a grammar
that demanded a note there pushed the bundled pop model onto a PROGRAM at a point where it had only
ever seen BAR, and half its pieces came out on instruments it never saw.
"""

from __future__ import annotations

import pretty_midi
import pytest
import torch

import musiclstm as ml
from musiclstm.encodings.grammar import Controls
from musiclstm.encodings.registry import grammar_for
from musiclstm.generation.compose import compose


def _forbidden(tok, ids: list[int]) -> list[tuple[int, str]]:
    """(index, token name) of each token of `ids` the grammar would not have allowed."""
    g = grammar_for(tok, Controls())
    t = torch.tensor([ids])
    names = tok.names(ids)
    return [(j, names[j]) for j in range(1, len(ids)) if not g(t[:, :j], torch.zeros(1, tok.vocab_size))[0, ids[j]]]


def _rest_then_tempo_change() -> pretty_midi.PrettyMIDI:
    """4/4 at 100 qpm; bar 1 is silent, the notes start in bar 2; the tempo changes to 140 on a rest (bar 4)."""
    pm = pretty_midi.PrettyMIDI(initial_tempo=100)
    # pretty_midi writes tempo changes from _tick_scales: (tick, seconds per tick)
    res = pm.resolution
    pm._tick_scales = [(0, 60.0 / (100 * res)), (12 * res, 60.0 / (140 * res))]
    pm._update_tick_to_time(20 * res)
    pm.time_signature_changes.append(pretty_midi.TimeSignature(4, 4, 0))
    piano = pretty_midi.Instrument(0)
    for k, pitch in enumerate([60, 62, 64, 65, 67, 69, 71, 72]):  # quarters 4..11 (bars 2-3), then 13..16
        q = 4 + k if k < 4 else 9 + k
        piano.notes.append(pretty_midi.Note(80, pitch, pm.tick_to_time(q * res), pm.tick_to_time((q + 1) * res)))
    pm.instruments.append(piano)
    return pm


def test_a_position_holding_only_a_tempo_is_allowed():
    tok = ml.Tokenizer("remi")
    ids = tok.encode(_rest_then_tempo_change())
    names = tok.names(ids)
    tempo_only = [j for j in range(len(names) - 1) if names[j].startswith("TEMPO") and
                  names[j + 1].startswith(("BAR", "POSITION"))]
    assert tempo_only, names[:40]  # the music really has such a position
    assert _forbidden(tok, ids) == []


def test_real_pop909_songs_follow_the_grammar_bar_and_position_alike(data_dir):
    """Every BAR, POSITION, TEMPO and PROGRAM of real songs is allowed where it stands. (The grammar does refuse
    one thing the songs have: a pitch struck again while the same program still sounds it, a MELODY/PIANO
    unison on program 0, which one MIDI channel cannot hold apart.)"""
    tok = ml.Tokenizer("remi")
    for f in sorted((data_dir / "pop909").glob("*.mid"))[:3]:
        ids = tok.encode(f)[:800]
        bad = _forbidden(tok, ids)
        assert [n for _, n in bad if not n.startswith("PITCH_")] == [], f.name
        assert len(bad) < 20, (f.name, bad)


@pytest.mark.slow
def test_bundled_pop_writes_only_the_instrument_it_knows():
    """Before the fix, 6 of these 12 pieces (seed 3) were on programs the model never saw (2, 26, 40, 90, 99, 116)."""
    model = ml.load("pop")
    assert model.meta["data"]["programs"] == [0]
    pieces = compose(model, seconds=10, seed=3, num=12)
    assert [sorted({i.program for i in pm.instruments if i.notes}) for pm in pieces] == [[0]] * 12
