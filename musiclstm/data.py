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

import csv
import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import store as st
from .encodings import remi
from .errors import ConfigError, MidiReadError, MusiclstmError
from .midi import MIDI_SUFFIXES, NOTATION_SUFFIXES, abc_tunes
from .store import Sequences
from .tokenizer import BOS, EOS, PAD, Tokenizer

ENCODERS_VERSION = 3  # bump when an encoder's output changes for the same config: old cache entries are ignored
NOTATION_VERSION = 2  # the same for midi.read's music21 path (MusicXML, ABC, Humdrum files only)


def default_cache_dir() -> Path:
    return Path(os.environ.get("MUSICLSTM_CACHE", Path.home() / ".cache" / "musiclstm"))


@dataclass
class Piece:
    """One usable file (or tune of an ABC book): where it came from, its content hash, style, split and ids.

    `ids` (n,) are the token ids without BOS/EOS; for a prepared corpus a read-only view into its token store
    (uint16 or int32)."""

    path: Path
    sha: str
    style: str | None
    split: str
    ids: np.ndarray
    seconds: float
    meter_repaired: bool = False  # a one-beat meter throughout, read as 4/4 (remi v2)
    tune: int | None = None  # the tune's reference number (X:) in a multi-tune ABC file

    @property
    def name(self) -> str:
        """The file, and the tune number for a tune of an ABC book (as reports name it)."""
        return str(self.path) if self.tune is None else f"{self.path}#X:{self.tune}"


class Corpus:
    """The prepared data and its report.

    A corpus from `prepare` is backed by its token store: `sequences(split)` reads it through a memory map,
    and the report comes from its index, so neither holds the corpus in memory. `pieces` (made on first use,
    their ids viewing the store) is for code that wants them one by one. A corpus can also be built from a
    list of pieces in memory (as `benchmark jsb` does).
    """

    def __init__(self, pieces: list[Piece] | None = None, skipped=None, duplicates=None, fingerprint: str = "",
                 tokenizer: Tokenizer | None = None, *, store: st.TokenStore | None = None):
        self._pieces = pieces
        self.skipped: list[tuple[str, str]] = [tuple(s) for s in skipped or []]  # (file, reason)
        self.duplicates: list[tuple[str, str]] = [tuple(d) for d in duplicates or []]  # (file, same as file)
        self.fingerprint = fingerprint
        self.tokenizer = tokenizer  # the tokenizer the ids were made with
        self.store = store
        self.tokenized = 0  # pieces this process tokenized while preparing (the rest came from the cache)

    @property
    def pieces(self) -> list[Piece]:
        if self._pieces is None and self.store is None:
            self._pieces = []
        if self._pieces is None:
            s = self.store
            ix, styles = s.index, s.meta["styles"]
            self._pieces = [Piece(Path(s.path(k)), ix["sha"][k].decode(),
                                  styles[ix["style"][k]] if ix["style"][k] >= 0 else None,
                                  st.SPLITS[ix["split"][k]], s.ids(k), float(ix["seconds"][k]),
                                  bool(ix["repaired"][k]), int(ix["tune"][k]) if ix["tune"][k] >= 0 else None)
                            for k in range(len(s))]
        return self._pieces

    def split(self, name: str) -> list[Piece]:
        return [p for p in self.pieces if p.split == name]

    def sequences(self, split: str) -> Sequences:
        """The split's pieces as the model reads them (BOS [STYLE] ids EOS), laid end to end."""
        if self.store is not None:
            return self.store.sequences(split)
        return Sequences.of([sequence(p, self.tokenizer) for p in self.split(split)])

    def _columns(self) -> dict[str, np.ndarray]:
        """Per piece: split (0 train, 1 valid), tokens (ids only), seconds, repaired, notes."""
        if self.store is not None:
            ix = self.store.index
            return {"split": ix["split"], "tokens": ix["length"] - ix["head"] - 1, "seconds": ix["seconds"],
                    "repaired": ix["repaired"], "notes": ix["notes"]}
        ranges = _note_ranges(self.tokenizer)
        ps = self.pieces
        return {"split": np.array([st.SPLITS.index(p.split) if p.split in st.SPLITS else 2 for p in ps]),
                "tokens": np.array([len(p.ids) for p in ps], np.int64),
                "seconds": np.array([p.seconds for p in ps], np.float64),
                "repaired": np.array([p.meter_repaired for p in ps], bool),
                "notes": np.array([_count_notes(p.ids, ranges) for p in ps], np.int64)}

    def report(self) -> str:
        c = self._columns()
        lines = [f"{len(c['split'])} pieces read ({int((c['split'] == 0).sum())} train, "
                 f"{int((c['split'] == 1).sum())} valid), {int(c['tokens'].sum()):,} tokens, "
                 f"{sum(c['seconds'].tolist()) / 3600:.2f} hours of music; "
                 f"{len(self.skipped)} skipped, {len(self.duplicates)} duplicates"]
        repaired = int(c["repaired"].sum())
        if repaired:
            lines.append(f"  {repaired} files with one-beat bars throughout (such as 1/4) read as 4/4")
        lines += [f"  skipped {f}: {why}" for f, why in self.skipped[:50]]
        if len(self.skipped) > 50:
            lines.append(f"  ... and {len(self.skipped) - 50} more skipped")
        lines += [f"  duplicate {f} (same as {g})" for f, g in self.duplicates[:20]]
        return "\n".join(lines)

    def programs(self) -> list[int]:
        """The General MIDI programs (128 = drums) the training pieces use; [] for encodings without them."""
        v = self.tokenizer.vocab if self.tokenizer is not None else None
        if v is None or "PROGRAM" not in v.offset:
            return []
        if self.store is not None:
            return list(self.store.meta["programs"])
        o = v.offset["PROGRAM"]
        used = {int(i) - o for p in self.split("train") for i in np.unique(p.ids) if o <= i < o + 129}
        return sorted(used)

    def density_p99(self) -> float | None:
        """99th percentile of notes per second over the training pieces (what a runaway sample exceeds)."""
        c = self._columns()
        train = (c["split"] == 0) & (c["seconds"] > 0)
        if not _note_ranges(self.tokenizer) or not train.any():
            return None
        return float(np.percentile(c["notes"][train] / np.maximum(c["seconds"][train], 1.0), 99))

    def to_json(self) -> dict:
        c = self._columns()
        return {"files": len(c["split"]), "tokens": int(c["tokens"].sum()), "hours": sum(c["seconds"].tolist()) / 3600,
                "programs": self.programs(), "density_p99": self.density_p99(),
                "meter_repaired": int(c["repaired"].sum()), "skipped": self.skipped,
                "duplicates": self.duplicates, "fingerprint": self.fingerprint}


def _note_ranges(tokenizer: Tokenizer | None) -> list[tuple[int, int]]:
    """The id ranges that count as notes for `density_p99` (128 ids from each note kind's offset)."""
    v = tokenizer.vocab if tokenizer is not None else None
    return [(v.offset[k], v.offset[k] + 128) for k in ("PITCH", "DRUM", "NOTE_ON") if v is not None and k in v.offset]


def _count_notes(ids: np.ndarray, ranges: list[tuple[int, int]]) -> int:
    return sum(int(((ids >= a) & (ids < b)).sum()) for a, b in ranges)


def as_paths(corpus) -> list[Path]:
    """A folder, a file, or a list of them -> a list of paths."""
    return [Path(c) for c in (corpus if isinstance(corpus, list | tuple) else [corpus])]


_SUFFIXES = MIDI_SUFFIXES | NOTATION_SUFFIXES


def _walk(root: Path):
    """Yield (path, size, mtime_ns, ctime_ns) of every music file under `root` (recursive, case-insensitive suffixes,
    no hidden files, symlinked folders not followed), sorted as `find_files` sorts them, one stat each."""
    if root.is_file():
        s = root.stat()
        yield str(root), s.st_size, s.st_mtime_ns, s.st_ctime_ns
        return
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    for e in entries:  # sorted by name, a folder's files in its place: the order of sorted(Path.parts)
        if e.is_dir(follow_symlinks=False):
            yield from _walk(Path(e.path))
        elif not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in _SUFFIXES and e.is_file():
            s = e.stat()
            yield e.path, s.st_size, s.st_mtime_ns, s.st_ctime_ns


def find_files(corpus: Path) -> list[Path]:
    """Music files under `corpus` (recursive, case-insensitive suffixes), sorted."""
    return [Path(p) for p, *_ in _walk(Path(corpus))]


def _style_of(path: Path, root: Path, mode: str) -> str | None:
    if mode == "none":
        return None
    if mode == "corpus" or path == root:
        return root.name
    rel = path.relative_to(root).parts
    return rel[0] if len(rel) > 1 else root.name


def _csv_splits(root: Path) -> dict[str, str]:
    """A MAESTRO-style csv at the corpus root: {relative file name: split}."""
    out: dict[str, str] = {}
    for f in root.glob("*.csv") if root.is_dir() else []:
        with f.open(newline="", encoding="utf-8", errors="replace") as fh:
            for row in csv.DictReader(fh):
                name = row.get("midi_filename") or row.get("filename") or row.get("file")
                split = (row.get("split") or "").strip().lower()
                if name and split:
                    out[name] = {"validation": "valid", "val": "valid"}.get(split, split)
    return out


def _hash_split(sha: str, val_fraction: float) -> str:
    return "valid" if int(sha[:8], 16) / 0xFFFFFFFF < val_fraction else "train"


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
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        return "", f"cannot read: {e.strerror or e}", None
    sha = hashlib.sha1(data if tune is None else data + f"\0X:{tune}".encode()).hexdigest()
    if sha in known:
        return sha, None, None
    return sha, None, _encode(path, data, tune, _tokenizer(tok_dict))


def _encode(path: str, data: bytes, tune: int | None, tok: Tokenizer) -> st.Entry:
    """A file's bytes (a notation file is read from `path`) -> its cache entry: ids, or the reason it failed."""
    from . import midi

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
    repaired = getattr(tok.config, "version", 1) >= 2 and tok.encoding == "remi" and \
        not remi.plausible_meter(score.time_signatures)
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
        from . import midi

        midi.warm_up()  # the readers' imports, once here: forked workers inherit them
        size = max(16, min(256, len(todo) // (jobs * 8)))
        chunks = [(cache.tok_dict, cache.dir, todo[i:i + size]) for i in range(0, len(todo), size)]
        with ProcessPoolExecutor(jobs, initializer=_set_known, initargs=tuple(known)) as pool:
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
        store = _wait(lambda: st.find(stores, key), "rank 0 to write the token store")
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
        style = _style_of(Path(path), roots[ri], styles) if styles != "none" else None
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
    writer = st.StoreWriter(stores, key, st.token_dtype(tokenizer.vocab_size), _note_ranges(tokenizer), program)
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

def sequence(piece: Piece, tokenizer: Tokenizer) -> np.ndarray:
    """One piece as the model reads it: BOS [STYLE] ids EOS (int64)."""
    head = [BOS] + ([tokenizer.style_id(piece.style)] if piece.style is not None and tokenizer.styles else [])
    return np.concatenate([np.array(head, np.int64), piece.ids, np.array([EOS], np.int64)])


def stream(pieces: list[Piece], tokenizer: Tokenizer) -> torch.Tensor:
    """All pieces laid end to end, each as BOS [STYLE] ids EOS: a 1-D int64 tensor (in memory; a prepared
    corpus has the same stream on disk as `corpus.sequences(split).tokens`)."""
    parts = [sequence(p, tokenizer) for p in pieces]
    return torch.from_numpy(np.concatenate(parts)) if parts else torch.zeros(0, dtype=torch.long)


class PieceWindows:
    """Training windows that start every piece from a fresh state, as generation does.

    Each piece (BOS [STYLE] ... EOS) is cut into windows of `length` next-token pairs, its last window
    padded with PAD (which the loss ignores). Pieces are dealt to `batch` lanes, the next piece to the
    lane with the fewest windows, in an order shuffled once per epoch from (seed, epoch) alone, so a
    resumed run deals the same way. Within a piece the LSTM state runs on from window to window
    (truncated BPTT); at a piece's first window the lane's state is reset to zeros: the model never
    sees a piece begin from the end of another, which is the only start `compose` can give it.

    `sequences`: a `Sequences` (a prepared corpus's, memory-mapped) or a list of 1-D id arrays. Only
    where each window starts is kept (a few bytes a window); a batch's tokens are read when it is asked for.
    """

    def __init__(self, sequences, batch: int, length: int, *, rank: int = 0, world: int = 1,
                 seed: int = 0, shuffle: bool = True):
        seqs = Sequences.of(sequences)
        if not len(seqs):
            raise MusiclstmError("corpus too small: no pieces")
        self.batch, self.length, self.rank, self.world = batch, length, rank, world
        self.seed, self.shuffle = seed, shuffle
        self.tokens = seqs.tokens  # (N,), often a read-only memory map
        pairs = seqs.lengths - 1  # next-token pairs per piece
        sizes = np.maximum(1, -(-pairs // length))  # windows per piece
        self.starts = np.r_[0, np.cumsum(sizes)]  # piece k's windows: starts[k] .. starts[k+1]
        # per window (a few bytes each, computed in place: a Lakh-sized corpus has millions of windows), and a
        # last all-PAD window that fills short lanes
        total = int(self.starts[-1])
        pos = np.zeros(total + 1, np.int64)
        pos[:total] = np.arange(total) - np.repeat(self.starts[:-1], sizes)  # the window's number in its piece
        self.first = pos == 0  # a piece begins: the state starts from zeros
        pos[:total] *= length
        valid = np.zeros(total + 1, np.int32)
        valid[:total] = np.minimum(length, np.repeat(pairs, sizes) - pos[:total])  # pairs in the window
        self.valid = valid
        pos[:total] += np.repeat(seqs.starts[:-1], sizes)
        self.pos = pos  # where the window's tokens begin in `tokens`
        # dealing to the shortest lane never exceeds the mean by more than the longest piece: every epoch fits
        self.batches_per_epoch = int(-(-sizes.sum() // (batch * world)) + sizes.max())
        self._cached = (0, self._layout(0))

    def _layout(self, epoch: int) -> np.ndarray:
        """(batch, steps) window indices of this rank's lanes for an epoch; the PAD window where a lane has run out."""
        import heapq

        lanes = self.batch * self.world
        n = len(self.starts) - 1
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        starts = self.starts.tolist()
        out = np.full((lanes, self.batches_per_epoch), len(self.pos) - 1, np.int64)  # the PAD window
        heap = [(0, lane) for lane in range(lanes)]  # (windows dealt, lane): the shortest lane, the first on ties
        for k in order.tolist():
            size, lane = heap[0]
            a, b = starts[k], starts[k + 1]
            out[lane, size:size + b - a] = np.arange(a, b)
            heapq.heapreplace(heap, (size + b - a, lane))
        return out[self.rank * self.batch:(self.rank + 1) * self.batch]

    def get(self, i: int, generator=None, epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batch `i` of `epoch` -> (x (B, T), y (B, T), reset (B,): lanes whose state starts from zeros)."""
        if self._cached[0] != epoch:
            self._cached = (epoch, self._layout(epoch))
        idx = self._cached[1][:, i]  # (B,) window indices
        w = st.gather(self.tokens, self.pos[idx], self.length + 1)  # (B, T+1)
        pad = np.arange(self.length)[None, :] >= self.valid[idx, None]  # (B, T) past the piece's last pair
        x, y = np.where(pad, PAD, w[:, :-1]), np.where(pad, PAD, w[:, 1:])
        return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(self.first[idx])


class Windows:
    """Training windows from one token stream, in one of two orders (`PieceWindows` is the default).

    * `tbptt`: the stream is cut into `batch` contiguous lanes and windows are taken in order,
      so the LSTM state can be carried (and detached) from one window to the next.
    * `random`: each batch is `batch` windows at random offsets, state starting from zero.
    `batches_per_epoch` and `get(i, generator)` let a run resume at an exact position. `data` is a 1-D
    tensor or array of ids of any integer type (a memory map stays one: batches are read as asked for).
    """

    def __init__(self, data, batch: int, length: int, mode: str = "tbptt", rank: int = 0, world: int = 1):
        if mode not in ("tbptt", "random"):
            raise ConfigError(f"unknown window mode {mode!r}")
        self.data = data.numpy() if isinstance(data, torch.Tensor) else data  # (N,)
        self.mode, self.batch, self.length = mode, batch, length
        if mode == "tbptt":
            lanes = batch * world
            n = (len(data) - 1) // lanes
            if n < 2:
                raise MusiclstmError(f"corpus too small: {len(data)} tokens for {lanes} lanes")
            self.lane_len = n  # lane l is data[l * n: (l + 1) * n] (+1 for its targets)
            self.lanes = np.arange(rank * batch, (rank + 1) * batch) * n  # where this rank's lanes begin
            self.batches_per_epoch = max(1, (n - 1) // length + 1)
        else:
            if len(data) < 2:
                raise MusiclstmError("corpus too small")
            self.length = min(length, len(data) - 1)
            self.batches_per_epoch = max(1, (len(data) - 1) // (batch * self.length * world))

    def get(self, i: int, generator: torch.Generator,
            epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batch `i` of an epoch -> (x (B, T), y (B, T), reset (B,): lanes whose state starts from zeros)."""
        if self.mode == "tbptt":
            s = i * self.length
            width = max(0, min(self.length, self.lane_len - s))
            w = torch.from_numpy(st.gather(self.data, self.lanes + s, width + 1))  # (B, width + 1)
            return w[:, :-1], w[:, 1:], torch.full((self.batch,), i == 0)
        starts = torch.randint(0, len(self.data) - self.length, (self.batch,), generator=generator)
        w = torch.from_numpy(st.gather(self.data, starts.numpy(), self.length + 1))  # (B, T+1)
        return w[:, :-1], w[:, 1:], torch.ones(self.batch, dtype=torch.bool)
