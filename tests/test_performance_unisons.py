"""`performance` on vocal and piano-vocal scores: one pitch is one key, so unisons between voices are
where the stream loses anything. It keeps the sound of every key (frame by frame) and every onset
except a unison struck in the same 10 ms step, which is one key press."""

from __future__ import annotations

import numpy as np
import pytest

from musiclstm import Score, Tokenizer, Track, read
from musiclstm.evaluation.metrics import onset_f1

STEP = 0.01  # seconds per TIME_SHIFT step


def _cells(score: Score) -> set[tuple[int, int]]:
    """(10 ms step, pitch) of everything sounding."""
    on = np.round(score.seconds(score.start) / STEP).astype(int)
    off = np.maximum(np.round(score.seconds(score.end) / STEP).astype(int), on + 1)
    return {(t, p) for a, b, p in zip(on.tolist(), off.tolist(), score.pitch.tolist(), strict=True)
            for t in range(a, b)}


def _round_trip(score: Score) -> Score:
    tok = Tokenizer("performance")
    return tok.decode_score(tok.encode(score))


def _voices(*notes) -> Score:
    """One track per (start, end, pitch) row, quarters at 120 qpm (a quarter = 0.5 s)."""
    a = np.array(notes, dtype=float)
    return Score(a[:, 0], a[:, 1], a[:, 2], np.full(len(a), 80), np.arange(len(a)),
                 [Track(52, False, f"Voice {k}") for k in range(len(a))])


def test_a_short_unison_inside_a_long_note_does_not_silence_the_rest_of_it():
    # the alto holds E for four quarters; the soprano sings E for one quarter in the middle
    out = _round_trip(_voices((0, 4, 64), (1, 2, 64)))
    assert sorted(zip(out.start.tolist(), out.end.tolist(), strict=True)) == [(0, 1), (1, 4)]


def test_unisons_struck_together_are_one_key_press_as_long_as_the_longest():
    out = _round_trip(_voices((0, 1, 64), (0, 3, 64), (0, 2, 60)))
    notes = sorted(zip(out.start.tolist(), out.end.tolist(), out.pitch.tolist(), strict=True))
    assert notes == [(0, 2, 60), (0, 3, 64)]


def test_random_overlapping_voices_keep_every_sounding_key_and_every_distinct_onset():
    rng = np.random.default_rng(3)
    for trial in range(100):
        n = int(rng.integers(2, 30))
        start = rng.integers(0, 40, n) / 4
        rows = np.c_[start, start + rng.integers(1, 12, n) / 4, rng.integers(60, 66, n)]  # few pitches: many unisons
        s = _voices(*rows.tolist())
        out = _round_trip(s)
        assert _cells(out) == _cells(s), trial
        struck = {(round(a / 0.5 / STEP), p) for a, p in zip(s.seconds(s.start), s.pitch.tolist(), strict=True)}
        assert len(out) == len(struck), trial  # one note per distinct (step, pitch) onset


def test_a_vocal_score_loses_only_unisons_struck_together():
    pytest.importorskip("music21")
    from music21 import corpus

    score = read(corpus.getWork("schumann_robert/dichterliebe_no2"))  # voice and piano
    out = _round_trip(score)
    step = np.round(score.seconds(score.start) / STEP).astype(int)
    keys = np.unique(np.c_[step, score.pitch], axis=0)  # distinct (step, pitch) key presses
    assert len(keys) < len(score)  # the voice is doubled in the piano
    assert len(out) == len(keys)
    merged = Score(keys[:, 0] * STEP * 2, keys[:, 0] * STEP * 2 + 0.1, keys[:, 1], np.full(len(keys), 64),
                   np.zeros(len(keys)), [Track()])
    assert onset_f1(merged, out)["f1"] == 1.0
    assert _cells(out) == _cells(score)
