"""The performance encoding's grammar: NOTE_ON/NOTE_OFF/TIME_SHIFT/VELOCITY in a valid order.

May import: errors, encodings (grammar, tokenizer). Not: data, models and the rooms above.
"""

from __future__ import annotations

import torch

from .grammar import Grammar
from .tokenizer import EOS


class PerformanceGrammar(Grammar):
    """NOTE_OFF only for open notes held at least one step; shifts never carry a note past the cap."""

    def init(self, B):
        cfg = self.tok.config
        self.cap = self.c.max_note_steps or int(cfg.max_note_seconds * 1000 / cfg.shift_ms)
        return {"open": torch.zeros(B, 128, dtype=torch.bool), "age": torch.zeros(B, 128, dtype=torch.long),
                "now": torch.zeros(B, dtype=torch.long)}

    def update(self, t):
        s = self.state
        rows = torch.arange(len(t))
        on, off, sh = self.is_(t, "NOTE_ON"), self.is_(t, "NOTE_OFF"), self.is_(t, "TIME_SHIFT")
        p_on = (t - self._rng["NOTE_ON"][0]).clamp(0, 127)
        p_off = (t - self._rng["NOTE_OFF"][0]).clamp(0, 127)
        s["open"][rows[off], p_off[off]] = False
        s["open"][rows[on], p_on[on]] = True
        s["age"][rows[on], p_on[on]] = 0
        steps = torch.where(sh, t - self._rng["TIME_SHIFT"][0] + 1, torch.zeros_like(t))
        s["age"] += steps[:, None]
        s["now"] += steps

    def seconds(self):
        return self.state["now"] * self.tok.config.shift_ms / 1000

    def allowed(self, B):
        s = self.state
        a = torch.zeros(B, self.v.size, dtype=torch.bool)
        a[:, self.r("VELOCITY")] = True
        on = self.pitches[None].expand(B, 128) & ~s["open"]
        if self.c.max_polyphony:
            on &= (s["open"].sum(1, keepdim=True) < self.c.max_polyphony)
        a[:, self.r("NOTE_ON")] = on
        a[:, self.r("NOTE_OFF")] = s["open"] & (s["age"] >= 1)
        oldest = torch.where(s["open"], s["age"], torch.zeros_like(s["age"])).max(1).values  # (B,)
        room = self.cap - oldest  # how many steps the oldest open note may still last
        n = self._rng["TIME_SHIFT"][1] - self._rng["TIME_SHIFT"][0]
        a[:, self.r("TIME_SHIFT")] = torch.arange(1, n + 1)[None] <= room[:, None]
        a[:, EOS] = ~s["open"].any(1)
        return a
