"""The continuous cache: an LSTM's own memory of the piece, read back when the music repeats.

Grave, Joulin & Usunier (2017), "Improving neural language models with a continuous cache" (used
with AWD-LSTM by Merity et al. 2018). While a piece is read or written, every top-layer hidden
state h_i is kept with the token that followed it. At step t the model's next-token distribution
is mixed with a distribution over those earlier successors, weighted by how alike the contexts are:

    p(w) = (1 - lam) * softmax(logits)(w) + lam * sum_{i < t, x_{i+1} = w} softmax_i(theta * cos(h_t, h_i))

(Grave et al. match raw dot products; the cosine makes `theta` independent of how large a
model's states are.)

A bar that repeats an earlier bar arrives in a context like the first one's, so the cache points at
what came next there: the copy becomes cheap, which a 2-layer LSTM trained for an hour on a CPU does
not learn by itself (the repeat probe of `musiclstm evaluate` measures exactly this). `lam` and
`theta` are chosen on held-out pieces (`tune`) after training and stored in the checkpoint; nothing
is trained. `lam = 0` is the plain LSTM.
May import: nothing in musiclstm but models (torch on a network's states). Not: checkpoint's callers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Cache:
    """Mixing weight of the cache, flatness of its attention, how many past steps it holds."""

    lam: float = 0.0  #: share of probability given to the cache (0 = off)
    theta: float = 10.0  #: inverse temperature of the match (cosine) between hidden states
    window: int = 2048  #: the most recent steps remembered
    skip: int = 0  #: the latest steps left out (so the cache copies from bars back, not the last few notes)

    @property
    def on(self) -> bool:
        return self.lam > 0


def mix(logits: torch.Tensor, scores: torch.Tensor, successors: torch.Tensor, cache: Cache) -> torch.Tensor:
    """Next-token log-probabilities with the cache mixed in.

    logits (N, V) of the model; scores (N, M) = theta * h_t . h_i for M remembered steps (-inf where
    none); successors (N, M) the token that followed each. Returns (N, V) log-probabilities.
    """
    logp = F.log_softmax(logits.float(), -1)
    if not cache.on or scores.shape[1] == 0:
        return logp
    attn = torch.softmax(scores, -1).nan_to_num(0.0)  # (N, M); rows with nothing remembered are all zero
    p_cache = torch.zeros_like(logp).scatter_add_(1, successors, attn)
    has = (attn.sum(-1, keepdim=True) > 0)
    lam = torch.where(has, torch.full_like(attn[:, :1], cache.lam), torch.zeros_like(attn[:, :1]))
    return torch.logaddexp(logp + torch.log1p(-lam), torch.log(lam * p_cache + 1e-30))


@torch.no_grad()
def states(net, ids: np.ndarray, chunk: int = 1024):
    """One pass over a piece from a zero state: (unit-length top-layer states (T, H), logits (T, V), targets (T,))."""
    net.eval()
    device = next(net.parameters()).device
    x = torch.as_tensor(ids[:-1], device=device)[None]
    hs, logits, state = [], [], None
    for i in range(0, x.shape[1], chunk):
        h, state = net.hidden(x[:, i:i + chunk], state)  # (1, T, H)
        hs.append(h[0])
        logits.append(net.head(h[0]))
    y = torch.as_tensor(ids[1:], device=device)
    if not hs:
        return torch.zeros(0, net.config.hidden), torch.zeros(0, net.config.vocab_size), y
    return F.normalize(torch.cat(hs).float(), dim=-1), torch.cat(logits).float(), y


@torch.no_grad()
def mixed_nlls(h: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, cache: Cache, chunk: int = 1024) -> np.ndarray:
    """NLL of each target y[t] under the cache mixture, from `states`' output."""
    if not cache.on or len(h) == 0:
        return F.cross_entropy(logits, y, reduction="none").cpu().numpy()
    out = []
    for a in range(0, len(h), chunk):  # step t remembers steps max(0, t - window) .. t - 1
        lo = max(0, a - cache.window)
        scores = cache.theta * h[a:a + chunk] @ h[lo:a + chunk].T  # (n, m)
        t = torch.arange(a, min(a + chunk, len(h)), device=h.device)[:, None]
        i = torch.arange(lo, min(a + chunk, len(h)), device=h.device)[None]
        scores = scores.masked_fill((i >= t - cache.skip) | (i < t - cache.window), -math.inf)
        succ = y[lo:a + chunk][None].expand(len(t), -1)
        logp = mix(logits[a:a + chunk], scores, succ, cache)
        out.append(-logp.gather(1, y[a:a + chunk, None])[:, 0])
    return torch.cat(out).cpu().numpy()


def piece_nlls(net, ids: np.ndarray, cache: Cache | None = None) -> np.ndarray:
    """The one NLL of a piece: NLL (nats) of ids[1:] given what precedes, from a zero state, with the
    continuous cache over the piece when one is given (None: the plain LSTM)."""
    return mixed_nlls(*states(net, ids), cache or Cache())


def tune(net, pieces: list[np.ndarray], lams=(0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8),
         thetas=(10.0, 20.0, 40.0, 80.0, 160.0), window: int = 2048, skip: int = 12) -> tuple[Cache, dict]:
    """The (lam, theta) with the lowest mean NLL per token on `pieces` (held-out BOS..EOS arrays).

    `skip` is fixed, not tuned: the latest notes always predict the next one well (so NLL would
    choose 0), but a sampler that copies them stutters on one pitch; 12 tokens is about four notes."""
    grid = [(lam, theta) for theta in thetas for lam in lams if lam != 0 or theta == thetas[0]]
    sums, count = dict.fromkeys(grid, 0.0), 0
    for piece in pieces:  # the LSTM runs once a piece, and one piece's logits are held at a time
        s = states(net, piece)
        for lam, theta in grid:
            sums[(lam, theta)] += float(mixed_nlls(*s, Cache(lam, theta, window, skip)).astype(np.float64).sum())
        count += len(s[2])
        del s
    results = {k: v / max(1, count) for k, v in sums.items()}
    lam, theta = min(results, key=results.get)
    return Cache(lam, theta, window, skip), results




class Memory:
    """The cache while generating: a ring of the last `window` top-layer states and their successors."""

    def __init__(self, batch: int, hidden: int, cache: Cache, device):
        self.cache, self.n = cache, 0
        self.h = torch.zeros(batch, cache.window, hidden, device=device)
        self.next = torch.zeros(batch, cache.window, dtype=torch.long, device=device)
        self.pending: torch.Tensor | None = None  # the newest state, waiting for the token that follows it

    def add_states(self, h: torch.Tensor, following: torch.Tensor) -> None:
        """Remember states h (B, T, H) whose successors are known: following (B, T)."""
        h = F.normalize(h.float(), dim=-1)
        for k in range(h.shape[1]):
            slot = self.n % self.cache.window
            self.h[:, slot], self.next[:, slot] = h[:, k], following[:, k]
            self.n += 1

    def log_probs(self, logits: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """(B, V) log-probabilities for the step whose top-layer state is h (B, H); h is kept as pending."""
        m, n, W = min(self.n, self.cache.window), self.n, self.cache.window
        scores = self.cache.theta * torch.einsum("bh,bmh->bm", F.normalize(h.float(), dim=-1), self.h[:, :m])
        if self.cache.skip:  # the step each slot holds; the latest `skip` are left out
            step = n - 1 - ((n - 1 - torch.arange(m, device=scores.device)) % W)
            scores = scores.masked_fill(step[None] >= n - self.cache.skip, -math.inf)
        self.pending = h
        return mix(logits, scores, self.next[:, :m], self.cache)

    def chose(self, token: torch.Tensor) -> None:
        """The token that followed the pending state is known now: remember the pair."""
        if self.pending is not None:
            self.add_states(self.pending[:, None], token[:, None])
            self.pending = None
