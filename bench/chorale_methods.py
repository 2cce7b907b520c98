"""Three ways to compose a chorale (issue 25, item 1), measured with `musiclstm evaluate`'s statistics.

* left-to-right + harmonizer (what `musiclstm compose --style bach` does): the bundled `bach` LSTM writes the
  piece, its top voice is kept as the soprano and the harmonizer writes alto, tenor and bass under it.
* from scratch (DeepBach's way): annealed pseudo-Gibbs over all four voices of an empty grid with the harmonizer
  alone. Each chorale takes its shape from a training chorale drawn at random (DeepBach draws phrase lengths and
  cadence positions from the corpus): its length (cut at the first fermata after `--seconds`), meter, pickup,
  tempo, key and fermatas. The fermatas go to the harmonizer's fermata channel (when it has one) and the same
  cadence rules `harmonize` uses hold there: the bass on the tonic or the dominant under each, the tonic triad
  over the tonic at the end. Every voice keeps to its range and to the key's scale.
* JSB soprano + harmonizer: the bundled `jsb16` LSTM (JSB's 16th grid, where a repeated note and a held note are
  one cell value, and every piece is in 4/4) writes the piece, its top voice is kept as the soprano and the
  harmonizer writes the rest, as for the first way (`generation.chorales.harmonized_chorale`).

All three are compared with held-out chorales of the `bach` model's validation split, each read through the `bach`
tokenizer and cut to the first 60 quarters, as `evaluate` does (its `music_statistics`).

    python bench/chorale_methods.py                        # corpora/bach, 20 pieces each
    python bench/chorale_methods.py --corpus /work/corpora/bach --harmonizer runs/h/best.pt
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from musiclstm import data
from musiclstm.data.collections import fermatas_of
from musiclstm.encodings.grid import Codec, Config
from musiclstm.evaluation.evaluate import music_statistics
from musiclstm.generation import gibbs as G
from musiclstm.generation import harmonize as H
from musiclstm.generation.chorales import harmonized_chorale
from musiclstm.generation.compose import compose
from musiclstm.io.midi import read
from musiclstm.io.score import Score, Track, key_fit
from musiclstm.models import checkpoint
from musiclstm.models import harmonizer as HN
from musiclstm.theory import scale

ROOT = Path(__file__).resolve().parent.parent
ROWS = ("in_scale", "window_key_changes", "steps", "skips", "leaps", "repeated", "parallel_fifths",
        "parallel_octaves", "voice_crossings", "repeated_bars", "empty_beat_rate", "last_bass_on_tonic")


def fermata_spans(ferm: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) steps of each run of steps under a fermata."""
    here = np.r_[False, ferm == HN.FERMATA_HERE, False]
    edges = np.flatnonzero(here[1:] != here[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def template_shape(path: Path, h: H.Loaded, seconds: float):
    """A training chorale's shape: (its grid and fermata channel, cut at the first fermata ending after
    `seconds`, the score read, (tonic, minor))."""
    score = read(path)
    ids = np.asarray(h.cells.tokenizer.encode(score), np.int64)[1:-1]  # without BOS and EOS
    grid = ids[: len(ids) // 4 * 4].reshape(-1, 4)
    ferm = HN.fermata_channel(grid, h.cells, fermatas_of(path) or [])
    qpm = float(score.tempos[0, 1]) if len(score.tempos) else 100.0
    want = int(seconds * qpm / 60 * HN.STEPS)
    cut = next((b for _, b in fermata_spans(ferm) if b >= want), len(grid))
    tonic, minor = key_fit(np.bincount(score.pitch % 12, weights=score.end - score.start, minlength=12))[:2]
    return grid[:cut], ferm[:cut], score, (int(tonic), bool(minor))


def from_scratch(h: H.Loaded, path: Path, seconds: float, seed: int, iterations: int) -> Score:
    """A chorale drawn by annealed pseudo-Gibbs over all four voices, shaped like the chorale at `path`."""
    grid, ferm, like, (tonic, minor) = template_shape(path, h, seconds)
    T = len(grid)
    c = h.cells
    first = int(np.flatnonzero((grid != c.rest).any(1))[0])  # a pickup's empty steps stay empty
    x = np.full((T, 4), c.rest, np.int64)
    free = np.zeros((T, 4), bool)
    free[first:] = True
    spans = fermata_spans(ferm)
    triad = {tonic % 12, (tonic + 3 + (not minor)) % 12, (tonic + 7) % 12}
    # the closing chord: under the last fermata where it ends the piece, else over the last 4 quarters
    last = spans[-1][0] if spans and spans[-1][1] == T else max(first, T - 4 * HN.STEPS)
    closes = [(a, b, {3: {tonic, (tonic + 7) % 12}}, True) for a, b in spans if b <= last]
    closes.append((last, T, {0: triad, 1: triad, 2: triad, 3: {tonic}}, False))
    allowed = G.cadence_cells(G.allowed_cells(c, h.ranges, scale(tonic, minor)), c, T, closes)
    out = G.gibbs(h.net, c, x, free, allowed, iterations=iterations, temperature=0.8,
                  generator=torch.Generator().manual_seed(seed), rules=True, fermata=ferm)
    s = Codec(Config(voices=4, hold=True, max_hold_steps=10**6)).decode(out.reshape(-1), c.tokenizer.vocab)
    qpm = float(like.tempos[0, 1]) if len(like.tempos) else 100.0
    return Score(s.start, s.end, s.pitch, np.full(len(s), 80), s.track,
                 tracks=[Track(H.PROGRAM, False, name) for name in HN.VOICES],
                 tempos=np.array([[0.0, qpm]]), time_signatures=like.time_signatures,
                 key_signatures=np.array([[0.0, tonic, int(minor)]]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(ROOT / "corpora" / "bach"), help="the exported bach chorales")
    ap.add_argument("--harmonizer", default=None, help="the from-scratch way's harmonizer [bundled]; the other "
                    "two use the bundled one, as compose does")
    ap.add_argument("--pieces", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--iterations", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if not Path(args.corpus).is_dir():
        raise SystemExit(f"skipped: {args.corpus} not found (musiclstm corpus export bach {args.corpus})")
    lm = checkpoint.load("bach")
    h = H.load(args.harmonizer)
    tok = lm.tokenizer
    prepared = data.prepare(data.as_paths(args.corpus), tok, val_fraction=lm.meta["train"].get("val_fraction", 0.1),
                            progress=False)
    held = prepared.split("valid")
    real_ids = [np.asarray(p.ids, np.int64) for p in held][:60]
    real = [tok.decode_score(i) for i in real_ids]
    train = [p for p in prepared.split("train") if fermatas_of(p.path)]
    print(f"{len(real)} held-out chorales; {len(train)} training chorales with fermatas as templates; "
          f"harmonizer {h.meta.get('path') or args.harmonizer or 'bundled'} (fermata channel: "
          f"{'yes' if h.net.config.fermatas else 'no'})")

    t0 = time.time()
    _, ltr_ids = compose(lm, seconds=args.seconds, num=args.pieces, seed=0, return_ids=True)
    ltr_ids = [np.asarray(s, np.int64) for s in ltr_ids]
    ltr_s = (time.time() - t0) / args.pieces
    rng = np.random.default_rng(0)
    t0 = time.time()
    scratch = [from_scratch(h, Path(train[int(rng.integers(len(train)))].path), args.seconds, i, args.iterations)
               for i in range(args.pieces)]
    scratch_s = (time.time() - t0) / args.pieces
    t0 = time.time()
    jsb = checkpoint.load("jsb16")
    _, jsb_ids = compose(jsb, seconds=args.seconds, num=args.pieces, seed=0, return_ids=True)
    jsb_chorales = [harmonized_chorale(jsb.tokenizer.decode_score(np.asarray(s)), seed=i, voiced=None)
                    for i, s in enumerate(jsb_ids)]
    jsb_s = (time.time() - t0) / args.pieces
    methods = {"LTR+harm.": ltr_ids,  # each read through the bach tokenizer, as evaluate reads samples
               "scratch": [np.asarray(tok.encode(s), np.int64) for s in scratch],
               "JSB+harm.": [np.asarray(tok.encode(s), np.int64) for s in jsb_chorales]}
    kw = dict(quarters=60.0, seconds=args.seconds, seed=0, real_scores=real)
    stats = {name: music_statistics(tok, real_ids, ids, sample_scores=[tok.decode_score(i) for i in ids],
                                    **kw)["statistics"] for name, ids in methods.items()}
    print(f"\n{'statistic (mean over pieces)':28s} {'Bach':>6s} " + " ".join(f"{n:>10s}" for n in methods)
          + "   closest to Bach")
    wins = dict.fromkeys([*methods, "tie"], 0)
    for k in ROWS:
        r = stats["LTR+harm."][k]["real"]["mean"]
        got = {n: stats[n][k]["model"]["mean"] for n in methods}
        gaps = {n: round(abs(x - r), 6) for n, x in got.items()}
        best = [n for n, g in gaps.items() if g == min(gaps.values())]
        who = best[0] if len(best) == 1 else "tie"
        wins[who] += 1
        print(f"{k:28s} {r:6.2f} " + " ".join(f"{x:10.2f}" for x in got.values()) + f"   {who}")
    print("\nclosest to Bach: " + ", ".join(f"{n} on {wins[n]}" for n in methods) + f" (ties {wins['tie']}); "
          f"seconds per piece: {ltr_s:.1f}, {scratch_s:.1f}, {jsb_s:.1f} (one thread)")


if __name__ == "__main__":
    main()
