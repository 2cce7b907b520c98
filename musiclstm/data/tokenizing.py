"""Tokenizing a corpus once: each file read and encoded in worker processes into the content-keyed cache.

A piece's cache entry is keyed by its content (sha1; an ABC book's tune by content and number) and the
tokenizer config, so a file moved or re-exported is not tokenized again, and a file that does not
parse is cached with its reason. `preparation` lays the entries out in a token store.
May import: errors, io, encodings, data (packs, store). Not: models, training, generation, evaluation, app.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ..encodings.tokenizer import Tokenizer
from ..encodings.traits import meter_repaired
from ..errors import MidiReadError
from ..io.midi import NOTATION_SUFFIXES, abc_tunes
from . import packs as pk
from . import store as st

ENCODERS_VERSION = 3  # bump when an encoder's output changes for the same config: old cache entries are ignored


NOTATION_VERSION = 2  # the same for midi.read's music21 path (MusicXML, ABC, Humdrum files only)


def _tunes(path: str) -> list[int | None]:
    """The pieces of a file: [None] (the whole file), or each tune's number for an ABC file with several."""
    if not path.lower().endswith(".abc"):
        return [None]
    try:
        tunes = abc_tunes(Path(path).read_text(encoding="latin-1"))
    except OSError:
        return [None]  # tokenizing reports it
    return tunes if len(tunes) > 1 else [None]


def _tok_key(tok_dict: dict, notation: bool = False) -> str:
    """The cache folder of a tokenizer config and reader version: entries made under another are never read."""
    key = json.dumps(tok_dict, sort_keys=True) + f"/encoders-v{ENCODERS_VERSION}"
    if notation:
        key += f"/notation-v{NOTATION_VERSION}"
    return hashlib.sha1(key.encode()).hexdigest()[:12]


class _Cache:
    """One tokenizer's entries in a cache folder: packs for MIDI files and for notation files (whose reader
    has its own version), and the index of what they hold, {sha: (pack, offset, length)}."""

    def __init__(self, cache_dir, tok_dict: dict):
        self.dir, self.tok_dict = str(cache_dir), tok_dict
        self.folders = {n: os.path.join(self.dir, _tok_key(tok_dict, n), "packs") for n in (False, True)}
        self.index: dict[bool, dict] = {False: {}, True: {}}
        self.reader = pk.EntryReader()
        self.dtype = st.token_dtype(_tokenizer(tok_dict).vocab_size)

    def load(self) -> _Cache:
        self.index = {n: pk.read_index(f) for n, f in self.folders.items()}
        return self

    def has(self, path: str, sha: str) -> bool:
        return sha in self.index[_notation(path)]

    def read(self, path: str, sha: str, *, ids: bool = True) -> pk.Entry | None:
        where = self.index[_notation(path)].get(sha)
        return self.reader.read(where, ids=ids) if where else None

    def write(self, made: list[tuple[str, str, pk.Entry]]) -> dict[tuple[bool, str], tuple]:
        """Pack new entries [(path, sha, Entry)]; returns and indexes {(notation, sha): (pack, offset, length)}."""
        out = {}
        for n in (False, True):
            entries = list({sha: e for path, sha, e in made if _notation(path) == n}.items())
            if entries:
                where = pk.write_pack(self.folders[n], entries, self.dtype)
                self.index[n].update(where)
                out.update({(n, sha): w for sha, w in where.items()})
        return out


def _notation(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in NOTATION_SUFFIXES


_tokenizers: dict[str, Tokenizer] = {}


def _tokenizer(tok_dict: dict) -> Tokenizer:
    """One Tokenizer per config and process: a worker builds it once, not once per file."""
    key = json.dumps(tok_dict, sort_keys=True)
    if key not in _tokenizers:
        _tokenizers[key] = Tokenizer.from_dict(tok_dict)
    return _tokenizers[key]


def _tokenize(path: str, tune: int | None, tok_dict: dict, known=()) -> tuple[str, str | None, pk.Entry | None]:
    """Worker: one piece -> (sha, None, its entry), or (sha, None, None) when `known` holds the sha (the
    content is in the cache already), or ("", reason, None) when the file cannot be read. A tune of an ABC
    book has the sha of the file's content and its number, so it is cached (and split) alone. A file that
    does not parse gets an entry with the reason: parsing is deterministic for a content and reader version."""
    from ..io.midi import MAX_FILE_BYTES

    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)  # never a whole huge file in memory
    except OSError as e:
        return "", f"cannot read: {e.strerror or e}", None
    if len(data) > MAX_FILE_BYTES:
        size = os.path.getsize(path)
        return "", f"file is {size / 2**20:.0f} MB (limit {MAX_FILE_BYTES // 2**20} MB)", None
    sha = hashlib.sha1(data if tune is None else data + f"\0X:{tune}".encode()).hexdigest()
    if sha in known:
        return sha, None, None
    return sha, None, _encode(path, data, tune, _tokenizer(tok_dict))


def _encode(path: str, data: bytes, tune: int | None, tok: Tokenizer) -> pk.Entry:
    """A file's bytes (a notation file is read from `path`) -> its cache entry: ids, or the reason it failed."""
    from ..io import midi

    none = np.zeros(0, np.int64)
    try:
        score = midi.read(path if _notation(path) else data, name=path if tune is None else f"{path}#X:{tune}",
                          tune=tune)
        if len(score) == 0:
            return pk.Entry(none, error="no notes")
        ids = tok.codec.encode(score, tok.vocab)
    except MidiReadError as e:
        return pk.Entry(none, error=e.reason)
    if len(ids) == 0:
        return pk.Entry(none, error=f"no notes the {tok.encoding} encoding keeps")
    repaired = meter_repaired(tok, score)
    return pk.Entry(ids, score.duration_seconds, repaired)


_known: dict[bool, set[str]] = {False: set(), True: set()}  # a worker's copy of the cache's shas


def _set_known(midi_shas: bytes, notation_shas: bytes) -> None:
    """Worker initializer: the shas already cached (20 bytes each), so that their files are not tokenized."""
    for n, blob in ((False, midi_shas), (True, notation_shas)):
        _known[n] = {blob[i:i + 20].hex() for i in range(0, len(blob), 20)}


def _tokenize_chunk(args: tuple[dict, str, list]) -> list[tuple]:
    """Worker: (tokenizer dict, cache dir, [(path, tune), ...]) -> [(sha, reason, header)] in order, the new
    entries written into one pack; header (error, seconds, meter repaired) for a piece tokenized here, else None."""
    tok_dict, cache_dir, chunk = args
    done = [(path, *_tokenize(path, tune, tok_dict, _known[_notation(path)])) for path, tune in chunk]
    _Cache(cache_dir, tok_dict).write([(path, sha, e) for path, sha, _, e in done if e is not None])
    return [(sha, reason, None if e is None else (e.error, e.seconds, e.repaired)) for _, sha, reason, e in done]


def _prepare_one(args: tuple) -> tuple[str, str, str | None, float, bool]:
    """One file the way `prepare` tokenizes it: (path, tokenizer dict, cache dir[, tune]) ->
    (sha, cache pack or "", error, seconds, meter repaired). bench/fuzz.py drives it."""
    path, tok_dict, cache_dir, *tune = args
    path = str(path)
    sha, reason, e = _tokenize(path, tune[0] if tune else None, tok_dict)
    if reason is not None:
        return "", "", reason, 0.0, False
    where = _Cache(cache_dir, tok_dict).write([(path, sha, e)])[_notation(path), sha]
    return (sha, "", e.error, 0.0, False) if e.error is not None else (sha, where[0], None, e.seconds, e.repaired)


def _worker_context():
    """Workers are not forked from this process, whose torch threads (and, under DDP, gloo) are running by
    now: a fork server started clean (preloading the readers) forks them, or spawn where there is none."""
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        return ctx
    return multiprocessing.get_context("spawn")


def _tokenize_all(todo: list[tuple[str, int | None]], cache: _Cache, jobs: int, progress: bool) -> list[tuple]:
    """`_tokenize_chunk` over (path, tune) pairs in `jobs` worker processes, a chunk (and a pack) per task."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="preparing", unit="file", disable=not progress, leave=False)
    known = [b"".join(bytes.fromhex(s) for s in cache.index[n]) for n in (False, True)]
    out: list = []
    if jobs == 1 or len(todo) < 64:
        _set_known(*known)
        for i in range(0, len(todo), 64):
            out += _tokenize_chunk((cache.tok_dict, cache.dir, todo[i:i + 64]))
            bar.update(len(todo[i:i + 64]))
        _set_known(b"", b"")
    else:
        from ..io import midi

        midi.warm_up()  # the readers' imports, once here (and once in the fork server)
        size = max(16, min(256, len(todo) // (jobs * 8)))
        chunks = [(cache.tok_dict, cache.dir, todo[i:i + size]) for i in range(0, len(todo), size)]
        with ProcessPoolExecutor(jobs, mp_context=_worker_context(), initializer=_set_known,
                                 initargs=tuple(known)) as pool:
            for part in pool.map(_tokenize_chunk, chunks):
                out += part
                bar.update(len(part))
    bar.close()
    cache.load()  # the packs just written
    return out
