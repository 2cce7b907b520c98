"""`musiclstm evaluate`: how good a model is on held-out music.

* NLL of the held-out files in nats/token, bits/token and perplexity, also by token type.
* The same for an interpolated Kneser-Ney n-gram model (default 5-gram) fitted on the training part
  of the data and scored on the very same held-out tokens, so the LSTM's gain is visible.
* Statistics of generated samples against the held-out files (pitch-class histogram, pitch range,
  note density, polyphony, inter-onset interval, duration, velocity), each summarised by the
  overlapping area (OA, 1 = the same) of Yang & Lerch (2018): the distribution of distances
  within the data against the distribution of distances from samples to the data, both smoothed
  with a Gaussian kernel density estimate.
* Music statistics (`musiclstm.evaluation.music`: tonality, melody, rhythm, form, voices, meter and ending) of
  samples, held-out pieces and pitch-shuffled held-out pieces, read alike (tokenizer decode, leading
  empty bars trimmed, same length), as mean, sd and Cohen's d against the held-out pieces.
* The repeat probe: the LSTM's NLL per token kind in held-out bars that repeat an earlier bar of
  the same piece against the other bars (a model that uses its memory finds the repeats cheap).
* A data check: the held-out split's fingerprint against the checkpoint's (a warning on mismatch)
  and, with a separate training corpus, held-out files that are also training files (left out).
* Memorisation: the longest run of consecutive notes (pitch and onset step) that a sample shares
  with a training piece.
* Validity: tokens the grammar would not allow, zero-length notes and notes longer than 16 beats.
May import: errors, theory, io, encodings, data, models, generation (samples). Not: training, app.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch

from .. import data
from ..errors import MusiclstmError
from ..io.score import Score
from ..models.cache import piece_nlls
from . import music
from .ngram import KneserNey
from .report import report
from .samples import FEATURES, _note_codes, features, in_key, longest_copies, overlap_area

__all__ = ["KneserNey", "evaluate", "jsonable", "music_statistics", "repeat_probe", "report", "token_bars"]


# ---- NLL by token type ----------------------------------------------------------------------
def _summary(nll: np.ndarray, kinds: np.ndarray, names: list[str]) -> dict:
    mean = float(nll.mean())
    by_type = {names[k]: {"tokens": int((kinds == k).sum()), "nll_nats_per_token": float(nll[kinds == k].mean())}
               for k in np.unique(kinds)}
    return {"nll_nats_per_token": mean, "bits_per_token": mean / math.log(2), "perplexity": math.exp(mean),
            "by_type": by_type}


# ---- sample statistics ---------------------------------------------------------------------


















def _validity(model, seqs: list[list[int]]) -> dict:
    """Replay each sample through the grammar and count the tokens it would not have allowed (the
    closing EOS, which the length limit forces, is not counted)."""
    from ..encodings.registry import grammar_for

    bad = 0
    for ids in seqs:
        ids = ids[:-1] if ids and ids[-1] == 2 else ids
        g = grammar_for(model.tokenizer)
        t = torch.tensor(ids)[None]
        dummy = torch.zeros(1, model.tokenizer.vocab_size)
        start = next((i for i, v in enumerate(ids[1:], 1) if not model.tokenizer.vocab.split(v)[0] == "STYLE"), 1)
        bad += sum(not bool(g(t[:, :j], dummy)[0, ids[j]]) for j in range(start, len(ids)))
    return {"invalid_tokens": bad, "tokens": sum(len(s) for s in seqs)}


# ---- held-out data, checked against the checkpoint ------------------------------------------
def _held_out(model, corpus, train_corpus, kw: dict, warn) -> tuple[list, list, dict]:
    """(held-out pieces, n-gram training pieces, data check). The split is recomputed from file
    hashes with the run's own settings and its fingerprint compared with the checkpoint's."""
    tok = model.tokenizer
    train_cfg = model.meta.get("train", {})
    val = train_cfg.get("val_fraction", 0.1)
    trained_on = model.meta.get("fingerprint")
    check: dict = {"checkpoint_fingerprint": trained_on}
    if train_corpus is None:
        prepared = data.prepare(data.as_paths(corpus), tok, val_fraction=val, **kw)
        held, fit = prepared.split("valid"), prepared.split("train")
    else:
        held = data.prepare(data.as_paths(corpus), tok, val_fraction=0.0, **kw).pieces
        prepared = data.prepare(data.as_paths(train_corpus), tok, val_fraction=val, **kw)
        fit = prepared.pieces
        seen = {p.sha for p in fit}
        overlap = [str(p.path) for p in held if p.sha in seen]
        check["train_overlap_files"] = len(overlap)
        if overlap:
            warn(f"{len(overlap)} held-out file(s) are also in --train-data (same content), left out of the "
                 f"held-out set, e.g. {overlap[0]}")
            held = [p for p in held if p.sha not in seen]
    # computed with the tokenizer dict the checkpoint stored, so only files, split and styles count
    check["data_fingerprint"] = data.fingerprint(model.meta.get("tokenizer", tok.to_dict()),
                                                [(p.sha, p.split, p.style) for p in prepared.pieces])
    check["match"] = None if not trained_on else check["data_fingerprint"] == trained_on
    if check["match"] is False:
        what = "--train-data" if train_corpus is not None else "this data"
        warn(f"the checkpoint was trained on data with fingerprint {trained_on}, but {what} gives "
             f"{check['data_fingerprint']}: other files (a re-export?) or another split, so 'held-out' "
             "files may have been trained on")
    if not held:
        raise MusiclstmError("no held-out files: the data is too small for a validation split (give --train-data)")
    if not fit:
        raise MusiclstmError("no training files to fit the n-gram baseline on")
    return held, fit, check


# ---- the repeat probe --------------------------------------------------------------------------
def token_bars(tok, seq, score: Score | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For `seq[1:]`, the bar of each token (counted by BAR tokens; a BAR token belongs to the bar it
    opens; -1 before the first), per bar the first bar with the same decoded notes (onset in
    the bar, pitch, duration; -1 for an empty bar), and per bar its number of (pitched) notes. Needs BAR
    tokens (remi). `score`: `seq` decoded
    already (else it is decoded here)."""
    target = np.asarray(seq[1:])
    bar_lo = tok.vocab.offset["BAR"]
    is_bar = (target >= bar_lo) & (target < bar_lo + tok.vocab.sizes[tok.vocab.kinds.index("BAR")])
    n_bars = int(is_bar.sum())
    score = tok.decode_score(seq) if score is None else score
    bars = music.bar_lines(score, end=score.time_signatures[-1, 0] + 32.0 * (n_bars + 1))[:n_bars]
    return np.cumsum(is_bar) - 1, music.first_copies(score, bars), np.array(
        [len(r) for r in music.bar_contents(score, bars)], np.int64)


def repeat_probe(tok, seqs: list[np.ndarray], nlls: list[np.ndarray], scores: list | None = None) -> dict | None:
    """NLL per token kind in bars that repeat an earlier bar of the same piece note for note against
    the other non-empty bars (`token_bars`). `nlls[i]` scores `seqs[i][1:]`; STYLE tokens (given,
    not predicted) are left out; `scores[i]` is `seqs[i]` decoded, if the caller has it. None for
    encodings without BAR tokens."""
    if "BAR" not in tok.vocab.offset:
        return None
    kinds = tok.vocab.kinds
    style_lo, style_hi = tok.vocab.offset["STYLE"], tok.vocab.offset["STYLE"] + len(tok.styles)
    rep_k, oth_k, rep_n, oth_n, bars_rep, bars_all = [], [], [], [], 0, 0
    per_note = np.zeros((2, 2))  # (repeated, new) x (nats, notes): whole bars, whatever the tokens
    for i, (seq, nll) in enumerate(zip(seqs, nlls, strict=True)):
        bar, first, notes = token_bars(tok, seq, scores[i] if scores is not None else None)
        if len(first) == 0:
            continue
        full, rep = first >= 0, (first >= 0) & (first < np.arange(len(first)))
        bars_rep, bars_all = bars_rep + int(rep.sum()), bars_all + int(full.sum())
        target = np.asarray(seq[1:])
        ok = (bar >= 0) & ~((target >= style_lo) & (target < style_hi))
        b = np.clip(bar, 0, None)
        k = tok.vocab.kind_index(target)
        in_rep, in_oth = ok & rep[b], ok & full[b] & ~rep[b]
        rep_k.append(k[in_rep]), rep_n.append(nll[in_rep]), oth_k.append(k[in_oth]), oth_n.append(nll[in_oth])
        per_note += [[nll[in_rep].sum(), notes[rep].sum()], [nll[in_oth].sum(), notes[full & ~rep].sum()]]
    if not rep_k:
        return None
    rk, rn, ok_, on = (np.concatenate(a) for a in (rep_k, rep_n, oth_k, oth_n))

    def row(rm, om) -> dict:
        return {"repeated": float(rn[rm].mean()) if rm.any() else None, "repeated_tokens": int(rm.sum()),
                "other": float(on[om].mean()) if om.any() else None, "other_tokens": int(om.sum())}

    by_kind = {kinds[i]: row(rk == i, ok_ == i) for i in np.unique(np.r_[rk, ok_])}
    nats = {k: float(a / n) if n else None for k, (a, n) in zip(("repeated", "other"), per_note, strict=True)}
    ratio = nats["repeated"] / nats["other"] if nats["repeated"] is not None and nats["other"] else None
    return {"bars": bars_all, "repeated_bars": bars_rep, "all": row(rk >= 0, ok_ >= 0), "by_type": by_kind,
            "per_note": {**nats, "ratio": ratio}}


# ---- music statistics --------------------------------------------------------------------------
def _describe(values: list[float]) -> dict:
    v = np.array([x for x in values if x is not None and np.isfinite(x)], float)
    if not len(v):
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v))}


def cohens_d(a: dict, b: dict) -> float | None:
    """(mean b - mean a) / pooled sd, from two `_describe` summaries (None when undefined, +-inf when
    neither varies but the means differ)."""
    if not a["n"] or not b["n"] or a["n"] + b["n"] < 3:
        return None
    pooled = math.sqrt(((a["n"] - 1) * a["sd"] ** 2 + (b["n"] - 1) * b["sd"] ** 2) / max(1, a["n"] + b["n"] - 2))
    if pooled < 1e-12:
        diff = b["mean"] - a["mean"]
        return 0.0 if abs(diff) < 1e-12 else math.copysign(math.inf, diff)  # JSON: null
    return (b["mean"] - a["mean"]) / pooled


def _timesig_first(tok, ids) -> float:
    """1 if a TIMESIG token comes before the first note's pitch (remi), else 0; NaN without TIMESIG."""
    if "TIMESIG" not in tok.vocab.offset:
        return float("nan")
    kinds = np.array(tok.vocab.kinds)[tok.vocab.kind_index(np.asarray(ids, np.int64))]
    notes = np.flatnonzero(np.isin(kinds, ["PITCH", "DRUM"]))
    head = kinds[:notes[0]] if len(notes) else kinds
    return float((head == "TIMESIG").any())


def music_statistics(tok, real_ids: list, sample_ids: list, *, quarters: float, seconds: float, seed: int,
                     real_scores: list | None = None, sample_scores: list | None = None) -> dict:
    """Every `musiclstm.evaluation.music` statistic for held-out pieces, samples and pitch-shuffled held-out
    pieces, all read through the tokenizer's decode, trimmed of leading empty bars and cut to
    `quarters`; summaries (mean, sd, n) and Cohen's d of model and shuffled against real.
    `real_scores`, `sample_scores`: the ids decoded already, if the caller has them."""
    rng = np.random.default_rng(seed)
    real = real_scores if real_scores is not None else [tok.decode_score(i) for i in real_ids]
    model = sample_scores if sample_scores is not None else [tok.decode_score(i) for i in sample_ids]
    cut = {"real": [music.excerpt(s, quarters) for s in real], "model": [music.excerpt(s, quarters) for s in model]}
    # the shuffled excerpt keeps the real excerpt's rhythm and pitch collection; its ending is the whole piece's
    cut["shuffled"] = [music.shuffle_pitches(s, rng) for s in cut["real"]]
    whole = {"real": real, "model": model, "shuffled": [music.shuffle_pitches(music.pitched(s), rng) for s in real]}
    ids = {"real": real_ids, "model": sample_ids, "shuffled": [None] * len(real)}
    # voices as the held-out pieces have them: tracks when most have several, else ranked notes
    by_track = bool(real) and np.median([len(np.unique(s.track)) for s in cut["real"]]) >= 2
    n_voices = int(np.median([music.voice_count(s) for s in cut["real"]])) if real else 1
    rows: dict[str, dict[str, list]] = {}
    for name in ("real", "model", "shuffled"):
        for piece, full, i in zip(cut[name], whole[name], ids[name], strict=True):
            st = music.statistics(piece, n_voices, by_track)
            st.update(music.ending(full))
            st["time_signature"] = _timesig_first(tok, i) if i is not None else float("nan")
            st["length_vs_asked"] = (full.duration_seconds / seconds) if name == "model" else float("nan")
            for k, v in st.items():
                rows.setdefault(k, {"real": [], "model": [], "shuffled": []})[name].append(v)
    out = {}
    for k, sets in rows.items():
        d = {name: _describe(v) for name, v in sets.items()}
        out[k] = {**d, "d_model": cohens_d(d["real"], d["model"]), "d_shuffled": cohens_d(d["real"], d["shuffled"])}
    return {"pieces": len(real), "samples": len(model), "quarters": quarters, "voices": n_voices,
            "voices_by_track": by_track, "statistics": out, "repeat_distances": repeat_histograms(cut)}


def repeat_histograms(cut: dict[str, list]) -> dict:
    """Nearest-copy distances of the repeated bars in the held-out excerpts and the samples: the share of
    each distance (the eight most common of either), and the overlap of the two histograms."""
    dist = {k: np.concatenate([music.repeat_distances(s) for s in cut[k]] or [np.zeros(0, np.int64)])
            for k in ("real", "model")}
    dist = {k: v[v > 0] for k, v in dist.items()}
    common = sorted(set(np.bincount(dist["real"]).argsort()[::-1][:8].tolist()
                        + np.bincount(dist["model"]).argsort()[::-1][:8].tolist()) - {0}) if all(
        len(v) for v in dist.values()) else sorted(set(np.concatenate(list(dist.values())).tolist()))[:8]
    share = {k: {int(d): float((v == d).mean()) if len(v) else 0.0 for d in common} for k, v in dist.items()}
    return {"overlap": music.distance_overlap(dist["real"], dist["model"]), "share": share,
            "repeats": {k: int(len(v)) for k, v in dist.items()}}


# ---- the whole evaluation ------------------------------------------------------------------
def evaluate(model, corpus, *, train_corpus=None, samples: int = 20, sample_seconds: float = 30.0,
             quarters: float = 60.0, pieces: int = 60, order: int = 5, seed: int = 0, jobs: int | None = None,
             progress: bool = False, cache_dir=None, warn=None, harmonizer: bool | None = None) -> dict:
    """Evaluate a loaded `Model` on `corpus` (folders or files). Returns a JSON-ready dict.

    Held out: the validation files of `corpus` (the same content-hash split as training, checked
    against the checkpoint's data fingerprint); the n-gram model and the memorisation check use its
    training files. With `train_corpus`, all of `corpus` is held out (less any file also in
    `train_corpus`) and `train_corpus` is the training side. Each held-out piece is scored from a
    zero LSTM state after BOS [STYLE], as training presents it. `samples` pieces of
    `sample_seconds` are composed (seeded) and compared with up to `pieces` held-out pieces (a
    seeded draw), both cut to `quarters`. `warn(message)` reports problems [one line on stderr]. `harmonizer`
    is compose's: samples of a chorale model have their lower voices written by the harmonizer [on for those].
    """
    from ..generation.chorales import is_chorale_model
    from ..generation.compose import compose

    warnings: list[str] = []

    def note(msg: str) -> None:
        warnings.append(msg)
        (warn or (lambda m: print(f"warning: {m}", file=sys.stderr)))(msg)

    tok = model.tokenizer
    styles = model.meta.get("train", {}).get("styles", "none") if tok.styles else "none"
    kw = dict(styles=styles, jobs=jobs, cache_dir=cache_dir, progress=progress)
    held, fit, check = _held_out(model, corpus, train_corpus, kw, note)
    result, seqs, held_scores = _likelihood(model, held, fit, check, order)
    result["warnings"] = warnings
    if samples <= 0:
        return result

    _, sample_seqs = compose(model, seconds=sample_seconds, num=samples, seed=seed, return_ids=True,
                             harmonizer=harmonizer)
    result["harmonizer"] = is_chorale_model(model) if harmonizer is None else bool(harmonizer)
    sample_seqs = [np.asarray(s, np.int64) for s in sample_seqs]
    draw = np.random.default_rng(seed).permutation(len(held))[:pieces]
    real_ids = [seqs[i] for i in sorted(draw)]
    real_scores = [held_scores[i] if held_scores is not None else tok.decode_score(seqs[i]) for i in sorted(draw)]
    gen_scores = [tok.decode_score(s) for s in sample_seqs]
    result["music"] = music_statistics(tok, real_ids, sample_seqs, quarters=quarters, seconds=sample_seconds,
                                       seed=seed, real_scores=real_scores, sample_scores=gen_scores)
    result["samples"] = _sample_features(real_scores, gen_scores, quarters=quarters, count=samples,
                                         seconds=sample_seconds, seed=seed)
    result["memorisation"] = _memorisation(tok, fit, gen_scores)
    zero = sum(int(((s.end - s.start) <= 0).sum()) for s in gen_scores)
    beats = sum(int(((s.end - s.start) > 16).sum()) for s in gen_scores)
    result["validity"] = {**_validity(model, [list(s) for s in sample_seqs]), "zero_length_notes": zero,
                          "notes_over_16_beats": beats}
    return result


def _likelihood(model, held: list, fit: list, check, order: int) -> tuple[dict, list[np.ndarray], list]:
    """The held-out pieces scored: (the result so far: counts, NLL per token, per note and by token type beside
    the Kneser-Ney n-gram fitted on `fit`, the repeat probe; the held-out sequences; their decoded scores)."""
    tok = model.tokenizer
    style_lo, style_hi = tok.vocab.offset["STYLE"], tok.vocab.offset["STYLE"] + len(tok.styles)
    ngram = KneserNey(order, tok.vocab_size).fit(data.sequence(p, tok)[1:] for p in fit)
    seqs = [data.sequence(p, tok) for p in held]
    full_nll = [piece_nlls(model.net, s, model.cache) for s in seqs]
    # each held-out piece and each sample is decoded once, for the repeat probe, the statistics and the notes
    held_scores = [tok.decode_score(s) for s in seqs]
    n_notes = sum(len(s) for s in held_scores)
    nll, ngram_nll, kinds = [], [], []
    for s, n in zip(seqs, full_nll, strict=True):
        keep = ~((s[1:] >= style_lo) & (s[1:] < style_hi))  # a style token is given, not predicted
        nll.append(n[keep])
        ngram_nll.append(ngram.nlls(s)[keep])
        kinds.append(tok.vocab.kind_index(s[1:][keep]))
    nll, ngram_nll, kinds = np.concatenate(nll), np.concatenate(ngram_nll), np.concatenate(kinds)
    lstm, base = _summary(nll, kinds, tok.vocab.kinds), _summary(ngram_nll, kinds, tok.vocab.kinds)
    result = {"held_out_files": len(held), "training_files": len(fit), "tokens": int(len(nll)),
              "data_check": check, "context": "zero state, BOS [STYLE]",
              "nll_nats_per_token": lstm["nll_nats_per_token"], "bits_per_token": lstm["bits_per_token"],
              "perplexity": lstm["perplexity"], "ngram_order": order,
              "notes": n_notes, "nll_nats_per_note": float(nll.sum() / n_notes) if n_notes else None,
              "ngram_nll_nats_per_token": base["nll_nats_per_token"], "ngram_bits_per_token": base["bits_per_token"],
              "ngram_perplexity": base["perplexity"],
              "by_type": {k: {"tokens": v["tokens"], "nll_nats_per_token": v["nll_nats_per_token"],
                              "ngram_nll_nats_per_token": base["by_type"][k]["nll_nats_per_token"]}
                          for k, v in lstm["by_type"].items()},
              "repeat_probe": repeat_probe(tok, seqs, full_nll, held_scores)}
    return result, seqs, held_scores


def _sample_features(real_scores: list, gen_scores: list, *, quarters: float, count: int, seconds: float,
                     seed: int) -> dict:
    """The samples beside the held-out pieces (cut to `quarters`): the overlapping area of each feature's
    distribution, the features' means, and how much of each stays in its key."""
    ref_scores = [music.excerpt(s, quarters) for s in real_scores]
    gen_f = [f for f in map(features, gen_scores) if f]
    ref_f = [f for f in map(features, ref_scores) if f]
    oa = {name: overlap_area([f[name] for f in ref_f], [f[name] for f in gen_f]) for name in FEATURES}
    return {"count": count, "seconds": seconds, "seed": seed,
            "overlapping_area": oa, "mean_overlapping_area": float(np.nanmean(list(oa.values()))),
            "generated_mean": {k: float(np.mean([f[k].mean() for f in gen_f])) for k in FEATURES[1:]},
            "data_mean": {k: float(np.mean([f[k].mean() for f in ref_f])) for k in FEATURES[1:]},
            "in_key": {"generated": float(np.mean([in_key(x) for x in gen_scores if len(x)])),
                       "data": float(np.mean([in_key(x) for x in ref_scores if len(x)]))}}


def _memorisation(tok, fit: list, gen_scores: list) -> dict:
    """The longest run of notes each sample copies from a training piece (those decoded one at a time)."""
    training_codes = (_note_codes(tok.decode_score(p.ids)) for p in fit)  # decoded one at a time
    sample_codes = [_note_codes(s) for s in gen_scores]
    copies = longest_copies(sample_codes, training_codes)
    notes = [len(c) for c in sample_codes]
    return {"longest_copied_notes": int(max(copies)), "mean_longest_copied_notes": float(np.mean(copies)),
            "notes_per_sample": float(np.mean(notes))}


def jsonable(x):
    """NaN and infinities -> None, numpy scalars -> Python numbers, recursively (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
