"""Property tests (hypothesis): `decode` never raises and keeps its caps for any ids; `encode` of any
score stays in the vocabulary; round trips recover every note they promise to keep."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from musiclstm import Score, Tokenizer, Track
from musiclstm.evaluation.metrics import onset_f1

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOKENIZERS = {
    "performance": Tokenizer("performance"),
    "performance-short-cap": Tokenizer("performance", max_note_seconds=1.5, shift_steps=50),
    "remi": Tokenizer("remi", styles=("a", "b")),
    "grid": Tokenizer("grid"),
    "grid-no-hold": Tokenizer("grid", hold=False, max_hold_steps=8, voices=3),
}


def cap_seconds(tok: Tokenizer) -> float:
    """The longest note `decode` may return, in seconds."""
    c = tok.config
    if tok.encoding == "performance":
        return c.max_note_seconds
    if tok.encoding == "grid":
        return c.max_hold_steps / c.steps_per_quarter * 60 / c.qpm
    return tok.codec.durations.max() / c.ticks_per_quarter * 60 / c.min_qpm  # remi: 32 quarters at 30 qpm


INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def any_ids(tok: Tokenizer):
    """Lists of ids: mostly in the vocabulary (so the grammar is exercised), some negative or out of range."""
    in_vocab = st.integers(0, tok.vocab_size - 1)
    near = st.integers(-5, tok.vocab_size + 5)
    return st.lists(st.one_of(in_vocab, in_vocab, in_vocab, near, INT64), max_size=400)


@pytest.mark.parametrize("name", TOKENIZERS)
@SETTINGS
@given(data=st.data())
def test_decode_of_any_ids_never_raises_and_keeps_caps(name, data):
    tok = TOKENIZERS[name]
    ids = data.draw(any_ids(tok))
    score = tok.decode_score(ids)
    assert len(score) == 0 or (score.end > score.start).all()
    assert (np.diff(score.tempos[:, 0]) >= 0).all()  # the tempo map stays sorted
    pm = tok.decode(ids)
    cap = cap_seconds(tok)
    for ins in pm.instruments:
        for n in ins.notes:
            assert n.end > n.start
            assert 0 <= n.pitch <= 127 and 1 <= n.velocity <= 127
            assert n.end - n.start <= cap + 1e-6, (n, cap)


def test_remi_decode_of_backward_tempo_positions_does_not_raise():
    tok = Tokenizer("remi", version=2)
    ids = [tok.vocab.id("POSITION", 1), tok.vocab.id("TEMPO", 0), tok.vocab.id("POSITION", 0), tok.vocab.id("TEMPO", 0)]
    assert ids == [89, 184, 88, 184]  # remi v2 ids (24 KEY tokens before POSITION)
    tok.decode(ids)


def test_remi_decoded_tempo_map_is_sorted():
    tok = Tokenizer("remi")
    ids = [tok.vocab.id("BAR"), tok.vocab.id("POSITION", 24), tok.vocab.id("TEMPO", 10), tok.vocab.id("PROGRAM", 0),
           tok.vocab.id("PITCH", 60), tok.vocab.id("VELOCITY", 10), tok.vocab.id("DURATION", 5),
           tok.vocab.id("POSITION", 0), tok.vocab.id("TEMPO", 20)]
    score = tok.decode_score(ids)  # tempos [[0, 67.9], [2, 67.9], [0, 123.0]]
    assert (np.diff(score.tempos[:, 0]) >= 0).all(), score.tempos.tolist()


@pytest.mark.parametrize("name", TOKENIZERS)
@SETTINGS
@given(ids=st.lists(INT64, max_size=50))
def test_decode_accepts_numpy_int64_input(name, ids):
    tok = TOKENIZERS[name]
    assert len(tok.decode(np.array(ids, dtype=np.int64)).instruments) <= 129


def test_decode_of_ints_beyond_int64_does_not_raise():
    tok = Tokenizer("performance")
    out, alone = tok.decode([2**63, 63]), tok.decode([63])
    # the id beyond int64 is dropped: the same music as without it
    assert [[(n.start, n.end, n.pitch) for n in i.notes] for i in out.instruments] == \
        [[(n.start, n.end, n.pitch) for n in i.notes] for i in alone.instruments]


# ---- random scores -----------------------------------------------------------------------------

@st.composite
def scores(draw, *, max_notes: int = 30, on_grid: bool = False, bin_tempos=None, max_quarters: int = 48):
    """Multi-track Scores with drums, tempo changes, meters and pedals.

    on_grid: onsets on the 1/12-quarter grid, table durations, meter changes only on bar lines, distinct
    (onset, pitch, drum) notes, tempo changes on the grid (from `bin_tempos` when given).
    """
    n_tracks = draw(st.integers(1, 4))
    tracks = [Track(draw(st.integers(0, 127)), draw(st.booleans()) if k else False) for k in range(n_tracks)]
    n = draw(st.integers(0, max_notes))
    track = draw(st.lists(st.integers(0, n_tracks - 1), min_size=n, max_size=n))
    pitch = draw(st.lists(st.integers(0, 127), min_size=n, max_size=n))
    vel = draw(st.lists(st.integers(1, 127), min_size=n, max_size=n))
    if on_grid:
        ticks = draw(st.lists(st.integers(0, 12 * max_quarters), min_size=n, max_size=n))
        start = np.array(ticks, float) / 12
        dur = np.array(draw(st.lists(st.sampled_from([1, 2, 3, 4, 6, 8, 12, 18, 24, 48, 96]), min_size=n, max_size=n)),
                       float) / 12
        seen, keep = set(), []
        for i in range(n):
            key = (ticks[i], pitch[i], tracks[track[i]].is_drum)
            keep.append(key not in seen)
            seen.add(key)
        keep = np.array(keep, bool)
    else:
        start = np.array(draw(st.lists(st.floats(0, max_quarters, allow_nan=False), min_size=n, max_size=n)))
        dur = np.array(draw(st.lists(st.floats(1e-3, 40, allow_nan=False), min_size=n, max_size=n)))
        keep = np.ones(n, bool)
    start, dur = start.reshape(-1), dur.reshape(-1)

    # tempo map
    k = draw(st.integers(0, 3))
    if bin_tempos is not None:
        qpms = draw(st.lists(st.sampled_from(list(bin_tempos)), min_size=k + 1, max_size=k + 1))
    else:
        qpms = draw(st.lists(st.floats(20, 400), min_size=k + 1, max_size=k + 1))
    at = sorted(set(draw(st.lists(st.integers(1, 12 * max_quarters), max_size=k)))) if on_grid else \
        sorted(set(draw(st.lists(st.floats(0.01, max_quarters), max_size=k))))
    at = [0.0] + [a / 12 if on_grid else a for a in at]
    tempos = [[a, q] for a, q in zip(at, qpms, strict=False)]

    # meters
    if on_grid:  # changes on bar lines only, from the remi table (bars of at most 8 quarters)
        meters, q = [], 0.0
        for _ in range(draw(st.integers(1, 3))):
            num, den = draw(st.sampled_from([(4, 4), (3, 4), (2, 4), (6, 8), (7, 8), (5, 4), (12, 8), (2, 2),
                                             (5, 16), (8, 4)]))
            meters.append([q, num, den])
            q += num * 4 / den * draw(st.integers(1, 4))
    else:
        m = sorted(set(draw(st.lists(st.floats(0, max_quarters), max_size=3))))
        meters = [[a, draw(st.integers(1, 20)), draw(st.sampled_from([1, 2, 4, 8, 16, 32]))] for a in [0.0, *m]]

    pedals = []
    if not on_grid:
        for _ in range(draw(st.integers(0, 3))):
            down = draw(st.floats(0, max_quarters))
            pedals.append([draw(st.integers(0, n_tracks - 1)), down, down + draw(st.floats(0.01, 10))])
    s = Score(start, start + dur, pitch, vel, track, tracks=tracks, tempos=tempos, time_signatures=meters,
              pedals=pedals)
    return s.select(keep)


one_track = st.lists(st.tuples(st.floats(0, 64), st.floats(0.001, 20), st.integers(0, 127), st.integers(1, 127)),
                     max_size=40).map(lambda rows: Score.from_notes([(s, s + d, p, v) for s, d, p, v in rows]))


def _in_range(tok: Tokenizer, ids) -> None:
    a = np.asarray(ids)
    assert a.dtype.kind == "i"
    assert ((a >= 0) & (a < tok.vocab_size)).all()
    assert ids[0] == 1 and ids[-1] == 2
    assert not (a[1:-1] < 3).any()  # no specials inside


@pytest.mark.parametrize("name", TOKENIZERS)
@SETTINGS
@given(score=scores())
def test_encode_of_random_scores_stays_in_vocab(name, score):
    tok = TOKENIZERS[name]
    _in_range(tok, tok.encode(score))


@pytest.mark.parametrize("name", ["performance", "remi", "grid"])
@SETTINGS
@given(score=one_track)
def test_encode_of_from_notes_stays_in_vocab(name, score):
    tok = TOKENIZERS[name]
    _in_range(tok, tok.encode(score))


@SETTINGS
@given(score=scores(), style=st.sampled_from(["a", "b"]))
def test_encode_with_style_stays_in_vocab(score, style):
    tok = TOKENIZERS["remi"]
    ids = tok.encode(score, style=style)
    assert ids[1] == tok.style_id(style)
    assert ((np.array(ids) >= 0) & (np.array(ids) < tok.vocab_size)).all()


# ---- round trips -------------------------------------------------------------------------------

def on_beats(s: Score) -> Score:
    """The same notes on a constant 60 qpm: seconds == quarters, so onset_f1 compares beat positions."""
    return Score(s.start, s.end, s.pitch, s.velocity, s.track, list(s.tracks), [[0.0, 60.0]])


@SETTINGS
@given(score=scores(on_grid=True, max_notes=40))
def test_remi_round_trip_on_grid_recovers_every_note(score):
    tok = Tokenizer("remi")
    out = tok.decode_score(tok.encode(score))
    m = onset_f1(on_beats(score), on_beats(out), tolerance=1e-6)
    assert m["f1"] == 1.0 and m["reference"] == m["estimate"] == len(score)
    # programs and drums survive as tracks (same-program tracks merge; a drum kit's program is not kept)
    used = set(score.track.tolist())
    assert {(0 if t.is_drum else t.program, t.is_drum) for k, t in enumerate(score.tracks) if k in used} \
        == {(t.program, t.is_drum) for t in out.tracks}


@SETTINGS
@given(score=scores(on_grid=True, max_notes=30, bin_tempos=Tokenizer("remi").codec.tempos))
def test_remi_round_trip_in_seconds_when_tempos_are_bins(score):
    tok = Tokenizer("remi")
    out = tok.decode_score(tok.encode(score))
    assert onset_f1(score, out, tolerance=1e-6)["f1"] == 1.0


@SETTINGS
@given(score=scores(max_notes=40))
def test_performance_round_trip_recovers_the_keyboard_notes(score):
    tok = Tokenizer("performance")
    on, _, pitch, _ = tok.codec.notes(score)
    keys = Score(on * 0.02, on * 0.02 + 0.1, pitch, np.full(len(on), 64), np.zeros(len(on)), [Track()])
    out = tok.decode_score(tok.encode(score))  # 120 qpm: a 10 ms step is 0.02 quarters
    m = onset_f1(keys, out, tolerance=1e-6)
    assert m["f1"] == 1.0 and len(out) == len(on) == len(score.select(~score.is_drum)) - _dropped(score, tok)


def _dropped(score: Score, tok: Tokenizer) -> int:
    """Notes of one pitch that start on the same 10 ms step count once."""
    s = score.select(~score.is_drum)
    steps = np.round(s.seconds(s.start) / (tok.config.shift_ms / 1000)).astype(np.int64)
    return len(s) - len(set(zip(steps.tolist(), s.pitch.tolist(), strict=True)))


@st.composite
def voice_grids(draw, voices: int = 4, max_steps: int = 48):
    """(steps, voices) arrays of runs of one pitch or NaN, runs no longer than the grid cap (64 steps)."""
    cols = []
    steps = draw(st.integers(1, max_steps))
    for _ in range(voices):
        col: list[float] = []
        while len(col) < steps:
            p = draw(st.one_of(st.just(np.nan), st.integers(30, 90).map(float)))
            col += [p] * draw(st.integers(1, 12))
        cols.append(col[:steps])
    return np.array(cols).T


@SETTINGS
@given(a=voice_grids())
def test_grid_round_trip_of_arrays_keeps_every_step(a):
    tok = Tokenizer("grid")
    out = tok.decode_score(tok.encode(a))
    T = len(a)
    got = np.full((T + 1, 4), np.nan)
    for s, e, p, v in zip(out.start, out.end, out.pitch, out.track, strict=True):
        got[int(round(s * 4)):int(round(e * 4)), v] = p
    # held runs of a repeated pitch are one note: compare pitch per step; nothing sounds past the last step
    np.testing.assert_array_equal(got, np.vstack([a, np.full((1, 4), np.nan)]))
    # every run start is a note onset
    onsets = np.r_[np.ones((1, 4), bool), (a[1:] != a[:-1]) & ~(np.isnan(a[1:]) & np.isnan(a[:-1]))] & ~np.isnan(a)
    assert len(out) == onsets.sum()
