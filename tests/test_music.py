"""Music statistics (musiclstm.evaluation.music) on pieces built in code, each with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from musiclstm.evaluation import music
from musiclstm.io.score import KK_MAJOR, KK_MINOR, Score, Track

C_MAJOR = [60, 62, 64, 65, 67, 69, 71, 72]


def line(pitches, dur: float = 1.0, start: float = 0.0, **maps) -> Score:
    """A one-track melody of equal note values."""
    return Score.from_notes([(start + i * dur, start + (i + 1) * dur, p, 80) for i, p in enumerate(pitches)], **maps)


def chords(rows, dur: float = 1.0, by_track: bool = False) -> Score:
    """Block chords, one per `dur`; voices as tracks (top first) or all in one track."""
    notes = [(i * dur, (i + 1) * dur, p, 80, v if by_track else 0) for i, ch in enumerate(rows) for v, p in
             enumerate(ch)]
    a = np.array(notes, float)
    n = len(rows[0]) if by_track else 1
    return Score(a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4], tracks=[Track(0)] * n)


PHRASE = [[60, 62, 64, 65], [67, 65, 64, 62], [64, 64, 67, 72], [71, 67, 62, 60]]  # four different bars


def test_a_c_major_scale_is_wholly_in_scale_in_c_major_and_moves_by_step():
    s = line(C_MAJOR)
    t = music.tonality(s)
    assert t["in_scale"] == 1.0
    assert music.key(s)[:2] == (0, False)
    m = music.melody(s)
    assert m["steps"] == 1.0 and m["skips"] == 0 and m["leaps"] == 0 and m["repeated"] == 0
    assert music.tonality(line([60, 61, 62, 63]))["in_scale"] == 0.75  # one chromatic note in four


def test_key_profiles_find_their_own_key():
    assert music.key_fit(KK_MAJOR)[:2] == (0, False) and music.key_fit(KK_MAJOR)[2] == pytest.approx(1)
    assert music.key_fit(np.roll(KK_MINOR, 9))[:2] == (9, True)  # A minor
    assert math.isnan(music.key_fit(np.ones(12))[2])


def test_pitch_class_entropy_in_bits():
    assert music.tonality(line(range(60, 72)))["pitch_class_entropy"] == pytest.approx(math.log2(12))
    assert music.tonality(line([60, 72, 48]))["pitch_class_entropy"] == 0


def test_a_key_change_halfway_is_one_window_change_in_one():
    c = [p for b in PHRASE for p in b]
    s = line(c + [p + 6 for p in c])  # four bars in C, four in F#
    t = music.tonality(s)
    assert t["window_key_changes"] == 1.0
    assert music.tonality(line(c + c))["window_key_changes"] == 0.0


def test_melody_intervals_and_longest_repeat():
    m = music.melody(line([60, 60, 60, 62, 65, 72]))  # intervals 0 0 2 3 7
    assert (m["repeated"], m["steps"], m["skips"], m["leaps"]) == (0.4, 0.2, 0.2, 0.2)
    assert m["longest_repeat"] == 3


def test_top_line_skips_inner_notes_under_a_held_top_note():
    s = Score(start=[0, 0, 1, 2], end=[2, 1, 2, 3], pitch=[72, 64, 65, 74], velocity=[80] * 4, track=[0] * 4,
              tracks=[Track(0)])
    assert music.top_line(s).tolist() == [72, 74]


def test_a_phrase_played_twice_has_half_its_bars_repeating():
    tune = [p for b in PHRASE + PHRASE for p in b]
    f = music.form(line(tune))
    assert f["repeated_bars"] == 0.5 and f["repeated_phrase_bars"] == 0.5
    assert music.repeated_bars(line(tune)).tolist() == [False] * 4 + [True] * 4
    assert music.first_copies(line(tune)).tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    up = [p for b in PHRASE for p in b] + [p + 2 for b in PHRASE for p in b]  # the repeat a tone higher
    assert music.form(line(up))["repeated_bars"] == 0.5 and music.form(line(up))["repeated_phrase_bars"] == 0.5
    assert not music.repeated_bars(line(up)).any()  # exact repeats only
    assert music.form(line([p for b in PHRASE for p in b]))["repeated_bars"] == 0


def test_distinct_interval_4grams():
    assert music.form(line(C_MAJOR))["distinct_interval_4grams"] == 1.0
    # 60 62 60 62 ... : intervals +2 -2 +2 -2 ...: 2 distinct 4-grams of 7
    assert music.form(line([60, 62] * 5))["distinct_interval_4grams"] == pytest.approx(2 / 6)


def test_rhythm_empty_beats_silence_groove_and_density():
    notes = [(i, i + 1, 60, 80) for i in range(4)] + [(i, i + 1, 62, 80) for i in range(6, 8)]
    r = music.rhythm(Score.from_notes(notes))  # beats 4 and 5 are silent
    assert r["empty_beat_rate"] == 0.25 and r["longest_silence"] == 2
    assert music.rhythm(line([60] * 8))["groove_consistency"] == 1.0
    eighths = Score.from_notes([(i * 0.5, i * 0.5 + 0.5, 60, 80) for i in range(8)] + [(4, 8, 60, 80)])
    g = music.rhythm(eighths)  # bar 1: 8 onsets, bar 2: 1; they differ at 7 of 48 grid positions
    assert g["groove_consistency"] == pytest.approx(1 - 7 / 48)
    d = music.rhythm(Score.from_notes([(i * 0.5, i * 0.5 + 0.5, 60, 80) for i in range(4)] +
                                      [(3, 6, 60, 80)]))  # 6 quarters: 4 onsets in the first two, none in the last
    assert d["density_first_third"] == 2.0 and d["density_last_third"] == 0.0


def test_parallel_fifths_and_octaves_between_adjacent_voices():
    rows = [(79, 72, 67, 60), (81, 74, 69, 62), (79, 72, 67, 60), (76, 72, 67, 48)]
    # S-A and T-B move in fifths twice each (up, then down); the last chord moves S down, B down, no parallels
    for by_track in (False, True):
        v = music.voices(chords(rows, by_track=by_track), 4)
        assert v["parallel_fifths"] == pytest.approx(100 * 4 / 4)
        assert v["parallel_octaves"] == 0 and v["out_of_range"] == 0 and v["overfull_onsets"] == 0
    octs = music.voices(chords([(72, 60), (74, 62), (71, 55)], by_track=True))
    assert octs["parallel_octaves"] == pytest.approx(100 / 3) and octs["parallel_fifths"] == 0
    assert octs["voice_crossings"] == 0
    assert math.isnan(music.voices(chords(rows), 4)["voice_crossings"])  # ranked voices cannot cross


def test_voice_crossings_range_and_overfull_onsets():
    crossed = chords([(72, 60), (64, 67), (72, 60)], by_track=True)  # the top track dips below the bottom once
    assert music.voices(crossed)["voice_crossings"] == pytest.approx(100 / 3)
    high = music.voices(chords([(84, 72, 67, 60), (79, 72, 67, 60)]), 4)  # a soprano C6: 1 of 8 notes out
    assert high["out_of_range"] == pytest.approx(1 / 8)
    five = music.voices(chords([(79, 72, 67, 64, 60), (79, 72, 67, 60, 48)]), 4)
    assert five["overfull_onsets"] == 1.0
    assert music.voice_count(chords([(79, 72, 67, 60)] * 5)) == 4
    assert music.voice_count(line(C_MAJOR)) == 1
    assert all(math.isnan(v) for v in music.voices(line(C_MAJOR), 1).values())


def test_last_bass_note_on_the_tonic():
    assert music.ending(line(C_MAJOR))["last_bass_on_tonic"] == 1.0
    assert music.ending(line(C_MAJOR[:-1]))["last_bass_on_tonic"] == 0.0  # ends on the leading note


def test_trim_excerpt_and_shuffle():
    s = line(C_MAJOR, start=8.5)  # two empty 4/4 bars first
    t = music.trim(s)
    assert t.start.min() == 0.5 and len(t) == 8  # whole bars only: the offbeat stays
    e = music.excerpt(s, 2.0)
    assert len(e) == 2 and e.end.max() <= 2.0
    three = line(C_MAJOR, start=6, time_signatures=[[0, 3, 4]])
    assert music.trim(three).start.min() == 0
    shuffled = music.shuffle_pitches(line(C_MAJOR), np.random.default_rng(0))
    assert sorted(shuffled.pitch.tolist()) == C_MAJOR and shuffled.start.tolist() == line(C_MAJOR).start.tolist()


def test_bar_lines_follow_time_signature_changes():
    s = line([60] * 10, time_signatures=[[0, 3, 4], [6, 2, 4]])
    assert music.bar_lines(s).tolist() == [0, 3, 6, 8]


def test_statistics_have_the_same_keys_for_every_piece():
    keys = set(music.statistics(line(C_MAJOR), 1))
    assert keys == set(music.statistics(Score.from_notes(np.zeros((0, 4))), 1))
    assert keys == set(music.statistics(chords([(79, 72, 67, 60)] * 4), 4))


def test_voices_read_by_rank_when_asked_even_with_tracks():
    rows = [(79, 72, 67, 60), (81, 74, 69, 62)]
    ranked = music.voices(chords(rows, by_track=True), 4, by_track=False)
    assert ranked["parallel_fifths"] == pytest.approx(100 * 2 / 2) and math.isnan(ranked["voice_crossings"])


def test_crossed_voices_a_fourth_apart_are_not_parallel_fifths():
    # the upper part (higher on average) dips below the lower one: 60 under 65, then 62 under 67; the
    # upper voice is 5 semitones *below* the lower both times (-5 % 12 == 7 once read as a fifth)
    rows = [(84, 48), (60, 65), (62, 67), (84, 48)]
    v = music.voices(chords(rows, by_track=True))
    assert v["voice_crossings"] > 0
    assert v["parallel_fifths"] == 0
    # the same motion with the voices the right way up is a parallel fifth
    assert music.voices(chords([(84, 48), (67, 60), (69, 62), (84, 48)], by_track=True))["parallel_fifths"] > 0


def test_one_voice_leading_rule_for_the_sampler_and_the_statistics():
    from musiclstm.theory import parallels

    fifths, octaves, unisons = parallels(np.array([67, 60, 72, 60]), np.array([60, 65, 60, 60]),
                                         np.array([69, 62, 74, 62]), np.array([62, 67, 62, 62]))
    assert fifths.tolist() == [True, False, False, False]  # a fifth up; crossed a fourth apart is not one
    assert octaves.tolist() == [False, False, True, False] and unisons.tolist() == [False, False, False, True]
    assert parallels(67, 60, 67 + 12, 60 + 12)[0]  # compound fifths count too (here both move an octave)
    assert not parallels(67, 60, 67, 62)[0]  # oblique motion: only one voice moves


def test_top_line_of_performed_onsets_off_the_grid():
    """POP909's onsets are performed (20.527 quarters): the top line was 2 notes of a 1,408-note song before."""
    rows = [(0.013 + k, 0.9 + k, p, 80) for k, p in enumerate([60, 62, 64, 65, 67])]
    rows += [(0.004 + k, 1.0 + k, 48, 80) for k in range(5)]  # an accompaniment below, a hair earlier
    s = Score.from_notes(rows)
    assert music.top_line(s).tolist() == [60, 62, 64, 65, 67]


def test_arrangement_melody_over_accompaniment_by_track_name():
    a = np.asarray([(k, k + 1, p, 80, 0) for k, p in enumerate([72, 74, 76, 77])] +
                   [(0, 4, 48, 80, 1), (0, 4, 55, 80, 1)], dtype=np.float64)
    parts = [Track(0, False, "MELODY"), Track(0, False, "PIANO")]
    named = Score(a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4], tracks=parts)
    assert music.arrangement(named) == {"melody_over_accompaniment": 1.0, "melody_steps": 1.0}
    low = Score(a[:, 0], a[:, 1], a[:, 2], a[:, 3], 1 - a[:, 4], tracks=parts)
    assert music.arrangement(low)["melody_over_accompaniment"] == 0.0  # the "melody" sits under the piano
    merged = Score(a[:, 0], a[:, 1], a[:, 2], a[:, 3], np.zeros(len(a)), tracks=[Track(0)])
    out = music.arrangement(merged)
    assert out["melody_over_accompaniment"] == 0.0 and np.isnan(out["melody_steps"])
