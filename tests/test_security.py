"""No user-supplied file is ever unpickled: crafted files in each input path never run their payload,
and no other unsafe loader exists in the package."""

from __future__ import annotations

import ast
import os
import pickle
import shutil
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from musiclstm.encodings import grid
from musiclstm.errors import MidiReadError, MusiclstmError
from musiclstm.evaluation import benchmark
from musiclstm.io.midi import read

ROOT = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this creates `marker`: proof that a pickle from a user's file was loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _crafted_npz(path: Path, marker: Path) -> Path:
    """A JSB-shaped .npz whose object arrays unpickle to `Payload(marker)`."""
    chorales = np.empty(1, dtype=object)
    chorales[0] = Payload(marker)
    with open(path, "wb") as fh:
        np.savez(fh, train=chorales, valid=chorales, test=chorales)
    return path


def test_crafted_npz_is_refused_without_running_its_payload(tmp_path):
    marker = tmp_path / "pwned"
    npz = _crafted_npz(tmp_path / "Jsb16thSeparated.npz", marker)
    with pytest.raises(MusiclstmError, match="pickled Python objects.*Jsb16thSeparated.json"):
        grid.load_jsb(npz)
    with pytest.raises(MusiclstmError, match="never read"):  # the benchmark asks for the JSON form
        benchmark.jsb_corpus(tmp_path, "16th")
    assert not marker.exists()


def test_benchmark_reads_the_json_beside_a_crafted_npz(data_dir, tmp_path):
    marker = tmp_path / "pwned"
    _crafted_npz(tmp_path / "Jsb16thSeparated.npz", marker)
    shutil.copy(data_dir / "jsb" / "Jsb16thSeparated.json", tmp_path)
    corpus = benchmark.jsb_corpus(tmp_path, "16th")
    assert len(corpus.split("report")) == 76
    assert not marker.exists()


def test_the_published_npz_is_refused_with_one_line(data_dir):
    with pytest.raises(MusiclstmError) as e:
        grid.load_jsb(data_dir / "jsb" / "Jsb16thSeparated.npz")
    assert "\n" not in str(e.value) and "Jsb16thSeparated.json" in str(e.value)


def test_a_plain_numeric_npz_still_loads(tmp_path):
    a = np.array([[60, 55, 52, 48], [62, 57, 53, np.nan]])
    np.savez(tmp_path / "plain.npz", train=a[None], valid=a[None], test=a[None])
    d = grid.load_jsb(tmp_path / "plain.npz")
    assert np.array_equal(d["valid"][0], a, equal_nan=True)


def _plant_music21_pickle(source: Path, marker: Path) -> Path:
    """Where music21 would look for its cached parse of `source`: a crafted pickle there, dated in the
    future so that music21 takes it as newer than any file written before it is read."""
    from music21 import converter

    where = converter.PickleFilter(source).getPickleFp(zipType="gz")
    where.parent.mkdir(parents=True, exist_ok=True)
    where.write_bytes(zlib.compress(pickle.dumps(Payload(marker))))
    future = time.time() + 86400
    os.utime(where, (future, future))
    return where


MUSICXML = """<?xml version="1.0" encoding="UTF-8"?>
<score-partwise version="3.1"><part-list><score-part id="P1"><part-name>x</part-name></score-part></part-list>
<part id="P1"><measure number="1"><attributes><divisions>1</divisions></attributes>
<note><pitch><step>C</step><octave>4</octave></pitch><duration>4</duration><type>whole</type></note>
</measure></part></score-partwise>"""


def test_a_musicxml_primer_never_loads_music21s_pickle_cache(tmp_path):
    marker = tmp_path / "pwned"
    xml = tmp_path / "primer.musicxml"
    xml.write_text(MUSICXML)
    planted = _plant_music21_pickle(xml, marker)
    try:
        score = read(xml)
        assert score.pitch.tolist() == [60]
        assert not marker.exists()
        planted.unlink()
        read(xml)
        assert not planted.exists(), "music21 wrote a pickle cache"
    finally:
        planted.unlink(missing_ok=True)
    with pytest.raises(MidiReadError):  # and a file that is not MusicXML stays one clear error
        bad = tmp_path / "bad.musicxml"
        bad.write_text("not xml")
        read(bad)


def test_compose_musicxml_output_never_loads_music21s_pickle_cache(tmp_path):
    from musiclstm.io.midi import to_pretty_midi
    from musiclstm.io.outputs import write_outputs
    from musiclstm.io.score import Score

    marker = tmp_path / "pwned"
    out = tmp_path / "song.mid"
    pm = to_pretty_midi(Score.from_notes([(0, 1, 60, 80), (1, 2, 64, 80)]))
    planted = _plant_music21_pickle(out, marker)
    try:
        written = write_outputs(pm, out, force=True, info={}, musicxml=True)
        assert out.with_suffix(".musicxml") in written and out.with_suffix(".musicxml").stat().st_size > 0
        assert not marker.exists()
    finally:
        planted.unlink(missing_ok=True)


# ---- the guard: no other unsafe loader in the package -------------------------------------------

def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value.value if isinstance(k.value, ast.Constant) else "<expr>"
    return None


def unsafe_loads(source: str) -> list[str]:
    """Calls in `source` that can unpickle a file: allow_pickle=True, pickle.load(s), torch.load
    without weights_only=True, music21 parsing without forceSource=True and storePickle=False."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        owner = ast.unparse(f.value) if isinstance(f, ast.Attribute) else ""
        line = f"line {node.lineno}: {ast.unparse(node)[:100]}"
        if _kw(node, "allow_pickle") not in (None, False):
            found.append(line)
        elif name in ("load", "loads", "Unpickler") and owner.split(".")[-1] in ("pickle", "dill", "joblib",
                                                                                   "cloudpickle", "marshal"):
            found.append(line)
        elif name == "load" and owner.split(".")[-1] == "torch" and _kw(node, "weights_only") is not True:
            found.append(line)
        elif name in ("parse", "parseFile", "parseURL") and "converter" in owner.split(".") or \
                name == "parse" and owner.split(".")[-1] == "corpus":
            if _kw(node, "forceSource") is not True or _kw(node, "storePickle") is not False:
                found.append(line)
    return found


def test_the_guard_catches_each_unsafe_call():
    for bad in ("np.load(p, allow_pickle=True)", "pickle.load(fh)", "pickle.loads(b)", "torch.load(p)",
                "torch.load(p, weights_only=False)", "music21.converter.parse(p)",
                "converter.parseFile(p, forceSource=True)", "music21.corpus.parse('bach/bwv66.6')"):
        assert unsafe_loads(bad), bad
    for ok in ("np.load(p)", "np.load(p, allow_pickle=False)", "torch.load(p, weights_only=True)",
               "music21.converter.parse(p, forceSource=True, storePickle=False)"):
        assert not unsafe_loads(ok), ok


@pytest.mark.parametrize("folder", ["musiclstm", "bench"])
def test_no_unsafe_loader_in_the_code(folder):
    found = [f"{p.relative_to(ROOT)} {hit}" for p in sorted((ROOT / folder).rglob("*.py"))
             for hit in unsafe_loads(p.read_text())]
    assert not found, found


def test_a_crafted_checkpoint_is_refused_without_running_its_payload(tmp_path):
    import torch

    from musiclstm.errors import CheckpointError
    from musiclstm.models import checkpoint

    marker = tmp_path / "pwned"
    torch.save({"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "meta": Payload(marker)},
               tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused without running it"):
        checkpoint.load(tmp_path / "evil.pt")
    assert not marker.exists()
