"""Plots with matplotlib: piano rolls (more in the notebooks issue)."""

from __future__ import annotations

from pathlib import Path


def piano_roll(pm, ax=None, *, fs: int = 20):
    """Draw a PrettyMIDI's notes as a piano roll (time in seconds, MIDI pitch) on `ax`."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(10, 3.5))
    for k, inst in enumerate(pm.instruments):
        for n in inst.notes:
            ax.add_patch(plt.Rectangle((n.start, n.pitch - 0.4), n.end - n.start, 0.8, color=f"C{k % 10}",
                                       alpha=0.8, linewidth=0))
    pitches = [n.pitch for i in pm.instruments for n in i.notes] or [60]
    ax.set_xlim(0, max(1.0, pm.get_end_time()))
    ax.set_ylim(min(pitches) - 2, max(pitches) + 2)
    ax.set_xlabel("seconds")
    ax.set_ylabel("MIDI pitch")
    return ax


def save_piano_roll(pm, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = piano_roll(pm)
    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=100)
    plt.close(ax.figure)
    return Path(path)
