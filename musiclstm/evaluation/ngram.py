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
