"""ABC books (many `X:` tunes in one file) are read tune by tune by the data layer, as `corpus export` does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from musiclstm import data
from musiclstm.app.cli import cli
from musiclstm.encodings.tokenizer import Tokenizer
from musiclstm.errors import MidiReadError
from musiclstm.io import midi

BOOK = """%abc-2.1
X: 1
T: First
M: 4/4
L: 1/8
K: G
GABc d2 B2 | c2 A2 G4 | GABc d2 B2 | A2 F2 G4 |]

X: 2
T: Broken repeats
M: 4/4
L: 1/8
K: G
:| |2 G4 :| |1 A4 |2 B4 :|

X: 3
T: Third
M: 3/4
L: 1/4
K: D
D F A | d2 A | F E D | A,3 |]

X: 4
T: Rests only
M: 4/4
L: 1/8
K: C
z8 | z8 |]
"""
FIRST = [67, 69, 71, 72, 74, 71, 72, 69, 67, 67, 69, 71, 72, 74, 71, 69, 66, 67]  # tune 1's melody, G major
THIRD = [62, 66, 69, 74, 69, 66, 64, 62, 57]  # tune 3's, D major


@pytest.fixture
def book(tmp_path) -> Path:
    folder = tmp_path / "book"
    folder.mkdir()
    (folder / "tunes.abc").write_text(BOOK)
    (folder / "single.abc").write_text(BOOK.split("\n\n")[0].replace("%abc-2.1\n", ""))  # one tune: one piece
    return folder


def _prepare(folder: Path, cache: Path, **kw) -> data.Corpus:
    return data.prepare([folder], Tokenizer("remi"), cache_dir=cache, jobs=1, progress=False, **kw)


def test_abc_tunes_lists_reference_numbers_once_in_file_order():
    assert midi.abc_tunes("X: 3\nT: a\nX:1\n  X: 3  \nX: two\nT: X: 9\n") == [3, 1]
    assert midi.abc_tunes(BOOK) == [1, 2, 3, 4]


def test_a_book_gives_one_piece_per_tune_and_reports_the_tunes_it_cannot_read(book, tmp_path):
    tok = Tokenizer("remi")
    corpus = _prepare(book, tmp_path / "cache")
    tunes = book / "tunes.abc"
    assert [p.name for p in corpus.pieces] == [str(book / "single.abc"), f"{tunes}#X:1", f"{tunes}#X:3"]
    assert [p.tune for p in corpus.pieces] == [None, 1, 3]
    melodies = [tok.decode_score(p.ids) for p in corpus.pieces]
    assert [list(m.pitch[np.argsort(m.start, kind="stable")]) for m in melodies] == [FIRST, FIRST, THIRD]
    assert [n for n, _ in corpus.skipped] == [f"{tunes}#X:2", f"{tunes}#X:4"]
    reasons = dict(corpus.skipped)
    assert "repeats" in reasons[f"{tunes}#X:2"] and "\n" not in reasons[f"{tunes}#X:2"]
    assert reasons[f"{tunes}#X:4"] == "no notes"
    report = corpus.report()
    assert report.startswith("3 pieces read") and f"skipped {tunes}#X:2: music21: ExpanderException" in report
    # the single-tune file and tune 1 of the book are the same music, but distinct pieces (file + tune)
    assert len({p.sha for p in corpus.pieces}) == 3 and not corpus.duplicates


def test_tunes_are_cached_per_file_and_split_alike_on_every_run(book, tmp_path, monkeypatch):
    first = _prepare(book, tmp_path / "cache", val_fraction=0.5)
    parsed = []

    def read(source, *, name=None, tune=None):  # a warm run parses nothing: failures are cached too, by content
        parsed.append(name)
        raise MidiReadError(name, "unreadable")

    monkeypatch.setattr(midi, "read", read)
    again = _prepare(book, tmp_path / "cache", val_fraction=0.5)
    assert parsed == [] and again.skipped == first.skipped
    assert [(p.name, p.split, p.sha) for p in again.pieces] == [(p.name, p.split, p.sha) for p in first.pieces]
    assert all(np.array_equal(a.ids, b.ids) for a, b in zip(first.pieces, again.pieces, strict=True))
    assert again.fingerprint == first.fingerprint


def _oneills() -> Path | None:
    try:
        from music21.common import getCorpusFilePath
    except ImportError:
        return None
    path = Path(getCorpusFilePath()) / "oneills1850" / "0001-0050.abc"
    return path if path.is_file() else None


@pytest.mark.skipif(_oneills() is None, reason="music21's bundled corpus (oneills1850/0001-0050.abc) is not installed")
def test_train_reads_a_real_abc_book_tune_by_tune(tmp_path):
    """O'Neill's 1850 book, 50 tunes in one file: before, `train` skipped the whole file."""
    book = _oneills()
    folder = tmp_path / "oneills"
    folder.mkdir()
    (folder / book.name).write_bytes(book.read_bytes())
    res = CliRunner().invoke(cli, ["train", str(folder), "--out", str(tmp_path / "run"), "--preset", "tiny",
                                   "--hidden", "16", "--embed", "8", "--layers", "1", "--seq-len", "32",
                                   "--batch-size", "4", "--max-steps", "2", "--jobs", "1", "--threads", "1", "-q"],
                             env={"MUSICLSTM_CACHE": str(tmp_path / "cache")})
    assert res.exit_code == 0, res.output
    assert "cannot process repeats" not in res.output
    corpus = _prepare(folder, tmp_path / "cache")  # warm: the run's own preparation
    assert len(corpus.pieces) >= 45 and len(corpus.pieces) + len(corpus.skipped) == 50
    assert sorted(p.tune for p in corpus.pieces) == sorted(set(p.tune for p in corpus.pieces))
    assert all("#X:" in name for name, _ in corpus.skipped)
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())  # what the run trained on
    assert report["files"] == len(corpus.pieces) and report["skipped"] == [list(s) for s in corpus.skipped]
