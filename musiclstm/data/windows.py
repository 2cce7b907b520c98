"""What training reads: pieces as one stream, or windows that start each piece from a fresh state.

May import: errors, encodings, data (corpus, sequences). Not: models, training, generation, evaluation, app.
"""

from __future__ import annotations

import numpy as np
import torch

from ..encodings.tokenizer import PAD, Tokenizer
from ..errors import ConfigError, MusiclstmError
from .corpus import Piece, sequence
from .sequences import Sequences, gather


def stream(pieces: list[Piece], tokenizer: Tokenizer) -> torch.Tensor:
    """All pieces laid end to end, each as BOS [STYLE] ids EOS: a 1-D int64 tensor (in memory; a prepared
    corpus has the same stream on disk as `corpus.sequences(split).tokens`)."""
    parts = [sequence(p, tokenizer) for p in pieces]
    return torch.from_numpy(np.concatenate(parts)) if parts else torch.zeros(0, dtype=torch.long)


class PieceWindows:
    """Training windows that start every piece from a fresh state, as generation does.

    Each piece (BOS [STYLE] ... EOS) is cut into windows of `length` next-token pairs, its last window
    padded with PAD (which the loss ignores). Pieces are dealt to `batch` lanes, the next piece to the
    lane with the fewest windows, in an order shuffled once per epoch from (seed, epoch) alone, so a
    resumed run deals the same way. Within a piece the LSTM state runs on from window to window
    (truncated BPTT); at a piece's first window the lane's state is reset to zeros: the model never
    sees a piece begin from the end of another, which is the only start `compose` can give it.

    `sequences`: a `Sequences` (a prepared corpus's, memory-mapped) or a list of 1-D id arrays. Only
    where each window starts is kept (a few bytes a window); a batch's tokens are read when it is asked for.
    """

    def __init__(self, sequences, batch: int, length: int, *, rank: int = 0, world: int = 1,
                 seed: int = 0, shuffle: bool = True):
        seqs = Sequences.of(sequences)
        if not len(seqs):
            raise MusiclstmError("corpus too small: no pieces")
        self.batch, self.length, self.rank, self.world = batch, length, rank, world
        self.seed, self.shuffle = seed, shuffle
        self.tokens = seqs.tokens  # (N,), often a read-only memory map
        pairs = seqs.lengths - 1  # next-token pairs per piece
        sizes = np.maximum(1, -(-pairs // length))  # windows per piece
        self.starts = np.r_[0, np.cumsum(sizes)]  # piece k's windows: starts[k] .. starts[k+1]
        # per window (a few bytes each, computed in place: a Lakh-sized corpus has millions of windows), and a
        # last all-PAD window that fills short lanes
        total = int(self.starts[-1])
        pos = np.zeros(total + 1, np.int64)
        pos[:total] = np.arange(total) - np.repeat(self.starts[:-1], sizes)  # the window's number in its piece
        self.first = pos == 0  # a piece begins: the state starts from zeros
        pos[:total] *= length
        valid = np.zeros(total + 1, np.int32)
        valid[:total] = np.minimum(length, np.repeat(pairs, sizes) - pos[:total])  # pairs in the window
        self.valid = valid
        pos[:total] += np.repeat(seqs.starts[:-1], sizes)
        self.pos = pos  # where the window's tokens begin in `tokens`
        # dealing to the shortest lane never exceeds the mean by more than the longest piece: every epoch fits
        self.batches_per_epoch = int(-(-sizes.sum() // (batch * world)) + sizes.max())
        self._cached = (0, self._layout(0))

    def _layout(self, epoch: int) -> np.ndarray:
        """(batch, steps) window indices of this rank's lanes for an epoch; the PAD window where a lane has run out."""
        import heapq

        lanes = self.batch * self.world
        n = len(self.starts) - 1
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        starts = self.starts.tolist()
        out = np.full((lanes, self.batches_per_epoch), len(self.pos) - 1, np.int64)  # the PAD window
        heap = [(0, lane) for lane in range(lanes)]  # (windows dealt, lane): the shortest lane, the first on ties
        for k in order.tolist():
            size, lane = heap[0]
            a, b = starts[k], starts[k + 1]
            out[lane, size:size + b - a] = np.arange(a, b)
            heapq.heapreplace(heap, (size + b - a, lane))
        return out[self.rank * self.batch:(self.rank + 1) * self.batch]

    def get(self, i: int, generator=None, epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batch `i` of `epoch` -> (x (B, T), y (B, T), reset (B,): lanes whose state starts from zeros)."""
        if self._cached[0] != epoch:
            self._cached = (epoch, self._layout(epoch))
        idx = self._cached[1][:, i]  # (B,) window indices
        w = gather(self.tokens, self.pos[idx], self.length + 1)  # (B, T+1)
        pad = np.arange(self.length)[None, :] >= self.valid[idx, None]  # (B, T) past the piece's last pair
        x, y = np.where(pad, PAD, w[:, :-1]), np.where(pad, PAD, w[:, 1:])
        return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(self.first[idx])


class Windows:
    """Training windows from one token stream, in one of two orders (`PieceWindows` is the default).

    * `tbptt`: the stream is cut into `batch` contiguous lanes and windows are taken in order,
      so the LSTM state can be carried (and detached) from one window to the next.
    * `random`: each batch is `batch` windows at random offsets, state starting from zero.
    `batches_per_epoch` and `get(i, generator)` let a run resume at an exact position. `data` is a 1-D
    tensor or array of ids of any integer type (a memory map stays one: batches are read as asked for).
    """

    def __init__(self, data, batch: int, length: int, mode: str = "tbptt", rank: int = 0, world: int = 1):
        if mode not in ("tbptt", "random"):
            raise ConfigError(f"unknown window mode {mode!r}")
        self.data = data.numpy() if isinstance(data, torch.Tensor) else data  # (N,)
        self.mode, self.batch, self.length = mode, batch, length
        if mode == "tbptt":
            lanes = batch * world
            n = (len(data) - 1) // lanes
            if n < 2:
                raise MusiclstmError(f"corpus too small: {len(data)} tokens for {lanes} lanes")
            self.lane_len = n  # lane l is data[l * n: (l + 1) * n] (+1 for its targets)
            self.lanes = np.arange(rank * batch, (rank + 1) * batch) * n  # where this rank's lanes begin
            self.batches_per_epoch = max(1, (n - 1) // length + 1)
        else:
            if len(data) < 2:
                raise MusiclstmError("corpus too small")
            self.length = min(length, len(data) - 1)
            self.batches_per_epoch = max(1, (len(data) - 1) // (batch * self.length * world))

    def get(self, i: int, generator: torch.Generator,
            epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batch `i` of an epoch -> (x (B, T), y (B, T), reset (B,): lanes whose state starts from zeros)."""
        if self.mode == "tbptt":
            s = i * self.length
            width = max(0, min(self.length, self.lane_len - s))
            w = torch.from_numpy(gather(self.data, self.lanes + s, width + 1))  # (B, width + 1)
            return w[:, :-1], w[:, 1:], torch.full((self.batch,), i == 0)
        starts = torch.randint(0, len(self.data) - self.length, (self.batch,), generator=generator)
        w = torch.from_numpy(gather(self.data, starts.numpy(), self.length + 1))  # (B, T+1)
        return w[:, :-1], w[:, 1:], torch.ones(self.batch, dtype=torch.bool)
