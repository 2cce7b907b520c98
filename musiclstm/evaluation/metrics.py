"""Measures of music: round-trip note recovery (onset F1, as mir_eval's onset-only matching).

May import: io.score. Not: encodings and the rooms above.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..io.score import Score


def onset_f1(reference: Score, estimate: Score, *, tolerance: float = 0.05) -> dict[str, float]:
    """Match notes of equal pitch whose onsets differ by at most `tolerance` seconds.

    Each note matches at most once (greedy in time order per pitch, which equals the maximum
    matching for one-dimensional onsets). Drum notes only match drum notes.
    Returns {"precision", "recall", "f1", "reference", "estimate"}.
    """
    def by_pitch(s: Score) -> dict[tuple[int, bool], np.ndarray]:
        out: dict[tuple[int, bool], list[float]] = defaultdict(list)
        for key, t in zip(zip(s.pitch.tolist(), s.is_drum.tolist(), strict=True),
                          s.seconds(s.start).tolist(), strict=True):
            out[key].append(t)
        return {k: np.sort(v) for k, v in out.items()}

    ref, est = by_pitch(reference), by_pitch(estimate)
    matched = 0
    for key, r in ref.items():
        e = est.get(key)
        if e is None:
            continue
        i = j = 0
        while i < len(r) and j < len(e):
            if abs(r[i] - e[j]) <= tolerance + 1e-9:
                matched, i, j = matched + 1, i + 1, j + 1
            elif r[i] < e[j]:
                i += 1
            else:
                j += 1
    n_ref, n_est = len(reference), len(estimate)
    p = matched / n_est if n_est else 1.0
    r = matched / n_ref if n_ref else 1.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
            "reference": n_ref, "estimate": n_est}
