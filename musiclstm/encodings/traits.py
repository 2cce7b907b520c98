"""What the other rooms may ask of an encoding without naming it: which ids are notes, meter repair.

May import: errors, io, encodings. Not: data, models, training, generation, evaluation, app.
"""

from __future__ import annotations

import numpy as np

from ..io.score import Score
from . import remi
from .tokenizer import Tokenizer


def note_ranges(tokenizer: Tokenizer | None) -> list[tuple[int, int]]:
    """The id ranges that count as notes for `density_p99` (128 ids from each note kind's offset)."""
    v = tokenizer.vocab if tokenizer is not None else None
    return [(v.offset[k], v.offset[k] + 128) for k in ("PITCH", "DRUM", "NOTE_ON") if v is not None and k in v.offset]


def count_notes(ids: np.ndarray, ranges: list[tuple[int, int]]) -> int:
    return sum(int(((ids >= a) & (ids < b)).sum()) for a, b in ranges)


def meter_repaired(tokenizer: Tokenizer, score: Score) -> bool:
    """Whether encoding `score` repairs its meter (remi v2 reads implausible meters, e.g. POP909's 1/4, as 4/4)."""
    return getattr(tokenizer.config, "version", 1) >= 2 and tokenizer.encoding == "remi" and \
        not remi.plausible_meter(score.time_signatures)
