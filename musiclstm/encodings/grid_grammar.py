"""The grid encoding's grammar: a fixed number of voice cells per step.

May import: errors, encodings (grammar, tokenizer). Not: data, models and the rooms above.
"""

from __future__ import annotations

import torch

from .grammar import Grammar
from .tokenizer import EOS


class GridGrammar(Grammar):
    """One token per voice per step; HOLD only while that voice's note is open and under the cap."""

    def init(self, B):
        self.cap = self.c.max_note_steps or self.tok.config.max_hold_steps
        V = self.tok.config.voices
        return {"k": torch.zeros(B, dtype=torch.long), "held": torch.full((B, V), -1, dtype=torch.long),
                "last": torch.zeros(B, V, dtype=torch.long)}

    def update(self, t):
        s = self.state
        V = self.tok.config.voices
        body = self.is_(t, "PITCH") | (t == self.v.offset["REST"]) | (t == self.v.offset["HOLD"])
        voice = s["k"] % V
        rows = torch.arange(len(t))
        held = s["held"][rows, voice]
        new = torch.where(self.is_(t, "PITCH"), 0, torch.where(t == self.v.offset["HOLD"], held + 1, -1))
        new = torch.where(held < 0, torch.where(self.is_(t, "PITCH"), 0, -1), new)
        s["held"][rows[body], voice[body]] = new[body]
        s["k"] += body.long()

    def seconds(self):
        cfg = self.tok.config
        return self.state["k"] // cfg.voices / cfg.steps_per_quarter * 60 / cfg.qpm

    def bars(self):
        """Whole 4/4 bars so far (the grid has no meter of its own)."""
        cfg = self.tok.config
        return self.state["k"] // (cfg.voices * cfg.steps_per_quarter * 4)

    def bar_seconds(self):
        return torch.full((1,), 4 * 60 / self.tok.config.qpm)

    def at_bar_line(self):
        cfg = self.tok.config
        return self.state["k"] % (cfg.voices * cfg.steps_per_quarter * 4) == 0

    def allowed(self, B):
        s = self.state
        V = self.tok.config.voices
        voice = s["k"] % V
        held = s["held"][torch.arange(B), voice]
        a = torch.zeros(B, self.v.size, dtype=torch.bool)
        a[:, self.r("PITCH")] = self.pitches[None]
        a[:, self.v.offset["REST"]] = True
        a[:, self.v.offset["HOLD"]] = (held >= 0) & (held + 1 < self.cap)
        a[:, EOS] = voice == 0
        return a
