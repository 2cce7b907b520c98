"""Sampling four-part chorales from the harmonizer (`musiclstm.models.harmonizer`): annealed pseudo-Gibbs.

Every free cell starts as MASK; each pass masks a share of the free cells that anneals from all to
5 % (Coconet's schedule) and redraws them from the model, each voice within its range, in the key,
HOLD only after a sounding note, and (with `rules`) no parallel fifths or octaves and no crossed
voices where another note is possible.
May import: errors, theory, models.harmonizer (types). Not: data, training, evaluation, app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..theory import parallels

if TYPE_CHECKING:
    from ..models.harmonizer import Cells, Harmonizer

def allowed_cells(cells: Cells, ranges, pitch_classes: set[int] | None) -> torch.Tensor:
    """(4, vocab) bool: the cells each voice may take (its range and, if given, the pitch classes). `gibbs` also
    takes a (T, 4, vocab) mask: one per step (`cadence_cells` narrows the bass where phrases close)."""
    ok = torch.zeros(4, cells.size, dtype=torch.bool)
    ok[:, cells.rest] = ok[:, cells.hold] = True
    for v, (lo, hi) in enumerate(ranges):
        for p in range(lo, hi + 1):
            ok[v, cells.pitch0 + p] = pitch_classes is None or p % 12 in pitch_classes
    return ok


def cadence_cells(allowed: torch.Tensor, cells: Cells, T: int, closes: list[tuple]) -> torch.Tensor:
    """(T, 4, vocab): `allowed` at every step, except where a phrase closes. Each close is (start, end, {voice:
    pitch classes}, restrike): from step `start` each voice named strikes one of its classes and holds it (or,
    with `restrike`, strikes another of them) until `end`. Under the last chord: the tonic triad over the tonic,
    held; where a phrase closes, the bass on the tonic or the dominant."""
    out = allowed[None].repeat(T, 1, 1) if allowed.dim() == 2 else allowed.clone()
    for start, end, voices, restrike in closes:
        for v, pcs in voices.items():
            keep = torch.zeros(cells.size, dtype=torch.bool)
            keep[[cells.pitch0 + p for p in range(128) if p % 12 in pcs]] = True
            if not 0 <= start < T or not (out[start, v] & keep).any():  # never a step with nothing left to draw
                continue
            out[start, v] &= keep
            if not restrike:
                keep[:] = False
            keep[cells.hold] = True
            out[start + 1:end, v] &= keep
    return out


def sounding(x: np.ndarray, cells: Cells, unknown: int) -> np.ndarray:
    """(T, V) cells -> the pitch each voice sounds (-1 silent, -2 unknown: a cell equal to `unknown`,
    or a HOLD after one)."""
    x = np.asarray(x)
    own = np.where((x >= cells.pitch0) & (x < cells.pitch0 + 128), x - cells.pitch0, np.where(x == unknown, -2, -1))
    steps = np.arange(len(x))[:, None]
    last = np.maximum.accumulate(np.where(x != cells.hold, steps, -1), axis=0)  # the cell a HOLD goes back to
    return np.where(last >= 0, np.take_along_axis(own, np.maximum(last, 0), 0), -1)


def _parallel(v0, u0, v1, u1) -> np.ndarray:
    """Voices v and u moving from (v0, u0) to (v1, u1) make parallel fifths, octaves or unisons
    (`theory.parallels`, whichever of the two is above)."""
    out = np.zeros(np.broadcast_shapes(*(np.shape(a) for a in (v0, u0, v1, u1))), bool)
    for upper0, lower0, upper1, lower1 in ((v0, u0, v1, u1), (u0, v0, u1, v1)):
        fifths, octaves, unisons = parallels(upper0, lower0, upper1, lower1)
        out |= fifths | octaves | unisons
    return out


def forbidden_pitches(x: np.ndarray, cells: Cells, unknown: int) -> np.ndarray:
    """(T, 4, 128) bool: the pitches that, struck at that cell, would make parallel fifths or octaves
    (or unisons) with another voice, from the step before or into the step after, or cross a
    neighbouring voice, given the cells known now (unknown cells are not checked)."""
    T = len(x)
    snd = sounding(x, cells, unknown)
    q = np.arange(128)[None, :]
    bad = np.zeros((T, 4, 128), bool)
    prev = np.vstack([np.full((1, 4), -1), snd[:-1]])
    nxt = np.vstack([snd[1:], np.full((1, 4), -1)])
    struck_next = np.vstack([(x[1:] >= cells.pitch0) & (x[1:] < cells.pitch0 + 128), np.zeros((1, 4), bool)])
    for v in range(4):
        for u in range(4):
            if u == v:
                continue
            a, b, c = prev[:, v, None], prev[:, u, None], snd[:, u, None]  # v's and u's pitch before, u's now
            ok = (a >= 0) & (b >= 0) & (c >= 0) & (c != b) & (q != a) & (np.sign(q - a) == np.sign(c - b))
            bad[:, v] |= ok & _parallel(a, b, q, c)
            d, e = nxt[:, v, None], nxt[:, u, None]  # v's next (struck) and u's next
            ok = struck_next[:, v, None] & (d >= 0) & (c >= 0) & (e >= 0) & (e != c) & (d != q) & \
                (np.sign(d - q) == np.sign(e - c))
            bad[:, v] |= ok & _parallel(q, c, d, e)
        if v > 0:
            above = snd[:, v - 1, None]
            bad[:, v] |= (above >= 0) & (q > above)
        if v < 3:
            below = snd[:, v + 1, None]
            bad[:, v] |= (below >= 0) & (q < below)
    return bad


def _apply_rules(logits: torch.Tensor, x: torch.Tensor, cells: Cells, unknown: int) -> torch.Tensor:
    """(T, 4, V) logits with `forbidden_pitches` at -inf, in every cell that keeps some choice."""
    bad = torch.from_numpy(forbidden_pitches(x.numpy(), cells, unknown))
    ruled = logits.clone()
    ruled[..., cells.pitch0:cells.pitch0 + 128] = ruled[..., cells.pitch0:cells.pitch0 + 128].masked_fill(
        bad, float("-inf"))
    return torch.where(torch.isfinite(ruled).any(-1, keepdim=True), ruled, logits)


def _draw(logits: torch.Tensor, temperature: float, gen: torch.Generator) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, -1)
    return torch.multinomial(probs.view(-1, probs.shape[-1]), 1, generator=gen).view(probs.shape[:-1])


def _logits(net, cells, x, allowed, beat, rules: bool, fermata=None) -> torch.Tensor:
    """The model's logits for every cell of x, within `allowed`, HOLD only after a sounding cell."""
    logits = net(x[None], beat, fermata)[0].float().masked_fill(~(allowed if allowed.dim() == 3 else allowed[None]),
                                                       float("-inf"))
    prev = torch.cat([torch.full((1, 4), cells.rest), x[:-1]])
    logits[..., cells.hold] = logits[..., cells.hold].masked_fill(prev == cells.rest, float("-inf"))
    return _apply_rules(logits, x, cells, net.mask_id) if rules else logits


def _settle(net, cells, x, free, allowed, beat, temperature, gen, rounds: int = 8, fermata=None):
    """Redraw, a few at a time (never two at neighbouring steps), the free notes that break a rule."""
    for _ in range(rounds):
        xn = x.numpy()
        bad = forbidden_pitches(xn, cells, net.mask_id)
        struck = (xn >= cells.pitch0) & (xn < cells.pitch0 + 128)
        pitch = np.clip(xn - cells.pitch0, 0, 127)
        faulty = free.numpy() & struck & np.take_along_axis(bad, pitch[..., None], 2)[..., 0]
        if not faulty.any():
            break
        pick = np.zeros_like(faulty)
        taken = -2
        for t, v in zip(*np.nonzero(faulty), strict=True):  # one per step, no two at neighbouring steps
            if t > taken + 1:
                pick[t, v], taken = True, t
        pick_t = torch.from_numpy(pick)
        x[pick_t] = net.mask_id
        draw = _draw(_logits(net, cells, x, allowed, beat, True, fermata), temperature, gen)
        x[pick_t] = draw[pick_t]
    return x


@torch.no_grad()
def gibbs(net: Harmonizer, cells: Cells, grid: np.ndarray, free: np.ndarray, allowed: torch.Tensor, *,
          iterations: int = 64, temperature: float = 0.8, generator: torch.Generator | None = None,
          phase: int = 0, rules: bool = True, ties: np.ndarray | None = None,
          fermata: np.ndarray | None = None) -> np.ndarray:
    """Redraw the `free` cells of `grid` ((T, 4) ids) by annealed pseudo-Gibbs sampling; the other
    cells never change. Temperature 0 takes the most likely cell each time. With `rules`, a note is
    not drawn where it would make parallel fifths or octaves or cross a voice (`forbidden_pitches`,
    against the cells known at that moment), unless every note is forbidden there. `ties` ((T,) steps, -1
    for none): a step tied to an earlier one takes that step's free cells after every draw, so a repeated
    bar of the melody gets the same harmony, chosen in the context of both places. `fermata` ((T,) values of the
    model's fermata channel, `models.harmonizer.FERMATA_*`): where phrases close; None: unknown."""
    net.eval()
    gen = generator or torch.Generator().manual_seed(0)
    T = len(grid)
    x = torch.from_numpy(np.asarray(grid, np.int64)).clone()
    free_t = torch.from_numpy(np.asarray(free, bool))
    beat = ((torch.arange(T) + phase) % net.beat.num_embeddings)[None]  # position in the beat
    x[free_t] = net.mask_id
    if not free_t.any():
        return x.numpy()
    fermata = torch.from_numpy(np.asarray(fermata, np.int64))[None] \
        if fermata is not None and net.config.fermatas else None
    ties_t = torch.from_numpy(np.asarray(ties if ties is not None else np.full(T, -1), np.int64))
    tied = torch.nonzero(ties_t >= 0).flatten()
    src = ties_t[tied]
    keep = free_t[tied] & free_t[src]  # (steps tied, 4): the free cells that take their source's value

    def tie(x: torch.Tensor) -> None:
        if len(tied):
            x[tied] = torch.where(keep, x[src], x[tied])

    for n in range(max(1, iterations)):
        share = max(0.05, 1.0 - n / (0.75 * max(1, iterations)) * 0.95)
        pick = free_t & (torch.rand(T, 4, generator=gen) < share) if n else free_t.clone()
        if not pick.any():
            pick.view(-1)[torch.nonzero(free_t.view(-1)).flatten()[
                int(torch.randint(0, int(free_t.sum()), (1,), generator=gen))]] = True
        x[pick] = net.mask_id
        draw = _draw(_logits(net, cells, x, allowed, beat, rules, fermata), temperature, gen)
        x[pick] = draw[pick]
        tie(x)
    if rules:  # notes still breaking a rule (drawn together with the note they clash with): redraw them
        x = _settle(net, cells, x, free_t, allowed, beat, temperature, gen, fermata=fermata)
        tie(x)
    out = x.numpy()
    for t in range(T):  # a HOLD whose note was redrawn into a rest is a rest
        bad = free[t] & (out[t] == cells.hold) & ((out[t - 1] == cells.rest) if t else True)
        out[t][bad] = cells.rest
    return out
