"""An interpolated Kneser-Ney n-gram model over token ids: the baseline `musiclstm evaluate` scores
the LSTM against, on the very same held-out tokens.

May import: errors. Not: models, data, training, generation, app.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import MusiclstmError


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

        def grams(m: int) -> np.ndarray:  # every m-gram's key, made when needed (not all orders at once)
            return np.concatenate([self._keys(s, m) for s in padded if len(s) >= m] or [np.zeros(0, np.int64)])

        # per n-gram length m, sorted numpy arrays (no Python dict: a few bytes an n-gram, not ~100): gram
        # keys and counts; context keys, totals and distinct followers; the discount
        self.counts, self.contexts, self.discount = [], [], []
        for m in range(1, n + 1):
            if m == n:
                keys, c = np.unique(grams(m), return_counts=True)
            else:  # continuation counts: distinct (m+1)-grams ending in this m-gram
                keys, c = np.unique(np.unique(grams(m + 1)) % V ** m, return_counts=True)
            ctx, inv = np.unique(keys // V, return_inverse=True)
            totals, distinct = np.bincount(inv, weights=c), np.bincount(inv)
            n1, n2 = int((c == 1).sum()), int((c == 2).sum())
            self.discount.append(n1 / (n1 + 2 * n2) if n1 + n2 else 0.75)
            self.counts.append((keys, c.astype(np.int64)))
            self.contexts.append((ctx, totals, distinct.astype(np.int64)))
        return self

    @staticmethod
    def _find(keys: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found, index) of each query key in the sorted `keys`."""
        i = np.searchsorted(keys, query).clip(max=max(0, len(keys) - 1))
        found = (keys[i] == query) if len(keys) else np.zeros(len(query), bool)
        return found, i

    def _probs(self, hist: np.ndarray, w: np.ndarray, top: int | None = None) -> np.ndarray:
        """P(w[j] | hist[j]) for rows of n-1 preceding ids (hist (N, n-1), w (N,)), from the orders up to `top`."""
        p = np.full(len(w), 1.0 / self.V)
        active = np.ones(len(w), bool)
        for m in range(1, (top or self.n) + 1):  # from the unigram level up to the full context
            ctx = np.zeros(len(w), np.int64)
            for j in range(self.n - m, self.n - 1):  # the last m-1 ids of the history
                ctx = ctx * self.V + hist[:, j]
            ctx_keys, totals, distinct = self.contexts[m - 1]
            found, i = self._find(ctx_keys, ctx)
            active &= found  # an unseen context: the lower order's estimate stands
            if not active.any():
                break
            keys, counts = self.counts[m - 1]
            has, gi = self._find(keys, ctx * self.V + w)
            count = np.where(has, counts[gi], 0)
            total, dist, d = totals[i], distinct[i], self.discount[m - 1]
            p = np.where(active, np.maximum(count - d, 0.0) / total + d * dist / total * p, p)
        return p

    def prob(self, context: tuple, w: int) -> float:
        """P(w | the last n-1 ids of `context`)."""
        hist = [int(t) for t in context][max(0, len(context) - (self.n - 1)):] if self.n > 1 else []
        row = np.array([[1] * (self.n - 1 - len(hist)) + hist], np.int64).reshape(1, self.n - 1)
        return float(self._probs(row, np.array([int(w)]), top=len(hist) + 1)[0])

    def nlls(self, seq) -> np.ndarray:
        """NLL of seq[1:] given what precedes (seq[0] is BOS), in nats."""
        s = np.r_[np.ones(self.n - 1, np.int64), np.asarray(seq, np.int64)]
        off = self.n - 1
        idx = np.arange(off + 1, len(s))
        hist = s[idx[:, None] - off + np.arange(off)] if off else np.zeros((len(idx), 0), np.int64)
        return -np.log(self._probs(hist, s[idx]))
