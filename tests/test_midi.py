"""The reader (`musiclstm.read`) and the writers (`to_pretty_midi`, `write_midi`)."""

from __future__ import annotations

import time

import music21
import numpy as np
import pretty_midi
import pytest
from conftest import DATA_DIR, Part, build_midi, data_files, data_params

from musiclstm import MidiReadError, MusiclstmError, Score, Track, read, to_pretty_midi, write_midi
from musiclstm.io.midi import to_midi_bytes

# ---- a multi-feature piece built in code --------------------------------------------------------

PIANO = Part(notes=[(0, 1, 60, 90), (1, 2, 64, 70), (2.5, 3, 67, 50), (9, 10.5, 72, 100)], program=0,
             name="Piano", pedals=[(0.5, 2.75), (9, 12)])
BASS = Part(notes=[(0, 2, 36, 80), (4, 6, 43, 81)], program=33, name="Bass")
STRINGS = Part(notes=[(3, 7, 55, 64)], program=48, name="Strings")
DRUMS = Part(notes=[(0, 0.25, 36, 110), (1, 1.25, 38, 100), (1, 1.25, 42, 60)], program=0, is_drum=True,
             name="Drums")
TEMPOS = [(0, 100.0), (4, 150.0), (8, 72.0)]
METERS = [(0, 4, 4), (4, 3, 4), (7, 6, 8)]
KEYS = [(0, 2), (4, pretty_midi.key_name_to_key_number("E minor")), (8, pretty_midi.key_name_to_key_number("Bb major"))]


@pytest.fixture
def rich_pm():
    return build_midi([PIANO, BASS, STRINGS, DRUMS], tempos=TEMPOS, time_signatures=METERS, key_signatures=KEYS)


@pytest.fixture(params=["PrettyMIDI", "file", "bytes"])
def read_rich(request, rich_pm, midi_file):
    """The rich piece read three ways: as a PrettyMIDI object, from a file, from bytes."""
    if request.param == "PrettyMIDI":
        return read(rich_pm)
    path = midi_file(rich_pm, "rich.mid")
    return read(path) if request.param == "file" else read(path.read_bytes())


def notes_of(score: Score, k: int) -> list[tuple[float, float, int, int]]:
    m = score.track == k
    rows = zip(score.start[m].tolist(), score.end[m].tolist(), score.pitch[m].tolist(), score.velocity[m].tolist(),
               strict=True)
    return sorted((s, e, p, v) for s, e, p, v in rows)


def test_keeps_tracks_programs_drums_and_notes(read_rich):
    s = read_rich
    assert s.tracks == [Track(0, False, "Piano"), Track(33, False, "Bass"), Track(48, False, "Strings"),
                        Track(0, True, "Drums")]
    for k, part in enumerate([PIANO, BASS, STRINGS, DRUMS]):
        assert notes_of(s, k) == sorted((float(a), float(b), p, v) for a, b, p, v in part.notes)
    assert s.is_drum.tolist() == [s.tracks[k].is_drum for k in s.track]
    assert s.program.tolist() == [s.tracks[k].program for k in s.track]


def test_keeps_tempo_changes(read_rich):
    np.testing.assert_allclose(read_rich.tempos, TEMPOS, rtol=1e-5)


def test_keeps_time_signatures(read_rich):
    np.testing.assert_array_equal(read_rich.time_signatures, METERS)


def test_keeps_key_signatures(read_rich):
    # (quarter, tonic 0-11 with C=0, minor): D major, E minor, Bb major
    np.testing.assert_array_equal(read_rich.key_signatures, [[0, 2, 0], [4, 4, 1], [8, 10, 0]])


def test_keeps_sustain_pedal(read_rich):
    # (track, down, up) in quarters; the pedal belongs to the piano track (0)
    np.testing.assert_array_equal(read_rich.pedals, [[0, 0.5, 2.75], [0, 9, 12]])


@pytest.mark.parametrize("key_number", range(24))
def test_every_key_signature(key_number, make_midi):
    pm = make_midi([Part(notes=[(0, 1, 60, 80)])], key_signatures=[(0, key_number)])
    s = read(pm)
    assert s.key_signatures.tolist() == [[0.0, key_number % 12, key_number // 12]]


def test_seconds_follow_the_tempo_map(read_rich, rich_pm):
    # pretty_midi's own seconds for every note equal the Score's quarter times through its tempo map
    expected = sorted((round(n.start, 6), n.pitch) for i in rich_pm.instruments for n in i.notes)
    got = sorted(zip(np.round(read_rich.seconds(read_rich.start), 6).tolist(), read_rich.pitch.tolist(), strict=True))
    assert got == expected


def test_reading_a_prettymidi_equals_reading_its_file(rich_pm, midi_file):
    a, b = read(rich_pm), read(midi_file(rich_pm, "same.mid"))
    assert a.tracks == b.tracks
    for attr in ("start", "end", "pitch", "velocity", "track", "tempos", "time_signatures", "key_signatures",
                 "pedals"):
        np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr), err_msg=attr)
    assert a.source == "<PrettyMIDI>" and b.source.endswith("same.mid")


def test_resolution_does_not_matter(make_midi):
    parts = [Part(notes=[(0, 1 / 3, 60, 80), (1 / 3, 2 / 3, 62, 80), (0.75, 1.5, 64, 80)])]
    a = read(make_midi(parts, resolution=96))
    b = read(make_midi(parts, resolution=960))
    np.testing.assert_allclose(a.start, b.start, atol=1 / 96)
    np.testing.assert_array_equal(a.pitch, b.pitch)


def test_zero_velocity_and_empty_instruments_are_dropped(make_midi):
    pm = make_midi([Part(notes=[(0, 1, 60, 80)], program=5), Part(program=7)])
    s = read(pm)
    assert len(s) == 1 and s.tracks == [Track(5, False, "")]


def test_name_overrides_the_label(rich_pm):
    s = read(rich_pm, name="my-primer")
    assert s.source == "my-primer"


# ---- errors name the file and the reason --------------------------------------------------------

def _read_error(path) -> MidiReadError:
    with pytest.raises(MidiReadError) as info:
        read(path)
    e = info.value
    assert isinstance(e, MusiclstmError)
    assert e.source == str(path) and str(path) in str(e)
    assert e.reason and e.reason in str(e)
    return e


def test_error_missing_file(tmp_path):
    e = _read_error(tmp_path / "nope.mid")
    assert "no such file" in e.reason.lower()


def test_error_folder(tmp_path):
    folder = tmp_path / "a_folder.mid"
    folder.mkdir()
    e = _read_error(folder)
    assert "folder" in e.reason


def test_error_zero_bytes(tmp_path):
    p = tmp_path / "zero.mid"
    p.write_bytes(b"")
    assert "not a MIDI file" in _read_error(p).reason


def test_error_text_file(tmp_path):
    p = tmp_path / "notes.mid"
    p.write_text("MIDI file? no: these are my notes about a song\n" * 20)
    assert "not a MIDI file" in _read_error(p).reason


@pytest.mark.parametrize("keep", [4, 13, 16, 30, 0.5, -5, -1])
def test_error_truncated_file(tmp_path, rich_pm, keep):
    data = to_midi_bytes(read(rich_pm))
    n = int(len(data) * keep) if isinstance(keep, float) else (keep if keep > 0 else len(data) + keep)
    p = tmp_path / "truncated.mid"
    p.write_bytes(data[:n])
    _read_error(p)


def test_error_bytes_and_wrong_type():
    with pytest.raises(MidiReadError, match="<bytes>"):
        read(b"RIFF....not midi at all")
    with pytest.raises(MidiReadError, match="expected a path, bytes or PrettyMIDI"):
        read(12345)


# ---- music21's 10,080 ticks per quarter ---------------------------------------------------------

@pytest.fixture(scope="module")
def music21_long_file(tmp_path_factory):
    """1200 quarter notes written by music21 (10,080 ticks per quarter: last tick ~12.1 million)."""
    s = music21.stream.Stream()
    for i in range(1200):
        s.append(music21.note.Note(48 + i % 24, quarterLength=1))
    path = tmp_path_factory.mktemp("m21") / "long.mid"
    s.write("midi", fp=str(path))
    return path


def test_music21_long_file_pretty_midi_refuses(music21_long_file):
    import mido

    assert mido.MidiFile(str(music21_long_file)).ticks_per_beat == 10080
    with pytest.raises(ValueError, match="likely corrupt"):
        pretty_midi.PrettyMIDI(str(music21_long_file))


def test_music21_long_file_reads_every_note(music21_long_file):
    s = read(music21_long_file)
    assert len(s) == 1200
    order = np.argsort(s.start)
    np.testing.assert_array_equal(s.start[order], np.arange(1200.0))
    np.testing.assert_array_equal(s.end[order], np.arange(1.0, 1201.0))
    np.testing.assert_array_equal(s.pitch[order], 48 + np.arange(1200) % 24)


# ---- the edge files: read or raise MidiReadError, quickly ---------------------------------------

EDGE = data_files("edge")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", data_params(EDGE))
def test_edge_file_reads_or_raises_quickly(path):
    t = time.perf_counter()
    try:
        s = read(path)
    except MidiReadError as e:
        assert str(path) in str(e) and e.reason
    else:
        assert isinstance(s, Score)
        assert len(s) == 0 or (s.end > s.start).all()
        assert ((s.pitch >= 0) & (s.pitch <= 127)).all()
    elapsed = time.perf_counter() - t
    assert elapsed < 10, f"{path.name} took {elapsed:.1f} s"


def test_edge_folders_are_all_there(data_dir):
    assert len(data_files("edge/public")) == 21 and len(data_files("edge/synthetic")) == 25


def test_huge_delta_file_raises(data_dir):
    path = data_dir / "edge" / "synthetic" / "huge_delta_268M_ticks.mid"
    t = time.perf_counter()
    with pytest.raises(MidiReadError) as info:
        read(path)
    assert time.perf_counter() - t < 10
    assert str(path) in str(info.value) and "hours" in info.value.reason


@pytest.mark.parametrize("name, reason", [
    ("synthetic/zero_bytes.mid", "not a MIDI file"),
    ("synthetic/text_not_midi.mid", "not a MIDI file"),
    ("synthetic/smpte_division.mid", "ticks per quarter"),
    ("synthetic/zero_division.mid", "time division"),
    ("synthetic/pop909_001_truncated_50pct.mid", "chunk length"),
])
def test_edge_known_reasons(data_dir, name, reason):
    with pytest.raises(MidiReadError, match=reason):
        read(data_dir / "edge" / name)


@pytest.mark.parametrize("name, notes", [("synthetic/200k_notes_valid.mid", 200_000),
                                         ("synthetic/1000_tracks.mid", 1000)])
def test_edge_large_valid_files_read_whole(data_dir, name, notes):
    s = read(data_dir / "edge" / name)
    assert len(s) == notes


# ---- writing ----------------------------------------------------------------------------------

@pytest.fixture
def score_to_write() -> Score:
    return Score([0, 0, 1, 2.5, 4], [1, 0.5, 2, 3, 5], [60, 36, 40, 67, 72], [80, 100, 90, 70, 64], [0, 1, 2, 0, 0],
                 tracks=[Track(0, False, "Piano"), Track(0, True, "Kit"), Track(33, False, "Bass")],
                 tempos=[[0, 90.0], [4, 140.0]], time_signatures=[[0, 3, 4], [3, 2, 4]],
                 key_signatures=[[0, 9, 1], [3, 7, 0]])


def _pm_summary(pm: pretty_midi.PrettyMIDI):
    times, qpms = pm.get_tempo_changes()
    return {
        "tempos": [(round(float(t), 4), round(float(q), 2)) for t, q in zip(times, qpms, strict=True)],
        "meters": [(ts.numerator, ts.denominator, round(ts.time, 4)) for ts in pm.time_signature_changes],
        "keys": [(k.key_number, round(k.time, 4)) for k in pm.key_signature_changes],
        "instruments": [(i.program, i.is_drum, i.name) for i in pm.instruments],
        "notes": sorted((round(n.start, 4), round(n.end, 4), n.pitch, n.velocity, i.program, i.is_drum)
                        for i in pm.instruments for n in i.notes),
    }


def test_to_pretty_midi_keeps_tempo_meter_program_drums(score_to_write):
    pm = to_pretty_midi(score_to_write)
    got = _pm_summary(pm)
    # MIDI stores whole microseconds per quarter, hence the tolerances; 4 quarters at 90 qpm = 2.667 s
    assert got["tempos"] == [(0.0, 90.0), (round(4 * 60 / 90, 4), 140.0)]
    assert got["meters"] == [(3, 4, 0.0), (2, 4, 2.0)]  # 3 quarters at 90 qpm = 2 s
    assert got["keys"] == [(9 + 12, 0.0), (7, 2.0)]  # A minor, G major
    assert got["instruments"] == [(0, False, "Piano"), (0, True, "Kit"), (33, False, "Bass")]
    s = score_to_write
    expected = sorted((float(s.seconds(a)), float(s.seconds(b)), p, v, s.tracks[k].program, s.tracks[k].is_drum)
                      for a, b, p, v, k in zip(s.start, s.end, s.pitch, s.velocity, s.track, strict=True))
    assert [n[2:] for n in got["notes"]] == [n[2:] for n in expected]
    np.testing.assert_allclose([n[:2] for n in got["notes"]], [n[:2] for n in expected], atol=1e-4)


def test_write_midi_round_trip(score_to_write, tmp_path):
    path = write_midi(score_to_write, tmp_path / "sub" / "out.mid")
    assert path.is_file() and not list(path.parent.glob(".*.tmp"))
    back = read(path)
    np.testing.assert_allclose(back.tempos, score_to_write.tempos, rtol=1e-5)
    np.testing.assert_array_equal(back.time_signatures, score_to_write.time_signatures)
    np.testing.assert_array_equal(back.key_signatures, score_to_write.key_signatures)
    assert [(t.program, t.is_drum) for t in back.tracks] == [(0, False), (0, True), (33, False)]
    for k in range(3):
        assert notes_of(back, k) == notes_of(score_to_write, k)


def test_write_midi_of_a_pretty_midi(rich_pm, tmp_path):
    path = write_midi(rich_pm, tmp_path / "pm.mid")
    assert _pm_summary(pretty_midi.PrettyMIDI(str(path))) == _pm_summary(rich_pm)


def test_read_write_read_is_stable(rich_pm, tmp_path):
    a = read(rich_pm)
    b = read(write_midi(a, tmp_path / "again.mid"))
    assert [(t.program, t.is_drum, t.name) for t in b.tracks] == [(t.program, t.is_drum, t.name) for t in a.tracks]
    for attr in ("start", "end", "pitch", "velocity", "track", "time_signatures", "key_signatures"):
        np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr), err_msg=attr)
    np.testing.assert_allclose(a.tempos, b.tempos, rtol=1e-5)


def test_write_midi_refuses_to_overwrite(score_to_write, tmp_path):
    path = tmp_path / "taken.mid"
    path.write_bytes(b"precious")
    with pytest.raises(MusiclstmError, match="exists"):
        write_midi(score_to_write, path)
    assert path.read_bytes() == b"precious"
    write_midi(score_to_write, path, force=True)
    assert len(read(path)) == len(score_to_write)


def test_data_dir_location():
    # the data is reached beside the project, never copied into it
    assert DATA_DIR.parts[-2:] == ("shared", "data")


# ---- the tempo before the first tempo event -----------------------------------------------------

def _late_tempo_midi(tempo_tick: int = 960, qpm: float = 60.0) -> bytes:
    """Type 1, 480 ticks per quarter: the first set_tempo comes at `tempo_tick`; a note every quarter."""
    import io

    import mido

    mf = mido.MidiFile(type=1, ticks_per_beat=480)
    meta = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(qpm), time=tempo_tick)])
    notes = mido.MidiTrack()
    for _ in range(6):
        notes += [mido.Message("note_on", note=60, velocity=80, time=0),
                  mido.Message("note_off", note=60, velocity=0, time=480)]
    mf.tracks += [meta, notes]
    buf = io.BytesIO()
    mf.save(file=buf)
    return buf.getvalue()


def test_midi_plays_at_120_qpm_until_the_first_tempo_event():
    s = read(_late_tempo_midi())
    np.testing.assert_allclose(s.tempos, [[0, 120], [2, 60]], rtol=1e-6)
    # two quarters at 120 qpm (0.5 s each), then 1 s per quarter
    np.testing.assert_allclose(s.seconds(s.start), [0, 0.5, 1, 2, 3, 4], atol=1e-9)
    pm = pretty_midi.PrettyMIDI(__import__("io").BytesIO(_late_tempo_midi()))  # an independent reader agrees
    np.testing.assert_allclose(s.seconds(s.start), [n.start for n in pm.instruments[0].notes], atol=1e-6)


def test_late_first_tempo_survives_writing_and_reading():
    s = read(_late_tempo_midi())
    back = read(to_midi_bytes(s))
    np.testing.assert_allclose(back.seconds(back.start), s.seconds(s.start), atol=1e-6)


def test_a_score_given_a_late_first_tempo_starts_at_120():
    s = Score.from_notes([(0, 1, 60, 80), (4, 5, 62, 80)], qpm=90)
    s2 = Score(s.start, s.end, s.pitch, s.velocity, s.track, s.tracks, tempos=[[2.0, 60.0]])
    np.testing.assert_array_equal(s2.tempos, [[0, 120], [2, 60]])
    assert float(s2.seconds(4)) == pytest.approx(1 + 2)
