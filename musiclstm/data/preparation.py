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
May import: errors, io, encodings, data (corpus, packs, store, tokenizing). Not: models, training, generation,
evaluation, app.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from ..encodings.tokenizer import BOS, Tokenizer
from ..encodings.traits import note_ranges
from ..errors import ConfigError, MusiclstmError
from . import packs as pk
from . import store as st
from . import tokenizing
from .corpus import Corpus, _csv_splits, _hash_split, _walk, default_cache_dir, fingerprint, style_of
from .tokenizing import ENCODERS_VERSION, NOTATION_VERSION, _Cache, _tok_key, _tokenize_all, _tunes

# ---- tokenizing into the cache -----------------------------------------------------------------------------

























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


def _entry(item: list, cache: _Cache, *, ids: bool = True) -> pk.Entry:
    """A piece's cache entry (with its ids), made again if its pack went missing or is damaged."""
    path, _, tune, sha = item[:4]
    e = cache.read(path, sha, ids=ids)
    if e is None:
        again, reason, e = tokenizing._tokenize(path, tune, cache.tok_dict)
        if again != sha or e is None:
            return pk.Entry(np.zeros(0, np.int64), error=reason or "the file changed while it was prepared")
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
    data_fingerprint = fingerprint(cache.tok_dict, [(items[k][3], split, style) for k, split, style, _, _ in pieces])

    v = tokenizer.vocab
    program = (v.offset["PROGRAM"], v.offset["PROGRAM"] + 129) if "PROGRAM" in v.offset else None
    pitched = next(((v.offset[k], v.offset[k] + 128) for k in ("PITCH", "NOTE_ON") if k in v.offset), None)
    writer = st.StoreWriter(stores, key, st.token_dtype(tokenizer.vocab_size), note_ranges(tokenizer), program,
                            pitch_ids=pitched)
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
    writer.finish({"fingerprint": data_fingerprint, "skipped": skipped, "duplicates": duplicates,
                   "styles": names, "roots": roots_meta, "tokenizer": cache.tok_dict, "val_fraction": val_fraction,
                   "split_styles": styles})
    st.prune(stores, key, roots_meta)


# ---- what training reads -----------------------------------------------------------------------------------







