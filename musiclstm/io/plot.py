"""Plots with matplotlib: piano rolls, loss curves and LSTM gate heatmaps.

Each drawing function takes an optional `ax` (or `fig`) and returns it; without one it makes a
pyplot figure, which a notebook shows inline. The `save_*` helpers draw on a bare
`matplotlib.figure.Figure`, so writing a PNG never touches the notebook's or the user's backend.
May import: nothing in musiclstm but io (matplotlib on plain arrays and PrettyMIDI). Not: encodings, data,
models, generation, training, evaluation, app.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _new(figsize, rows: int = 1, **kw):
    import matplotlib.pyplot as plt

    return plt.subplots(rows, 1, figsize=figsize, **kw)


def _save(draw, path: Path, figsize, rows: int = 1, **kw) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    axes = fig.subplots(rows, 1, **kw)
    draw(axes)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)


def piano_roll(pm, ax=None):
    """Draw a PrettyMIDI's notes as a piano roll (time in seconds, MIDI pitch), one colour per track."""
    from matplotlib.patches import Rectangle

    if ax is None:
        _, ax = _new((10, 3.5))
    for k, inst in enumerate(pm.instruments):
        for n in inst.notes:
            ax.add_patch(Rectangle((n.start, n.pitch - 0.4), n.end - n.start, 0.8, color=f"C{k % 10}", alpha=0.8,
                                   linewidth=0))
    pitches = [n.pitch for i in pm.instruments for n in i.notes] or [60]
    ax.set_xlim(0, max(1.0, pm.get_end_time()))
    ax.set_ylim(min(pitches) - 2, max(pitches) + 2)
    ax.set_xlabel("seconds")
    ax.set_ylabel("MIDI pitch")
    return ax


def save_piano_roll(pm, path: Path) -> Path:
    return _save(lambda ax: piano_roll(pm, ax), path, (10, 3.5))


def loss_curve(run, ax=None):
    """Train and validation NLL against step, from a run folder (its metrics.jsonl) or a list of records."""
    if isinstance(run, str | Path):
        lines = (Path(run) / "metrics.jsonl").read_text().splitlines()
        run = [json.loads(s) for s in lines if s.strip()]
    if ax is None:
        _, ax = _new((6, 3.5))
    steps = [h["step"] for h in run]
    ax.plot(steps, [h["train_nll"] for h in run], label="train")
    ax.plot(steps, [h["val_nll"] for h in run], label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("NLL (nats/token)")
    ax.legend()
    return ax


def save_loss_curve(run, path: Path) -> Path:
    return _save(lambda ax: loss_curve(run, ax), path, (6, 3.5))


GATES = (("input_gate", "input gate", "viridis", (0, 1)), ("forget_gate", "forget gate", "viridis", (0, 1)),
         ("output_gate", "output gate", "viridis", (0, 1)), ("cell", "cell state", "RdBu_r", None))


def gates(trace, *, layer: int = 0, units: int = 48, axes=None):
    """Heatmaps of a `GateTrace` (units x steps) under a roll of the pitch tokens fed at each step.

    Shows the `units` units whose cell state varies most. The top panel marks every pitch token at
    its step, so the heatmaps line up with the music token by token.
    """
    if axes is None:
        _, axes = _new((12, 9), rows=1 + len(GATES), sharex=True)
    cell = trace.cell[layer]
    pick = np.sort(np.argsort(-cell.std(0))[:units])
    steps = np.arange(len(trace.ids))
    pitch = np.array([_pitch(n) for n in trace.names], dtype=float)
    has = ~np.isnan(pitch)
    sc = axes[0].scatter(steps[has], pitch[has], s=6, c=pitch[has], cmap="viridis")
    axes[0].figure.colorbar(sc, ax=axes[0], pad=0.01)  # keeps the panel as wide as the heatmaps below
    axes[0].set_ylabel("pitch token")
    for n in (i for i, name in enumerate(trace.names) if name.split("_")[0] == "BAR"):
        for ax in axes:
            ax.axvline(n, color="0.6", lw=0.5)
    for ax, (field, title, cmap, lim) in zip(axes[1:], GATES, strict=True):
        a = getattr(trace, field)[layer][:, pick].T
        top = float(np.percentile(np.abs(a), 98)) or 1.0  # a few counting units would wash out the rest
        v = lim or (-top, top)
        im = ax.imshow(a, aspect="auto", cmap=cmap, vmin=v[0], vmax=v[1], interpolation="nearest")
        ax.set_ylabel(f"{title}\n(unit)")
        ax.figure.colorbar(im, ax=ax, pad=0.01)
    axes[-1].set_xlabel(f"step (token); layer {layer}, {len(pick)} most active units")
    return axes


def _pitch(name: str) -> float:
    for prefix in ("PITCH_", "NOTE_ON_"):
        if name.startswith(prefix):
            return float(name[len(prefix):])
    return float("nan")


def save_gates(trace, path: Path, *, layer: int = 0, units: int = 48) -> Path:
    return _save(lambda axes: gates(trace, layer=layer, units=units, axes=axes), path, (12, 9), rows=1 + len(GATES),
                 sharex=True)
