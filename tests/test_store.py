"""The token store: a prepared corpus on disk, read through a memory map; warm runs; sharded preparation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import torch

import musiclstm as ml
from musiclstm import data
from musiclstm.data import tokenizing as prepare_mod  # the per-file step and the cache
from musiclstm.data.windows import PieceWindows, Windows
from musiclstm.encodings.tokenizer import BOS, EOS, PAD


def _write(folder: Path, n: int, start: int = 0) -> list[Path]:
    """`n` distinct little tunes as MIDI files, built here."""
    paths = []
    for i in range(start, start + n):
        rng = np.random.default_rng(i)
        pm = pretty_midi.PrettyMIDI(initial_tempo=100)
        inst = pretty_midi.Instrument(0)
        for j, p in enumerate(60 + rng.choice([0, 2, 4, 5, 7, 9, 11], 12 + i % 7)):
            inst.notes.append(pretty_midi.Note(80, int(p), j * 0.3, j * 0.3 + 0.25))
        pm.instruments.append(inst)
        paths.append(folder / f"{i:03d}.mid")
        pm.write(str(paths[-1]))
    return paths


@pytest.fixture
def corpus(tmp_path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    _write(folder, 10)
    (folder / "bad.mid").write_text("not a MIDI file")
    return folder


def _prepare(folder: Path, cache: Path, **kw) -> data.Corpus:
    kw = {"val_fraction": 0.3, **kw}
    return data.prepare([folder], ml.Tokenizer("remi"), jobs=1, cache_dir=cache, progress=False, **kw)


def test_a_prepared_corpus_is_read_from_its_store_through_a_memory_map(corpus, tmp_path):
    tok = ml.Tokenizer("remi")
    c = _prepare(corpus, tmp_path / "cache")
    train, valid = c.sequences("train"), c.sequences("valid")
    assert isinstance(train.tokens, np.memmap) and train.tokens.dtype == np.uint16  # remi's vocabulary fits
    assert len(train) == len(c.split("train")) and len(valid) == len(c.split("valid")) >= 1
    assert len(train) + len(valid) == 10
    assert c.skipped == [(str(corpus / "bad.mid"), "not a MIDI file (no MThd header)")]
    for split, seqs in (("train", train), ("valid", valid)):
        for p, seq in zip(c.split(split), seqs, strict=True):
            assert seq[0] == BOS and seq[-1] == EOS and np.array_equal(seq, data.sequence(p, tok))
            assert np.shares_memory(p.ids, seqs.tokens)  # a piece's ids view the store, no copy
            assert np.array_equal(p.ids, tok.encode_array(p.path, bos=False, eos=False))
    # the stream (tbptt, random) is the split's pieces laid end to end, as data.stream lays them in memory
    assert np.array_equal(train.tokens, data.stream(c.split("train"), tok).numpy())
    assert c.to_json()["tokens"] == sum(len(p.ids) for p in c.pieces)


def test_a_warm_run_reads_no_file_and_new_files_alone_are_tokenized(corpus, tmp_path, monkeypatch):
    first = _prepare(corpus, tmp_path / "cache")
    assert first.tokenized == 11  # the unreadable file too: its reason is cached by content
    read, tokenize = [], prepare_mod._tokenize

    def spy(path, *args, **kw):
        read.append(Path(path).name)
        return tokenize(path, *args, **kw)

    monkeypatch.setattr(prepare_mod, "_tokenize", spy)
    again = _prepare(corpus, tmp_path / "cache")
    assert read == [] and again.tokenized == 0 and again.store.folder == first.store.folder
    assert again.fingerprint == first.fingerprint and again.skipped == first.skipped
    new = _write(corpus, 2, start=50)
    grown = _prepare(corpus, tmp_path / "cache")
    assert sorted(read) == [p.name for p in new] and grown.tokenized == 2  # the others' hashes were remembered
    assert grown.store.folder != first.store.folder and len(grown.pieces) == len(first.pieces) + 2
    old = {p.sha: p.ids for p in first.pieces}
    assert all(np.array_equal(p.ids, old[p.sha]) for p in grown.pieces if p.sha in old)
    read.clear()
    other = _prepare(corpus, tmp_path / "cache", val_fraction=0.5)  # another split: a new store, no file read
    assert read == [] and other.tokenized == 0 and other.store.folder != grown.store.folder


def test_a_pack_holds_many_entries_and_its_index_finds_each(tmp_path):
    from musiclstm.data import packs

    shas = ["00" * 20, "ab" * 19 + "00", "12" * 20]  # raw digests may end in NUL bytes
    entries = [packs.Entry(np.arange(5), 1.5, True), packs.Entry(np.zeros(0), error="no notes"),
               packs.Entry(np.array([3, 700, 65535]), 2.0)]
    where = packs.write_pack(tmp_path, list(zip(shas, entries, strict=True)), np.dtype(np.uint16))
    assert packs.read_index(tmp_path) == where and len({w[0] for w in where.values()}) == 1  # one file
    reader = packs.EntryReader()
    for sha, e in zip(shas, entries, strict=True):
        got = reader.read(where[sha])
        assert np.array_equal(got.ids, e.ids) and (got.seconds, got.repaired, got.error) == (e.seconds, e.repaired,
                                                                                            e.error)
        assert reader.read(where[sha], ids=False).error == e.error
    reader.close()


def _reference_windows(seqs, batch, length, rank, world, seed, shuffle, epoch):
    """PieceWindows as it was with every window in memory (int64): the batches it dealt, for comparison."""
    xs, ys, first = [], [], []
    for seq in seqs:
        n = len(seq) - 1
        w = max(1, -(-n // length))
        x, y = np.full(w * length, PAD, np.int64), np.full(w * length, PAD, np.int64)
        x[:n], y[:n] = seq[:-1], seq[1:]
        xs.append(x.reshape(w, length))
        ys.append(y.reshape(w, length))
        first += [True] + [False] * (w - 1)
    x, y = np.concatenate(xs + [np.full((1, length), PAD)]), np.concatenate(ys + [np.full((1, length), PAD)])
    first = np.array(first + [True])
    starts = np.r_[0, np.cumsum([len(a) for a in xs])]
    sizes = np.diff(starts)
    per_epoch = int(-(-sizes.sum() // (batch * world)) + sizes.max())
    lanes = batch * world
    order = np.random.default_rng([seed, epoch]).permutation(len(seqs)) if shuffle else np.arange(len(seqs))
    rows, filled = [[] for _ in range(lanes)], np.zeros(lanes, np.int64)
    for k in order:
        lane = int(np.argmin(filled))
        rows[lane].extend(range(starts[k], starts[k + 1]))
        filled[lane] += starts[k + 1] - starts[k]
    out = np.full((lanes, per_epoch), len(x) - 1)
    for lane, r in enumerate(rows):
        out[lane, : len(r)] = r
    out = out[rank * batch:(rank + 1) * batch]
    return per_epoch, [(x[out[:, i]], y[out[:, i]], first[out[:, i]]) for i in range(per_epoch)]


@pytest.mark.parametrize("rank,world,shuffle", [(0, 1, True), (1, 2, True), (0, 3, False)])
def test_piece_windows_from_a_memory_map_deal_what_the_in_memory_windows_dealt(tmp_path, rank, world, shuffle):
    rng = np.random.default_rng(7)
    seqs = [np.r_[BOS, rng.integers(3, 500, int(n)), EOS] for n in rng.integers(0, 60, 23)]
    flat = data.Sequences.of(seqs)
    mm = np.memmap(tmp_path / "train.bin", np.uint16, mode="w+", shape=flat.tokens.shape)
    mm[:] = flat.tokens
    mm.flush()
    on_disk = data.Sequences(np.memmap(tmp_path / "train.bin", np.uint16, mode="r"), flat.starts)
    for source in (seqs, on_disk):
        win = PieceWindows(source, 3, 8, rank=rank, world=world, seed=5, shuffle=shuffle)
        for epoch in (0, 1):
            per_epoch, want = _reference_windows(seqs, 3, 8, rank, world, 5, shuffle, epoch)
            assert win.batches_per_epoch == per_epoch
            for i, (x, y, reset) in enumerate(want):
                got = win.get(i, epoch=epoch)
                assert got[0].dtype == torch.int64
                assert np.array_equal(got[0], x) and np.array_equal(got[1], y) and np.array_equal(got[2], reset)


@pytest.mark.parametrize("mode", ["tbptt", "random"])
def test_stream_windows_read_a_memory_map_as_they_read_a_tensor(tmp_path, mode):
    ids = np.random.default_rng(3).integers(0, 600, 5000).astype(np.uint16)
    ids.tofile(tmp_path / "s.bin")
    mm = np.memmap(tmp_path / "s.bin", np.uint16, mode="r")
    a = Windows(torch.from_numpy(ids.astype(np.int64)), 4, 32, mode, rank=1, world=2)
    b = Windows(mm, 4, 32, mode, rank=1, world=2)
    ga, gb = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert a.batches_per_epoch == b.batches_per_epoch
    for i in range(a.batches_per_epoch):
        for u, v in zip(a.get(i, ga), b.get(i, gb), strict=True):
            assert u.dtype == v.dtype and torch.equal(u, v)


RANK_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from musiclstm import data
    from musiclstm.encodings.tokenizer import Tokenizer
    c = data.prepare([Path(sys.argv[1])], Tokenizer("remi"), val_fraction=float(sys.argv[3]), jobs=1,
                     cache_dir=Path(sys.argv[2]), progress=False)  # RANK, WORLD_SIZE from the environment (torchrun)
    print(json.dumps({"tokenized": c.tokenized, "store": str(c.store.folder), "fingerprint": c.fingerprint,
                      "pieces": [p.name for p in c.pieces], "train": c.sequences("train").tokens.tolist()}))
""")


def _two_ranks(corpus: Path, cache: Path, val_fraction: float) -> list[dict]:
    procs = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(corpus), str(cache), str(val_fraction)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "RANK": str(r), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
                                   "MUSICLSTM_PREPARE_TIMEOUT": "120"})
             for r in range(2)]  # started together: they prepare at the same time
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return outs


def test_two_ranks_share_the_tokenizing_and_open_one_store(corpus, tmp_path):
    cache = tmp_path / "cache"
    outs = _two_ranks(corpus, cache, 0.3)
    files = len(list(corpus.iterdir()))
    cached = prepare_mod._Cache(cache, ml.Tokenizer("remi").to_dict()).load().index[False]
    # each rank tokenized its share (every other file), none twice, and both read the one store rank 0 wrote
    assert [o["tokenized"] for o in outs] == [6, 5] and len(cached) == files
    assert outs[0]["store"] == outs[1]["store"] and outs[0]["fingerprint"] == outs[1]["fingerprint"]
    assert outs[0]["pieces"] == outs[1]["pieces"] and outs[0]["train"] == outs[1]["train"]
    alone = _prepare(corpus, cache, rank=0, world=1)  # the same corpus in one process: that very store
    assert str(alone.store.folder) == outs[0]["store"] and alone.tokenized == 0
    assert not list((alone.store.folder.parent).glob(".prep-*"))  # the ranks' exchange is cleared away
    again = _two_ranks(corpus, cache, 0.5)  # another split: a new store from the cache, nothing to tokenize
    assert [o["tokenized"] for o in again] == [0, 0] and again[0]["store"] == again[1]["store"] != outs[0]["store"]


def test_train_prepares_into_the_cache_dir_it_is_given(corpus, tmp_path):
    from click.testing import CliRunner

    from musiclstm.app.cli import cli

    args = ["train", str(corpus), "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "shared"),
            "--preset", "tiny", "--hidden", "16", "--embed", "8", "--layers", "1", "--seq-len", "16",
            "--batch-size", "2", "--max-steps", "2", "--jobs", "1", "--threads", "1", "-q"]
    res = CliRunner().invoke(cli, args, env={"MUSICLSTM_CACHE": str(tmp_path / "elsewhere")})
    assert res.exit_code == 0, res.output
    stores = list((tmp_path / "shared").glob("*/stores/*/train.bin"))
    assert len(stores) == 1 and not (tmp_path / "elsewhere").exists()
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report["files"] == 10
    assert report["skipped"] == [[str(corpus / "bad.mid"), "not a MIDI file (no MThd header)"]]


# ---- a damaged, pruned or abandoned store (issue: reliability, item 2) ---------------------------------------

def _store_dir(c: data.Corpus) -> Path:
    return Path(c.store.folder)


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_damaged_store_is_rebuilt_at_once_with_one_line(corpus, tmp_path, monkeypatch, capsys, damage):
    first = _prepare(corpus, tmp_path / "cache")
    folder, train = _store_dir(first), first.sequences("train")[0]
    del first
    index = folder / "index.npz"
    if damage == "missing":
        index.unlink()
    else:
        index.write_bytes(index.read_bytes()[:100])
    monkeypatch.setenv("MUSICLSTM_PREPARE_TIMEOUT", "0")  # any wait for a store that never comes fails at once
    again = _prepare(corpus, tmp_path / "cache")
    assert np.array_equal(again.sequences("train")[0], train)
    err = capsys.readouterr().err
    assert err.count("was damaged; rebuilt it") == 1, err


def _age(folder: Path, seconds: float) -> None:
    t = os.path.getmtime(folder / "meta.json") - seconds
    os.utime(folder / "meta.json", (t, t))


def test_a_store_in_use_is_never_pruned_an_idle_one_is_and_abandoned_temporaries_go(corpus, tmp_path):
    running = _prepare(corpus, tmp_path / "cache")  # a training holding its store open (a lease)
    in_use = _store_dir(running)
    _write(corpus, 2, start=50)
    idle = _store_dir(_prepare(corpus, tmp_path / "cache"))
    abandoned = in_use.parent / f".{'0' * 24}.999999999.tmp"  # an interrupted preparation (no such process)
    abandoned.mkdir()
    (abandoned / "train.bin").write_bytes(b"\0" * 64)
    for f in (abandoned / "train.bin", abandoned):
        os.utime(f, (0, 0))
    _age(in_use, 3 * 86400)
    _age(idle, 3 * 86400)
    _write(corpus, 1, start=60)  # the corpus gains a file again: the third preparation prunes
    _prepare(corpus, tmp_path / "cache")
    assert in_use.is_dir() and len(running.sequences("train")[0]) > 2  # the run's next batch still reads
    assert not idle.exists()
    assert not abandoned.exists()


def test_packs_no_store_needs_are_collected_after_a_day(corpus, tmp_path):
    from musiclstm.data import packs as pk
    from musiclstm.data import store as st

    c = _prepare(corpus, tmp_path / "cache")
    stores = _store_dir(c).parent
    packs = stores.parent / "packs"
    orphan = pk.write_pack(packs, [("ab" * 20, pk.Entry(np.arange(5)))], np.dtype(np.uint16))["ab" * 20][0]
    kept = sorted(packs.glob("*.idx"))
    for f in packs.iterdir():
        os.utime(f, (0, 0))
    st.prune(stores, _store_dir(c).name, [])
    assert not Path(orphan).exists() and not Path(orphan).with_suffix(".idx").exists()
    assert len(list(packs.glob("*.idx"))) == len(kept) - 1  # the packs the store's pieces came from stay


def test_preparation_workers_are_not_forked_from_a_process_running_torch(tmp_path, monkeypatch):
    folder = tmp_path / "many"
    folder.mkdir()
    _write(folder, 70)  # enough for the worker pool
    seen, real = [], prepare_mod.ProcessPoolExecutor

    def spy(*args, **kw):
        seen.append(kw.get("mp_context"))
        return real(*args, **kw)

    monkeypatch.setattr(prepare_mod, "ProcessPoolExecutor", spy)
    c = data.prepare([folder], ml.Tokenizer("remi"), jobs=2, cache_dir=tmp_path / "cache", progress=False)
    assert len(c.pieces) == 70
    assert seen and seen[0] is not None and seen[0].get_start_method() in ("forkserver", "spawn")


def test_preparation_never_reads_more_of_a_file_than_the_cap(corpus, tmp_path, monkeypatch):
    from musiclstm.io import midi

    monkeypatch.setattr(midi, "MAX_FILE_BYTES", 4096)  # the cap, made small: a 64 MB file would do the same
    big = corpus / "big.mid"
    big.write_bytes((corpus / "000.mid").read_bytes() + b"\0" * 10_000)
    reads, real_open = [], open

    class Spy:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def read(self, n=-1):
            data = self.fh.read(n)
            reads.append(len(data))
            return data

    monkeypatch.setattr(prepare_mod, "open", lambda p, mode="r", *a, **k: Spy(real_open(p, mode, *a, **k)),
                        raising=False)
    c = _prepare(corpus, tmp_path / "cache")
    assert (str(big), "file is 0 MB (limit 0 MB)") in c.skipped
    assert max(reads) <= 4097
    with pytest.raises(ml.MidiReadError, match="limit"):
        midi.read(big.read_bytes())  # bytes are capped as paths are


HOLDER = """
import sys, time
from pathlib import Path
import musiclstm as ml
from musiclstm import data
c = data.prepare([Path(sys.argv[1])], ml.Tokenizer("remi"), val_fraction=0.3, jobs=1, cache_dir=Path(sys.argv[2]),
                 progress=False)
print(c.store.folder, flush=True)
while not Path(sys.argv[3]).exists():  # a training reading its store, until told to read its next batch
    time.sleep(0.05)
print(len(c.sequences("train")[0]), flush=True)
"""


def test_a_store_another_process_is_reading_is_not_pruned(corpus, tmp_path):
    go = tmp_path / "go"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(corpus), str(tmp_path / "cache"), str(go)],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        folder = Path(proc.stdout.readline().strip())
        assert folder.is_dir()
        _age(folder, 3 * 86400)  # not opened for three days, as far as the clock on meta.json says
        _write(corpus, 1, start=70)  # the corpus gains a file: preparing it again prunes stores of these folders
        _prepare(corpus, tmp_path / "cache")
        assert folder.is_dir()
        go.touch()
        assert int(proc.stdout.readline()) > 2  # its next batch reads
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    _write(corpus, 1, start=80)
    _prepare(corpus, tmp_path / "cache")  # the reader has gone: now it is pruned
    assert not folder.exists()
