"""`grid` when the tracks are not the voices (a piano score, a one-track primer): every HOLD continues
the note its voice holds, so notes on the grid come back whole."""

from __future__ import annotations

import numpy as np
import pytest

from musiclstm import Score, Tokenizer


def _notes(score: Score) -> list[tuple[float, float, int]]:
    return sorted(zip(score.start.tolist(), score.end.tolist(), score.pitch.tolist(), strict=True))


@pytest.mark.parametrize("hold", [True, False])
def test_a_note_entering_above_a_held_one_leaves_it_whole(hold):
    # the example: 72/60/48 held two quarters, 67 entering a 16th later
    tok = Tokenizer("grid", hold=hold)
    s = Score.from_notes([(0, 2, 72, 80), (0, 2, 60, 80), (0, 2, 48, 80), (0.25, 2, 67, 80)])
    assert _notes(tok.decode_score(tok.encode(s))) == _notes(s)


def test_a_chord_struck_together_fills_the_voices_from_the_top():
    tok = Tokenizer("grid")
    grid, onset = tok.codec.to_grid(Score.from_notes([(0, 1, 60, 80), (0, 1, 67, 80), (0, 1, 52, 80)]))
    assert grid[0].tolist() == [67, 60, 52, -1] and onset[0].tolist() == [True, True, True, False]
    assert grid[1:].tolist() == [[67, 60, 52, -1]] * 3 and not onset[1:].any()


def test_a_restruck_pitch_starts_a_new_note_and_a_hold_never_continues_another_pitch():
    tok = Tokenizer("grid")
    s = Score.from_notes([(0, 1, 64, 80), (1, 2, 64, 80), (0, 0.5, 71, 80), (0.5, 2, 59, 80)])
    grid, onset = tok.codec.to_grid(s)
    for t in range(1, len(grid)):
        held = ~onset[t] & (grid[t] >= 0)
        assert (grid[t][held] == grid[t - 1][held]).all(), t  # a held voice keeps its pitch
    assert _notes(tok.decode_score(tok.encode(s))) == _notes(s)


def test_more_notes_than_voices_keeps_the_highest_and_holds_only_their_own_notes():
    tok = Tokenizer("grid", voices=2)
    s = Score.from_notes([(0, 2, 48, 80), (0, 2, 55, 80), (0.5, 1, 72, 80)])
    grid, onset = tok.codec.to_grid(s)
    assert sorted(grid[2].tolist()) == [55, 72]  # the highest two sound while the 72 does
    for t in range(1, len(grid)):
        held = ~onset[t] & (grid[t] >= 0)
        assert (grid[t][held] == grid[t - 1][held]).all(), t


def test_random_piano_scores_on_the_grid_round_trip_exactly():
    """Up to four notes at once, distinct pitches, on the 16th grid: decode(encode(x)) == x."""
    tok = Tokenizer("grid")
    rng = np.random.default_rng(7)
    for trial in range(150):
        rows, busy = [], []  # busy: (end, pitch) of the notes sounding
        for step in range(48):
            t = step / 4
            busy = [(e, p) for e, p in busy if e > t]
            for _ in range(rng.integers(0, 3)):
                if len(busy) == 4 or rng.random() < 0.6:
                    continue
                p = int(rng.integers(40, 84))
                if any(q == p for _, q in busy):
                    continue
                end = t + int(rng.integers(1, 12)) / 4
                rows.append((t, end, p, 80))
                busy.append((end, p))
        s = Score.from_notes(rows)
        assert _notes(tok.decode_score(tok.encode(s))) == _notes(s), trial
