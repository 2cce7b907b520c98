"""The command layer: all-or-nothing outputs, WAV without FluidSynth, fresh pieces, option conflicts, messages.

Every test runs in its own empty working directory (the autouse `_own_cwd`), so a `composition.mid`
left in the caller's folder changes nothing.
"""

from __future__ import annotations

import json
import wave

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_train_compose import _tune, corpus, run  # noqa: F401  (module fixtures)

from musiclstm.app.cli import cli


@pytest.fixture(autouse=True)
def _own_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def no_fluidsynth(tmp_path, monkeypatch):
    """A PATH with nothing on it: no fluidsynth executable can be found."""
    (tmp_path / "empty-bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))


def _files(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*"))


def test_wav_png_for_every_piece_without_fluidsynth(run, tmp_path, no_fluidsynth):  # noqa: F811
    res = CliRunner().invoke(cli, ["compose", "-c", str(run), "--seconds", "3", "--seed", "1", "--num", "2",
                                   "--png", "--wav", "-o", "song.mid"])
    assert res.exit_code == 0, res.output
    for stem in ("song-1", "song-2"):
        for ext in (".mid", ".json", ".wav", ".png"):
            assert (tmp_path / f"{stem}{ext}").is_file(), (stem, ext)
            assert f"{stem}{ext}" in res.output  # `wrote` names every file
        with wave.open(str(tmp_path / f"{stem}.wav")) as w:
            assert w.getnframes() > 2 * w.getframerate()
            assert np.abs(np.frombuffer(w.readframes(w.getnframes()), np.int16)).max() > 100  # not silence
    assert "sine synthesizer" in res.output  # the message says which synthesizer made the audio
    assert not list(tmp_path.glob(".musiclstm-*"))  # no staging folder left behind


def test_render_wav_without_fluidsynth(tmp_path, no_fluidsynth):
    _tune(tmp_path / "t.mid", 3)
    res = CliRunner().invoke(cli, ["render", "t.mid", "--wav", "--png"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "t.wav").stat().st_size > 1000 and (tmp_path / "t.png").is_file()
    assert "t.wav, t.png" in res.output and "sine synthesizer" in res.output


def test_render_force_keeps_the_old_files_when_the_new_ones_fail(tmp_path, no_fluidsynth, monkeypatch):
    import musiclstm.io.plot

    _tune(tmp_path / "t.mid", 3)
    (tmp_path / "t.wav").write_bytes(b"old wav")
    (tmp_path / "t.png").write_bytes(b"old png")

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(musiclstm.io.plot, "save_piano_roll", broken)
    res = CliRunner().invoke(cli, ["render", "t.mid", "--wav", "--png", "--force"])
    assert res.exit_code == 1 and "No space left" in res.output and "Traceback" not in res.output
    assert (tmp_path / "t.wav").read_bytes() == b"old wav" and (tmp_path / "t.png").read_bytes() == b"old png"
    assert not list(tmp_path.glob(".musiclstm-*"))


def test_a_failure_writes_nothing(run, tmp_path, monkeypatch):  # noqa: F811
    import musiclstm.io.plot

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(musiclstm.io.plot, "save_piano_roll", broken)
    res = CliRunner().invoke(cli, ["compose", "-c", str(run), "--seconds", "2", "--num", "2", "--png",
                                   "-o", "sub/song.mid"])
    assert res.exit_code == 1 and "No space left" in res.output and "Traceback" not in res.output
    assert _files(tmp_path) == []  # neither the MIDI, the sidecar, the folder nor a staging folder


def test_bare_composes_are_new_pieces_that_reproduce(run, tmp_path):  # noqa: F811
    r = CliRunner()
    first = r.invoke(cli, ["compose", "-c", str(run), "--seconds", "3"])
    second = r.invoke(cli, ["compose", "-c", str(run), "--seconds", "3"])
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    a, b = tmp_path / "composition.mid", tmp_path / "composition-2.mid"
    assert "wrote composition.mid" in first.output and "wrote composition-2.mid" in second.output
    assert a.read_bytes() != b.read_bytes()
    seed = json.loads(a.with_suffix(".json").read_text())["options"]["seed"]
    assert seed != json.loads(b.with_suffix(".json").read_text())["options"]["seed"]
    again = r.invoke(cli, ["compose", "-c", str(run), "--seconds", "3", "--seed", str(seed), "-o", "again.mid"])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "again.mid").read_bytes() == a.read_bytes()  # the recorded seed reproduces it
    res = r.invoke(cli, ["compose", "-c", str(run), "--seconds", "3", "-o", "again.mid"])
    assert res.exit_code == 1 and "--force" in res.output  # an explicit -o is never overwritten silently


def test_bare_compose_with_the_bundled_model():
    res = CliRunner().invoke(cli, ["compose", "--seconds", "2"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("wrote composition.mid, composition.json (")


@pytest.mark.parametrize("args", [
    ["--prime", "p.mid", "--prime-notes", "60 64"],
    ["--prime-seconds", "2"],
    ["--prime-bars", "1"],
    ["--prime", "p.mid", "--prime-seconds", "2", "--prime-bars", "1"],
    ["--seconds", "5", "--bars", "2"],
    ["--seconds", "5", "--tokens", "20"],
    ["--bars", "2", "--tokens", "20"],
    ["--prime", "empty.mid"],
    ["--prime", "p.mid", "--prime-seconds", "0.01"],
    ["--prime-notes", ""],
    ["-o", "adir"],
    ["-o", "adir", "--force"],
    ["--temperature", "-1"],
    ["--num", "0"],
    ["--threads", "0"],
    ["--style", "metal"],
], ids=lambda a: " ".join(a))
def test_conflicts_and_bad_values_are_one_line_and_write_nothing(args, tmp_path, make_midi):
    from conftest import Part

    make_midi([Part(notes=[(4, 5, 60, 80)])]).write(str(tmp_path / "p.mid"))  # first note after 2 s
    make_midi([Part()]).write(str(tmp_path / "empty.mid"))
    (tmp_path / "adir").mkdir()
    before = _files(tmp_path)
    res = CliRunner().invoke(cli, ["compose", *args])
    assert res.exit_code not in (0, None), res.output
    assert len(res.output.strip().splitlines()) == 1 and res.output.startswith("error: "), res.output
    assert _files(tmp_path) == before


def test_style_names_a_bundled_model_in_any_case(tmp_path):
    res = CliRunner().invoke(cli, ["compose", "--style", "Bach", "--tokens", "40", "-o", "b.mid"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "b.json").read_text())["checkpoint"].endswith("bach.pt")
    res = CliRunner().invoke(cli, ["compose", "--style", "Metal"])
    assert res.exit_code == 1 and "bach" in res.output and "folk" in res.output and "pop" in res.output


def test_a_folder_named_like_a_bundled_model_does_not_shadow_it(tmp_path):
    for name in ("bach", "folk", "default"):  # e.g. `musiclstm corpus export bach bach`
        (tmp_path / name).mkdir()
        (tmp_path / name / "000.mid").write_bytes(b"MThd")
    res = CliRunner().invoke(cli, ["compose", "--style", "bach", "--tokens", "40", "-o", "b.mid"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "b.json").read_text())["checkpoint"].endswith("bach.pt")
    res = CliRunner().invoke(cli, ["compose", "--tokens", "40", "-o", "f.mid"])  # the bundled default
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "f.json").read_text())["checkpoint"].endswith("folk.pt")
    res = CliRunner().invoke(cli, ["compose", "-c", "bach", "--tokens", "40", "-o", "c.mid"])  # -c: a path
    assert res.exit_code == 1 and "no best.pt or last.pt in bach" in res.output


def test_wrote_says_how_much_is_primer(run):  # noqa: F811
    res = CliRunner().invoke(cli, ["compose", "-c", str(run), "--seconds", "2", "--prime-notes", "60 64 67"])
    assert res.exit_code == 0, res.output
    assert "of which primer" in res.output and "3 notes" in res.output


def test_threads_option(run, tmp_path):  # noqa: F811
    before = torch.get_num_threads()
    try:
        res = CliRunner().invoke(cli, ["compose", "-c", str(run), "--seconds", "2", "--threads", "2", "-o", "t.mid"])
        assert res.exit_code == 0, res.output
        assert torch.get_num_threads() == 2
        assert json.loads((tmp_path / "t.json").read_text())["options"]["threads"] == 2
    finally:
        torch.set_num_threads(before)
    res = CliRunner().invoke(cli, ["train", "x", "--out", "r", "--threads", "0"])
    assert res.exit_code == 2 and "--threads" in res.output
