"""Harmonizing Bach's own melodies (issue 15): the bidirectional harmonizer against Bach and a baseline.

For every chorale of the JSB Chorales test split (Jsb16thSeparated.json, Boulanger-Lewandowski et al.
2012; 16th-note grid, four voices; a repeated pitch reads as a held note, as the file does not mark
re-strikes), its soprano is harmonized in three ways and the lower voices compared:

* Bach: the chorale itself.
* bidirectional: `musiclstm harmonize`'s model (bundled `harmonizer`, or --model), annealed pseudo-Gibbs.
* baseline: the bundled left-to-right grid LSTM `jsb16` (trained on the JSB train split) sampling
  alto, tenor and bass step by step with the soprano forced (it cannot see the melody ahead).

Both models sample under the same constraints: each voice in the harmonizer's ranges, notes in the
melody's key (Krumhansl-Schmuckler on the soprano) or pitch classes the melody uses, temperature 0.8.
Statistics (musiclstm.evaluation.music.voices and .chorale): parallel fifths and octaves, voice crossings and
spacing (S-A or A-T over an octave) per 100 beats, their sum as voice-leading faults, notes outside
SATB ranges, lower-voice notes outside the key (Bach's key: K-S on the whole chorale), and the share
of long soprano notes (>= 2 beats; JSB has no fermata marks) over a root-position triad.

NLL/accuracy on Bach's notes: the probability each model gives the pitch Bach's alto, tenor and bass
sound at every 16th (a rest counts as a pitch), given the soprano and Bach's own lower voices before
it: the baseline reads left to right (the soprano up to that step, and at that step the voices above);
the bidirectional model sees the whole soprano and Bach's lower voices before that step (an orderless
NADE estimate in time order). Accuracy: the most likely pitch is Bach's.

The harmonizer was trained with the chorales of this test split left out by content (soprano and
bass openings); `musiclstm info harmonizer` shows the count.

    python bench/harmonize.py                      # ../shared/data/jsb/Jsb16thSeparated.json
    python bench/harmonize.py --limit 20 --iterations 32
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from musiclstm import theory
from musiclstm.encodings.grid import load_jsb
from musiclstm.evaluation.music import chorale, voices
from musiclstm.generation import gibbs as G
from musiclstm.generation import harmonize as H
from musiclstm.io.score import Score, Track, key_fit
from musiclstm.models import checkpoint
from musiclstm.models import harmonizer as HN

ROOT = Path(__file__).resolve().parent.parent
JSB = ROOT.parent / "shared" / "data" / "jsb" / "Jsb16thSeparated.json"


def to_score(p: np.ndarray) -> Score:
    """(T, 4) pitches (-1 silent), a repeated pitch held -> a four-track Score (quarters)."""
    rows = []
    for v in range(4):
        t = 0
        while t < len(p):
            if p[t, v] < 0:
                t += 1
                continue
            e = t + 1
            while e < len(p) and p[e, v] == p[t, v]:
                e += 1
            rows.append((t / 4, e / 4, p[t, v], v))
            t = e
    a = np.array(rows, float).reshape(-1, 4)
    return Score(a[:, 0], a[:, 1], a[:, 2], np.full(len(a), 80), a[:, 3],
                 tracks=[Track(52, False, n) for n in HN.VOICES])


def constraints(h: H.Loaded, sop: np.ndarray) -> set[int]:
    s = sop[sop >= 0]
    tonic, minor, _ = key_fit(np.bincount(s % 12, minlength=12))
    return theory.scale(tonic, minor) | {int(x) % 12 for x in s}


def bi_harmonize(h: H.Loaded, p: np.ndarray, seed: int, iterations: int, temperature: float,
                 rules: bool = True) -> np.ndarray:
    sop = np.full_like(p, -1)
    sop[:, 0] = p[:, 0]
    onset = np.r_[np.ones((1, 4), bool), sop[1:] != sop[:-1]]
    grid = h.cells.from_pitches(sop, onset)
    free = np.zeros(p.shape, bool)
    free[:, 1:] = True
    out = G.gibbs(h.net, h.cells, grid, free, G.allowed_cells(h.cells, h.ranges, constraints(h, p[:, 0])),
                  iterations=iterations, temperature=temperature, generator=torch.Generator().manual_seed(seed),
                  rules=rules)
    return h.cells.pitches(out)


def pitch_ids(tok, p: np.ndarray) -> np.ndarray:
    """(T, 4) pitches -> the baseline's (hold=False grid) ids, step by step S A T B."""
    v = tok.vocab
    return np.where(p < 0, v.id("REST"), v.id("PITCH", np.clip(p, 0, 127))).astype(np.int64)


@torch.no_grad()
def baseline_harmonize(base, h: H.Loaded, pieces: list[np.ndarray], seed: int, temperature: float,
                       rules: bool = True) -> list:
    """Left to right, all pieces at once: S forced, A T B sampled under the same constraints (with
    `rules`, `chorale.forbidden_pitches` against the steps so far and the voices above, as it can)."""
    tok, net = base.tokenizer, base.net
    B, T = len(pieces), max(len(p) for p in pieces)
    sop = np.full((B, T), -1)
    for b, p in enumerate(pieces):
        sop[b, : len(p)] = p[:, 0]
    allowed = []
    for p in pieces:  # (4, V) per piece, in the baseline's vocabulary
        pcs = constraints(h, p[:, 0])
        ok = torch.zeros(4, tok.vocab_size, dtype=torch.bool)
        ok[:, tok.vocab.id("REST")] = True
        for v, (lo, hi) in enumerate(h.ranges):
            for q in range(lo, hi + 1):
                ok[v, tok.vocab.id("PITCH", q)] = q % 12 in pcs
        allowed.append(ok)
    allowed = torch.stack(allowed)  # (B, 4, V)
    gen = torch.Generator().manual_seed(seed)
    out = np.full((B, T, 4), -1)
    state = net.zero_state(B)
    _, state = net.step(torch.full((B,), 1), state)  # BOS
    s_ids = torch.from_numpy(pitch_ids(tok, sop))
    p0 = tok.vocab.offset["PITCH"]
    for t in range(T):
        logits, state = net.step(s_ids[:, t], state)
        out[:, t, 0] = sop[:, t]
        for v in (1, 2, 3):
            lg = logits.float().masked_fill(~allowed[:, v], float("-inf"))
            if rules:  # the steps so far, and at this step the voices above: unknown below and ahead
                lg = torch.stack([_ruled(lg[b], h.cells, tok, out[b, max(0, t - 1):t + 1], v, t)
                                  for b in range(B)])
            lg = lg / temperature
            ids = torch.multinomial(torch.softmax(lg, -1), 1, generator=gen)[:, 0]
            out[:, t, v] = np.where(ids.numpy() >= p0, ids.numpy() - p0, -1)
            logits, state = net.step(ids, state)
    return [out[b, : len(p)] for b, p in enumerate(pieces)]


def _ruled(logits: torch.Tensor, cells, tok, window: np.ndarray, v: int, t: int) -> torch.Tensor:
    """The baseline's logits for voice v at step t with `forbidden_pitches` applied (unless all are)."""
    w = window.copy()
    w[-1, v:] = -2  # this voice and those below are not drawn yet
    x = np.where(w >= 0, cells.pitch0 + np.clip(w, 0, 127), np.where(w == -2, -2, cells.rest))
    if len(x) > 1:  # the grid says HOLD where a pitch goes on, as the harmonizer's cells do
        x[1:] = np.where((w[1:] >= 0) & (w[1:] == w[:-1]), cells.hold, x[1:])
    bad = G.forbidden_pitches(x, cells, -2)[-1, v]
    ruled = logits.clone()
    p0 = tok.vocab.offset["PITCH"]
    ruled[p0:p0 + 128] = ruled[p0:p0 + 128].masked_fill(torch.from_numpy(bad), float("-inf"))
    return ruled if torch.isfinite(ruled).any() else logits


@torch.no_grad()
def baseline_nll(base, p: np.ndarray) -> tuple[float, float, int]:
    """Sum of NLL, correct argmax count, cells: Bach's A T B pitches, left to right."""
    tok, net = base.tokenizer, base.net
    ids = np.r_[1, pitch_ids(tok, p).reshape(-1)]
    logits, _ = net(torch.from_numpy(ids)[None, :-1])
    lp = torch.log_softmax(logits[0].float(), -1)  # position i predicts ids[i + 1]
    target = torch.from_numpy(ids[1:])
    rows = torch.arange(len(target))
    lower = rows % 4 != 0
    nll = -lp[rows, target][lower]
    return float(nll.sum()), int((lp.argmax(-1) == target)[lower].sum()), int(lower.sum())


@torch.no_grad()
def bi_nll(h: H.Loaded, p: np.ndarray, batch: int = 64, onset: np.ndarray | None = None) -> tuple[float, float, int]:
    """Sum of NLL, correct count, cells: Bach's A T B sounding pitch at each step t, in the baseline's order:
    given the whole soprano, Bach's lower voices before t and, at t, the voices above (A, then T, then B:
    the chain rule in time order, a valid factorization of an orderless model). One masked copy of the
    piece per step and voice, batched. `onset` (T, 4): where notes are struck [wherever the pitch changes, as the
    JSB arrays read]."""
    c, net = h.cells, h.net
    T = len(p)
    if onset is None:
        onset = np.r_[np.ones((1, 4), bool), p[1:] != p[:-1]]
    truth = torch.from_numpy(c.from_pitches(p, onset))
    beat = (torch.arange(T) % HN.STEPS)[None]
    total, correct, n = 0.0, 0, 0
    for v in (1, 2, 3):
        for a in range(0, T, batch):
            steps = torch.arange(a, min(T, a + batch))
            x = truth[None].repeat(len(steps), 1, 1)
            ahead = torch.arange(T)[None, :, None] >= steps[:, None, None]  # (L, T, 1)
            hidden = ahead.expand(-1, -1, 4).clone()
            hidden[:, :, 0] = False  # the soprano is given throughout
            hidden[torch.arange(len(steps)), steps, 1:v] = False  # at t, the voices above v are given
            x = torch.where(hidden, torch.full_like(x, net.mask_id), x)
            lp = torch.log_softmax(net(x, beat.expand(len(steps), T))[torch.arange(len(steps)), steps, v].float(), -1)
            tgt = torch.from_numpy(p[steps.numpy(), v])  # (L,)
            prev = torch.from_numpy(np.where(steps.numpy() > 0, p[np.maximum(steps.numpy() - 1, 0), v], -1))
            # the probability of each sounding pitch: struck anew, or held on from the step before
            probs = torch.zeros(len(tgt), 129)  # pitch 0..127, 128 = silent
            probs[:, :128] = lp[:, c.pitch0:c.pitch0 + 128].exp()
            probs[:, 128] = lp[:, c.rest].exp()
            hold = lp[:, c.hold].exp()
            idx = torch.where(prev >= 0, prev, torch.full_like(prev, 128))
            probs.scatter_add_(1, idx[:, None], torch.where(prev >= 0, hold, 0.0)[:, None])
            want = torch.where(tgt >= 0, tgt, torch.full_like(tgt, 128))
            got = probs.gather(1, want[:, None])[:, 0]
            total += float(-torch.log(got.clamp_min(1e-12)).sum())
            correct += int((probs.argmax(-1) == want).sum())
            n += want.numel()
    return total, correct, n


@torch.no_grad()
def orderless_nll(h: H.Loaded, p: np.ndarray, gen: torch.Generator, positions: int = 128) -> tuple[float, int]:
    """Coconet's view: the NLL of the whole chorale (all four voices, the harmonizer's cells) under one random
    ordering of its 4T cells, -sum_i log p(x_o(i) | x_o(<i)), estimated without bias from `positions` of the
    4T terms drawn at random (each term one forward with the cells after it in the ordering masked).
    Returns (the estimated sum, frames). Cells mark a repeated pitch as held, as the JSB arrays read, so this is
    an upper bound on the NLL of the pitch frames (a re-strike of the same pitch is another cell, same pitches)."""
    c, net = h.cells, h.net
    T = len(p)
    onset = np.r_[np.ones((1, 4), bool), p[1:] != p[:-1]]
    truth = torch.from_numpy(c.from_pitches(p, onset)).reshape(-1)  # (4T,) time-major
    N = len(truth)
    order = torch.randperm(N, generator=gen)
    rank = torch.empty(N, dtype=torch.long)
    rank[order] = torch.arange(N)
    picks = torch.randint(0, N, (positions,), generator=gen)  # positions i in the ordering
    beat = (torch.arange(T) % HN.STEPS)[None]
    total = 0.0
    for a in range(0, positions, 32):
        i = picks[a:a + 32]
        x = truth[None].repeat(len(i), 1)
        x = torch.where(rank[None] >= i[:, None], torch.full_like(x, net.mask_id), x).reshape(len(i), T, 4)
        cell = order[i]  # the cell predicted at position i
        logits = net(x, beat.expand(len(i), T))[torch.arange(len(i)), cell // 4, cell % 4].float()
        total += float(-torch.log_softmax(logits, -1).gather(1, truth[cell][:, None]).sum())
    return total * N / positions, T


def stats(p: np.ndarray, key) -> dict[str, float]:
    s = to_score(p)
    v, c = voices(s, by_track=True), chorale(s, key)
    faults = v["parallel_fifths"] + v["parallel_octaves"] + v["voice_crossings"] + c["spacing"]
    return {"faults": faults, "parallel_fifths": v["parallel_fifths"], "parallel_octaves": v["parallel_octaves"],
            "voice_crossings": v["voice_crossings"], "spacing": c["spacing"], "out_of_range": v["out_of_range"],
            "out_of_key": c["out_of_key"], "cadences": c["cadences"]}


ROWS = [("faults", "voice-leading faults /100 beats", "low"), ("parallel_fifths", "  parallel fifths", "low"),
        ("parallel_octaves", "  parallel octaves", "low"), ("voice_crossings", "  voice crossings", "low"),
        ("spacing", "  spacing > octave (S-A, A-T)", "low"), ("out_of_range", "notes outside SATB ranges", "low"),
        ("out_of_key", "lower-voice notes outside the key", "bach"),
        ("cadences", "long soprano notes over a root triad", "high")]


def nll_views(h: H.Loaded, base, test: list[np.ndarray]) -> dict[str, tuple[float, float]]:
    """Print Coconet's view and the left-to-right view of the harmonizer (and the baseline) on `test`; return
    the latter: {model: (NLL per 16th, accuracy)}."""
    nll = {}
    for name, fn in (("bidirectional", lambda p: bi_nll(h, p)), ("baseline", lambda p: baseline_nll(base, p))):
        r = np.array([fn(p) for p in test])
        nll[name] = (r[:, 0].sum() / r[:, 2].sum(), r[:, 1].sum() / r[:, 2].sum())
    gen = torch.Generator().manual_seed(0)
    coco = np.array([orderless_nll(h, p, gen) for p in test])
    per_piece = coco[:, 0] / coco[:, 1]
    print(f"\nCoconet's view (Huang et al. 2017, 0.57 nats per frame on the 16th grid): the harmonizer's NLL of whole "
          f"test chorales, all four voices, one random ordering each (128 terms sampled per chorale): "
          f"{coco[:, 0].sum() / coco[:, 1].sum():.3f} nats per 16th frame (± {per_piece.std() / len(test) ** 0.5:.3f} "
          f"between chorales), {coco[:, 0].sum() / coco[:, 1].sum() / 4:.3f} per cell")
    print(f"left-to-right view (Bach's A T B given the soprano and the voices before, in the baseline's order), "
          f"NLL per 16th: bidirectional {nll['bidirectional'][0]:.3f}, baseline {nll['baseline'][0]:.3f}; accuracy "
          f"{nll['bidirectional'][1]:.3f} vs {nll['baseline'][1]:.3f}")
    return nll


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jsb", default=str(JSB))
    ap.add_argument("--model", default="harmonizer")
    ap.add_argument("--baseline", default="jsb16")
    ap.add_argument("--limit", type=int, default=None, help="first N test chorales only")
    ap.add_argument("--iterations", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--nll-only", action="store_true", help="the two NLL views only (minutes), no harmonizing")
    ap.add_argument("--no-nll", action="store_true", help="the sampled harmonizations only, not the NLL views")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if not Path(args.jsb).is_file():
        raise SystemExit(f"skipped: {args.jsb} not found (the JSB Chorales from ../shared/data)")
    h = H.load(args.model)
    base = checkpoint.load(args.baseline)
    test = [np.where(np.isnan(a), -1, a).astype(np.int64) for a in load_jsb(args.jsb)["test"]][: args.limit]
    print(f"{len(test)} chorales of the JSB test split; harmonizer {args.model} "
          f"(left out in training: {h.meta.get('data', {}).get('left_out')} pieces matching "
          f"{h.meta.get('data', {}).get('holdout')}'s test split); baseline {args.baseline}")

    nll = None if args.no_nll else nll_views(h, base, test)
    if args.nll_only:
        return

    t0 = time.time()
    bi = [bi_harmonize(h, p, i, args.iterations, args.temperature) for i, p in enumerate(test)]
    bi_s = (time.time() - t0) / len(test)
    bi_free = [bi_harmonize(h, p, i, args.iterations, args.temperature, rules=False) for i, p in enumerate(test)]
    bl = baseline_harmonize(base, h, test, 0, args.temperature)
    bl_free = baseline_harmonize(base, h, test, 0, args.temperature, rules=False)
    keys = [key_fit(np.bincount(p[p >= 0] % 12, minlength=12))[:2] for p in test]
    table = {name: {k: float(np.nanmean([stats(x, key)[k] for x, key in zip(xs, keys, strict=True)]))
                    for k, _, _ in ROWS}
             for name, xs in (("Bach", test), ("bidirectional", bi), ("baseline", bl),
                              ("bidirectional, no rules", bi_free), ("baseline, no rules", bl_free))}

    print("\nrules: sampling never draws a parallel fifth or octave or a crossed voice where another note is "
          "possible (the product's default, --no-rules turns it off); the baseline gets the same rule against "
          "what it has drawn so far. 'better?' compares bidirectional with baseline under the same setting.")
    print(f"\n{'statistic':40s} {'Bach':>7s} | {'bidir.':>7s} {'baseline':>8s} better? | "
          f"{'bidir.':>7s} {'baseline':>8s} better?  (no rules)")
    better = {"rules": nll is None or (nll["bidirectional"][0] < nll["baseline"][0]
                                       and nll["bidirectional"][1] > nll["baseline"][1])}
    better["free"] = better["rules"]
    for i, label in ((0, "NLL of Bach lower-voice pitches /16th"), (1, "accuracy on Bach lower-voice pitches")):
        if nll is None:
            break
        m, z = nll["bidirectional"][i], nll["baseline"][i]
        ok = "yes" if (m < z if i == 0 else m > z) else "NO"
        print(f"{label:40s} {'':>7s} | {m:7.3f} {z:8.3f} {ok:>7s} | {'':>7s} {'':>8s} {'(same)':>7s}")
    for k, label, sense in ROWS:
        b = table["Bach"][k]
        cols = []
        for setting, (mname, zname) in (("rules", ("bidirectional", "baseline")),
                                        ("free", ("bidirectional, no rules", "baseline, no rules"))):
            m, z = table[mname][k], table[zname][k]
            d = {"low": z - m, "high": m - z, "bach": abs(z - b) - abs(m - b)}[sense]  # > 0: bidirectional better
            tie = abs(d) < 5e-4
            better[setting] &= d > 0 or tie
            cols.append(f"{m:7.3f} {z:8.3f} {'tie' if tie else 'yes' if d > 0 else 'NO':>7s}")
        how = {"low": "lower", "high": "higher", "bach": "closer to Bach"}[sense]
        print(f"{label:40s} {b:7.3f} | {cols[0]} | {cols[1]}  ({how} is better)")
    for setting, mname in (("rules", "bidirectional"), ("free", "bidirectional, no rules")):
        bach, mine = table["Bach"]["faults"], table[mname]["faults"]
        ratio = f"{mine / bach:.2f}x" if bach > 0 else f"{mine:.2f} against none (too few chorales)"
        print(f"\ngoal ({mname}): voice-leading faults within 1.5x Bach's: {ratio} -> "
              f"{'MET' if mine <= 1.5 * bach else 'SHORT'}; better than the baseline on every statistic (or tied): "
              f"{'MET' if better[setting] else 'SHORT'}{' (the NLL rows not run: --no-nll)' if nll is None else ''}")

    sixteen = test[0][: 16 * 16]
    t0 = time.time()
    bi_harmonize(h, sixteen, 0, args.iterations, args.temperature)
    secs = time.time() - t0
    print(f"goal: a 16-bar melody harmonized in under 10 s: {secs:.2f} s -> {'MET' if secs < 10 else 'SHORT'} "
          f"(one thread, {args.iterations} iterations; mean {bi_s:.2f} s per test chorale of "
          f"{np.mean([len(p) for p in test]) / 16:.1f} bars)")


if __name__ == "__main__":
    main()
