"""Corpus preparation: find files, tokenize once into a cache, lay the corpus out in a token store, cut windows.

Preparing a corpus has three layers, each skipped when it is already on disk (see `store`):
1. every file is listed with one `stat` (path, size, modification time); a token store made from the same
   listing, split and tokenizer is opened as it is, without reading a file;
2. otherwise each file new since the last run (by path, size and modification time; the others' content
   hashes are remembered) is read and hashed, and each piece whose content has no cache entry yet is
   tokenized, in worker processes that write their entries many to a pack file: an ABC book (several `X:`
   tunes in one file) gives one piece per tune, cached per (file content, tune); a file that does not
   parse is cached with its reason;
3. one process lays the pieces out in a new token store, which training reads through a memory map.

Under torchrun (RANK, WORLD_SIZE) each rank tokenizes its share of the files into the shared cache, rank 0
writes the store and the others wait for it to appear.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ..encodings.tokenizer import BOS, Tokenizer
from ..encodings.traits import meter_repaired, note_ranges
from ..errors import ConfigError, MidiReadError, MusiclstmError
from ..io.midi import NOTATION_SUFFIXES, abc_tunes
from . import store as st
from .corpus import Corpus, _csv_splits, _hash_split, _walk, default_cache_dir, style_of

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


# ---- tokenizing into the cache -----------------------------------------------------------------------------

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
        self.reader = st.EntryReader()
        self.dtype = st.token_dtype(_tokenizer(tok_dict).vocab_size)

    def load(self) -> _Cache:
        self.index = {n: st.read_index(f) for n, f in self.folders.items()}
        return self

    def has(self, path: str, sha: str) -> bool:
        return sha in self.index[_notation(path)]

    def read(self, path: str, sha: str, *, ids: bool = True) -> st.Entry | None:
        where = self.index[_notation(path)].get(sha)
        return self.reader.read(where, ids=ids) if where else None

    def write(self, made: list[tuple[str, str, st.Entry]]) -> dict[tuple[bool, str], tuple]:
        """Pack new entries [(path, sha, Entry)]; returns and indexes {(notation, sha): (pack, offset, length)}."""
        out = {}
        for n in (False, True):
            entries = list({sha: e for path, sha, e in made if _notation(path) == n}.items())
            if entries:
                where = st.write_pack(self.folders[n], entries, self.dtype)
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


def _tokenize(path: str, tune: int | None, tok_dict: dict, known=()) -> tuple[str, str | None, st.Entry | None]:
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


def _encode(path: str, data: bytes, tune: int | None, tok: Tokenizer) -> st.Entry:
    """A file's bytes (a notation file is read from `path`) -> its cache entry: ids, or the reason it failed."""
    from ..io import midi

    none = np.zeros(0, np.int64)
    try:
        score = midi.read(path if _notation(path) else data, name=path if tune is None else f"{path}#X:{tune}",
                          tune=tune)
        if len(score) == 0:
            return st.Entry(none, error="no notes")
        ids = tok.codec.encode(score, tok.vocab)
    except MidiReadError as e:
        return st.Entry(none, error=e.reason)
    if len(ids) == 0:
        return st.Entry(none, error=f"no notes the {tok.encoding} encoding keeps")
    repaired = meter_repaired(tok, score)
    return st.Entry(ids, score.duration_seconds, repaired)


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


# ---- the content hashes of files seen before --------------------------------------------------------------

def _manifest_file(cache_dir: Path, root: Path) -> Path:
    return Path(cache_dir) / "files" / f"{hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]}.npz"


def _read_manifest(path: Path) -> dict[tuple[str, int, int], list[tuple[int | None, str]]]:
    """{(path relative to the root, size, mtime_ns): [(tune, sha), ...]} from the last preparation of a root."""
    try:
        with np.load(path, allow_pickle=False) as z:
            o, blob = z["offsets"].tolist(), z["blob"].tobytes().decode()
            size, mtime, tune, sha = z["size"].tolist(), z["mtime"].tolist(), z["tune"].tolist(), z["sha"]
    except (OSError, ValueError, KeyError):
        return {}
    out: dict = {}
    for k in range(len(size)):
        out.setdefault((blob[o[k]:o[k + 1]], size[k], mtime[k]), []).append(
            (None if tune[k] < 0 else tune[k], sha[k].decode()))
    return out


def _write_manifest(path: Path, rows: list[tuple[str, int, int, int | None, str]]) -> None:
    texts = [r[0] for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, blob=np.frombuffer("".join(texts).encode(), np.uint8),
             offsets=np.r_[0, np.cumsum([len(t) for t in texts])].astype(np.int64),
             size=np.array([r[1] for r in rows], np.int64), mtime=np.array([r[2] for r in rows], np.int64),
             tune=np.array([-1 if r[3] is None else r[3] for r in rows], np.int64),
             sha=np.array([r[4] for r in rows], "S40"))
    os.replace(tmp, path)


# ---- preparing a corpus ------------------------------------------------------------------------------------

def _scan_key(roots: list[Path], tok_dict: dict, val_fraction: float, styles: str) -> tuple[str, int]:
    """(key of the store these files would make, number of files): one stat per file, no file read.

    The key covers each file's path, size, mtime and ctime (a chmod that makes a file readable counts), the
    split csv files, the split and style options and the tokenizer."""
    h = hashlib.sha256(json.dumps({"store": st.FORMAT, "encoders": ENCODERS_VERSION, "notation": NOTATION_VERSION,
                                   "tokenizer": tok_dict, "val_fraction": val_fraction, "styles": styles,
                                   "roots": [str(r.resolve()) for r in roots]}, sort_keys=True).encode())
    n = 0
    for root in roots:
        for path, size, mtime, ctime in _walk(root):
            h.update(f"{path}\0{size}\0{mtime}\0{ctime}\n".encode())
            n += 1
        for f in sorted(root.glob("*.csv")) if root.is_dir() else []:
            s = f.stat()
            h.update(f"csv {f}\0{s.st_size}\0{s.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24], n


def prepare(corpora: list[Path], tokenizer: Tokenizer, *, val_fraction: float = 0.1, styles: str = "none",
            jobs: int | None = None, cache_dir: Path | None = None, progress: bool = True,
            rank: int | None = None, world: int | None = None) -> Corpus:
    """Tokenize every music file (every tune of an ABC book) of `corpora`, cached, split it by piece
    deterministically, and lay it out in a token store; return the `Corpus` that reads it.

    `rank`, `world` (default: torchrun's RANK and WORLD_SIZE): processes preparing the same corpus into the
    same `cache_dir` together (shared storage across nodes): each tokenizes every world-th piece, rank 0
    writes the store, the others wait for it (up to MUSICLSTM_PREPARE_TIMEOUT seconds, default 4 hours).
    """
    cache_dir = Path(cache_dir or default_cache_dir())
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world = int(os.environ.get("WORLD_SIZE", 1)) if world is None else world
    local = int(os.environ.get("LOCAL_WORLD_SIZE", 1)) if world > 1 else 1
    jobs = max(1, jobs or (os.cpu_count() or 1) // local)  # the node's cores shared by its ranks
    roots = [Path(r) for r in corpora]
    for root in roots:
        if not root.exists():
            raise ConfigError(f"corpus {root} does not exist")
    tok_dict = tokenizer.to_dict()
    stores = cache_dir / _tok_key(tok_dict) / "stores"
    key, files = _scan_key(roots, tok_dict, val_fraction, styles)
    if not files:
        raise MusiclstmError(f"no music files (.mid, .midi, .kar, MusicXML, ABC) in {', '.join(map(str, corpora))}")
    store, made = st.find(stores, key), 0
    if store is None:
        made = _build(roots, tokenizer, key, stores, val_fraction=val_fraction, styles=styles, jobs=jobs,
                      cache_dir=cache_dir, progress=progress, rank=rank, world=world)
        store = st.find(stores, key) if world == 1 else \
            _wait(lambda: st.find(stores, key), "rank 0 to write the token store")
        if store is None:
            raise MusiclstmError(f"could not open the token store just written in {stores / key}")
    m = store.meta
    corpus = Corpus(None, m["skipped"], m["duplicates"], m["fingerprint"], tokenizer, store=store)
    corpus.tokenized = made
    if not len(store):
        reasons = "; ".join(sorted({why for _, why in corpus.skipped}))[:200]
        raise MusiclstmError(f"no readable music in {', '.join(map(str, corpora))} ({reasons or 'all duplicates'})")
    return corpus


def _wait(get, what: str):
    """Poll `get()` until it returns something; a MusiclstmError after $MUSICLSTM_PREPARE_TIMEOUT seconds
    (default 4 hours: a first preparation of a Lakh-sized corpus on a few cores takes a while)."""
    timeout = float(os.environ.get("MUSICLSTM_PREPARE_TIMEOUT", 4 * 3600))
    t0, delay = time.monotonic(), 0.02
    while (got := get()) is None:
        if time.monotonic() - t0 > timeout:
            raise MusiclstmError(f"waited {timeout:.0f} s for {what}; is every rank running? "
                                 "(MUSICLSTM_PREPARE_TIMEOUT sets the wait)")
        time.sleep(delay)
        delay = min(1.0, delay * 1.5)
    return got


def _build(roots: list[Path], tokenizer: Tokenizer, key: str, stores: Path, *, val_fraction: float, styles: str,
           jobs: int, cache_dir: Path, progress: bool, rank: int, world: int) -> int:
    """Tokenize this rank's share of the pieces not yet cached; on rank 0, write the store. Returns the
    number of pieces this process tokenized."""
    cache = _Cache(cache_dir, tokenizer.to_dict()).load()
    # one row per piece, corpus order: [path, root index, tune, sha, size, mtime, header], where sha is None
    # until known and header (error, seconds, repaired) None until read
    items: list[list] = []
    for ri, root in enumerate(roots):
        known, top = _read_manifest(_manifest_file(cache_dir, root)), _top(root)
        for path, size, mtime, _ in _walk(root):
            hit = known.get((_rel(path, root, top), size, mtime))  # unchanged since it was last hashed: not read
            items += [[path, ri, tune, sha, size, mtime, None] for tune, sha in hit] if hit else \
                [[path, ri, tune, None, size, mtime, None] for tune in _tunes(path)]
    mine = [k for k in range(rank, len(items), world) if items[k][3] is None or not cache.has(items[k][0], items[k][3])]
    done = _tokenize_all([(items[k][0], items[k][2]) for k in mine], cache, jobs, progress)
    found = dict(zip(mine, done, strict=True))  # k: (sha, reason, header)
    made = sum(header is not None for _, _, header in done)
    if world > 1:  # the other ranks' results come in files beside the store (the cache is shared storage)
        parts = stores / f".prep-{key}"
        if rank != 0:
            if st.find(stores, key) is None:
                parts.mkdir(parents=True, exist_ok=True)
                tmp = parts / f".part-{rank}.{os.getpid()}.tmp"
                tmp.write_text(json.dumps({"rank": rank, "pieces": {str(k): v for k, v in found.items()}}))
                os.replace(tmp, parts / f"part-{rank}-of-{world}.json")
            return made
        for r in range(1, world):
            part = _wait(lambda r=r: _read_part(parts / f"part-{r}-of-{world}.json")
                         or ("published" if st.find(stores, key) else None), f"rank {r} to tokenize its share")
            if part == "published":  # another job wrote this very store meanwhile
                return made
            found.update({int(k): v for k, v in part["pieces"].items()})
        cache.load()  # with the other ranks' packs
    for k, (sha, reason, header) in found.items():
        items[k][3] = sha or None
        items[k][6] = (reason, 0.0, False) if reason is not None else header
    _write_store(items, roots, tokenizer, cache, key, stores, val_fraction=val_fraction, styles=styles)
    cache.reader.close()
    if world > 1:
        import shutil

        shutil.rmtree(stores / f".prep-{key}", ignore_errors=True)
    return made


def _read_part(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _rel(path: str, root: Path, top: str | None = None) -> str:
    """`path` relative to the corpus `root`, as csv split files name it (its name for a file root). `top`:
    str(root) + os.sep for a folder root, "" for a file root (saves a stat per call)."""
    top = (str(root) + os.sep if root.is_dir() else "") if top is None else top
    if not top:
        return os.path.basename(path)
    return path[len(top):].replace(os.sep, "/") if path.startswith(top) else Path(path).relative_to(root).as_posix()


def _top(root: Path) -> str:
    return str(root) + os.sep if root.is_dir() else ""


def _entry(item: list, cache: _Cache, *, ids: bool = True) -> st.Entry:
    """A piece's cache entry (with its ids), made again if its pack went missing or is damaged."""
    path, _, tune, sha = item[:4]
    e = cache.read(path, sha, ids=ids)
    if e is None:
        again, reason, e = _tokenize(path, tune, cache.tok_dict)
        if again != sha or e is None:
            return st.Entry(np.zeros(0, np.int64), error=reason or "the file changed while it was prepared")
        cache.write([(path, sha, e)])
    return e


def _write_store(items: list[list], roots: list[Path], tokenizer: Tokenizer, cache: _Cache, key: str,
                 stores: Path, *, val_fraction: float, styles: str) -> None:
    """Decide each piece (skipped, duplicate, split, style) and lay the pieces out in the store `key`."""
    splits, tops = [_csv_splits(root) for root in roots], [_top(root) for root in roots]
    pieces, skipped, duplicates, seen = [], [], [], {}
    for k, (path, ri, tune, sha, _, _, header) in enumerate(items):
        name = path if tune is None else f"{path}#X:{tune}"
        if header is None:  # in the cache before this run: its entry's header says how it went
            e = _entry(items[k], cache, ids=False)
            header = (e.error, e.seconds, e.repaired)
        error, seconds, repaired = header
        if error is not None:
            skipped.append((name, error))
            continue
        if sha in seen:
            duplicates.append((name, seen[sha]))
            continue
        seen[sha] = name
        split = splits[ri].get(_rel(path, roots[ri], tops[ri])) if splits[ri] else None
        split = split or _hash_split(sha, val_fraction)
        if split not in st.SPLITS:
            continue  # e.g. MAESTRO's test split is left out of training
        style = style_of(Path(path), roots[ri], styles) if styles != "none" else None
        pieces.append([k, split, style, seconds, repaired])
    if pieces and not any(p[1] == "train" for p in pieces):  # tiny corpora: keep at least one training piece
        pieces[0][1] = "train"
    if pieces and val_fraction > 0 and not any(p[1] == "valid" for p in pieces) and len(pieces) > 1:
        pieces[-1][1] = "valid"
    h = hashlib.sha256(json.dumps(cache.tok_dict, sort_keys=True).encode())
    for sha, split, style in sorted((items[k][3], split, style) for k, split, style, _, _ in pieces):
        h.update(f"{sha}:{split}:{style}".encode())

    v = tokenizer.vocab
    program = (v.offset["PROGRAM"], v.offset["PROGRAM"] + 129) if "PROGRAM" in v.offset else None
    writer = st.StoreWriter(stores, key, st.token_dtype(tokenizer.vocab_size), note_ranges(tokenizer), program)
    names = sorted({style for _, _, style, _, _ in pieces if style is not None})
    for k, split, style, seconds, repaired in pieces:
        path, _, tune, sha = items[k][:4]
        head = [BOS] + ([tokenizer.style_id(style)] if style is not None and tokenizer.styles else [])
        writer.add(split, head, _entry(items[k], cache).ids, path=path, sha=sha, tune=tune,
                   style=names.index(style) if style is not None else -1, seconds=seconds, repaired=repaired)
    for ri, root in enumerate(roots):  # what each file hashed to, so that the next run need not read it
        rows = [(_rel(p, root, tops[ri]), size, mtime, tune, sha)
                for p, r, tune, sha, size, mtime, _ in items if r == ri and sha]
        _write_manifest(_manifest_file(cache.dir, root), rows)
    roots_meta = [str(r.resolve()) for r in roots]
    writer.finish({"fingerprint": h.hexdigest()[:16], "skipped": skipped, "duplicates": duplicates,
                   "styles": names, "roots": roots_meta, "tokenizer": cache.tok_dict, "val_fraction": val_fraction,
                   "split_styles": styles})
    st.prune(stores, key, roots_meta)


# ---- what training reads -----------------------------------------------------------------------------------







