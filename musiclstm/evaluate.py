"""`musiclstm evaluate`: how good a model is on held-out music.

* NLL of the held-out files in nats/token, bits/token and perplexity, also by token type.
* The same for an interpolated Kneser-Ney n-gram model (default 5-gram) fitted on the training part
  of the data and scored on the very same held-out tokens, so the LSTM's gain is visible.
* Statistics of generated samples against the held-out files (pitch-class histogram, pitch range,
  note density, polyphony, inter-onset interval, duration, velocity), each summarised by the
  overlapping area (OA, 1 = the same) of Yang & Lerch (2018): the distribution of distances
  within the data against the distribution of distances from samples to the data, both smoothed
  with a Gaussian kernel density estimate.
* Memorisation: the longest run of consecutive notes (pitch and onset step) that a sample shares
  with a training piece.
* Validity: tokens the grammar would not allow, zero-length notes and notes longer than 16 beats.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from . import data
from .errors import MusiclstmError
from .midi import read
from .score import Score


# ---- n-gram baseline -----------------------------------------------------------------------
class KneserNey:
    """Interpolated Kneser-Ney n-gram model over token ids (discount per order from count-of-counts).

    The highest order uses raw counts, the lower orders continuation counts (the number of distinct
    tokens seen before the n-gram); the unigram level is interpolated with a uniform distribution
    over the vocabulary, so no id has zero probability. N-grams are counted as int64 keys with numpy
    (order * log2(vocabulary) must stay under 63 bits: order 6 for the remi vocabulary).
    """

    def __init__(self, order: int, vocab_size: int):
        if order < 1 or order * math.log2(max(vocab_size, 2)) >= 63:
            raise MusiclstmError(f"n-gram order {order} is out of range for a vocabulary of {vocab_size}")
        self.n, self.V = order, vocab_size

    def _keys(self, s: np.ndarray, m: int) -> np.ndarray:
        key = np.zeros(len(s) - m + 1, np.int64)
        for i in range(m):
            key = key * self.V + s[i:len(s) - m + 1 + i]
        return key

    def fit(self, sequences) -> KneserNey:
        n, V = self.n, self.V
        padded = [np.r_[np.ones(n - 1, np.int64), np.asarray(q, np.int64)] for q in sequences]
        grams = {m: np.concatenate([self._keys(s, m) for s in padded if len(s) >= m]) for m in range(1, n + 1)}
        # per n-gram length m: {gram key: count}, {context key: (total, distinct followers)}, discount
        self.counts, self.contexts, self.discount = [], [], []
        for m in range(1, n + 1):
            if m == n:
                keys, c = np.unique(grams[m], return_counts=True)
            else:  # continuation counts: distinct (m+1)-grams ending in this m-gram
                keys, c = np.unique(np.unique(grams[m + 1]) % V ** m, return_counts=True)
            ctx, inv = np.unique(keys // V, return_inverse=True)
            totals, distinct = np.bincount(inv, weights=c), np.bincount(inv)
            n1, n2 = int((c == 1).sum()), int((c == 2).sum())
            self.discount.append(n1 / (n1 + 2 * n2) if n1 + n2 else 0.75)
            self.counts.append(dict(zip(keys.tolist(), c.tolist(), strict=True)))
            pairs = zip(totals.tolist(), distinct.tolist(), strict=True)
            self.contexts.append(dict(zip(ctx.tolist(), pairs, strict=True)))
        return self

    def prob(self, context: tuple, w: int) -> float:
        """P(w | the last n-1 ids of `context`)."""
        p, ctx = 1.0 / self.V, 0
        hist = list(context)[len(context) - (self.n - 1):] if self.n > 1 else []
        for m in range(1, self.n + 1):  # from the unigram level up to the full context
            if m > 1:
                if len(hist) < m - 1:
                    break
                ctx = 0
                for t in hist[len(hist) - (m - 1):]:
                    ctx = ctx * self.V + t
            entry = self.contexts[m - 1].get(ctx)
            if entry is None:
                break  # an unseen context: the lower order's estimate stands
            total, distinct = entry
            d = self.discount[m - 1]
            p = max(self.counts[m - 1].get(ctx * self.V + w, 0) - d, 0.0) / total + d * distinct / total * p
        return p

    def nlls(self, seq) -> np.ndarray:
        """NLL of seq[1:] given what precedes (seq[0] is BOS), in nats."""
        s = [1] * (self.n - 1) + [int(t) for t in seq]
        off = self.n - 1
        return np.array([-math.log(self.prob(s[i - off:i], s[i])) for i in range(off + 1, len(s))])


# ---- the LSTM's NLL -------------------------------------------------------------------------
@torch.no_grad()
def lstm_nlls(net, ids: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """NLL of ids[1:] given what precedes, state carried across chunks of a long piece."""
    net.eval()
    device = next(net.parameters()).device
    x, y = torch.as_tensor(ids[:-1])[None], torch.as_tensor(ids[1:])
    out, state = [], None
    for i in range(0, x.shape[1], chunk):
        logits, state = net(x[:, i:i + chunk].to(device), state)
        out.append(F.cross_entropy(logits[0].float(), y[i:i + chunk].to(device), reduction="none").cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def _summary(nll: np.ndarray, kinds: np.ndarray, names: list[str]) -> dict:
    mean = float(nll.mean())
    by_type = {names[k]: {"tokens": int((kinds == k).sum()), "nll_nats_per_token": float(nll[kinds == k].mean())}
               for k in np.unique(kinds)}
    return {"nll_nats_per_token": mean, "bits_per_token": mean / math.log(2), "perplexity": math.exp(mean),
            "by_type": by_type}


# ---- sample statistics ---------------------------------------------------------------------
FEATURES = ("pitch_class_histogram", "pitch_range", "note_density", "polyphony", "inter_onset_interval",
            "duration", "velocity")


def features(score: Score) -> dict[str, np.ndarray]:
    """One piece's features (pitched notes only; times in seconds)."""
    s = score.select(~score.is_drum)
    if len(s) == 0:
        return {}
    start, end = s.seconds(s.start), s.seconds(s.end)
    onsets = np.unique(np.round(start, 3))
    sounding = [(start <= t + 1e-6) & (end > t + 1e-6) for t in onsets[:2000]]
    pc = np.bincount(s.pitch.astype(int) % 12, minlength=12).astype(float)
    return {"pitch_class_histogram": pc / pc.sum(),
            "pitch_range": np.array([s.pitch.max() - s.pitch.min()], float),
            "note_density": np.array([len(s) / max(end.max() - start.min(), 1e-3)]),
            "polyphony": np.array([np.mean([m.sum() for m in sounding])]),
            "inter_onset_interval": np.array([np.diff(onsets).mean() if len(onsets) > 1 else 0.0]),
            "duration": np.array([(end - start).mean()]),
            "velocity": np.array([s.velocity.mean()])}


MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])


def in_key(score: Score) -> float:
    """Share of the pitched notes that fall in the best-fitting major (or relative minor) scale."""
    s = score.select(~score.is_drum)
    h = np.bincount(s.pitch.astype(int) % 12, minlength=12)
    return float(max(h[(MAJOR + r) % 12].sum() for r in range(12)) / max(1, h.sum()))


def _kde(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    values = values[np.isfinite(values)]
    if len(values) < 2 or values.std() == 0:
        bw = max(1e-3, 0.05 * (grid[-1] - grid[0]))
    else:
        bw = 1.06 * values.std() * len(values) ** -0.2  # Scott's / Silverman's rule
    z = (grid[:, None] - values[None, :]) / bw
    return np.exp(-0.5 * z * z).sum(1) / (len(values) * bw * math.sqrt(2 * math.pi))


def overlap_area(reference: list[np.ndarray], generated: list[np.ndarray]) -> float:
    """Yang & Lerch's OA of one feature: intra-reference distances vs generated-to-reference distances."""
    r, g = np.array(reference), np.array(generated)
    intra = np.linalg.norm(r[:, None] - r[None, :], axis=-1)[np.triu_indices(len(r), 1)]
    inter = np.linalg.norm(g[:, None] - r[None, :], axis=-1).ravel()
    if len(intra) == 0 or len(inter) == 0:
        return float("nan")
    hi = max(intra.max(), inter.max())
    if hi < 1e-9:  # every piece has the same value (e.g. one fixed velocity): the sets agree exactly
        return 1.0
    grid = np.linspace(0, hi * 1.2 + 1e-9, 1024)
    a, b = _kde(intra, grid), _kde(inter, grid)
    return float(np.minimum(a, b).sum() * (grid[1] - grid[0]))


def _note_codes(score: Score) -> np.ndarray:
    """Notes in time order as ints: pitch and the onset step (in 12ths of a quarter) since the last note."""
    s = score.select(~score.is_drum)
    order = np.lexsort((s.pitch, s.start))
    steps = np.diff(np.r_[0.0, np.round(s.start[order] * 12)]).clip(0, 9999)
    return (s.pitch[order].astype(np.int64) * 10000 + steps.astype(np.int64))


def _hashes(codes: np.ndarray, k: int) -> np.ndarray:
    """A 64-bit polynomial hash of every run of k consecutive codes."""
    if len(codes) < k:
        return np.zeros(0, np.uint64)
    h = np.zeros(len(codes) - k + 1, np.uint64)
    with np.errstate(over="ignore"):
        for j in range(k):
            h = h * np.uint64(1_000_003) + codes[j:len(codes) - k + 1 + j].astype(np.uint64)
    return h


def longest_copies(samples: list[np.ndarray], training: list[np.ndarray]) -> list[int]:
    """For each sample, the longest run of consecutive notes found, in order, in one training piece."""
    memo: dict[int, np.ndarray] = {}

    def found(sample: np.ndarray, k: int) -> bool:
        if k not in memo:
            memo[k] = np.unique(np.concatenate([_hashes(t, k) for t in training] or [np.zeros(0, np.uint64)]))
        return bool(np.isin(_hashes(sample, k), memo[k]).any())

    out = []
    for sample in samples:
        lo, hi = 0, len(sample)  # found(lo) holds; binary search for the largest k
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if found(sample, mid) else (lo, mid - 1)
        out.append(lo)
    return out


def longest_copy(sample: np.ndarray, training: list[np.ndarray]) -> int:
    return longest_copies([sample], training)[0]


def _validity(model, seqs: list[list[int]]) -> dict:
    """Replay each sample through the grammar and count the tokens it would not have allowed (the
    closing EOS, which the length limit forces, is not counted)."""
    from .grammar import grammar_for

    bad = 0
    for ids in seqs:
        ids = ids[:-1] if ids and ids[-1] == 2 else ids
        g = grammar_for(model.tokenizer)
        t = torch.tensor(ids)[None]
        dummy = torch.zeros(1, model.tokenizer.vocab_size)
        start = next((i for i, v in enumerate(ids[1:], 1) if not model.tokenizer.vocab.split(v)[0] == "STYLE"), 1)
        bad += sum(not bool(g(t[:, :j], dummy)[0, ids[j]]) for j in range(start, len(ids)))
    return {"invalid_tokens": bad, "tokens": sum(len(s) for s in seqs)}


# ---- the whole evaluation ------------------------------------------------------------------
def evaluate(model, corpus, *, train_corpus=None, samples: int = 8, sample_seconds: float = 30.0, order: int = 5,
             seed: int = 0, jobs: int | None = None, progress: bool = False, cache_dir=None) -> dict:
    """Evaluate a loaded `Model` on `corpus` (folders or files). Returns a JSON-ready dict.

    Held out: the validation files of `corpus` (the same content-hash split as training, so a model
    trained on this corpus never saw them); the n-gram model and the memorisation check use its
    training files. With `train_corpus`, all of `corpus` is held out and `train_corpus` is the
    training side.
    """
    from .compose import compose

    tok = model.tokenizer
    train_cfg = model.meta.get("train", {})
    styles = train_cfg.get("styles", "none") if tok.styles else "none"
    paths = data.as_paths(corpus)
    kw = dict(styles=styles, jobs=jobs, cache_dir=cache_dir, progress=progress)
    if train_corpus is None:
        prepared = data.prepare(paths, tok, val_fraction=train_cfg.get("val_fraction", 0.1), **kw)
        held, fit = prepared.split("valid"), prepared.split("train")
    else:
        held = data.prepare(paths, tok, val_fraction=0.0, **kw).pieces
        fit = data.prepare(data.as_paths(train_corpus), tok, val_fraction=0.0, **kw).pieces
    if not held:
        raise MusiclstmError("no held-out files: the data is too small for a validation split (give --train-data)")
    if not fit:
        raise MusiclstmError("no training files to fit the n-gram baseline on")

    style_lo, style_hi = tok.vocab.offset["STYLE"], tok.vocab.offset["STYLE"] + len(tok.styles)
    nll, ngram_nll, kinds = [], [], []
    ngram = KneserNey(order, tok.vocab_size).fit(p.ids for p in fit)
    for p in held:
        keep = ~((p.ids[1:] >= style_lo) & (p.ids[1:] < style_hi))  # a style token is given, not predicted
        nll.append(lstm_nlls(model.net, p.ids)[keep])
        ngram_nll.append(ngram.nlls(p.ids)[keep])
        kinds.append(tok.vocab.kind_index(p.ids[1:][keep]))
    nll, ngram_nll, kinds = np.concatenate(nll), np.concatenate(ngram_nll), np.concatenate(kinds)
    lstm, base = _summary(nll, kinds, tok.vocab.kinds), _summary(ngram_nll, kinds, tok.vocab.kinds)
    result = {"held_out_files": len(held), "training_files": len(fit), "tokens": int(len(nll)),
              "nll_nats_per_token": lstm["nll_nats_per_token"], "bits_per_token": lstm["bits_per_token"],
              "perplexity": lstm["perplexity"], "ngram_order": order,
              "ngram_nll_nats_per_token": base["nll_nats_per_token"], "ngram_bits_per_token": base["bits_per_token"],
              "ngram_perplexity": base["perplexity"],
              "by_type": {k: {"tokens": v["tokens"], "nll_nats_per_token": v["nll_nats_per_token"],
                              "ngram_nll_nats_per_token": base["by_type"][k]["nll_nats_per_token"]}
                          for k, v in lstm["by_type"].items()}}
    if samples <= 0:
        return result

    pms, seqs = compose(model, seconds=sample_seconds, num=samples, seed=seed, return_ids=True)
    pms = pms if isinstance(pms, list) else [pms]
    gen_scores = [read(pm) for pm in pms]
    ref_scores = []
    for p in held[:64]:
        s = tok.decode_score(p.ids)
        cut = s.quarters(sample_seconds) if len(s) else 0
        ref_scores.append(s.crop(float(cut)) if len(s) else s)
    gen_f = [f for f in map(features, gen_scores) if f]
    ref_f = [f for f in map(features, ref_scores) if f]
    oa = {name: overlap_area([f[name] for f in ref_f], [f[name] for f in gen_f]) for name in FEATURES}
    result["samples"] = {"count": samples, "seconds": sample_seconds, "seed": seed,
                         "overlapping_area": oa, "mean_overlapping_area": float(np.nanmean(list(oa.values()))),
                         "generated_mean": {k: float(np.mean([f[k].mean() for f in gen_f])) for k in FEATURES[1:]},
                         "data_mean": {k: float(np.mean([f[k].mean() for f in ref_f])) for k in FEATURES[1:]},
                         "in_key": {"generated": float(np.mean([in_key(x) for x in gen_scores if len(x)])),
                                    "data": float(np.mean([in_key(x) for x in ref_scores if len(x)]))}}
    training_codes = [_note_codes(tok.decode_score(p.ids)) for p in fit]
    sample_codes = [_note_codes(s) for s in gen_scores]
    copies = longest_copies(sample_codes, training_codes)
    notes = [len(c) for c in sample_codes]
    result["memorisation"] = {"longest_copied_notes": int(max(copies)), "mean_longest_copied_notes":
                              float(np.mean(copies)), "notes_per_sample": float(np.mean(notes))}
    zero = sum(int(((s.end - s.start) <= 0).sum()) for s in gen_scores)
    beats = sum(int(((s.end - s.start) > 16).sum()) for s in gen_scores)
    result["validity"] = {**_validity(model, seqs), "zero_length_notes": zero, "notes_over_16_beats": beats}
    return result


def report(r: dict) -> str:
    """A readable summary of `evaluate`'s result."""
    lines = [f"held out: {r['held_out_files']} files, {r['tokens']:,} tokens (n-gram fitted on "
             f"{r['training_files']} files)",
             f"{'':22s}{'nats/token':>11s}{'bits/token':>11s}{'perplexity':>11s}",
             f"{'LSTM':22s}{r['nll_nats_per_token']:11.3f}{r['bits_per_token']:11.3f}{r['perplexity']:11.2f}",
             f"{'Kneser-Ney ' + str(r['ngram_order']) + '-gram':22s}{r['ngram_nll_nats_per_token']:11.3f}"
             f"{r['ngram_bits_per_token']:11.3f}{r['ngram_perplexity']:11.2f}",
             "by token type (tokens, LSTM, n-gram nats/token):"]
    lines += [f"  {k:18s}{v['tokens']:9d}{v['nll_nats_per_token']:8.3f}{v['ngram_nll_nats_per_token']:8.3f}"
              for k, v in r["by_type"].items()]
    if "samples" in r:
        s = r["samples"]
        lines.append(f"{s['count']} samples of {s['seconds']:g} s against the data, overlapping area (1 = same):")
        lines += [f"  {k:24s}{v:6.3f}" for k, v in s["overlapping_area"].items()]
        lines.append(f"  {'mean':24s}{s['mean_overlapping_area']:6.3f}")
        k = s["in_key"]
        lines.append(f"notes in the best-fitting key: samples {k['generated']:.3f}, data {k['data']:.3f}")
        m, v = r["memorisation"], r["validity"]
        lines.append(f"memorisation: longest run copied from a training piece {m['longest_copied_notes']} notes "
                     f"(mean {m['mean_longest_copied_notes']:.1f}; samples have {m['notes_per_sample']:.0f} notes)")
        lines.append(f"validity: {v['invalid_tokens']} tokens against the grammar of {v['tokens']:,}, "
                     f"{v['zero_length_notes']} zero-length notes, {v['notes_over_16_beats']} notes over 16 beats")
    return "\n".join(lines)
