"""Grammar masks: the sampler may only pick ids that keep the output valid music.

A `Grammar` follows every sequence of a batch token by token (vectorized over the batch) and
says which ids may come next. It is how composed output is valid by construction: no note-off
without an open note, no zero-length notes, no note left open past the cap (no stuck notes),
timing tokens in order, REMI's BAR/POSITION/PROGRAM/PITCH/VELOCITY/DURATION order, plus the
musical controls: allowed pitches (key/scale, range), programs, drums and maximum polyphony.
May import: errors, theory, encodings.tokenizer. Not: data, models, training, generation, evaluation, app.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..theory import parse_key, scale
from .tokenizer import BOS, EOS, PAD, Tokenizer


@dataclass
class Controls:
    """Musical constraints on sampling. None means unconstrained."""

    key: str | None = None  #: keep pitched notes in this key's scale, e.g. "D minor" (`theory.parse_key`)
    pitch_range: tuple[int, int] | None = None  #: lowest and highest MIDI pitch allowed
    programs: tuple[int, ...] | None = None  #: remi: General MIDI programs allowed (drums aside)
    drums: bool = True  #: remi: whether drum notes may appear
    max_polyphony: int | None = None  #: most notes sounding at once
    max_note_steps: int | None = None  #: the longest note, in the encoding's time steps
    qpm: float | None = None  #: remi: the only TEMPO the piece may use
    melody_first: bool = False  #: remi 4: no counter-melody before the melody has entered (`compose` sets it)

    def pitch_mask(self) -> torch.Tensor:
        m = torch.ones(128, dtype=torch.bool)
        if self.key:
            tonic, minor = parse_key(self.key)
            pcs = scale(tonic, minor, raised=False)
            m &= torch.tensor([p % 12 in pcs for p in range(128)])
        if self.pitch_range:
            lo, hi = self.pitch_range
            m &= (torch.arange(128) >= lo) & (torch.arange(128) <= hi)
        if not m.any():
            raise ConfigError("the key and pitch range leave no pitch to play")
        return m


class Grammar:
    """Call with (ids so far (B, t), logits (B, V)) -> allowed next ids (B, V)."""

    def __init__(self, tokenizer: Tokenizer, controls: Controls | None = None):
        self.tok, self.v = tokenizer, tokenizer.vocab
        self.c = controls or Controls()
        self.pitches = self.c.pitch_mask()
        self.seen = 0
        self.state: dict[str, torch.Tensor] | None = None
        self._rng = {k: (self.v.offset[k], self.v.offset[k] + n) for k, n in zip(self.v.kinds, self.v.sizes,
                                                                                   strict=True)}

    def r(self, kind: str) -> slice:
        a, b = self._rng[kind]
        return slice(a, b)

    def is_(self, t: torch.Tensor, kind: str) -> torch.Tensor:
        a, b = self._rng[kind]
        return (t >= a) & (t < b)

    def advance(self, ids: torch.Tensor) -> None:
        """Follow each sequence to its latest token (state and clocks), without computing a mask."""
        if self.state is None:
            self.state = self.init(ids.shape[0])
        for j in range(self.seen, ids.shape[1]):
            self.update(ids[:, j].cpu())
        self.seen = ids.shape[1]

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        B = ids.shape[0]
        self.advance(ids)
        self.fold(logits)
        allowed = self.allowed(B)
        allowed[:, PAD] = False
        allowed[:, BOS] = False
        allowed[:, self.r("STYLE")] = False
        # never leave a row with nothing to pick: EOS is the way out
        allowed[~allowed.any(1), EOS] = True
        return allowed.to(logits.device)

    # encodings fill these in
    def fold(self, logits: torch.Tensor) -> None:
        """Move, in place, the probability of events the grammar writes one way onto the id it allows."""

    def init(self, B: int) -> dict[str, torch.Tensor]:
        return {}

    def update(self, t: torch.Tensor) -> None:
        pass

    def allowed(self, B: int) -> torch.Tensor:
        return torch.ones(B, self.v.size, dtype=torch.bool)

    def seconds(self) -> torch.Tensor:
        """(B,) how much music each sequence holds so far, in seconds."""
        return torch.zeros(1)

    def bars(self) -> torch.Tensor:
        """(B,) bars begun so far (encodings without bar lines: 0)."""
        return torch.zeros(1, dtype=torch.long)

    def bar_seconds(self) -> torch.Tensor:
        """(B,) the length of the current bar in seconds (a piece may end within one of them)."""
        return torch.full((1,), 2.0)

    def bar_seconds_left(self) -> torch.Tensor:
        """(B,) seconds from now to the end of the current bar (encodings without bar lines: a bar's length)."""
        return self.bar_seconds()

    def at_bar_line(self) -> torch.Tensor:
        """(B,) whether the latest token starts a new bar: where a piece may be cut cleanly."""
        return torch.ones(1, dtype=torch.bool)

    def end_quarters(self) -> torch.Tensor | None:
        """(B,) where each piece's last bar ends, in quarter notes; None for encodings without bar lines."""
        return None

    def bar_empty(self) -> torch.Tensor:
        """(B,) whether the bar in progress has no note yet (encodings without bar lines: False)."""
        return torch.zeros(1, dtype=torch.bool)

    def silent(self) -> torch.Tensor:
        """(B,) whether a bar has begun and no note has been written yet (encodings without bar lines: False)."""
        return torch.zeros(1, dtype=torch.bool)

    def follow(self, prime: list[int], batch: int) -> None:
        """Read a primer (the same for every row) so the clocks start where the new music does."""
        ids = torch.tensor([prime] * batch, dtype=torch.long)
        self(ids, torch.zeros(batch, self.v.size))








