"""Samples against the data: feature distributions and their overlap, the key, memorised note runs.

`evaluate` compares its samples with held-out pieces through these: the overlapping area of feature
distributions (Yang & Lerch 2020), the share of notes in the best-fitting scale, and the longest run
of notes a sample copies from the training pieces.
May import: theory, io.score. Not: encodings, data, models, training, generation, app.
"""

from __future__ import annotations

import math

import numpy as np

from ..io.score import Score
from ..theory import scale_consistency

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


def in_key(score: Score) -> float:
    """Share of the pitched notes that fall in the best-fitting major (or relative minor) scale."""
    s = score.select(~score.is_drum)
    h = np.bincount(s.pitch.astype(int) % 12, minlength=12)
    return scale_consistency(h)


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


def longest_copies(samples: list[np.ndarray], training) -> list[int]:
    """For each sample, the longest run of consecutive notes found, in order, in one training piece. `training`
    is any iterable of note codes, read once, one piece at a time (a corpus of any size is never held at once):
    each piece is asked only whether it holds a longer run than the best found so far."""
    best = [0] * len(samples)
    memo: list[dict[int, set]] = [{} for _ in samples]  # per sample: k -> its k-gram hashes

    def grams(i: int, k: int) -> np.ndarray:
        if k not in memo[i]:
            memo[i][k] = _hashes(samples[i], k)
        return memo[i][k]

    for piece in training:
        piece_hashes: dict[int, np.ndarray] = {}
        for i, sample in enumerate(samples):
            lo, hi = best[i], min(len(sample), len(piece))
            while lo < hi:  # the largest k this piece shares with the sample, above the best so far
                mid = (lo + hi + 1) // 2
                if mid not in piece_hashes:
                    piece_hashes[mid] = _hashes(piece, mid)
                if np.isin(grams(i, mid), piece_hashes[mid]).any():
                    lo = mid
                else:
                    hi = mid - 1
                    if mid == best[i] + 1:
                        break  # not even one note longer: nothing longer either
            best[i] = lo
    return best


def longest_copy(sample: np.ndarray, training: list[np.ndarray]) -> int:
    return longest_copies([sample], training)[0]
