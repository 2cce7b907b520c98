"""Issue 26: what a newcomer hit. Each test failed before its fix.

Every test runs in its own empty working directory; the music is built in code.
"""

from __future__ import annotations

import json

import pretty_midi
import pytest
from click.testing import CliRunner
from conftest import Part, build_midi

from musiclstm.app.cli import cli


@pytest.fixture(autouse=True)
def _own_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _melody(path, pitches=(72, 74, 76, 77, 79, 77, 76, 74, 72, 71, 72, 74, 76, 74, 72, 72)):
    build_midi([Part(notes=[(i, i + 1, p, 80) for i, p in enumerate(pitches)])],
               time_signatures=[(0, 4, 4)]).write(str(path))
    return path


# ---- 1. one-line errors; a missing output folder is created by every command ----------------------

def _one_line_ok(res):
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output and "Exception ignored" not in res.output, res.output


@pytest.mark.parametrize("args, made", [
    (["render", "m.mid", "--png", "-o", "out/x"], ["out/x.png"]),
    (["render", "m.mid", "--wav", "-o", "newdir/x"], ["newdir/x.wav"]),
    (["gates", "folk", "m.mid", "-o", "out/g.png", "--steps", "20"], ["out/g.png"]),
    (["compose", "--tokens", "20", "--seed", "1", "-o", "out/c.mid"], ["out/c.mid", "out/c.json"]),
    (["harmonize", "m.mid", "--iterations", "1", "--seed", "1", "-o", "out/h.mid"], ["out/h.mid"]),
])
def test_every_command_creates_a_missing_output_folder(args, made, tmp_path, monkeypatch):
    _melody(tmp_path / "m.mid")
    if "--wav" in args:  # the sine synthesizer (the path that left a half-made Wave_write behind)
        (tmp_path / "empty-bin").mkdir()
        monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    res = CliRunner().invoke(cli, args)
    _one_line_ok(res)
    for m in made:
        assert (tmp_path / m).is_file(), m


def test_infill_creates_a_missing_output_folder(tmp_path):
    notes = [[(i, i + 1, p + d, 70) for i in range(8)] for p, d in ((72, 0), (67, 0), (60, 0), (48, 0))]
    build_midi([Part(notes=n) for n in notes], time_signatures=[(0, 4, 4)]).write(str(tmp_path / "p.mid"))
    res = CliRunner().invoke(cli, ["infill", "p.mid", "--bars", "2", "--iterations", "1", "--seed", "1",
                                   "-o", "deep/er/i.mid"])
    _one_line_ok(res)
    assert (tmp_path / "deep/er/i.mid").is_file()


def test_an_unwritable_place_is_one_line(tmp_path):
    _melody(tmp_path / "m.mid")
    (tmp_path / "afile").write_text("x")
    for args in (["render", "m.mid", "--png", "-o", "afile/x"], ["gates", "folk", "m.mid", "-o", "afile/g.png"]):
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 1 and res.output.startswith("error: ") and res.output.count("\n") == 1, res.output
