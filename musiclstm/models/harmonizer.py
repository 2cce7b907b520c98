"""The harmonizer: a bidirectional LSTM over four-part chorales on a 16th grid, and its cells.

DeepBach-style: the four cells' embeddings and the position in the beat (plus, with `fermatas`, whether the
step is under a fermata: DeepBach's metadata) go into a bidirectional LSTM
whose forward half at step t has read steps <= t and backward half steps >= t; a "center" layer reads
step t's own cells; four heads predict the cells. `Cells` converts between grid tokens and pitches.
Trained in `training.harmonizer`, sampled in `generation.gibbs` / `generation.harmonize`.
May import: torch, numpy. Not: anything above models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

VOICES = ("Soprano", "Alto", "Tenor", "Bass")


STEPS = 4  # grid steps per quarter note (16ths)


KIND = "harmonizer"  # the checkpoint's model kind


@dataclass
class HarmonizerConfig:
    vocab_size: int
    embed: int = 64
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.2
    fermatas: bool = False  #: a fermata channel (DeepBach's metadata): per step unknown, none, or under a fermata
    kind: str = KIND


FERMATA_UNKNOWN, FERMATA_NONE, FERMATA_HERE = 0, 1, 2  # the fermata channel's values at a step


class Harmonizer(nn.Module):
    """(B, T, 4) cell ids (MASK = vocab_size), (B, T) beat positions and, with `config.fermatas`, optional
    (B, T) fermata values (`FERMATA_*`; None: unknown) -> (B, T, 4, vocab) logits."""

    def __init__(self, config: HarmonizerConfig):
        super().__init__()
        self.config = c = config
        E, H = c.embed, c.hidden
        self.cells = nn.ModuleList(nn.Embedding(c.vocab_size + 1, E) for _ in VOICES)
        self.beat = nn.Embedding(STEPS, E)
        if c.fermatas:  # added to the beat's embedding; zero at first, so a model trained without it is unchanged
            self.fermata = nn.Embedding(3, E)
            nn.init.zeros_(self.fermata.weight)
        self.lstm = nn.LSTM(5 * E, H, c.layers, batch_first=True, bidirectional=True,
                            dropout=c.dropout if c.layers > 1 else 0.0)
        self.center = nn.Sequential(nn.Linear(5 * E, H), nn.ReLU())
        self.drop = nn.Dropout(c.dropout)
        self.heads = nn.ModuleList(nn.Linear(3 * H, c.vocab_size) for _ in VOICES)

    @property
    def mask_id(self) -> int:
        return self.config.vocab_size

    def _inputs(self, cells: torch.Tensor, beat: torch.Tensor, fermata: torch.Tensor | None = None) -> torch.Tensor:
        metadata = self.beat(beat)
        if self.config.fermatas:
            metadata = metadata + self.fermata(fermata if fermata is not None else torch.zeros_like(beat))
        return torch.cat([emb(cells[..., v]) for v, emb in enumerate(self.cells)] + [metadata], -1)

    def forward(self, cells: torch.Tensor, beat: torch.Tensor, fermata: torch.Tensor | None = None) -> torch.Tensor:
        x = self.drop(self._inputs(cells, beat, fermata))
        h, _ = self.lstm(x)
        z = torch.cat([self.drop(h), self.center(x)], -1)
        return torch.stack([head(z) for head in self.heads], 2)

    @torch.no_grad()
    def states(self, cells: torch.Tensor, beat: torch.Tensor,
               fermata: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The top layer's forward (past) and backward (future) LSTM outputs: two (B, T, hidden)."""
        h, _ = self.lstm(self._inputs(cells, beat, fermata))
        return h[..., : self.config.hidden], h[..., self.config.hidden:]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class Cells:
    """Token ids of the grid encoding (hold=True) and conversions between cells and pitches."""

    def __init__(self, tokenizer):
        v = tokenizer.vocab
        self.tokenizer = tokenizer
        self.pitch0, self.rest, self.hold = v.offset["PITCH"], v.id("REST"), v.id("HOLD")
        self.size = v.size

    def pitches(self, cells: np.ndarray) -> np.ndarray:
        """(T, V) cells -> (T, V) sounding MIDI pitch (-1: silent); a HOLD after silence is silent."""
        cells = np.asarray(cells)
        out = np.full(cells.shape, -1, np.int64)
        is_pitch = (cells >= self.pitch0) & (cells < self.pitch0 + 128)
        for t in range(len(cells)):
            out[t] = np.where(is_pitch[t], cells[t] - self.pitch0,
                              np.where((cells[t] == self.hold) & (t > 0), out[t - 1] if t else -1, -1))
        return out

    def onsets(self, cells: np.ndarray) -> np.ndarray:
        return (np.asarray(cells) >= self.pitch0) & (np.asarray(cells) < self.pitch0 + 128)

    def from_pitches(self, pitches: np.ndarray, onset: np.ndarray) -> np.ndarray:
        """(T, V) pitches (-1 silent) and onset flags -> cells."""
        pitches, onset = np.asarray(pitches), np.asarray(onset, bool)
        cells = np.where(pitches < 0, self.rest, self.pitch0 + np.clip(pitches, 0, 127))
        return np.where((pitches >= 0) & ~onset, self.hold, cells).astype(np.int64)

    def merge_restrikes(self, cells: torch.Tensor) -> torch.Tensor:
        """(B, T, V) cells with each re-strike (a voice striking again the pitch it sounds at the step before)
        made a HOLD: the music as the JSB arrays and other pitch-per-step data read, which cannot mark them."""
        out = cells.clone()
        sounding = torch.full_like(cells[:, 0], -1)
        for t in range(cells.shape[1]):
            c = cells[:, t]
            is_pitch = (c >= self.pitch0) & (c < self.pitch0 + 128)
            out[:, t] = torch.where(is_pitch & (c - self.pitch0 == sounding), self.hold, c)
            sounding = torch.where(is_pitch, c - self.pitch0, torch.where(c == self.hold, sounding, -1))
        return out

    def transpose(self, cells: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Shift the PITCH cells of each (B, T, V) item by its k (B,) semitones."""
        is_pitch = (cells >= self.pitch0) & (cells < self.pitch0 + 128)
        return torch.where(is_pitch, cells + k.view(-1, 1, 1), cells)


def fermata_channel(grid: np.ndarray, cells: Cells, marks: list[float] | None) -> np.ndarray:
    """(T,) fermata values of a chorale: unknown without `marks` (quarters where a note under a fermata starts),
    else none, but under a fermata from the soprano's onset there for as long as its note sounds."""
    T = len(grid)
    if marks is None:
        return np.full(T, FERMATA_UNKNOWN, np.int64)
    out = np.full(T, FERMATA_NONE, np.int64)
    held = np.asarray(grid)[:, 0] == cells.hold
    for q in marks:
        t = int(round(q * STEPS))
        if 0 <= t < T:
            out[t] = FERMATA_HERE
            while t + 1 < T and held[t + 1]:
                t += 1
                out[t] = FERMATA_HERE
    return out
