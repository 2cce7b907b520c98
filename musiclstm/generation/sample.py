"""The sampling engine: token ids in, token ids out. It knows nothing about music.

The primer runs through the network once (one `nn.LSTM` call over the whole primer); after that
the state is carried one token at a time through the fused `step`, so each new token costs one
step, never a re-run of the window. All sequences of a batch advance together; randomness comes
from one explicit, seeded `torch.Generator`, so the same seed and options give the same ids.
May import: errors, models (the cache). Not: io, data, training, evaluation, app.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..errors import ConfigError
from ..models.cache import Memory

# A constraint sees the ids so far (B, t) and the logits (B, V), and returns a bool mask (B, V)
# of allowed next ids (or None for no constraint).
Constraint = Callable[[torch.Tensor, torch.Tensor], torch.Tensor | None]


def filter_logits(logits: torch.Tensor, *, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Keep the `top_k` most likely ids and the smallest set whose probability reaches `top_p`.

    logits (B, V) -> logits (B, V) with the removed ids at -inf. The most likely id always stays.
    """
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop = cum - torch.softmax(sorted_logits, dim=-1) >= top_p  # mass before this id already enough
        drop[:, 0] = False
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return logits


def draw(logits: torch.Tensor, u: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
         top_p: float | None = None) -> torch.Tensor:
    """Pick one id per row of `logits` (B, V) with the uniforms `u` (B, 1): the same ids as sampling
    from `softmax(filter_logits(logits / temperature, ...))`, by inverse CDF.

    With top-k or top-p the draw happens in ranked order, so the filtered distribution is never
    scattered back to vocabulary order. On CPU the ranking for top-p is numpy's argsort, which is
    5x faster than `torch.sort` on rows this short (0.2 vs 1 ms for 32 x 898, more than an LSTM
    step). `temperature=0` is argmax.
    """
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    V = logits.shape[-1]
    nucleus = top_p is not None and top_p < 1.0
    if top_k is not None and 0 < top_k < V:
        ranked, order = torch.topk(logits, top_k, dim=-1)
    elif nucleus:
        if logits.device.type == "cpu":
            order = torch.from_numpy(np.argsort(-logits.numpy(), axis=-1))
            ranked = logits.gather(1, order)
        else:
            ranked, order = torch.sort(logits, descending=True, dim=-1, stable=True)
    else:  # no ranking needed: one cumulative sum in vocabulary order
        cum = torch.softmax(logits, -1).cumsum(-1)
        return torch.searchsorted(cum, u * cum[:, -1:]).squeeze(1).clamp_(max=V - 1)
    probs = torch.softmax(ranked, -1)
    cum = probs.cumsum(-1)
    if nucleus:
        kept = (cum - probs < top_p).sum(-1, keepdim=True)  # a prefix of the ranking; at least 1
    else:
        kept = torch.full_like(u, probs.shape[-1], dtype=torch.long)
    j = torch.minimum(torch.searchsorted(cum, u * cum.gather(1, kept - 1)), kept - 1)
    return order.gather(1, j).squeeze(1)


# The hottest temperature offered (CLI, API, studio): at 3 a model's distribution is nearly flat over what the
# grammar allows; beyond, only noise and a longer wait (the studio once held a request 94 s at 1e9).
MAX_TEMPERATURE = 3.0


def _read_primer(net, prime: torch.Tensor, memory: Memory | None, device):
    """One pass over the primer (B, P) from a zero state; returns the logits for the next id and the state."""
    state = net.zero_state(prime.shape[0], device)
    if prime.shape[1] > 1:
        h, state = net.hidden(prime[:, :-1], state)  # warm the state on all but the last primer token
        if memory is not None:
            memory.add_states(h, prime[:, 1:])
    return net.step(prime[:, -1], state)  # (B, V)


def check_options(temperature: float, top_k: int | None, top_p: float | None, repetition_penalty: float) -> None:
    if not 0 <= temperature <= MAX_TEMPERATURE:
        raise ConfigError(f"temperature must be between 0 and {MAX_TEMPERATURE:g}, got {temperature:g}")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top-k must be >= 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError(f"top-p must be in (0, 1], got {top_p}")
    if not repetition_penalty >= 1:
        raise ConfigError(f"repetition penalty must be >= 1, got {repetition_penalty}")


@torch.no_grad()
def generate(model, prime=None, max_tokens: int = 512, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, seed: int = 0, batch: int = 1, *, repetition_penalty: float = 1.0,
             repetition_window: int = 32, eos: int | None = 2, constraint: Constraint | None = None,
             stop: Callable[[torch.Tensor], torch.Tensor] | None = None,
             device: str | torch.device | None = None,
             progress: Callable[[int], None] | None = None, cache=None) -> list[list[int]]:
    """Sample `batch` continuations of `prime` (a list of ids, the same for every sequence).

    Returns `batch` lists of ids: the primer followed by up to `max_tokens` new ids, stopping a
    sequence at `eos`. `temperature=0` is argmax. `model` is a loaded `Model` or a `MusicLSTM`.
    `constraint` masks the allowed next ids (see `encodings.grammar`), once per token; `stop(ids)` ->
    (B,) bool, given the ids so far after each new token, ends sequences early (they get `eos` next);
    `progress(n)` is called after each of the n new tokens. `cache` (a `musiclstm.models.cache.Cache`;
    default: the one stored with a loaded model) mixes the model's memory of the piece so far into
    each step's distribution.
    """
    check_options(temperature, top_k, top_p, repetition_penalty)
    net = getattr(model, "net", model)
    net.eval()
    device = torch.device(device) if device is not None else next(net.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    prime = list(prime or [1])  # BOS when there is no primer
    P = len(prime)
    # one buffer for the whole piece: each step writes a column and hands out a view, so the cost per
    # token stays the same however long the piece (no growing concatenation)
    buf = torch.empty(batch, P + max_tokens, dtype=torch.long, device=device)
    buf[:, :P] = torch.tensor(prime, dtype=torch.long, device=device)
    cache = cache if cache is not None else getattr(model, "cache", None)
    memory = Memory(batch, net.config.hidden, cache, device) if cache is not None and cache.on else None
    logits, state = _read_primer(net, buf[:, :P], memory, device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    # all uniforms at once (one per sequence and step, drawn even at temperature 0): same seed, same ids
    uniforms = torch.rand(max_tokens, batch, 1, generator=gen).clamp_(min=1e-7).to(device)
    n = P
    for t in range(max_tokens):
        logits = _as_drawn(logits, net, state, memory, buf[:, :n], repetition_penalty, repetition_window,
                           constraint)
        nxt = draw(logits, uniforms[t], temperature, top_k, top_p)
        if eos is not None:
            nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
            done |= nxt == eos
        buf[:, n] = nxt
        n += 1
        if memory is not None:
            memory.chose(nxt)
        if stop is not None:
            done |= stop(buf[:, :n]).to(device)
        if progress is not None:
            progress(t + 1)
        if eos is not None and bool(done.all()):
            break
        logits, state = net.step(nxt, state)
    ids = buf[:, :n].tolist()
    if eos is not None:  # trim everything after each sequence's first generated EOS
        ids = [s[: P + s[P:].index(eos) + 1] if eos in s[P:] else s for s in ids]
    return ids


def _as_drawn(logits: torch.Tensor, net, state, memory: Memory | None, ids: torch.Tensor, repetition_penalty: float,
              repetition_window: int, constraint: Constraint | None) -> torch.Tensor:
    """The next step's logits as they are drawn from: the cache's memory of the piece mixed in, the ids of the
    latest `repetition_window` penalized, and what `constraint` does not allow after `ids` (B, n) masked out."""
    logits = logits.float() if memory is None else memory.log_probs(logits, net.top(state))
    if repetition_penalty > 1:
        logits = _penalize(logits, ids[:, max(0, ids.shape[1] - repetition_window):], repetition_penalty)
    if constraint is not None:
        allowed = constraint(ids, logits)
        if allowed is not None:
            logits = logits.masked_fill(~allowed, float("-inf"))
    return logits


def _penalize(logits: torch.Tensor, recent: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty: the ids in `recent` (B, W) less likely (logits / penalty, or x penalty
    where negative)."""
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, recent, True)
    return torch.where(seen, torch.where(logits > 0, logits / penalty, logits * penalty), logits)
