"""Integration on the real data in ../shared/data: round-trip note recovery, as bench/roundtrip.py measures it.

Onset F1 (`musiclstm.evaluation.metrics.onset_f1`: same pitch, onset within 50 ms) of decode(encode(f)) against the
notes each encoding promises to keep, pooled over the notes of a folder sample. Skips when the data
folder is absent.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA_DIR

from musiclstm import MidiReadError, Score, Tokenizer, Track, read
from musiclstm.encodings.grid import load_jsb
from musiclstm.evaluation.metrics import onset_f1
from musiclstm.io.midi import is_music_file
from musiclstm.io.score import track_role

pytestmark = pytest.mark.slow

# every n-th file of the big folders; all of the small ones
SAMPLES = {"nottingham": 5, "pop909": 10, "fixtures": 1, "edge": 1}


def sample(folder: str, every: int | None = None) -> list[Path]:
    root = DATA_DIR / folder
    files = sorted(p for p in root.rglob("*") if p.is_file() and is_music_file(p))
    return files[:: every or SAMPLES.get(folder.split("/")[0], 1)]


@functools.cache
def read_or_none(path: Path) -> Score | None:
    try:
        return read(path)
    except MidiReadError:
        return None


def readable(folder: str, every: int | None = None) -> list[tuple[Path, Score]]:
    out = [(p, read_or_none(p)) for p in sample(folder, every)]
    return [(p, s) for p, s in out if s is not None]


class Pool:
    """Pooled precision / recall / F1 over several files."""

    def __init__(self) -> None:
        self.matched_ref = self.matched_est = self.n_ref = self.n_est = 0.0
        self.worst: list[tuple[float, str]] = []

    def add(self, name: str, m: dict) -> None:
        self.matched_ref += m["recall"] * m["reference"]
        self.matched_est += m["precision"] * m["estimate"]
        self.n_ref += m["reference"]
        self.n_est += m["estimate"]
        self.worst = sorted([*self.worst, (m["f1"], name)])[:5]

    @property
    def f1(self) -> float:
        p = self.matched_est / self.n_est if self.n_est else 1.0
        r = self.matched_ref / self.n_ref if self.n_ref else 1.0
        return 2 * p * r / (p + r) if p + r else 0.0

    def __repr__(self) -> str:
        return f"F1={self.f1:.4f} over {self.n_ref:.0f} notes; worst files {self.worst}"


def on_beats(s: Score) -> Score:
    """The same notes at a constant 60 qpm: seconds == quarters (compares beat positions, not seconds)."""
    return Score(s.start, s.end, s.pitch, s.velocity, s.track, list(s.tracks), [[0.0, 60.0]])


@pytest.fixture(scope="module")
def tokenizers(data_dir):
    return {enc: Tokenizer(enc) for enc in ("performance", "remi", "grid")}


# ---- performance: the notes one keyboard can sound ---------------------------------------------

@pytest.mark.parametrize("folder", ["nottingham", "pop909", "fixtures", "edge"])
def test_performance_keyboard_f1(tokenizers, folder):
    tok = tokenizers["performance"]
    pool, files = Pool(), readable(folder)
    assert files, f"no readable files in {folder}"
    for path, score in files:
        score = score.select(~score.is_drum)
        est = tok.decode_score(tok.encode(score))
        # several tracks playing one pitch at the same 10 ms step are one key press (bench/roundtrip.py)
        on, _, pitch, _ = tok.codec.notes(score)
        keys = Score(on / 100 * 2, on / 100 * 2 + 0.1, pitch, np.full(len(on), 64), np.zeros(len(on)), [Track()])
        pool.add(path.name, onset_f1(keys, est))
    assert pool.f1 >= 0.99, pool


def test_performance_f1_against_every_note_on_nottingham(tokenizers):
    # one melody + chords, no doubled pitches: every non-drum note is a key press
    tok = tokenizers["performance"]
    pool = Pool()
    for path, score in readable("nottingham"):
        score = score.select(~score.is_drum)
        pool.add(path.name, onset_f1(score, tok.decode_score(tok.encode(score))))
    assert pool.f1 >= 0.99, pool


# ---- remi: every note -------------------------------------------------------------------------

REMI_FOLDERS = ["nottingham", "fixtures/music21"]


@pytest.mark.parametrize("folder", REMI_FOLDERS)
def test_remi_f1_on_beats(tokenizers, folder):
    """Onsets on the beat grid (tempo map set aside): within half a 1/12-quarter tick of the original."""
    tok = tokenizers["remi"]
    pool = Pool()
    for path, score in readable(folder):
        est = tok.decode_score(tok.encode(score))
        pool.add(path.name, onset_f1(on_beats(score), on_beats(est), tolerance=1 / 24))
    assert pool.f1 >= 0.99, pool


@pytest.mark.parametrize("folder", [
    "nottingham",
    pytest.param("fixtures/music21", marks=pytest.mark.xfail(strict=True, reason="documented remi tempo "
                 "losses, ~96 %: cs1-1pre.mid slows to 20 qpm (TEMPO tokens stop at 30, so every later onset is "
                 "0.5 s early; F1 0.52) and test04.mid changes tempo off the 1/12 grid (at quarter 3.979; F1 0.94). "
                 "On the beat grid the folder scores 100 % (test_remi_f1_on_beats)")),
])
def test_remi_f1_in_seconds(tokenizers, folder):
    tok = tokenizers["remi"]
    pool = Pool()
    for path, score in readable(folder):
        pool.add(path.name, onset_f1(score, tok.decode_score(tok.encode(score))))
    assert pool.f1 >= 0.99, pool


def test_remi_keeps_programs_and_drums_on_multitrack(tokenizers):
    tok = tokenizers["remi"]
    files = readable("fixtures/miditok-multitrack")
    assert len(files) == 12
    for path, score in files:
        used = {k for k in np.unique(score.track).tolist()}
        # tracks with one program and role merge into one; a drum track's kit program is not kept (decoded as 0);
        # roles are written only where a program is shared by tracks of different roles
        pairs = {(0 if t.is_drum else t.program, t.is_drum, track_role(t)) for k, t in enumerate(score.tracks)
                 if k in used}
        shared = len({p[:2] for p in pairs}) < len(pairs)
        expected = {(p, d) for p, d, _ in pairs}
        ids = tok.encode(score)
        out = tok.decode_score(ids)
        assert {(t.program, t.is_drum) for t in out.tracks} == expected, path.name
        if shared:
            assert {(t.program, t.is_drum, track_role(t)) for t in out.tracks} == pairs, path.name
            expected = pairs
        assert len(out.tracks) == len(expected), path.name
        pm = tok.decode(ids)
        assert {(i.program, i.is_drum) for i in pm.instruments} == {e[:2] for e in expected}, path.name
        assert sum(len(i.notes) for i in pm.instruments) == len(out), path.name
    assert any(t.is_drum for _, s in files for t in s.tracks)


# ---- every readable file encodes into the vocabulary --------------------------------------------

ALL_FOLDERS = ["nottingham", "pop909", "fixtures", "edge"]


@pytest.mark.parametrize("folder", ALL_FOLDERS)
def test_encode_of_every_readable_file_is_in_range(tokenizers, folder):
    files = readable(folder)
    assert files
    for enc, tok in tokenizers.items():
        for path, score in files:
            ids = tok.encode_array(score)
            assert ids[0] == 1 and ids[-1] == 2, (enc, path.name)
            assert ((ids >= 0) & (ids < tok.vocab_size)).all(), (enc, path.name)
            assert not (ids[1:-1] < 3).any(), (enc, path.name)


def test_readable_and_unreadable_counts(data_dir):
    edge = sample("edge")
    assert len(edge) == 46
    ok = [p for p in edge if read_or_none(p) is not None]
    assert 15 <= len(ok) < len(edge)  # several broken files are refused, the odd-but-valid ones read
    assert read_or_none(data_dir / "edge" / "synthetic" / "huge_delta_268M_ticks.mid") is None
    assert all(read_or_none(p) is not None for p in sample("nottingham"))
    assert all(read_or_none(p) is not None for p in sample("pop909"))


# ---- grid on the JSB Chorales ------------------------------------------------------------------

def test_grid_round_trip_jsb_chorales(data_dir):
    tok = Tokenizer("grid", hold=False)  # the JSB convention: a sounding voice repeats its pitch every step
    split = load_jsb(data_dir / "jsb" / "Jsb16thSeparated.json")  # the .npz form is pickled: never loaded
    for piece in split["valid"][:25]:
        out = tok.decode_score(tok.encode(piece))
        got = np.full((len(piece) + 1, 4), np.nan)
        for s, e, p, v in zip(out.start, out.end, out.pitch, out.track, strict=True):
            got[int(round(s * 4)):int(round(e * 4)), v] = p
        np.testing.assert_array_equal(got, np.vstack([piece, np.full((1, 4), np.nan)]))
