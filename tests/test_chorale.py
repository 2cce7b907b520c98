"""Harmonize and infill (musiclstm.generation.harmonize): the constraints hold on melodies built in code."""

from __future__ import annotations

import json

import numpy as np
import pretty_midi
import pytest
import torch
from click.testing import CliRunner

import musiclstm
from musiclstm import theory
from musiclstm.app.cli import cli
from musiclstm.errors import CheckpointError, ConfigError
from musiclstm.evaluation.music import chorale as chorale_stats
from musiclstm.generation import gibbs as G
from musiclstm.generation import harmonize as C
from musiclstm.io.score import Score, Track
from musiclstm.models import checkpoint
from musiclstm.models import harmonizer as HN
from musiclstm.training import harmonizer as chorale_train

# I IV V I in C major, one chord a beat: (S, A, T, B)
CHORDS = [(72, 67, 64, 48), (72, 69, 65, 53), (71, 67, 62, 55), (72, 67, 64, 48)]


def four_part(path, shift: int = 0, bars: int = 4, qpm: float = 100.0) -> None:
    pm = pretty_midi.PrettyMIDI(initial_tempo=qpm)
    beat = 60.0 / qpm
    for v, name in enumerate(HN.VOICES):
        inst = pretty_midi.Instrument(52, name=name)
        for k in range(4 * bars):
            p = CHORDS[k % 4][v] + shift
            inst.notes.append(pretty_midi.Note(80, p, k * beat, (k + 1) * beat))
        pm.instruments.append(inst)
    pm.write(str(path))


def melody_file(path, pitches, durations=None, qpm: float = 100.0) -> None:
    pm = pretty_midi.PrettyMIDI(initial_tempo=qpm)
    inst = pretty_midi.Instrument(0)
    t, beat = 0.0, 60.0 / qpm
    for p, d in zip(pitches, durations or [1] * len(pitches), strict=True):
        inst.notes.append(pretty_midi.Note(90, p, t, t + d * beat))
        t += d * beat
    pm.instruments.append(inst)
    pm.write(str(path))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A harmonizer trained for a few steps on chorales built in code (fast, not musical)."""
    root = tmp_path_factory.mktemp("chorales")
    for i, shift in enumerate((-2, 0, 2, 3, 5, -4, 1, 4)):
        four_part(root / f"c{i}.mid", shift, bars=4 + i % 3)
    out = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    best = chorale_train.train(root, out, progress=False, cache_dir=tmp_path_factory.mktemp("cache"), hidden=16,
                               embed=8, layers=1, batch_size=4, seq_len=32, max_steps=4, eval_every=2, warmup_steps=1)
    return best


def notes_of(pm, name):
    inst = next(i for i in pm.instruments if i.name == name)
    return sorted((round(n.start, 4), round(n.end, 4), n.pitch) for n in inst.notes)


def test_train_writes_a_harmonizer_with_ranges(tiny):
    h = C.load(tiny)
    assert isinstance(h.net, HN.Harmonizer)
    assert checkpoint.kind_of(h.meta) == "harmonizer"
    lo, hi = h.ranges[0]
    assert lo <= 72 - 4 and hi >= 72 + 5  # soprano range covers the transposed training pieces
    assert h.meta["data"]["train"] + h.meta["data"]["valid"] == 8


def test_a_harmonizer_run_ended_by_max_time_validates_its_last_step(tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    for i in range(4):
        four_part(root / f"c{i}.mid", i)
    best = chorale_train.train(root, tmp_path / "run", progress=False, cache_dir=tmp_path / "cache", hidden=8,
                               embed=4, layers=1, batch_size=2, seq_len=16, max_time=0.2, eval_every=10**6)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1  # no validation fell inside the run: the end is scored, and best.pt is that step
    assert C.load(best).meta["step"] == rows[0]["step"]


def test_harmonize_keeps_the_melody_exactly_and_the_ranges(tiny, tmp_path):
    melody = [72, 74, 76, 77, 76, 74, 72, 71, 72]
    durs = [1, 1, 1, 0.5, 0.5, 1, 1, 2, 0.25]
    melody_file(tmp_path / "m.mid", melody, durs)
    info = {}
    pm = musiclstm.harmonize(tmp_path / "m.mid", model=tiny, seed=3, iterations=8, info=info)
    assert [i.name for i in pm.instruments] == list(HN.VOICES)
    src = pretty_midi.PrettyMIDI(str(tmp_path / "m.mid"))
    want = sorted((round(n.start, 4), round(n.end, 4), n.pitch) for n in src.instruments[0].notes)
    assert notes_of(pm, "Soprano") == want  # pitches, onsets and ends exactly
    h = C.load(tiny)
    for inst, (lo, hi) in zip(pm.instruments, h.ranges, strict=True):
        assert all(lo <= n.pitch <= hi for n in inst.notes), inst.name
    lower = [n for i in pm.instruments[1:] for n in i.notes]
    assert lower, "alto, tenor and bass sing"
    assert info["key"] == "C major"
    allowed = theory.scale(0, False) | {p % 12 for p in melody}
    assert {n.pitch % 12 for n in lower} <= allowed
    assert max(n.end for n in lower) <= pm.get_end_time() + 1e-6


def test_harmonize_is_reproducible_by_seed(tiny, tmp_path):
    melody_file(tmp_path / "m.mid", [67, 69, 71, 72, 74, 72, 71, 69, 67])
    a = musiclstm.harmonize(tmp_path / "m.mid", model=tiny, seed=5, iterations=6)
    b = musiclstm.harmonize(tmp_path / "m.mid", model=tiny, seed=5, iterations=6)
    c = musiclstm.harmonize(tmp_path / "m.mid", model=tiny, seed=6, iterations=6)
    assert [notes_of(a, v) for v in HN.VOICES] == [notes_of(b, v) for v in HN.VOICES]
    assert [notes_of(a, v) for v in HN.VOICES[1:]] != [notes_of(c, v) for v in HN.VOICES[1:]]


def test_key_option_changes_the_allowed_notes(tiny, tmp_path):
    melody_file(tmp_path / "m.mid", [69, 71, 72, 74, 76, 74, 72, 71, 69])
    info = {}
    pm = musiclstm.harmonize(tmp_path / "m.mid", model=tiny, seed=1, iterations=6, key="A minor", info=info)
    assert info["key"] == "A minor" and info["key_given"]
    lower = {n.pitch % 12 for i in pm.instruments[1:] for n in i.notes}
    assert lower <= theory.scale(9, True)


def test_bad_melodies_are_refused_before_sampling(tiny, tmp_path):
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(0)
    inst.notes += [pretty_midi.Note(90, 72, 0, 1), pretty_midi.Note(90, 64, 0, 1), pretty_midi.Note(90, 74, 1, 2)]
    pm.instruments.append(inst)
    pm.write(str(tmp_path / "chords.mid"))
    with pytest.raises(ConfigError, match="--top-voice would harmonize its top voice"):
        musiclstm.harmonize(tmp_path / "chords.mid", model=tiny)
    out = musiclstm.harmonize(tmp_path / "chords.mid", model=tiny, top_voice=True, iterations=4)
    assert [n.pitch for n in out.instruments[0].notes] == [72, 74]
    melody_file(tmp_path / "low.mid", [48, 50, 52])
    with pytest.raises(ConfigError, match=r"outside the soprano range .*--transpose 24"):
        musiclstm.harmonize(tmp_path / "low.mid", model=tiny)
    ok = musiclstm.harmonize(tmp_path / "low.mid", model=tiny, transpose=24, iterations=4)
    assert [n.pitch for n in ok.instruments[0].notes] == [72, 74, 76]
    with pytest.raises(ConfigError, match="not a key"):
        musiclstm.harmonize(tmp_path / "low.mid", model=tiny, transpose=24, key="H major")


def test_infill_changes_only_the_named_bars_and_voices(tiny, tmp_path):
    four_part(tmp_path / "p.mid", bars=6)
    src = pretty_midi.PrettyMIDI(str(tmp_path / "p.mid"))
    info = {}
    out = musiclstm.infill(tmp_path / "p.mid", "2-3", voices="ATB", model=tiny, seed=2, iterations=8, info=info)
    bar = 4 * 60.0 / 100.0  # seconds per 4/4 bar at 100 qpm
    lo, hi = bar, 3 * bar
    assert info["removed"] == 3 * 8  # three voices, eight quarter notes in bars 2-3
    for name in HN.VOICES:
        before = {n for n in notes_of(src, name) if not (lo - 1e-6 <= n[0] < hi - 1e-6) or name == "Soprano"}
        after = set(notes_of(out, name))
        assert before <= after, name  # every note outside the bars (and all of the soprano) is kept
        new = after - before
        assert all(lo - 1e-6 <= n[0] < hi - 1e-6 for n in new), name  # new notes start inside the bars
    assert notes_of(out, "Soprano") == notes_of(src, "Soprano")


def test_infill_refuses_bad_requests(tiny, tmp_path):
    four_part(tmp_path / "p.mid", bars=4)
    with pytest.raises(ConfigError, match="the piece has 4 bars"):
        musiclstm.infill(tmp_path / "p.mid", "5-8", model=tiny)
    with pytest.raises(ConfigError, match="letters from S, A, T and B"):
        musiclstm.infill(tmp_path / "p.mid", "1", voices="AXB", model=tiny)
    with pytest.raises(ConfigError, match="must not run backwards"):
        musiclstm.infill(tmp_path / "p.mid", "3-2", model=tiny)
    melody_file(tmp_path / "m.mid", [72, 74])
    with pytest.raises(ConfigError, match="1 pitched tracks; infill needs a four-part piece"):
        musiclstm.infill(tmp_path / "m.mid", "1", model=tiny)


def test_infill_has_the_length_cap_harmonize_has(tmp_path):
    four_part(tmp_path / "long.mid", bars=C.MAX_QUARTERS // 4 + 1, qpm=600)
    # refused before any model is loaded (a missing one would be the error otherwise) or any grid is built
    with pytest.raises(ConfigError, match=f"infill takes at most {C.MAX_QUARTERS}"):
        musiclstm.infill(tmp_path / "long.mid", "1", model=tmp_path / "no-such-model.pt")


def test_gibbs_never_touches_fixed_cells(tiny):
    h = C.load(tiny)
    rng = np.random.default_rng(0)
    T = 24
    grid = rng.choice([h.cells.rest, h.cells.hold, h.cells.pitch0 + 60, h.cells.pitch0 + 67], size=(T, 4))
    free = rng.random((T, 4)) < 0.5
    out = G.gibbs(h.net, h.cells, grid, free, G.allowed_cells(h.cells, [(0, 127)] * 4, None), iterations=5,
                  generator=torch.Generator().manual_seed(1))
    assert (out[~free] == grid[~free]).all()
    assert (out != h.net.mask_id).all()


def test_compose_refuses_a_harmonizer_and_the_lists_keep_kinds_apart(tiny):
    with pytest.raises(CheckpointError, match="is a harmonizer model.*musiclstm harmonize"):
        checkpoint.load(tiny)
    # each bundled file's own meta says its kind, and the lists agree with it (not with the name list alone)
    kinds = {n: checkpoint.kind_of(checkpoint.read(p)["meta"]) for n, p in checkpoint.bundled_models(None).items()}
    assert "harmonizer" in kinds.values() and "lm" in kinds.values()
    assert set(checkpoint.bundled_models("harmonizer")) == {n for n, k in kinds.items() if k == "harmonizer"}
    assert set(checkpoint.bundled_models()) == {n for n, k in kinds.items() if k == "lm"}


def test_holdout_leaves_out_test_chorales_by_content(tmp_path):
    from musiclstm.encodings.tokenizer import Tokenizer

    tok = Tokenizer("grid", hold=True)
    cells = HN.Cells(tok)
    rng = np.random.default_rng(0)
    pieces = [rng.integers(50, 70, size=(40, 4)) for _ in range(5)]
    grids = [cells.from_pitches(p, np.ones_like(p, bool)) for p in pieces]
    jsb = {"train": [], "valid": [(pieces[1] + 2).tolist()], "test": [(pieces[3] - 5).tolist()]}  # transposed
    (tmp_path / "jsb.json").write_text(json.dumps(jsb))
    train, valid, out = chorale_train.split_by_melody(grids, cells, tmp_path / "jsb.json")
    assert out == 1 and valid == [1] and train == [0, 2, 4]


def test_chorale_statistics_known_answers():
    rows = [(0, 2, 76, 0), (0, 2, 60, 1), (0, 2, 55, 2), (0, 2, 48, 3),  # S-A 16 semitones apart
            (2, 4, 74, 0), (2, 4, 67, 1), (2, 4, 59, 2), (2, 4, 43, 3),  # G major, root position
            (4, 5, 72, 0), (4, 5, 66, 1), (4, 5, 57, 2), (4, 5, 50, 3)]  # F# outside C major
    a = np.array(rows, float)
    s = Score(a[:, 0], a[:, 1], a[:, 2], np.full(len(a), 80), a[:, 3], tracks=[Track(52, False, v) for v in "SATB"])
    st = chorale_stats(s, (0, False))
    assert st["spacing"] == pytest.approx(100 * 1 / 5)
    assert st["out_of_key"] == pytest.approx(1 / 9)
    assert st["cadences"] == pytest.approx(1.0)  # both long soprano notes sit on C and G root triads


def test_cli_harmonize_and_infill_write_every_file(tiny, tmp_path):
    melody_file(tmp_path / "tune.mid", [72, 71, 69, 67, 69, 71, 72, 72])
    r = CliRunner().invoke(cli, ["harmonize", str(tmp_path / "tune.mid"), "-c", str(tiny), "--seed", "4",
                                 "--iterations", "4", "-o", str(tmp_path / "h.mid"), "--png"])
    assert r.exit_code == 0, r.output
    assert "wrote" in r.output and "; key " in r.output and "seed 4" in r.output
    side = json.loads((tmp_path / "h.json").read_text())
    assert side["options"]["seed"] == 4 and side["input"]["sha1"]
    assert (tmp_path / "h.png").stat().st_size > 0
    again = ["harmonize", str(tmp_path / "tune.mid"), "-c", str(tiny), "-o", str(tmp_path / "h.mid")]
    r = CliRunner().invoke(cli, again)
    assert r.exit_code == 1 and "exists" in r.output
    r = CliRunner().invoke(cli, ["infill", str(tmp_path / "h.mid"), "--bars", "2", "--voices", "ab", "-c", str(tiny),
                                 "--iterations", "4", "-o", str(tmp_path / "i.mid")])
    assert r.exit_code == 0, r.output
    assert "bars 2-2" in r.output and "voices AB" in r.output
    r = CliRunner().invoke(cli, ["infill", str(tmp_path / "h.mid"), "--bars", "9-12", "-c", str(tiny),
                                 "-o", str(tmp_path / "j.mid")])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "the piece has 2 bars" in r.output
    assert not (tmp_path / "j.mid").exists()


def test_cli_trains_a_harmonizer_and_info_reads_it(tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    for i in range(4):
        four_part(root / f"c{i}.mid", i)
    run = ["train", str(root), "--model", "harmonizer", "-o", str(tmp_path / "run"), "--hidden", "8", "--embed", "4",
           "--layers", "1", "--batch-size", "2", "--seq-len", "16", "--max-steps", "2", "--eval-every", "1",
           "--device", "cpu", "-q"]
    r = CliRunner().invoke(cli, run)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run" / "best.pt").is_file()
    r = CliRunner().invoke(cli, ["info", str(tmp_path / "run")])
    assert r.exit_code == 0 and "harmonizer: bidirectional lstm 1x8" in r.output
    r = CliRunner().invoke(cli, run[:-1] + ["--windows", "tbptt", "--force"])
    assert r.exit_code == 1 and "--windows does not apply to --model harmonizer" in r.output
    if not torch.cuda.is_available():  # --device reaches the harmonizer's training (it trains on a GPU too)
        r = CliRunner().invoke(cli, run[:-1] + ["--device", "cuda", "--force"])
        assert r.exit_code == 1 and "--device cuda: no CUDA GPU is available" in r.output
    r = CliRunner().invoke(cli, ["train", str(root), "-o", str(tmp_path / "x"), "--holdout", str(root / "c0.mid")])
    assert r.exit_code == 1 and "--holdout applies to --model harmonizer only" in r.output


def test_forbidden_pitches_known_answers():
    from musiclstm.encodings.tokenizer import Tokenizer

    c = HN.Cells(Tokenizer("grid", hold=True))
    unknown = 10**6
    # soprano 72 over alto 65 (a fifth); the alto moves up to 67: the soprano may not move up to 74
    x = np.array([[c.pitch0 + 72, c.pitch0 + 65, c.pitch0 + 60, c.pitch0 + 48],
                  [unknown, c.pitch0 + 67, c.hold, c.hold]])
    bad = G.forbidden_pitches(x, c, unknown)[1, 0]
    assert bad[74] and bad[86]  # the parallel fifth, and a compound one
    assert not bad[71] and not bad[79] and not bad[72]  # contrary motion, an octave, staying put
    assert bad[66] and bad[60]  # below the alto: crossed voices
    # into the next step: the alto goes on to 69 while the tenor moves 60 -> 62 (a fifth below it then)
    y = np.array([[c.pitch0 + 72, unknown, c.pitch0 + 60, c.pitch0 + 48],
                  [c.pitch0 + 74, c.pitch0 + 69, c.pitch0 + 62, c.hold]])
    bad = G.forbidden_pitches(y, c, unknown)[0, 1]
    assert bad[67]  # 67 -> 69 over 60 -> 62: parallel fifths with the tenor
    assert not bad[65] and not bad[69]  # a fourth above the tenor; 69 held into the next step does not move


def test_rules_leave_no_parallels_or_crossings(tiny, tmp_path):
    melody_file(tmp_path / "m.mid", [72, 74, 76, 74, 72, 71, 72, 74, 76, 77, 76, 74, 72])
    h = C.load(tiny)
    for seed in range(3):
        pm = musiclstm.harmonize(tmp_path / "m.mid", model=h, seed=seed, iterations=8)
        from musiclstm.evaluation.music import voices

        v = voices(musiclstm.read(pm), by_track=True)
        assert v["parallel_fifths"] == 0 and v["parallel_octaves"] == 0 and v["voice_crossings"] == 0, (seed, v)


def test_the_melody_files_key_signature_wins_over_a_guess(tiny, tmp_path):
    melody_file(tmp_path / "m.mid", [67, 69, 71, 72, 74, 71, 72, 71, 69, 67, 69])  # ends on A: K-S may say A minor
    pm = pretty_midi.PrettyMIDI(str(tmp_path / "m.mid"))
    pm.key_signature_changes.append(pretty_midi.KeySignature(7, 0))  # G major
    pm.write(str(tmp_path / "g.mid"))
    info = {}
    out = musiclstm.harmonize(tmp_path / "g.mid", model=tiny, seed=0, iterations=6, info=info)
    assert info["key"] == "G major"
    assert 5 not in {n.pitch % 12 for i in out.instruments[1:] for n in i.notes}  # no F natural


def test_cli_options_change_the_notes(tiny, tmp_path):
    melody_file(tmp_path / "low.mid", [60, 62, 64, 65, 64, 62, 60])
    run = ["harmonize", str(tmp_path / "low.mid"), "-c", str(tiny), "--seed", "2", "--iterations", "4"]
    r = CliRunner().invoke(cli, run + ["-o", str(tmp_path / "t.mid"), "--transpose", "12", "--key", "A minor"])
    assert r.exit_code == 0, r.output
    pm = pretty_midi.PrettyMIDI(str(tmp_path / "t.mid"))
    assert [n.pitch for n in pm.instruments[0].notes] == [72, 74, 76, 77, 76, 74, 72]  # the melody, up an octave
    assert {n.pitch % 12 for i in pm.instruments[1:] for n in i.notes} <= theory.scale(9, True)  # A minor's notes
    assert "key A minor" in r.output
    r = CliRunner().invoke(cli, run + ["-o", str(tmp_path / "n.mid"), "--transpose", "12", "--no-rules"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "n.json").read_text())["options"]["rules"] is False
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(0)
    inst.notes += [pretty_midi.Note(90, 72, 0, 1), pretty_midi.Note(90, 67, 0, 1), pretty_midi.Note(90, 74, 1, 2)]
    pm.instruments.append(inst)
    pm.write(str(tmp_path / "chords.mid"))
    chords = ["harmonize", str(tmp_path / "chords.mid"), "-c", str(tiny), "-o", str(tmp_path / "c.mid")]
    r = CliRunner().invoke(cli, chords)
    assert r.exit_code == 1 and "--top-voice" in r.output and not (tmp_path / "c.mid").exists()
    r = CliRunner().invoke(cli, chords + ["--top-voice", "--iterations", "2"])
    assert r.exit_code == 0 and "its top voice" in r.output
    assert [n.pitch for n in pretty_midi.PrettyMIDI(str(tmp_path / "c.mid")).instruments[0].notes] == [72, 74]


def test_the_last_chord_and_the_cadence_bars_close_on_tonic_or_dominant(tiny, tmp_path):
    """Without the rule the tiny model's bass lands anywhere in the scale (seeds 0-3: its last note on the tonic
    0 times)."""
    melody = [72, 74, 76, 74, 72, 71, 69, 71, 72, 76, 74, 71, 72, 74, 71, 72]  # four bars of 4/4, C major
    melody_file(tmp_path / "m.mid", melody)
    for seed in range(4):
        pm = musiclstm.harmonize(tmp_path / "m.mid", model=tiny, seed=seed, iterations=6, cadences="2,3")
        bass = notes_of(pm, "Bass")
        beat = 60.0 / 100
        at = {round(s / beat, 3): p for s, _, p in bass}
        last = max(at)
        assert at[last] % 12 == 0, (seed, bass)  # the last chord: the tonic
        for bar in (2, 3):  # the bar's last melody note (beat 4 of the bar) takes tonic or dominant
            sounding = [p for s, e, p in bass if s / beat <= 4 * bar - 1 + 1e-6 < e / beat]
            assert sounding and sounding[0] % 12 in (0, 7), (seed, bar, bass)


def test_cadences_are_checked_before_work(tiny, tmp_path):
    melody_file(tmp_path / "m.mid", [72, 74, 76, 74])
    for bad in ("0", "3,2", "x", "2,2"):
        with pytest.raises(ConfigError):
            C.parse_cadences(bad)
    with pytest.raises(ConfigError, match="past the melody"):
        musiclstm.harmonize(tmp_path / "m.mid", model=tiny, cadences="9")
    r = CliRunner().invoke(cli, ["harmonize", str(tmp_path / "m.mid"), "--cadences", "4,x", "-o",
                                 str(tmp_path / "o.mid")])
    assert r.exit_code != 0 and "bar numbers" in r.output and not (tmp_path / "o.mid").exists()


def test_lower_voices_hold_as_long_as_the_grid_says(tiny):
    """harmonize decoded the lower voices with the grid's 16-quarter cap: a bass held under a long soprano note
    was cut at quarter 16 (64 sixteenths)."""
    h = C.load(tiny)
    T = 80  # 20 quarters
    pitches, onset = np.full((T, 4), -1), np.zeros((T, 4), bool)
    pitches[:, 0], onset[0, 0] = 72, True
    pitches[:, 3], onset[0, 3] = 48, True
    grid = h.cells.from_pitches(pitches, onset)
    soprano = Score.from_notes([(0, 20, 72, 80)])
    out = C._assemble(soprano, grid, h.cells, soprano)
    bass = out.select(out.track == 3)
    assert bass.pitch.tolist() == [48] and bass.end.tolist() == [20.0]


def test_compose_bach_writes_its_soprano_over_the_harmonizers_lower_voices():
    """compose --style bach: the bundled bach model's top voice, alto/tenor/bass by the harmonizer's rules; the
    model's own four voices with harmonizer=False (its samples had 4.18 parallel fifths per 100 beats)."""
    from musiclstm.evaluation.music import voices
    from musiclstm.generation.compose import compose, is_chorale_model

    bach = musiclstm.load("bach")
    assert is_chorale_model(bach) and not is_chorale_model(musiclstm.load("folk"))
    ruled = compose(bach, seconds=8, seed=2)
    own = compose(bach, seconds=8, seed=2, harmonizer=False)
    assert [i.name for i in ruled.instruments] == ["Soprano (Violin)", "Alto (Viola)", "Tenor (Cello)",
                                                   "Bass (Contrabass)"]
    top = lambda pm: sorted((round(n.start, 3), n.pitch) for n in max(pm.instruments, key=lambda i: np.mean(  # noqa: E731
        [n.pitch for n in i.notes])).notes)
    assert top(ruled) == top(own)  # the soprano is the model's
    v = voices(musiclstm.read(ruled), by_track=True)
    assert v["parallel_fifths"] == 0 and v["parallel_octaves"] == 0
    # the last chord: alto, tenor and bass strike with the soprano's last note and hold, a triad over its root
    last = [i.notes[-1] for i in ruled.instruments]
    assert len({round(n.start, 3) for n in last}) == 1 and len({round(n.end, 3) for n in last}) == 1
    root = last[3].pitch % 12
    lower = {n.pitch % 12 for n in last[1:]}
    assert lower <= {root, (root + 3) % 12, (root + 7) % 12} or lower <= {root, (root + 4) % 12, (root + 7) % 12}
    violins = compose(bach, seconds=8, seed=2, instruments="violin")
    assert [i.program for i in violins.instruments] == [40] * 4


def test_a_musicxml_melodys_fermatas_close_its_phrases(tiny, tmp_path):
    """The fermatas MIDI drops are read from MusicXML: the bass under each takes the tonic or the dominant."""
    import music21

    part = music21.stream.Part()
    part.append(music21.key.Key("C"))
    part.append(music21.meter.TimeSignature("4/4"))
    for k, p in enumerate([72, 74, 76, 74, 72, 71, 69, 71, 72, 76, 74, 71, 72, 74, 71, 72]):
        n = music21.note.Note(p, quarterLength=1)
        if k in (3, 7, 11):
            n.expressions.append(music21.expressions.Fermata())
        part.append(n)
    part.write("musicxml", tmp_path / "m.musicxml")
    info = {}
    pm = musiclstm.harmonize(tmp_path / "m.musicxml", model=tiny, seed=1, iterations=6, info=info)
    assert info["fermatas"] == [3.0, 7.0, 11.0]
    beat = 60.0 / pm.get_tempo_changes()[1][0]
    bass = notes_of(pm, "Bass")
    for q in (3, 7, 11, 15):
        under = [p for s, e, p in bass if s / beat <= q + 1e-6 < e / beat]
        assert under and under[0] % 12 in ((0,) if q == 15 else (0, 7)), (q, bass)
    assert musiclstm.io.midi.fermatas(tmp_path / "m.mid") == []  # MIDI has none


def test_an_interrupted_harmonizer_run_is_not_offered_resume(tmp_path, monkeypatch):
    """`--resume` is refused for the harmonizer; the Ctrl-C message offered it anyway."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(chorale_train, "train", interrupted)
    four_part(tmp_path / "c.mid")
    r = CliRunner().invoke(cli, ["train", str(tmp_path / "c.mid"), "--model", "harmonizer", "--out",
                                 str(tmp_path / "run")])
    assert r.exit_code == 130 and "cannot be resumed" in r.output and "--resume" not in r.output


def test_cli_compose_harmonizer_option_changes_the_lower_voices(tmp_path):
    """compose --style bach harmonizes the model's soprano by default; --no-harmonizer writes the model's own
    voices: same soprano, other lower voices, and only the harmonized one free of parallel fifths and octaves."""
    from musiclstm.evaluation.music import voices

    r = CliRunner()
    out = {}
    for flag in ("--harmonizer", "--no-harmonizer"):
        path = tmp_path / f"{flag.strip('-')}.mid"
        res = r.invoke(cli, ["compose", "--style", "bach", "--seconds", "8", "--seed", "2", flag, "-o", str(path)])
        assert res.exit_code == 0, res.output
        out[flag] = pretty_midi.PrettyMIDI(str(path))
    ruled, own = out["--harmonizer"], out["--no-harmonizer"]
    soprano = lambda pm: sorted((round(n.start, 3), n.pitch) for n in pm.instruments[0].notes)  # noqa: E731
    assert soprano(ruled) == soprano(own)
    lower = lambda pm: sorted((round(n.start, 3), n.pitch) for i in pm.instruments[1:] for n in i.notes)  # noqa: E731
    assert lower(ruled) != lower(own)
    v = voices(musiclstm.read(ruled), by_track=True)
    assert v["parallel_fifths"] == 0 and v["parallel_octaves"] == 0


def test_tied_bars_get_the_harmony_of_their_first_appearance(tiny, tmp_path):
    phrase = [72, 74, 76, 72]  # one 4/4 bar, played three times, then a closing bar
    melody_file(tmp_path / "m.mid", phrase * 3 + [72], [1] * 12 + [4])
    assert C._tie_steps([(4, 8, 0), (8, 12, 4)], 64)[32:48].tolist() == list(range(0, 16))  # a copy of a copy

    def lower(score, a, b):
        return sorted((round(s - a, 3), round(e - a, 3), int(p), int(t)) for s, e, p, t in
                      zip(score.start, score.end, score.pitch, score.track, strict=True) if t > 0 and a <= s < b)

    free = C.harmonize_score(tmp_path / "m.mid", model=tiny, seed=1, iterations=8)
    tied = C.harmonize_score(tmp_path / "m.mid", model=tiny, seed=1, iterations=8, ties=[(4, 8, 0), (8, 12, 4)])
    assert lower(tied, 0, 4) and lower(tied, 4, 8) == lower(tied, 0, 4) and lower(tied, 8, 12) == lower(tied, 0, 4)
    assert not (lower(free, 4, 8) == lower(free, 0, 4) == lower(free, 8, 12))  # untied, the tiny model varies
