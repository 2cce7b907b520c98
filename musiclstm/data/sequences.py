"""Pieces laid end to end in one token array (`Sequences`), and the batch of windows read out of it (`gather`).

The token stores' splits are read as `Sequences` over a memory map; a list of pieces in memory becomes one too.
May import: nothing of musiclstm (numpy only). Not: io, encodings, data.corpus, models, training, generation,
evaluation, app.
"""

from __future__ import annotations

import mmap

import numpy as np


class Sequences:
    """Pieces laid end to end in one token array: piece k is `tokens[starts[k]:starts[k + 1]]`.

    Reads as a list of pieces (len, iteration, `seqs[k]` an int64 copy of piece k, `seqs[a:b]` a list of
    them); the windows of `data` read `tokens` (often a read-only memory map, uint16 or int32) directly.
    """

    def __init__(self, tokens: np.ndarray, starts: np.ndarray):
        self.tokens = tokens  # (N,)
        self.starts = np.asarray(starts, np.int64)  # (n + 1,)

    @classmethod
    def of(cls, sequences) -> Sequences:
        """A list of 1-D id arrays (or a Sequences, returned as it is) -> Sequences, in memory."""
        if isinstance(sequences, Sequences):
            return sequences
        seqs = [np.asarray(s, np.int64) for s in sequences]
        tokens = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
        return cls(tokens, np.r_[0, np.cumsum([len(s) for s in seqs], dtype=np.int64)])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.starts)

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        k = range(len(self))[k]
        return np.array(self.tokens[self.starts[k]:self.starts[k + 1]], np.int64)

    def __iter__(self):
        return (self[k] for k in range(len(self)))


def gather(tokens: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """(B,) start offsets -> (B, length) int64 windows `tokens[start : start + length]`, indices clipped to the
    array. A memory-mapped `tokens` is read through a fresh map closed afterwards (as nanoGPT does every
    batch), so the pages read do not pile up in the process's resident set over a run."""
    src = tokens
    if isinstance(tokens, np.memmap) and isinstance(tokens.base, mmap.mmap):  # a whole map, not a view of one
        src = np.memmap(tokens.filename, tokens.dtype, mode="r", offset=tokens.offset, shape=tokens.shape)
    idx = np.minimum(np.asarray(starts, np.int64)[:, None] + np.arange(length), len(tokens) - 1)  # (B, length)
    out = np.asarray(src[idx], np.int64)
    del src
    return out
