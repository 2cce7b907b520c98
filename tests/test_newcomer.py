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


# ---- 2. a model writes only what it learned; temperature has an upper bound ----------------------

def test_a_hot_draw_keeps_the_programs_drums_and_pitches_the_model_learned(tmp_path):
    """The folk model learned piano only (its checkpoint records programs [0], no pitch range: the piano's
    keys). At the hottest temperature allowed it writes piano notes on the keyboard, nothing else."""
    res = CliRunner().invoke(cli, ["compose", "--temperature", "3", "--tokens", "400", "--seed", "1", "-o", "hot.mid"])
    assert res.exit_code == 0, res.output
    pm = pretty_midi.PrettyMIDI(str(tmp_path / "hot.mid"))
    assert pm.instruments and all(i.program == 0 and not i.is_drum for i in pm.instruments)
    pitches = [n.pitch for i in pm.instruments for n in i.notes]
    assert pitches and 21 <= min(pitches) and max(pitches) <= 108


def test_the_pitch_range_learned_is_recorded_and_kept():
    import musiclstm as ml
    from musiclstm.encodings.grammar import Controls  # noqa: F401
    from musiclstm.generation.finishing import SAFE_PITCH_RANGE, _within, learned

    folk = ml.load("folk")
    assert learned(folk) == ((0,), tuple(folk.meta["data"]["pitch_range"]))  # recorded by its training
    folk.meta["data"] = {k: v for k, v in folk.meta["data"].items() if k != "pitch_range"}
    assert learned(folk) == ((0,), SAFE_PITCH_RANGE)  # a checkpoint that recorded none: the piano's keys
    folk.meta["data"] = {**folk.meta["data"], "pitch_range": [55, 84]}
    assert learned(folk)[1] == (55, 84)
    assert _within((60, 100), (55, 84)) == (60, 84)
    with pytest.raises(Exception, match="outside the pitches this model learned"):
        _within((90, 100), (55, 84))


def test_corpus_records_its_pitch_range(tmp_path):
    from conftest import scale_corpus

    from musiclstm import data
    from musiclstm.encodings.tokenizer import Tokenizer

    corpus = data.prepare(data.as_paths(scale_corpus(tmp_path / "c", files=4)), Tokenizer("remi"), progress=False,
                          cache_dir=tmp_path / "cache")
    lo, hi = corpus.to_json()["pitch_range"]
    assert 60 <= lo <= hi <= 71


def test_temperature_has_an_upper_bound_everywhere(tmp_path):
    import musiclstm as ml
    from musiclstm.errors import ConfigError
    from musiclstm.generation.compose import compose

    res = CliRunner().invoke(cli, ["compose", "--temperature", "1e9", "--tokens", "10"])
    assert res.exit_code == 2 and "0<=x<=3" in res.output
    with pytest.raises(ConfigError, match="between 0 and 3"):
        compose(ml.load("folk"), tokens=10, temperature=1e9)
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from musiclstm.app.studio import Studio

    with pytest.raises(ConfigError, match="between 0 and 3"):
        Studio(tmp_path).submit({"kind": "compose", "temperature": 1e9}, None)


# ---- 3. the written key is the key of the music -------------------------------------------------

def test_the_asked_key_is_the_written_key_in_midi_and_musicxml(tmp_path):
    res = CliRunner().invoke(cli, ["compose", "--key", "D minor", "--musicxml", "--seed", "1", "--tokens", "120",
                                   "-o", "dm.mid"])
    assert res.exit_code == 0, res.output
    pm = pretty_midi.PrettyMIDI(str(tmp_path / "dm.mid"))
    assert [k.key_number for k in pm.key_signature_changes] == [14]  # D minor
    xml = (tmp_path / "dm.musicxml").read_text()
    assert "<fifths>-1</fifths>" in xml and "<mode>minor</mode>" in xml


def test_the_key_token_is_the_key_asked():
    import musiclstm as ml
    from musiclstm.generation.compose import compose

    folk = ml.load("folk")
    _, ids = compose(folk, tokens=60, seed=1, key="D minor", return_ids=True)
    o = folk.tokenizer.vocab.offset["KEY"]
    assert [i - o for i in ids[0] if o <= i < o + 24] == [2 + 12]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_bach_sample_is_written_in_the_key_it_plays(seed):
    """The bundled bach model names one key and often plays another: the signature follows the notes (its own
    four voices here; harmonized, the chorale is written and closed in that same key: the ending test)."""
    import numpy as np

    import musiclstm as ml
    from musiclstm.generation.compose import compose
    from musiclstm.generation.finishing import _fifths
    from musiclstm.io.score import key_fit

    pm = compose(ml.load("bach"), seconds=8, seed=seed, harmonizer=False)
    w = np.zeros(12)
    for ins in pm.instruments:
        for n in ins.notes:
            w[n.pitch % 12] += n.end - n.start
    tonic, minor, _ = key_fit(w)
    k = pm.key_signature_changes[0].key_number
    assert _fifths(k % 12, k >= 12) == _fifths(tonic, minor)


# ---- 4. --num N is reproducible piece by piece ----------------------------------------------------

def test_each_piece_of_a_batch_has_its_own_seed_that_remakes_it(tmp_path):
    r = CliRunner()
    res = r.invoke(cli, ["compose", "--num", "3", "--tokens", "40", "-o", "b.mid"])
    assert res.exit_code == 0, res.output
    seeds = [json.loads((tmp_path / f"b-{k}.json").read_text())["options"]["seed"] for k in (1, 2, 3)]
    assert len(set(seeds)) == 3
    for s in seeds:
        assert f"seed {s})" in res.output  # each piece's line prints its own seed
    for k, s in enumerate(seeds, 1):
        again = r.invoke(cli, ["compose", "--seed", str(s), "--tokens", "40", "-o", f"again-{k}.mid"])
        assert again.exit_code == 0, again.output
        assert (tmp_path / f"again-{k}.mid").read_bytes() == (tmp_path / f"b-{k}.mid").read_bytes(), k


# ---- 8. advice that works -------------------------------------------------------------------------

def test_the_transpose_advice_is_taken_by_the_option(tmp_path):
    import re

    _melody(tmp_path / "high.mid", pitches=(98, 100, 102, 103, 105, 107, 105, 103, 102, 100, 98, 98))
    r = CliRunner()
    res = r.invoke(cli, ["harmonize", "high.mid", "--iterations", "1", "--seed", "1"])
    assert res.exit_code == 1 and "try --transpose" in res.output, res.output
    advice = re.search(r"--transpose (-?\d+)", res.output).group(1)
    res = r.invoke(cli, ["harmonize", "high.mid", "--iterations", "1", "--seed", "1", "--transpose", advice])
    assert res.exit_code == 0, res.output


def test_a_key_far_from_the_melody_gets_a_warning(tmp_path):
    d_major = (74, 76, 78, 79, 81, 79, 78, 76, 74, 73, 74, 76, 78, 76, 74, 74)
    _melody(tmp_path / "d.mid", pitches=d_major)
    r = CliRunner()
    far = r.invoke(cli, ["harmonize", "d.mid", "--key", "Eb minor", "--iterations", "1", "--seed", "1"])
    assert far.exit_code == 0, far.output
    assert "warning:" in far.output and "outside Eb minor" in far.output and "D major" in far.output
    near = r.invoke(cli, ["harmonize", "d.mid", "--key", "D major", "--iterations", "1", "--seed", "1",
                          "-o", "near.mid"])
    assert near.exit_code == 0 and "warning" not in near.output, near.output


# ---- 9. rough edges ---------------------------------------------------------------------------------

def test_info_speaks_in_words():
    r = CliRunner()
    harm = r.invoke(cli, ["info", "harmonizer"])
    assert harm.exit_code == 0 and "epoch 0.00" not in harm.output and "data None" not in harm.output, harm.output
    folk = r.invoke(cli, ["info", "folk"])
    assert folk.exit_code == 0 and "unrecorded precision" not in folk.output, folk.output
    assert '"time": "20' in folk.output and "UTC" in folk.output  # a date, not a unix timestamp


def test_resuming_is_said_off_a_terminal(tmp_path):
    from conftest import scale_corpus

    corpus = scale_corpus(tmp_path / "c", files=4)
    common = ["train", str(corpus), "--out", str(tmp_path / "run"), "--preset", "tiny", "--seq-len", "16",
              "--batch-size", "2", "--cache-dir", str(tmp_path / "cache"), "--jobs", "1"]
    r = CliRunner()
    first = r.invoke(cli, [*common, "--max-steps", "2"])
    assert first.exit_code == 0, first.output
    again = r.invoke(cli, [*common, "--max-steps", "3", "--resume"])
    assert again.exit_code == 0, again.output
    assert "resuming" in again.output and "at step 2" in again.output, again.output


def test_corpus_export_counts_its_skip_reasons_in_one_line(monkeypatch, tmp_path):
    from musiclstm.data import collections

    report = collections.ExportReport(written=[tmp_path / "a.mid"],
                                      skipped=[(f"p{i}", f"music21: bad measure {i}") for i in range(100)]
                                      + [("q", "worker process died"), ("r", "TimeoutError: 60 s")])
    monkeypatch.setattr(collections, "export", lambda *a, **k: report)
    res = CliRunner().invoke(cli, ["corpus", "export", "folk", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert res.output.count("\n") == 1, res.output  # no line per skipped piece
    assert "102 skipped" in res.output and "100 × music21: bad measure N" in res.output


def test_the_quick_start_outputs_are_ignored_by_git():
    import shutil
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    names = ["composition.mid", "composition.json", "composition-2.mid", "composition-2.json", "chorale.mid",
             "chorale.json", "chorale.wav", "chorale.png", "song.mid", "song.json", "mine.mid", "mine.json"]
    out = subprocess.run(["git", "check-ignore", *names], cwd=root, capture_output=True, text=True).stdout.split()
    assert sorted(out) == sorted(names)


def test_the_notebooks_temporary_folders_stay_under_the_tests_folder(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    from test_notebooks import _execute

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import tempfile\nwork = tempfile.mkdtemp(prefix='musiclstm-')\nQUICK = work")])
    assert _execute(nb, tmp_path).startswith(str(tmp_path))


# ---- 5. every README example runs ---------------------------------------------------------------

def _readme_commands() -> list[list[str]]:
    """The musiclstm command lines in README's code blocks, as argument lists after `musiclstm`."""
    import shlex
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text().replace("\\\n", " ")
    blocks, lang, lines = [], None, []
    for line in text.splitlines():  # fenced blocks: bash (or unnamed) ones hold command lines
        if line.startswith("```"):
            if lang is None:
                lang, lines = line[3:].strip(), []
            else:
                if lang in ("", "bash", "sh", "console"):
                    blocks.append(lines)
                lang = None
        elif lang is not None:
            lines.append(line)
    out = []
    for block in blocks:
        for line in block:
            code = line.split("#")[0].strip()
            if not code.startswith(("musiclstm", "torchrun", "python", "-m musiclstm")):
                continue  # a table or output shown in a block
            for part in code.split("&&"):
                words = shlex.split(part)
                if "musiclstm" in words and words[-1] != "...":
                    out.append(words[words.index("musiclstm") + 1:])
                elif "musiclstm" in words:  # `... train ...`: the command is checked by its --help
                    out.append(words[words.index("musiclstm") + 1:-1])
    return out


def _budgeted(args: list[str]) -> list[str]:
    """Fast commands run as written with a tiny budget; the others (training, downloads, a run that does
    not exist yet) by their --help, which still checks the command and every option named."""
    if args[0] == "compose" and "-c" not in args:
        return [*args, "--seconds", "2"]
    if args[:2] == ["corpus", "export"]:
        return [*args, "--limit", "2", "--jobs", "1"]
    depth = 2 if args[0] in ("corpus", "benchmark") else 1
    return [*args[:depth], "--help"]


def _options_exist(args: list[str]) -> None:
    """Every --option a README line names is an option of its command."""
    cmd = cli
    for word in args[:2 if args[0] in ("corpus", "benchmark") else 1]:
        cmd = cmd.commands[word]
    known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
    for a in args:
        if a.startswith("-") and not a.lstrip("-").isdigit():
            assert a.split("=")[0] in known, (args, a)


def test_readme_lists_commands():
    cmds = _readme_commands()
    assert len(cmds) >= 8 and ["compose"] in cmds


@pytest.mark.parametrize("args", _readme_commands(), ids=lambda a: " ".join(a)[:60])
def test_every_readme_example_runs(args, tmp_path):
    _options_exist(args)
    res = CliRunner().invoke(cli, _budgeted(args))
    assert res.exit_code == 0, (args, res.output)


def test_every_instruments_example_in_readme_is_known_to_a_bundled_model():
    import re
    from pathlib import Path

    import musiclstm as ml
    from musiclstm.generation.compose import check_instruments, parse_instruments

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    examples = set(re.findall(r"--instruments ([\w,]+)", text))
    assert examples
    models = [ml.load(n) for n in ("folk", "bach", "pop")]

    def known_somewhere(spec):
        programs, drums = parse_instruments(spec)
        for m in models:
            try:
                check_instruments(m, programs, drums)
                return True
            except Exception:
                pass
        return False

    assert [e for e in examples if not known_somewhere(e)] == []


# ---- 6. instruments that can play the part ----------------------------------------------------------

def test_one_instrument_for_four_chorale_voices_is_four_tracks(tmp_path):
    res = CliRunner().invoke(cli, ["compose", "--style", "bach", "--instruments", "violin", "--seed", "1",
                                   "--seconds", "8", "-o", "v.mid"])
    assert res.exit_code == 0, res.output
    pm = pretty_midi.PrettyMIDI(str(tmp_path / "v.mid"))
    assert len(pm.instruments) >= 3 and all(i.program == 40 for i in pm.instruments)
    assert any(i.name.startswith("Soprano") for i in pm.instruments)
    for ins in pm.instruments:  # a voice on each: no violin plays a chord of the whole choir
        events = sorted([(n.end, -1) for n in ins.notes] + [(n.start, 1) for n in ins.notes])
        most = max(__import__("itertools").accumulate(d for _, d in events))
        assert most <= 2, (ins.name, most)


# ---- 7. endings that close ----------------------------------------------------------------------------

@pytest.mark.parametrize("name, seed", [("bach", 0), ("bach", 1), ("folk", 0), ("folk", 1)])
def test_a_composed_piece_ends_on_the_tonic(name, seed):
    """The last bar is steered to the tonic triad, its bass to the tonic: evaluate's 'ends on tonic'."""
    import musiclstm as ml
    from musiclstm.evaluation.music import ending
    from musiclstm.generation.compose import compose
    from musiclstm.io.midi import read

    piece = read(compose(ml.load(name), seconds=8, seed=seed))
    if name == "folk":  # the notes' own key (Krumhansl-Schmuckler), as evaluate reads it
        assert ending(piece)["last_bass_on_tonic"] == 1.0
    else:  # a chorale closes in the key it was harmonized in, written as its key signature (4 bars may read otherwise)
        tonic = int(piece.key_signatures[0, 1])
        bass = piece.select(piece.track == 3)
        assert bass.pitch[bass.start == bass.start.max()] % 12 == tonic


@pytest.mark.parametrize("seed", [0, 1])
def test_a_pop_piece_has_no_counter_melody_before_its_melody(seed):
    """compose on a remi 4 model with track roles: the counter-melody (POP909's BRIDGE) enters only after the melody."""
    import musiclstm as ml
    from musiclstm.generation.compose import compose
    from musiclstm.io.midi import read

    piece = read(compose(ml.load("pop"), seconds=20, seed=seed))
    first = {t.name: float(piece.start[piece.track == k].min()) for k, t in enumerate(piece.tracks)
             if (piece.track == k).any()}
    assert "Melody" in first and "Accompaniment" in first
    assert first.get("Counter-melody", float("inf")) >= first["Melody"]
