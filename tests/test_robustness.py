"""Robustness promises: fuzzed files, dirty corpora, crash-safe training, safe loading, clear errors."""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_train_compose import TINY, _tune

import musiclstm as ml
from musiclstm.app.cli import cli
from musiclstm.models import checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _fuzz_module():
    spec = importlib.util.spec_from_file_location("fuzz", ROOT / "bench" / "fuzz.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fuzz_slice_reads_or_skips_every_file(data_dir, tmp_path):
    """A CI slice of bench/fuzz.py: the edge files and 80 mutated real files (seeded)."""
    fuzz = _fuzz_module()
    files = fuzz.make_files(data_dir, tmp_path / "fuzz", 80, seed=11)
    assert {k for _, k in files} == {"edge", *fuzz.MUTATIONS}
    s = fuzz.run(files, timeout=10)
    assert s["files"] == len(files)
    assert not s["bad"], s["bad"][:5]
    skipped = [r for r in s["results"] if r["status"] == "skipped"]
    assert skipped and all(r["reason"] and "\n" not in r["reason"] for r in skipped)
    assert s["peak_rss_mb"] < 1024


def test_nothing_is_left_behind_in_the_users_cache_or_the_temporary_folder(tmp_path, monkeypatch):
    import tempfile

    from musiclstm.data.corpus import default_cache_dir

    assert not default_cache_dir().is_relative_to(Path.home() / ".cache")  # tests train into the session's cache
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    _fuzz_module().run([])  # the fuzz bench's cache folder goes when it is done
    assert not list(tmp_path.glob("fuzzcache-*"))


def test_mutation_is_seeded(data_dir, tmp_path):
    fuzz = _fuzz_module()
    a = fuzz.make_files(data_dir, tmp_path / "a", 16, seed=5)
    b = fuzz.make_files(data_dir, tmp_path / "b", 16, seed=5)
    assert [p.read_bytes() for p, k in a if k != "edge"] == [p.read_bytes() for p, k in b if k != "edge"]


@pytest.fixture()
def dirty(tmp_path) -> Path:
    root = tmp_path / "dirty"
    root.mkdir()
    for i in range(8):
        _tune(root / f"good{i}.mid", i)
    (root / "truncated.mid").write_bytes((root / "good0.mid").read_bytes()[:40])
    (root / "text.mid").write_text("not music at all")
    (root / "empty.mid").write_bytes(b"")
    (root / "notes.txt").write_text("ignored: not a music file")
    return root


def test_dirty_corpus_trains_on_the_good_files_and_reports_the_rest(dirty, tmp_path):
    out = tmp_path / "run"
    ml.train(dirty, out, cache_dir=tmp_path / "cache", **TINY)
    report = json.loads((out / "data_report.json").read_text())
    assert report["files"] == 8
    reasons = {Path(f).name: why for f, why in report["skipped"]}
    assert set(reasons) == {"truncated.mid", "text.mid", "empty.mid"}
    assert all(r and "\n" not in r for r in reasons.values())


def test_folder_without_readable_music_is_one_line(dirty, tmp_path):
    for f in dirty.glob("good*.mid"):
        f.unlink()
    res = CliRunner().invoke(cli, ["train", str(dirty), "--out", str(tmp_path / "r"), "-q"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output


# ---- crash safety ---------------------------------------------------------------------------
KILLER = r'''
import io, os, signal, sys, torch
from pathlib import Path
import musiclstm as ml
mode, nth, corpus, out, cache = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
saves = {"n": 0}
real_save, real_replace = torch.save, os.replace

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def save(obj, fh, *a, **k):  # checkpoint.save writes its temporary file through here
    if "last.pt" in str(getattr(fh, "name", "")):
        saves["n"] += 1
        if saves["n"] == nth and mode == "during_write":
            buf = io.BytesIO(); real_save(obj, buf); fh.write(buf.getvalue()[: len(buf.getvalue()) // 2]); fh.flush()
            die()
    return real_save(obj, fh, *a, **k)

def replace(src, dst):
    if str(dst).endswith("last.pt") and saves["n"] == nth and mode == "before_rename":
        die()
    real_replace(src, dst)
    if str(dst).endswith("last.pt") and saves["n"] == nth and mode == "after_rename":
        die()

torch.save, os.replace = save, replace
ml.train(corpus, out, cache_dir=cache, preset="tiny", embed=16, hidden=32, layers=1, seq_len=32, batch_size=4,
         max_steps=8, eval_every=2, sample_tokens=0, jobs=1, progress=False)
'''


@pytest.mark.parametrize("mode,nth,survivor", [
    ("during_write", 1, None),  # killed while writing the first checkpoint: nothing to resume, nothing broken
    ("during_write", 2, 2),  # half a file written at step 4: last.pt is still step 2's
    ("before_rename", 3, 4),  # whole temporary file written, killed before the rename: step 4's stands
    ("after_rename", 2, 4),  # killed right after the rename: step 4's is in place
])
def test_sigkill_at_any_point_leaves_a_loadable_checkpoint(mode, nth, survivor, tmp_path):
    corpus = tmp_path / "c"
    corpus.mkdir()
    for i in range(6):
        _tune(corpus / f"{i}.mid", i)
    out, cache = tmp_path / "run", tmp_path / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", KILLER, mode, str(nth), str(corpus), str(out), str(cache)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    last = out / "last.pt"
    if survivor is None:
        assert not last.exists()
        with pytest.raises(ml.MusiclstmError, match="nothing to resume"):
            ml.train(corpus, out, resume=True, cache_dir=cache, progress=False)
        return
    assert checkpoint.read(last)["meta"]["step"] == survivor  # loads; at most one interval (2 steps) lost
    ml.load(last)
    ml.train(corpus, out, resume=True, cache_dir=cache, progress=False)
    assert checkpoint.read(last)["meta"]["step"] == 8
    assert not list(out.glob(".*.tmp")), "stale temporary files are cleaned up on resume"


def test_sigint_saves_and_exits_with_a_message(tmp_path):
    corpus = tmp_path / "c"
    corpus.mkdir()
    for i in range(6):
        _tune(corpus / f"{i}.mid", i)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUSICLSTM_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "musiclstm", "train", str(corpus), "--out", str(out), "--preset", "tiny",
           "--hidden", "32", "--embed", "16", "--layers", "1", "--seq-len", "32", "--batch-size", "4",
           "--max-steps", "100000", "--eval-every", "5", "--jobs", "1", "-q"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while not (out / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted: saved" in err and "--resume" in err and "Traceback" not in err
    step = checkpoint.read(out / "last.pt")["meta"]["step"]
    assert step >= 5
    ml.train(corpus, out, resume=True, max_steps=step + 2, cache_dir=tmp_path / "cache", progress=False)
    assert checkpoint.read(out / "last.pt")["meta"]["step"] == step + 2


# ---- safe and clear loading ------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ck")
    for i in range(6):
        _tune(root / f"{i}.mid", i)
    return ml.train(root, root / "run", cache_dir=root / "cache", **{**TINY, "max_steps": 2})


def test_incompatible_checkpoints_name_the_problem(tiny_ckpt, tmp_path):
    blob = torch.load(tiny_ckpt, weights_only=True)
    future = {**blob, "version": 99}
    torch.save(future, tmp_path / "future.pt")
    with pytest.raises(ml.CheckpointError, match="version 99"):
        ml.load(tmp_path / "future.pt")
    meta = json.loads(blob["meta"])
    meta["tokenizer"] = ml.Tokenizer("grid").to_dict()  # another tokenizer than the weights were trained with
    torch.save({**blob, "meta": json.dumps(meta)}, tmp_path / "other_tok.pt")
    with pytest.raises(ml.CheckpointError, match="vocabulary|does not match"):
        ml.load(tmp_path / "other_tok.pt")
    torch.save({**blob, "meta": "{not json"}, tmp_path / "bad_meta.pt")
    with pytest.raises(ml.CheckpointError, match="damaged metadata"):
        ml.load(tmp_path / "bad_meta.pt")


# ---- the command line's error table ------------------------------------------------------------
def _errors(tmp_path: Path, ckpt: Path) -> list[tuple[list[str], str]]:
    (tmp_path / "empty").mkdir(exist_ok=True)
    nomusic = tmp_path / "nomusic"
    nomusic.mkdir(exist_ok=True)
    (nomusic / "readme.txt").write_text("hi")
    (tmp_path / "bad.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    (tmp_path / "exists.mid").write_bytes(b"x")
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "notes.json").write_text("{}")
    c = ["compose", "-c", str(ckpt), "--seconds", "2"]
    return [
        (["train", str(tmp_path / "missing"), "--out", str(tmp_path / "r")], "does not exist"),
        (["train", str(tmp_path / "empty"), "--out", str(tmp_path / "r")], "no music files"),
        (["train", str(nomusic), "--out", str(tmp_path / "r")], "no music files"),
        ([*c, "--prime", str(tmp_path / "bad.mid")], "bad.mid"),
        ([*c, "--temperature", "-1"], "temperature"),
        ([*c, "--top-p", "0"], "top-p"),
        ([*c, "--top-p", "1.5"], "top-p"),
        ([*c, "--style", "nosuchstyle"], "nosuchstyle"),
        ([*c, "--instruments", "kazoo-orchestra"], "kazoo-orchestra"),
        ([*c, "--key", "H major"], "H major"),
        ([*c, "-o", str(tmp_path / "exists.mid")], "--force"),
        ([*c, "-o", str(tmp_path / "a_file" / "out.mid")], "cannot write"),
        (["compose", "-c", str(tmp_path / "notes.json")], "not a readable checkpoint"),
        (["info", str(tmp_path / "bad.mid")], "not a readable checkpoint"),
        (["evaluate", str(ckpt), str(tmp_path / "empty")], "no music files"),
        (["gates", str(ckpt), str(tmp_path / "bad.mid"), "-o", str(tmp_path / "g.png")], "bad.mid"),
    ]


def test_every_bad_input_is_one_line_and_a_nonzero_exit(tiny_ckpt, tmp_path):
    for args, message in _errors(tmp_path, tiny_ckpt):
        res = CliRunner().invoke(cli, args)
        assert res.exit_code not in (0, None), (args, res.output)
        assert message in res.output, (args, res.output)
        assert "Traceback" not in res.output, (args, res.output)
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert len(lines) <= 3, (args, res.output)  # click usage errors add a usage line and a hint


def test_full_disk_and_permission_errors_are_reported(tiny_ckpt, tmp_path, monkeypatch):
    real = Path.write_bytes

    def full(self, data):
        if self.name.endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    res = CliRunner().invoke(cli, ["compose", "-c", str(tiny_ckpt), "--seconds", "2", "-o", str(tmp_path / "o.mid")])
    assert res.exit_code == 1 and "No space left on device" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o.mid").exists() and not list(tmp_path.glob(".*.tmp"))
    monkeypatch.undo()

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(checkpoint.torch, "save", denied)
    with pytest.raises(ml.CheckpointError, match="Permission denied"):
        checkpoint.save(tmp_path / "x.pt", ml.load(tiny_ckpt).net, ml.load(tiny_ckpt).tokenizer, {})
    assert not (tmp_path / "x.pt").exists() and not list(tmp_path.glob(".*.tmp"))
