"""`Tokenizer`: the id layout of each encoding, configuration, exact encodings of tiny scores,
round trips of MIDI built in code, and the guarantees of `decode`.

Expected ids and names below are derived by hand from the documented rules (tokenizer.py and the
encodings' docstrings), not copied from the output:

* ids: PAD=0, BOS=1, EOS=2, then one STYLE per configured style, then the encoding's own table.
* velocity bins: bin = (v - 1) * 32 // 127, so v=80 -> 19, v=100 -> 24, v=40 -> 9, v=127 -> 31.
* performance: TIME_SHIFT_k is (k+1) * 10 ms; a gap of 1.5 s is 1000 ms + 500 ms.
* remi: 1/12-quarter ticks; a 4/4 bar is 48 ticks; TEMPO tokens are whole qpm 30..300 (120 qpm -> TEMPO_120).
"""

from __future__ import annotations

import json

import numpy as np
import pretty_midi
import pytest
from conftest import Part, build_midi

from musiclstm import ConfigError, MidiReadError, Score, Tokenizer, Track, read
from musiclstm.encodings import grid as grid_mod
from musiclstm.encodings import performance as perf_mod
from musiclstm.evaluation.metrics import onset_f1

NAN = np.nan

# ---- the id tables ------------------------------------------------------------------------------

PERFORMANCE_TABLE = [  # (kind, value, id, name)
    ("PAD", 0, 0, "PAD"), ("BOS", 0, 1, "BOS"), ("EOS", 0, 2, "EOS"),
    ("NOTE_ON", 0, 3, "NOTE_ON_0"), ("NOTE_ON", 60, 63, "NOTE_ON_60"), ("NOTE_ON", 127, 130, "NOTE_ON_127"),
    ("NOTE_OFF", 0, 131, "NOTE_OFF_0"), ("NOTE_OFF", 60, 191, "NOTE_OFF_60"), ("NOTE_OFF", 127, 258, "NOTE_OFF_127"),
    ("TIME_SHIFT", 0, 259, "TIME_SHIFT_10ms"), ("TIME_SHIFT", 49, 308, "TIME_SHIFT_500ms"),
    ("TIME_SHIFT", 99, 358, "TIME_SHIFT_1000ms"),
    ("VELOCITY", 0, 359, "VELOCITY_0"), ("VELOCITY", 19, 378, "VELOCITY_19"), ("VELOCITY", 31, 390, "VELOCITY_31"),
]

# remi meters: d in (2, 4, 8, 16), n = 1.. while the bar is <= 8 quarters: 4 + 8 + 16 + 32 = 60 tokens,
# (4, 4) is index 4 + 3 = 7; durations: 50 values, 1/12 .. 384/12 quarters
REMI_TABLE = [
    ("BAR", 0, 3, "BAR"),
    ("TIMESIG", 0, 4, "TIMESIG_1/2"), ("TIMESIG", 6, 10, "TIMESIG_3/4"), ("TIMESIG", 7, 11, "TIMESIG_4/4"),
    ("TIMESIG", 17, 21, "TIMESIG_6/8"), ("TIMESIG", 59, 63, "TIMESIG_32/16"),
    ("POSITION", 0, 64, "POSITION_0"), ("POSITION", 95, 159, "POSITION_95"),
    ("TEMPO", 0, 160, "TEMPO_30"), ("TEMPO", 90, 250, "TEMPO_120"), ("TEMPO", 270, 430, "TEMPO_300"),
    ("PROGRAM", 0, 431, "PROGRAM_0"), ("PROGRAM", 128, 559, "PROGRAM_128"),
    ("PITCH", 0, 560, "PITCH_0"), ("PITCH", 60, 620, "PITCH_60"), ("PITCH", 127, 687, "PITCH_127"),
    ("DRUM", 0, 688, "DRUM_0"), ("DRUM", 36, 724, "DRUM_36"), ("DRUM", 127, 815, "DRUM_127"),
    ("VELOCITY", 0, 816, "VELOCITY_0"), ("VELOCITY", 31, 847, "VELOCITY_31"),
    ("DURATION", 0, 848, "DURATION_1/12"), ("DURATION", 11, 859, "DURATION_12/12"),
    ("DURATION", 49, 897, "DURATION_384/12"),
]

GRID_TABLE = [
    ("PITCH", 0, 3, "PITCH_0"), ("PITCH", 60, 63, "PITCH_60"), ("PITCH", 127, 130, "PITCH_127"),
    ("REST", 0, 131, "REST"), ("HOLD", 0, 132, "HOLD"),
]

# remi version 2: 24 KEY tokens after TIMESIG shift every later id by 24
REMI2_TABLE = [
    ("BAR", 0, 3, "BAR"), ("TIMESIG", 7, 11, "TIMESIG_4/4"),
    ("KEY", 0, 64, "KEY_C"), ("KEY", 7, 71, "KEY_G"), ("KEY", 21, 85, "KEY_Am"), ("KEY", 23, 87, "KEY_Bm"),
    ("POSITION", 0, 88, "POSITION_0"), ("TEMPO", 90, 274, "TEMPO_120"), ("PROGRAM", 0, 455, "PROGRAM_0"),
    ("PITCH", 60, 644, "PITCH_60"), ("DRUM", 36, 748, "DRUM_36"), ("VELOCITY", 31, 871, "VELOCITY_31"),
    ("DURATION", 49, 921, "DURATION_384/12"),
]

# remi version 3: 256 REPEAT distances after KEY shift every id from POSITION on by 256
REMI3_TABLE = [
    ("BAR", 0, 3, "BAR"), ("TIMESIG", 7, 11, "TIMESIG_4/4"), ("KEY", 21, 85, "KEY_Am"),
    ("REPEAT", 0, 88, "REPEAT_1"), ("REPEAT", 7, 95, "REPEAT_8"), ("REPEAT", 255, 343, "REPEAT_256"),
    ("POSITION", 0, 344, "POSITION_0"), ("TEMPO", 90, 530, "TEMPO_120"), ("PROGRAM", 0, 711, "PROGRAM_0"),
    ("PITCH", 60, 900, "PITCH_60"), ("DRUM", 36, 1004, "DRUM_36"), ("VELOCITY", 31, 1127, "VELOCITY_31"),
    ("DURATION", 49, 1177, "DURATION_384/12"),
]

# remi version 4 (the default): 6 ROLE tokens before PROGRAM; VELOCITY has 8 levels (32 before)
REMI4_TABLE = [
    ("BAR", 0, 3, "BAR"), ("KEY", 21, 85, "KEY_Am"), ("REPEAT", 255, 343, "REPEAT_256"),
    ("TEMPO", 90, 530, "TEMPO_120"), ("ROLE", 0, 711, "ROLE_other"), ("ROLE", 1, 712, "ROLE_melody"),
    ("ROLE", 5, 716, "ROLE_drums"), ("PROGRAM", 0, 717, "PROGRAM_0"), ("PITCH", 60, 906, "PITCH_60"),
    ("DRUM", 36, 1010, "DRUM_36"), ("VELOCITY", 7, 1109, "VELOCITY_7"), ("DURATION", 49, 1159, "DURATION_384/12"),
]

TABLES = {"performance": (PERFORMANCE_TABLE, 391), "remi-v1": (REMI_TABLE, 898), "remi-v2": (REMI2_TABLE, 922),
          "remi-v3": (REMI3_TABLE, 1178), "remi": (REMI4_TABLE, 1160),
          "grid": (GRID_TABLE, 133)}
CASES = [pytest.param(enc, *row, id=f"{enc}-{row[3]}") for enc, (table, _) in TABLES.items() for row in table]


def _tok(name: str, **options) -> Tokenizer:
    """A tokenizer by table name: "remi-v1" is remi version 1, "remi-v2" version 2."""
    if name.startswith("remi-v"):
        return Tokenizer("remi", version=int(name[-1]), **options)
    return Tokenizer(name, **options)


@pytest.mark.parametrize("encoding, kind, value, id_, name", CASES)
def test_id_table_both_ways(encoding, kind, value, id_, name):
    tok = _tok(encoding)
    assert tok.vocab.id(kind, value) == id_
    assert tok.vocab.split(id_) == (kind, value)
    assert tok.names([id_]) == [name]


@pytest.mark.parametrize("encoding, size", [(e, n) for e, (_, n) in TABLES.items()])
def test_vocab_size(encoding, size):
    tok = _tok(encoding)
    assert tok.vocab_size == len(tok.vocab) == size
    assert tok.vocab.offset["STYLE"] == 3  # no styles: STYLE has 0 entries
    assert sum(n for _, n in tok.codec.table()) == size - 3
    assert tok.names([-1, size]) == ["?-1", f"?{size}"]


def test_performance_vocab_is_388_events_plus_3_specials():
    assert Tokenizer("performance").vocab_size == 388 + 3


STYLES = ("bach", "folk", "jazz")


@pytest.mark.parametrize("encoding, kind, value, id_, name", CASES)
def test_styles_shift_every_id(encoding, kind, value, id_, name):
    tok = _tok(encoding, styles=STYLES)
    shift = 0 if kind in ("PAD", "BOS", "EOS") else len(STYLES)
    assert tok.vocab.id(kind, value) == id_ + shift
    assert tok.vocab.split(id_ + shift) == (kind, value)
    assert tok.names([id_ + shift]) == [name]
    assert tok.vocab_size == TABLES[encoding][1] + len(STYLES)


@pytest.mark.parametrize("encoding", TABLES)
def test_style_ids(encoding):
    tok = _tok(encoding, styles=STYLES)
    assert [tok.style_id(s) for s in STYLES] == [3, 4, 5]
    assert tok.names([3, 4, 5]) == ["STYLE_bach", "STYLE_folk", "STYLE_jazz"]
    ids = tok.encode(Score.from_notes([(0, 1, 60, 80)]), style="folk")
    assert ids[:2] == [1, 4] and ids[-1] == 2
    assert tok.names(ids)[1] == "STYLE_folk"


# ---- configuration ------------------------------------------------------------------------------

CONFIGS = [
    ("performance", {}, ()), ("performance", {"shift_ms": 20, "shift_steps": 50, "velocity_bins": 16}, ("a", "b")),
    ("remi", {}, ()), ("remi", {"ticks_per_quarter": 24, "max_bar_quarters": 6, "max_qpm": 200}, ("pop",)),
    ("grid", {}, ()), ("grid", {"voices": 3, "hold": False, "qpm": 90.0, "max_hold_steps": 32}, ("x", "y", "z")),
]


@pytest.mark.parametrize("encoding, options, styles", CONFIGS)
def test_to_dict_from_dict_round_trip(encoding, options, styles):
    tok = Tokenizer(encoding, styles=styles, **options)
    d = tok.to_dict()
    assert d["encoding"] == encoding and d["styles"] == list(styles)
    for again in (Tokenizer.from_dict(d), Tokenizer.from_dict(json.loads(json.dumps(d)))):
        assert again == tok
        assert again.vocab_size == tok.vocab_size
        assert again.vocab.kinds == tok.vocab.kinds and again.vocab.sizes == tok.vocab.sizes
        assert again.vocab.offset == tok.vocab.offset
        ids = list(range(tok.vocab_size))
        assert again.names(ids) == tok.names(ids)
    assert Tokenizer(encoding) != Tokenizer(encoding, styles=("other",))


@pytest.mark.parametrize("make", [
    lambda: Tokenizer("midi-like"),
    lambda: Tokenizer("remi", foo=1),
    lambda: Tokenizer("performance", ticks_per_quarter=12),  # an option of another encoding
    lambda: Tokenizer.from_dict({"encoding": "grid", "styles": [], "voices": 4, "bogus": True}),
    lambda: Tokenizer("remi").style_id("jazz"),
    lambda: Tokenizer("remi", styles=("folk",)).encode(Score.from_notes([(0, 1, 60, 80)]), style="jazz"),
], ids=["unknown-encoding", "unknown-option", "foreign-option", "from-dict-unknown-option", "style-id",
        "encode-unknown-style"])
def test_config_errors(make):
    with pytest.raises(ConfigError):
        make()


def test_unknown_style_message_lists_known_styles():
    with pytest.raises(ConfigError, match="folk, jazz"):
        Tokenizer("grid", styles=("folk", "jazz")).style_id("bach")


# ---- exact encodings of tiny scores ------------------------------------------------------------

def test_performance_two_notes():
    tok = Tokenizer("performance")
    s = Score.from_notes([(0, 1, 60, 80), (1, 2, 62, 80)])  # 120 qpm: a quarter is 500 ms
    assert tok.names(tok.encode(s)) == [
        "BOS", "VELOCITY_19", "NOTE_ON_60", "TIME_SHIFT_500ms", "NOTE_OFF_60", "NOTE_ON_62", "TIME_SHIFT_500ms",
        "NOTE_OFF_62", "EOS"]


def test_performance_chord_gap_velocity_change_drums_dropped():
    tok = Tokenizer("performance")
    s = Score([0, 0, 0, 3.5], [0.5, 0.5, 0.25, 4], [64, 60, 36, 67], [100, 100, 127, 40], [0, 0, 1, 0],
              tracks=[Track(0), Track(0, True)])
    # ons of one step by pitch; offs before ons; 0.25 s -> 1.75 s is a 1.5 s gap; the drum is dropped
    assert tok.names(tok.encode(s)) == [
        "BOS", "VELOCITY_24", "NOTE_ON_60", "NOTE_ON_64", "TIME_SHIFT_250ms", "NOTE_OFF_60", "NOTE_OFF_64",
        "TIME_SHIFT_1000ms", "TIME_SHIFT_500ms", "VELOCITY_9", "NOTE_ON_67", "TIME_SHIFT_250ms", "NOTE_OFF_67", "EOS"]


def test_performance_follows_the_tempo_map():
    tok = Tokenizer("performance")
    s = Score([0, 2], [1, 3], [60, 62], [80, 80], [0, 0], tracks=[Track()], tempos=[[0, 60.0], [1, 240.0]])
    # 60 qpm: quarter 1 at 1 s; 240 qpm after: quarter 2 at 1.25 s, quarter 3 at 1.5 s
    assert tok.names(tok.encode(s)) == [
        "BOS", "VELOCITY_19", "NOTE_ON_60", "TIME_SHIFT_1000ms", "NOTE_OFF_60", "TIME_SHIFT_250ms", "NOTE_ON_62",
        "TIME_SHIFT_250ms", "NOTE_OFF_62", "EOS"]


def test_performance_bos_eos_flags_and_arrays():
    tok = Tokenizer("performance")
    s = Score.from_notes([(0, 1, 60, 80)])
    body = tok.encode(s, bos=False, eos=False)
    assert tok.names(body) == ["VELOCITY_19", "NOTE_ON_60", "TIME_SHIFT_500ms", "NOTE_OFF_60"]
    arr = tok.encode_array(s)
    assert arr.dtype == np.int64 and arr.tolist() == [1, *body, 2]
    assert tok.encode(Score.from_notes([])) == [1, 2]


def test_remi_v1_two_bars_programs_and_drums():
    tok = Tokenizer("remi", version=1)
    s = Score([0, 1.5, 0, 5], [1, 2, 0.25, 5 + 1 / 3], [60, 64, 36, 40], [80, 100, 100, 80], [0, 0, 1, 2],
              tracks=[Track(0), Track(0, True), Track(33)])
    # quarter 1.5 = tick 18; quarter 5 = bar 2 (48 ticks a bar) position 12; drums are PROGRAM_128 and sort last
    assert tok.names(tok.encode(s)) == [
        "BOS", "BAR", "TIMESIG_4/4", "POSITION_0", "TEMPO_120",
        "PROGRAM_0", "PITCH_60", "VELOCITY_19", "DURATION_12/12",
        "PROGRAM_128", "DRUM_36", "VELOCITY_24", "DURATION_3/12",
        "POSITION_18", "PROGRAM_0", "PITCH_64", "VELOCITY_24", "DURATION_6/12",
        "BAR", "POSITION_12", "PROGRAM_33", "PITCH_40", "VELOCITY_19", "DURATION_4/12", "EOS"]


def test_remi_v1_meter_and_tempo_changes():
    tok = Tokenizer("remi", version=1)
    s = Score([0, 3, 5], [1, 4, 5.5], [60, 62, 64], [80, 80, 80], [0, 0, 0], tracks=[Track()],
              tempos=[[0, 60.0], [3, 240.0]], time_signatures=[[0, 3, 4], [3, 2, 4]])
    # 60 qpm -> TEMPO_60, 240 qpm -> TEMPO_240 (whole-qpm tokens)
    # a 3/4 bar is 36 ticks, then 2/4 bars of 24 ticks: quarter 3 = bar 2, quarter 5 = bar 3
    assert tok.names(tok.encode(s)) == [
        "BOS", "BAR", "TIMESIG_3/4", "POSITION_0", "TEMPO_60", "PROGRAM_0", "PITCH_60", "VELOCITY_19",
        "DURATION_12/12",
        "BAR", "TIMESIG_2/4", "POSITION_0", "TEMPO_240", "PROGRAM_0", "PITCH_62", "VELOCITY_19", "DURATION_12/12",
        "BAR", "POSITION_0", "PROGRAM_0", "PITCH_64", "VELOCITY_19", "DURATION_6/12", "EOS"]


def test_remi_v2_names_program_and_velocity_only_when_they_change_and_opens_with_a_key():
    tok = Tokenizer("remi", version=2)
    s = Score([0, 1.5, 0, 5], [1, 2, 0.25, 5 + 1 / 3], [60, 64, 36, 40], [80, 100, 100, 80], [0, 0, 1, 2],
              tracks=[Track(0), Track(0, True), Track(33)], key_signatures=[[0, 9, 1]])
    assert tok.names(tok.encode(s)) == [
        "BOS", "BAR", "TIMESIG_4/4", "KEY_Am", "POSITION_0", "TEMPO_120",
        "PROGRAM_0", "VELOCITY_19", "PITCH_60", "DURATION_12/12",
        "PROGRAM_128", "VELOCITY_24", "DRUM_36", "DURATION_3/12",
        "POSITION_18", "PROGRAM_0", "PITCH_64", "DURATION_6/12",  # same velocity bin as the drum: not repeated
        "BAR", "POSITION_12", "PROGRAM_33", "VELOCITY_19", "PITCH_40", "DURATION_4/12", "EOS"]
    back = tok.decode_score(tok.encode(s))
    v1 = Tokenizer("remi", version=1)
    assert sorted(zip(back.start, back.pitch, back.velocity, back.program, strict=True)) == sorted(
        zip(s.start, s.pitch, v1.decode_score(v1.encode(s)).velocity, s.program, strict=True))
    assert back.key_signatures.tolist() == [[0, 9, 1]]


def test_remi_v2_one_tune_costs_three_tokens_a_note_and_key_is_estimated_without_a_signature():
    tok = Tokenizer("remi", version=2)
    c_major = [60, 62, 64, 65, 67, 69, 71, 72] * 2
    s = Score.from_notes([(i / 2, i / 2 + 0.5, p, 80) for i, p in enumerate(c_major)])
    names = tok.names(tok.encode(s))
    assert names[3] == "KEY_C"
    # BOS EOS, BAR x2 TIMESIG KEY, TEMPO, the first PROGRAM VELOCITY, then POSITION PITCH DURATION a note
    assert len(names) == 2 + 4 + 1 + 2 + 3 * len(c_major)


def test_remi_v2_one_beat_meter_throughout_is_read_as_4_4():
    tok = Tokenizer("remi", version=2)
    s = Score.from_notes([(i, i + 1, 60, 80) for i in range(8)], time_signatures=[[0, 1, 4]])
    names = tok.names(tok.encode(s))
    assert names[2] == "TIMESIG_4/4" and names.count("BAR") == 2
    assert Tokenizer("remi", version=1).names(Tokenizer("remi", version=1).encode(s)).count("BAR") == 8


def test_old_remi_dicts_load_as_version_1():
    d = Tokenizer("remi", version=3).to_dict()  # old dicts recorded velocity_bins 32
    del d["version"]
    old = Tokenizer.from_dict(d)
    assert old.config.version == 1 and old.vocab_size == 898
    assert Tokenizer.from_dict(Tokenizer("remi", version=2).to_dict()).vocab_size == 922
    assert Tokenizer.from_dict(Tokenizer("remi", version=3).to_dict()).vocab_size == 1178
    assert Tokenizer.from_dict(Tokenizer("remi").to_dict()).vocab_size == 1160
    assert Tokenizer("remi", version=3).config.velocity_bins == 32 and Tokenizer("remi").config.velocity_bins == 8


# ---- remi version 3: repeated bars as one token, numbered bars -----------------------------------

def _bars(*bars, velocity=80, qpm=None):
    """A one-track score from bars of (onset in bar, quarters, pitch) in 4/4."""
    notes = [(4 * i + on, 4 * i + on + d, p, velocity[i] if isinstance(velocity, list) else velocity)
             for i, bar in enumerate(bars) for on, d, p in bar]
    a = np.asarray(notes, dtype=np.float64).reshape(-1, 4)
    return Score(a[:, 0], a[:, 1], a[:, 2], a[:, 3], np.zeros(len(a)), tracks=[Track(0)],
                 tempos=[[0.0, 120.0], *(qpm or [])])


A = [(0, 1, 60), (1, 1, 62), (2, 2, 64)]
B = [(0, 2, 67), (2, 2, 65)]


def test_remi_v3_writes_a_repeated_bar_as_one_token_at_its_nearest_distance():
    tok = Tokenizer("remi")
    names = tok.names(tok.encode(_bars(A, B, A, B, A)))
    assert [n for n in names if n.startswith(("BAR", "REPEAT"))] == [
        "BAR", "BAR", "BAR", "REPEAT_2", "BAR", "REPEAT_2", "BAR", "REPEAT_2"]
    assert names.count("POSITION_0") == 2  # only the first A and the first B are written out
    back = tok.decode_score(tok.encode(_bars(A, B, A, B, A)))
    v2 = Tokenizer("remi", version=2)
    expected = v2.decode_score(v2.encode(_bars(A, B, A, B, A)))
    assert sorted(zip(back.start, back.end, back.pitch, strict=True)) == sorted(
        zip(expected.start, expected.end, expected.pitch, strict=True))


def test_remi_v3_bar_numbers_cycle():
    tok = Tokenizer("remi", bar_cycle=4)
    names = tok.names(tok.encode(_bars(*[[(0, 1, 60 + i)] for i in range(6)])))
    assert [n for n in names if n.startswith("BAR")] == ["BAR_0", "BAR_1", "BAR_2", "BAR_3", "BAR_0", "BAR_1"]


def test_remi_v3_repeat_ignores_velocity_and_plays_its_source_velocities():
    tok = Tokenizer("remi")
    s = _bars(A, A, B, velocity=[60, 100, 100])
    ids = tok.encode(s)
    assert "REPEAT_1" in tok.names(ids)
    back = tok.decode_score(ids)
    assert back.velocity[back.start < 8].max() == back.velocity[0]  # the copy plays bar 1's velocity
    assert tok.encode(back) == ids  # and the round trip is exact: the VELOCITY of bar 3 is named again
    assert back.velocity[back.start >= 8].min() > back.velocity[0]


def test_remi_v3_never_repeats_empty_bars_bars_with_a_tempo_change_or_other_notes():
    tok = Tokenizer("remi")
    shifted = [(on, d, p + 1) for on, d, p in A]
    names = tok.names(tok.encode(_bars(A, shifted, [], A[:2], A, qpm=[[16.0, 90.0]])))
    # bar 5 equals bar 1 but carries a tempo change; bar 3 is empty; bars 2 and 4 differ from bar 1
    assert not any(n.startswith("REPEAT") for n in names)
    names = tok.names(tok.encode(_bars(A, shifted, [], A[:2], A)))
    assert [n for n in names if n.startswith("REPEAT")] == ["REPEAT_4"]


def test_remi_v3_round_trip_on_programs_and_drums():
    tok = Tokenizer("remi")
    bar = [(0, 0.5, 60, 80, 0), (0, 0.25, 36, 90, 1), (1, 1, 48, 70, 2), (2, 0.5, 38, 90, 1)]
    notes = [(4 * i + on, 4 * i + on + d, p, v, t) for i in range(4) for on, d, p, v, t in bar]
    notes += [(16, 17, 62, 80, 0), (16, 16.5, 36, 90, 1)]
    s = Score([n[0] for n in notes], [n[1] for n in notes], [n[2] for n in notes], [n[3] for n in notes],
              [n[4] for n in notes], tracks=[Track(0), Track(0, True), Track(33)])
    ids = tok.encode(s)
    assert tok.names(ids).count("REPEAT_1") == 3
    back = tok.decode_score(ids)
    assert len(back) == len(s) and tok.encode(back) == ids


def test_remi_long_meter_becomes_4_4_and_long_notes_are_cut():
    tok = Tokenizer("remi")
    s = Score.from_notes([(0, 40, 60, 80)], time_signatures=[[0, 9, 4]])
    names = tok.names(tok.encode(s))
    assert names[2] == "TIMESIG_4/4" and names[-2] == "DURATION_384/12"


def test_grid_one_track_fills_voices_from_the_top():
    tok = Tokenizer("grid")
    s = Score.from_notes([(0, 1, 60, 80), (1, 1.5, 64, 80)])  # 16th steps: 4 + 2 steps
    rest3 = ["REST"] * 3
    assert tok.names(tok.encode(s)) == [
        "BOS", "PITCH_60", *rest3, "HOLD", *rest3, "HOLD", *rest3, "HOLD", *rest3,
        "PITCH_64", *rest3, "HOLD", *rest3, "EOS"]


def _satb_score() -> Score:
    return Score([0, 0, 0.5, 0, 0.25], [1, 0.5, 1, 1, 1], [72, 67, 69, 64, 48], [80] * 5, [0, 1, 1, 2, 3],
                 tracks=[Track(52), Track(52), Track(52), Track(52)])


def test_grid_four_tracks_are_four_voices():
    tok = Tokenizer("grid")
    assert tok.names(tok.encode(_satb_score(), bos=False, eos=False)) == [
        "PITCH_72", "PITCH_67", "PITCH_64", "REST",
        "HOLD", "HOLD", "HOLD", "PITCH_48",
        "HOLD", "PITCH_69", "HOLD", "HOLD",
        "HOLD", "HOLD", "HOLD", "HOLD"]


def test_grid_without_hold_repeats_pitches():
    tok = Tokenizer("grid", hold=False)
    assert tok.names(tok.encode(_satb_score(), bos=False, eos=False)) == [
        "PITCH_72", "PITCH_67", "PITCH_64", "REST",
        "PITCH_72", "PITCH_67", "PITCH_64", "PITCH_48",
        "PITCH_72", "PITCH_69", "PITCH_64", "PITCH_48",
        "PITCH_72", "PITCH_69", "PITCH_64", "PITCH_48"]


def test_grid_encode_numpy_with_nan():
    tok = Tokenizer("grid")
    a = np.array([[67, 64, 60, 48], [67, 64, NAN, 48], [69, NAN, NAN, 47], [69, -1, 55, 47]])
    assert tok.names(tok.encode(a)) == [
        "BOS", "PITCH_67", "PITCH_64", "PITCH_60", "PITCH_48",
        "HOLD", "HOLD", "REST", "HOLD",
        "PITCH_69", "REST", "REST", "PITCH_47",
        "HOLD", "REST", "PITCH_55", "HOLD", "EOS"]


def test_grid_encode_numpy_pads_and_truncates_voices():
    tok = Tokenizer("grid")
    two = np.array([[60.0, NAN], [60.0, 52.0]])
    assert tok.names(tok.encode(two, bos=False, eos=False)) == [
        "PITCH_60", "REST", "REST", "REST", "HOLD", "PITCH_52", "REST", "REST"]
    five = np.array([[72, 67, 64, 48, 36]])
    assert tok.names(tok.encode(five, bos=False, eos=False)) == ["PITCH_72", "PITCH_67", "PITCH_64", "PITCH_48"]


def test_grid_encode_empty_numpy_array():
    assert Tokenizer("grid").encode(np.zeros((0, 4))) == [1, 2]


def test_grid_encode_numpy_without_hold():
    tok = Tokenizer("grid", hold=False)
    a = np.array([[60, NAN, NAN, NAN], [60, NAN, NAN, NAN]])
    assert tok.names(tok.encode(a, bos=False, eos=False)) == ["PITCH_60", "REST", "REST", "REST"] * 2


def test_encode_accepts_path_prettymidi_and_score(tmp_path):
    pm = build_midi([Part(notes=[(0, 1, 60, 80), (1, 2.5, 64, 90)], program=0), Part(notes=[(0, 4, 36, 70)],
                                                                                   program=33)])
    path = tmp_path / "x.mid"
    pm.write(str(path))
    for enc in TABLES:
        tok = _tok(enc)
        ids = tok.encode(read(pm))
        assert tok.encode(pm) == ids == tok.encode(path) == tok.encode(str(path)) == tok.encode(path.read_bytes())
    with pytest.raises(MidiReadError):
        Tokenizer("remi").encode(tmp_path / "missing.mid")


# ---- round trips of MIDI built in code ---------------------------------------------------------

def _pm_notes(pm: pretty_midi.PrettyMIDI, drums: bool | None = None):
    return sorted((n.start, n.end, n.pitch, n.velocity, i.program, i.is_drum) for i in pm.instruments
                  for n in i.notes if drums is None or i.is_drum == drums)


def _performance_piece() -> pretty_midi.PrettyMIDI:
    rng = np.random.default_rng(7)
    low, high = [], []
    for i in range(60):  # a pitch returns every 24 notes, long after it ended: no same-pitch overlap
        t = i * 0.37 + rng.uniform(0, 0.05)
        low.append((t, t + rng.uniform(0.05, 1.2), 48 + i % 24, int(rng.integers(1, 128))))
        t = i * 0.41 + rng.uniform(0, 0.05)
        high.append((t, t + rng.uniform(0.05, 0.6), 72 + i % 24, int(rng.integers(1, 128))))
    drums = [(i * 0.5, i * 0.5 + 0.1, 36 + i % 10, 100) for i in range(40)]
    return build_midi([Part(low, program=0), Part(high, program=40), Part(drums, is_drum=True)],
                      tempos=[(0, 96.0), (10, 150.0), (17, 70.0)], time_signatures=[(0, 3, 4)])


def test_performance_round_trip_keeps_pitch_and_onset_within_10ms():
    tok = Tokenizer("performance")
    pm = _performance_piece()
    out = tok.decode(tok.encode(pm))
    ref = _pm_notes(pm, drums=False)
    est = _pm_notes(out)
    assert len(est) == len(ref) == 120
    assert [(i.program, i.is_drum) for i in out.instruments] == [(0, False)]  # one piano stream
    # a pitch recurs long after it ended, so per pitch the notes pair up in time order
    for pitch in {n[2] for n in ref}:
        r = [n for n in ref if n[2] == pitch]
        e = [n for n in est if n[2] == pitch]
        assert len(r) == len(e), pitch
        for (s0, _, _, v0, *_), (s1, _, _, v1, *_) in zip(r, e, strict=True):
            assert abs(s0 - s1) <= 0.010, (pitch, s0, s1)
            assert abs(v0 - v1) <= 127 / 32 + 1  # velocity kept to its bin
    m = onset_f1(read(pm).select(~read(pm).is_drum), read(out), tolerance=0.010)
    assert m["f1"] == 1.0


def test_performance_round_trip_keeps_durations_within_10ms():
    tok = Tokenizer("performance")
    pm = _performance_piece()
    ref = sorted((n[2], n[0], n[1]) for n in _pm_notes(pm, drums=False))
    est = sorted((n[2], n[0], n[1]) for n in _pm_notes(tok.decode(tok.encode(pm))))
    assert len(ref) == len(est)
    for (p0, s0, e0), (p1, s1, e1) in zip(ref, est, strict=True):
        assert p0 == p1 and abs(s0 - s1) <= 0.010 and abs(e0 - e1) <= 0.010


def test_performance_sustain_pedal_extends_durations():
    tok = Tokenizer("performance")
    piano = Part(notes=[(0, 0.5, 60, 80), (1, 1.5, 64, 80), (1.5, 2.5, 65, 80), (4, 4.5, 67, 80)],
                 pedals=[(0.25, 2)])
    score = read(build_midi([piano]))  # 120 qpm: a quarter is 0.5 s
    assert score.pedals.tolist() == [[0, 0.25, 2]]
    got = {n.pitch: (round(n.start, 3), round(n.end, 3)) for n in tok.decode(tok.encode(score)).instruments[0].notes}
    # 60 and 64 end while the pedal is down: they sound until it lifts (quarter 2 = 1 s);
    # 65 outlasts the pedal and 67 comes after it: both unchanged
    assert got == {60: (0.0, 1.0), 64: (0.5, 1.0), 65: (0.75, 1.25), 67: (2.0, 2.25)}
    no_pedal = read(build_midi([Part(notes=piano.notes)]))
    got = {n.pitch: round(n.end, 3) for n in tok.decode(tok.encode(no_pedal)).instruments[0].notes}
    assert got == {60: 0.25, 64: 0.75, 65: 1.25, 67: 2.25}


def test_performance_pedal_of_another_track_does_not_extend():
    tok = Tokenizer("performance")
    score = read(build_midi([Part(notes=[(0, 0.5, 60, 80)]), Part(notes=[(0, 0.5, 72, 80)], program=1,
                                                                  pedals=[(0.25, 2)])]))
    got = {n.pitch: round(n.end, 3) for n in tok.decode(tok.encode(score)).instruments[0].notes}
    assert got == {60: 0.25, 72: 1.0}


def test_remi_round_trip_exact_on_grid_keeps_programs_and_drums():
    tok = Tokenizer("remi")
    grid16 = [(k / 4, 60 + k % 12) for k in range(0, 32)]  # 16ths
    trip8 = [(k / 3, 40 + k % 7) for k in range(0, 24)]  # 8th triplets
    trip16 = [(k / 6, 80 + k % 5) for k in range(0, 30)]  # 16th triplets
    parts = [Part([(t, t + 0.25, p, 90) for t, p in grid16], program=0, name="Piano"),
             Part([(t, t + 1 / 3, p, 70) for t, p in trip8], program=33, name="Bass"),
             Part([(t, t + 1 / 6, p, 50) for t, p in trip16], program=73, name="Flute"),
             Part([(k / 2, k / 2 + 0.125, 36 + k % 3, 110) for k in range(16)], is_drum=True, name="Drums")]
    pm = build_midi(parts, tempos=[(0, 100.0), (4, 130.0)], time_signatures=[(0, 4, 4), (4, 3, 4)])
    score = read(pm)
    out = tok.decode_score(tok.encode(score))
    assert sorted((t.program, t.is_drum) for t in out.tracks) == [(0, False), (0, True), (33, False), (73, False)]

    def rows(s: Score):
        return sorted((round(a * 12), round((b - a) * 12), p, s.tracks[k].program, s.tracks[k].is_drum)
                      for a, b, p, k in zip(s.start, s.end, s.pitch, s.track, strict=True))

    assert rows(out) == rows(score)  # onsets and (table) durations exact, in 1/12 quarters
    np.testing.assert_array_equal(out.time_signatures, [[0, 4, 4], [4, 3, 4]])
    np.testing.assert_allclose(out.tempos[:, 0], [0, 4])
    assert np.all(np.abs(np.log(out.tempos[:, 1] / [100, 130])) < np.log(300 / 30) / 31 / 2 + 1e-9)  # nearest bin
    decoded_pm = tok.decode(tok.encode(score))
    assert sorted((i.program, i.is_drum) for i in decoded_pm.instruments) == [(0, False), (0, True), (33, False),
                                                                              (73, False)]
    assert len(_pm_notes(decoded_pm)) == len(score)


def test_remi_tracks_with_the_same_program_merge():
    tok = Tokenizer("remi")
    s = Score([0, 1, 0], [1, 2, 1], [60, 62, 48], [80] * 3, [0, 1, 2], tracks=[Track(0), Track(0), Track(24)])
    out = tok.decode_score(tok.encode(s))
    assert out.tracks == [Track(0), Track(24)]
    assert sorted(zip(out.track.tolist(), out.pitch.tolist(), strict=True)) == [(0, 60), (0, 62), (1, 48)]


def _chorale() -> pretty_midi.PrettyMIDI:
    """Four voices, four tracks, 16th grid: quarters, eighths, a dotted rhythm, rests, a repeated pitch."""
    s = [(0, 1, 72), (1, 2, 72), (2, 2.5, 74), (2.5, 3, 76), (3, 4.75, 77), (4.75, 5, 76), (5, 8, 74)]
    a = [(0, 1, 67), (1, 2, 69), (2, 4, 69), (4, 5, 67), (6, 8, 65)]  # rest 5..6
    t = [(0, 2, 64), (2, 2.25, 62), (2.25, 3, 60), (3, 5, 60), (5, 7, 59), (7, 8, 59)]
    b = [(0, 1, 48), (1, 1.5, 45), (1.5, 2, 47), (2, 4, 48), (4.5, 6, 43), (6, 8, 43)]  # rest 4..4.5
    parts = [Part([(x, y, p, 80) for x, y, p in v], program=52, name=n) for v, n in zip((s, a, t, b), "SATB",
                                                                                      strict=True)]
    return build_midi(parts[::-1], tempos=[(0, 80.0)])  # tracks written bass first: voices follow pitch


def test_grid_round_trip_chorale_keeps_voices_and_onsets():
    tok = Tokenizer("grid")
    pm = _chorale()
    score = read(pm)
    out = tok.decode_score(tok.encode(score))
    assert [t.name for t in out.tracks] == ["Soprano", "Alto", "Tenor", "Bass"]
    by_name = {i.name: sorted((round(n.start * 80 / 60 * 4), n.pitch) for n in i.notes) for i in pm.instruments}
    for v, name in enumerate("SATB"):
        m = out.track == v
        got = sorted(zip(np.round(out.start[m] * 4).astype(int).tolist(), out.pitch[m].tolist(), strict=True))
        assert got == by_name[name], name


def test_grid_round_trip_chorale_keeps_every_note():
    tok = Tokenizer("grid")
    score = read(_chorale())
    out = tok.decode_score(tok.encode(score))
    ref = sorted((a, b, p) for a, b, p in zip(score.start, score.end, score.pitch, strict=True))
    got = sorted((a, b, p) for a, b, p in zip(out.start, out.end, out.pitch, strict=True))
    assert got == ref


def test_grid_round_trip_keeps_final_note_ends():
    tok = Tokenizer("grid")
    out = tok.decode_score(tok.encode(Score.from_notes([(0, 1, 60, 80), (1, 1.5, 64, 80)])))
    assert out.end.tolist() == [1.0, 1.5]


def test_remi_time_signature_change_off_the_bar_line_keeps_onsets():
    tok = Tokenizer("remi")
    s = Score.from_notes([(0, 1, 60, 80), (2.5, 3, 62, 80), (4, 5, 64, 80), (6, 7, 65, 80)],
                         time_signatures=[[0, 4, 4], [2.5, 3, 4]])
    out = tok.decode_score(tok.encode(s))
    assert sorted(out.start.tolist()) == [0, 2.5, 4, 6]


# ---- overlapping notes and the guarantees of decode ---------------------------------------------

OVERLAPS = Score([0, 1, 1, 3, 0.5, 0.5], [4, 2, 1.5, 5, 3, 0.75], [60, 60, 60, 60, 64, 64], [80, 90, 70, 80, 60, 60],
                 [0, 0, 0, 0, 1, 1], tracks=[Track(0), Track(5)])


@pytest.mark.parametrize("encoding", TABLES)
def test_overlapping_same_pitch_notes_decode(encoding):
    tok = _tok(encoding)
    ids = tok.encode(OVERLAPS)
    notes = _pm_notes(tok.decode(ids))
    assert notes and all(e > s for s, e, *_ in notes)
    out = tok.decode_score(ids)  # quarters: every distinct (onset, pitch) comes back (grid: one per voice)
    got = set(zip(out.start.tolist(), out.pitch.tolist(), strict=True))
    distinct = set(zip(OVERLAPS.start.tolist(), OVERLAPS.pitch.tolist(), strict=True))
    assert got <= distinct
    if encoding != "grid":
        assert got == distinct


def test_performance_overlaps_are_cut_where_the_next_note_starts():
    tok = Tokenizer("performance")
    out = tok.decode_score(tok.encode(OVERLAPS))
    rows = sorted(zip(out.pitch.tolist(), out.start.tolist(), out.end.tolist(), strict=True))
    # pitch 60: 0-4, 1-2, 1-1.5 (duplicate onset: the longer kept), 3-5 -> 0-1, 1-3, 3-5: each note
    # ends where the next starts, and the key keeps sounding while the 0-4 note does (issue 11)
    assert rows == [(60, 0.0, 1.0), (60, 1.0, 3.0), (60, 3.0, 5.0), (64, 0.5, 3.0)]


def test_performance_pretty_midi_with_overlapping_notes(tmp_path):
    pm = build_midi([Part(notes=[(0, 2, 60, 80), (0.5, 1, 60, 80), (1, 3, 60, 80)]),
                     Part(notes=[(0.5, 1.5, 60, 80)], program=1)])
    for enc in TABLES:
        tok = _tok(enc)
        notes = _pm_notes(tok.decode(tok.encode(pm)))
        assert notes and all(e > s for s, e, *_ in notes)


def _decoded_pm_notes(tok, ids):
    pm = tok.decode(ids)
    return [(n.start, n.end, n.pitch) for i in pm.instruments for n in i.notes]


def test_performance_decode_never_zero_length_nor_longer_than_cap():
    for max_s in (10.0, 2.5):
        tok = Tokenizer("performance", max_note_seconds=max_s)
        on, off = tok.vocab.id("NOTE_ON", 60), tok.vocab.id("NOTE_OFF", 60)
        second = tok.vocab.id("TIME_SHIFT", 99)
        cases = {
            "on-off at once": [on, off],
            "held 20 s": [on] + [second] * 20 + [off],
            "never closed": [on, tok.vocab.id("NOTE_ON", 62)] + [second] * 30,
            "never closed, no time": [on],
            "re-struck at once": [on, on, off],
        }
        for name, ids in cases.items():
            notes = _decoded_pm_notes(tok, ids)
            assert notes, name
            for s, e, _ in notes:
                assert 0.005 <= e - s <= max_s + 1e-6, (name, s, e)
        assert max(e - s for s, e, _ in _decoded_pm_notes(tok, cases["held 20 s"])) == pytest.approx(max_s)


@pytest.mark.parametrize("hold", [True, False])
def test_grid_decode_never_zero_length_nor_longer_than_cap(hold):
    tok = Tokenizer("grid", hold=hold, max_hold_steps=16)
    p60, rest, hold_id = tok.vocab.id("PITCH", 60), tok.vocab.id("REST"), tok.vocab.id("HOLD")
    cont = hold_id if hold else p60
    step_s = 60 / 100 / 4  # a 16th at the decoding tempo (100 qpm)
    ids = [p60, rest, rest, rest] + [cont, rest, rest, rest] * 40
    notes = _decoded_pm_notes(tok, ids)
    assert notes and all(0 < e - s <= 16 * step_s + 1e-6 for s, e, _ in notes)
    assert max(e - s for s, e, _ in notes) == pytest.approx(16 * step_s)
    for ids in ([p60], [hold_id, hold_id, p60, hold_id], [rest] * 8):
        assert all(0 < e - s <= 16 * step_s + 1e-6 for s, e, _ in _decoded_pm_notes(tok, ids))


def test_decode_skips_specials_and_out_of_range_ids():
    tok = Tokenizer("performance", styles=("a",))
    on, off, sh = tok.vocab.id("NOTE_ON", 60), tok.vocab.id("NOTE_OFF", 60), tok.vocab.id("TIME_SHIFT", 49)
    clean = tok.decode_score([on, sh, off])
    noisy = tok.decode_score([0, 1, 3, -7, on, 10**9, sh, 2, tok.vocab_size, off, 0])
    for attr in ("start", "end", "pitch", "velocity"):
        np.testing.assert_array_equal(getattr(clean, attr), getattr(noisy, attr))
    assert len(Tokenizer("remi").decode_score([])) == 0
    assert Tokenizer("grid").decode([1, 2]).instruments == []


def test_performance_decode_velocity_and_program():
    tok = Tokenizer("performance")
    vel = perf_mod.bin_velocity
    ids = [tok.vocab.id("VELOCITY", 31), tok.vocab.id("NOTE_ON", 60), tok.vocab.id("TIME_SHIFT", 9)]
    pm = tok.decode(ids)
    assert [(i.program, i.is_drum) for i in pm.instruments] == [(0, False)]
    n = pm.instruments[0].notes[0]
    assert (n.pitch, n.velocity, round(n.end - n.start, 3)) == (60, vel(31, 32), 0.1)
    assert 1 <= vel(0, 32) < vel(31, 32) <= 127


# ---- the JSB Chorales files ---------------------------------------------------------------------

def test_load_jsb_split(data_dir):  # the .npz form is refused: see test_security.py
    d = grid_mod.load_jsb(data_dir / "jsb" / "Jsb16thSeparated.json")
    assert {k: len(v) for k, v in d.items()} == {"train": 229, "valid": 76, "test": 77}
    for piece in d["train"][:20] + d["test"][:5]:
        assert piece.ndim == 2 and piece.shape[1] == 4 and len(piece) > 0
        ok = piece[~np.isnan(piece)]
        assert ((ok >= 0) & (ok <= 127)).all()


def test_jsb_piece_encodes_one_token_per_voice_and_step(data_dir):
    tok = Tokenizer("grid", hold=False)
    piece = grid_mod.load_jsb(data_dir / "jsb" / "Jsb16thSeparated.json")["valid"][0]
    ids = tok.encode(piece)
    assert len(ids) == 4 * len(piece) + 2
    body = np.array(ids[1:-1]).reshape(-1, 4)
    expect = np.where(np.isnan(piece), tok.vocab.id("REST"), tok.vocab.id("PITCH", np.nan_to_num(piece, nan=0)))
    np.testing.assert_array_equal(body, expect.astype(np.int64))


def test_remi_two_meter_changes_inside_one_bar_keep_onsets_and_the_later_meter():
    tok = Tokenizer("remi")
    s = Score.from_notes([(0, 1, 60, 80), (2.5, 3, 62, 80), (4, 5, 64, 80), (7, 8, 65, 80)],
                         time_signatures=[[0, 4, 4], [2.5, 3, 4], [3, 6, 8]])
    out = tok.decode_score(tok.encode(s))
    assert sorted(out.start.tolist()) == [0, 2.5, 4, 7]
    assert out.time_signatures[:, 1:].tolist() == [[4, 4], [6, 8]] and out.time_signatures[1, 0] == 4


# ---- remi version 4: track roles -----------------------------------------------------------------

def _pop_like() -> Score:
    """POP909's layout: MELODY, BRIDGE and PIANO, all on program 0, sounding together."""
    rows = [(0, 1, 72, 0), (1, 2, 74, 0), (0.5, 1.5, 67, 1), (0, 4, 48, 2), (0, 4, 55, 2), (2, 3, 76, 0)]
    a = np.asarray(rows, dtype=np.float64)
    return Score(a[:, 0], a[:, 1], a[:, 2], np.full(len(a), 80), a[:, 3],
                 tracks=[Track(0, False, "MELODY"), Track(0, False, "BRIDGE"), Track(0, False, "PIANO")])


def test_roles_keep_tracks_that_share_a_program_apart():
    tok = Tokenizer("remi")
    ids = tok.encode(_pop_like())
    names = tok.names(ids)
    # one ROLE where the role changes, in the order of the notes (onset, role, pitch)
    assert [n for n in names if n.startswith("ROLE")] == ["ROLE_melody", "ROLE_accompaniment", "ROLE_counter-melody",
                                                           "ROLE_melody"]
    out = tok.decode_score(ids)
    assert [t.name for t in out.tracks] == ["Melody", "Counter-melody", "Accompaniment"]
    by_name = {t.name: sorted(out.pitch[out.track == k].tolist()) for k, t in enumerate(out.tracks)}
    assert by_name == {"Melody": [72, 74, 76], "Counter-melody": [67], "Accompaniment": [48, 55]}
    assert tok.encode(out) == ids  # the decoded tracks encode to the same tokens
    v3 = Tokenizer("remi", version=3)
    assert len(v3.decode_score(v3.encode(_pop_like())).tracks) == 1  # before: one merged stream


def test_roles_are_not_written_where_programs_tell_the_tracks_apart():
    s = _pop_like()
    s.tracks = [Track(73, False, "MELODY"), Track(48, False, "BRIDGE"), Track(0, False, "PIANO")]
    tok = Tokenizer("remi")
    names = tok.names(tok.encode(s))
    assert not any(n.startswith("ROLE") for n in names)
    assert names.count("VELOCITY_4") == 1  # velocity 80 in 8 levels, named once


def test_melody_first_holds_the_counter_melody_until_the_melody_has_entered():
    import torch

    from musiclstm.encodings.grammar import Controls
    from musiclstm.encodings.registry import grammar_for

    tok = Tokenizer("remi")
    names = tok.names(range(tok.vocab_size))

    def roles(ids, **controls):
        a = grammar_for(tok, Controls(**controls))(torch.tensor([ids]), torch.zeros(1, tok.vocab_size))[0]
        return {names[i] for i in a.nonzero().squeeze(1).tolist() if names[i].startswith("ROLE")}

    ids = tok.encode(_pop_like(), eos=False)
    opening = ids[:ids.index(tok.vocab.id("ROLE", 1))]  # up to the first note's ROLE (BOS BAR ... POSITION)
    assert "ROLE_counter-melody" in roles(opening)  # the grammar alone allows either
    assert roles(opening, melody_first=True) == roles(opening) - {"ROLE_counter-melody"}
    first_note = opening + [tok.vocab.id("ROLE", 1), tok.vocab.id("PROGRAM", 0), tok.vocab.id("VELOCITY", 4),
                            tok.vocab.id("PITCH", 72), tok.vocab.id("DURATION", 11), tok.vocab.id("POSITION", 6)]
    assert "ROLE_counter-melody" in roles(first_note, melody_first=True)  # once the melody has entered
