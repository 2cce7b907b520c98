"""The sampling engine: token ids in, token ids out. It knows nothing about music.

The primer runs through the network once (one `nn.LSTM` call over the whole primer); after that
the state is carried one token at a time through the fused `step`, so each new token costs one
step, never a re-run of the window. All sequences of a batch advance together; randomness comes
from one explicit, seeded `torch.Generator`, so the same seed and options give the same ids.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .errors import ConfigError

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


def check_options(temperature: float, top_k: int | None, top_p: float | None, repetition_penalty: float) -> None:
    if not temperature >= 0:
        raise ConfigError(f"temperature must be >= 0, got {temperature}")
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
             stop: Callable[[], torch.Tensor] | None = None,
             device: str | torch.device | None = None) -> list[list[int]]:
    """Sample `batch` continuations of `prime` (a list of ids, the same for every sequence).

    Returns `batch` lists of ids: the primer followed by up to `max_tokens` new ids, stopping a
    sequence at `eos`. `temperature=0` is argmax. `model` is a loaded `Model` or a `MusicLSTM`.
    `constraint` masks the allowed next ids (see `grammar`); `stop()` -> (B,) bool ends sequences
    early (they get `eos` next).
    """
    check_options(temperature, top_k, top_p, repetition_penalty)
    net = getattr(model, "net", model)
    net.eval()
    device = torch.device(device) if device is not None else next(net.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    prime = list(prime or [1])  # BOS when there is no primer
    seqs = torch.tensor(prime, dtype=torch.long, device=device).repeat(batch, 1)  # (B, P)
    state = net.zero_state(batch, device)
    if len(prime) > 1:
        _, state = net(seqs[:, :-1], state)  # warm the state on all but the last primer token
    logits, state = net.step(seqs[:, -1], state)  # (B, V)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    out = [seqs]
    for _ in range(max_tokens):
        logits = logits.float()
        if repetition_penalty > 1:
            recent = torch.cat(out, 1)[:, -repetition_window:]  # (B, W)
            seen = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, recent, True)
            logits = torch.where(seen, torch.where(logits > 0, logits / repetition_penalty,
                                                   logits * repetition_penalty), logits)
        if constraint is not None:
            allowed = constraint(torch.cat(out, 1), logits)
            if allowed is not None:
                logits = logits.masked_fill(~allowed, float("-inf"))
        if temperature == 0:
            nxt = logits.argmax(-1)
        else:
            probs = torch.softmax(filter_logits(logits / temperature, top_k=top_k, top_p=top_p), -1)
            # inverse-CDF sampling: one uniform per row, ~10x cheaper than multinomial at batch 32
            u = torch.rand(batch, 1, generator=gen).clamp_(min=1e-7).to(device)
            nxt = torch.searchsorted(probs.cumsum(-1), u * probs.sum(-1, keepdim=True)).squeeze(1)
            nxt = nxt.clamp_(max=probs.shape[-1] - 1)
        if eos is not None:
            nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
            done |= nxt == eos
        out.append(nxt[:, None])
        if stop is not None and constraint is not None:
            constraint(torch.cat(out, 1), logits)  # bring the grammar's clock up to date
            done |= stop().to(device)
        if eos is not None and bool(done.all()):
            break
        logits, state = net.step(nxt, state)
    ids = torch.cat(out, 1).tolist()
    if eos is not None:  # trim everything after each sequence's first generated EOS
        ids = [s[: len(prime) + s[len(prime):].index(eos) + 1] if eos in s[len(prime):] else s for s in ids]
    return ids
