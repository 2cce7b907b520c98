"""Data augmentation on token ids: transpose pitch (and key) tokens, stretch tempo or time-shift tokens.

Each encoding's timing and pitch kinds are read from its vocabulary; a grid has no timing tokens.
May import: errors, encodings. Not: data, models, training, generation, evaluation, app.
"""

from __future__ import annotations

import torch

from .tokenizer import Tokenizer


def transpose(tokenizer: Tokenizer, ids: torch.Tensor, k) -> torch.Tensor:
    """Shift pitch tokens by k semitones (an int, or a (B, 1) tensor: one shift per row); drums and
    other tokens stay."""
    out = ids.clone()
    shifted = ids + torch.as_tensor(k)
    for kind in ("NOTE_ON", "NOTE_OFF", "PITCH"):
        if kind in tokenizer.vocab.offset:
            o = tokenizer.vocab.offset[kind]
            m = (ids >= o) & (ids < o + 128)
            out = torch.where(m, o + (shifted - o).clamp(0, 127), out)
    if "KEY" in tokenizer.vocab.offset:  # remi v2: the key moves with the notes (tonic + 12 * minor)
        o = tokenizer.vocab.offset["KEY"]
        m = (ids >= o) & (ids < o + 24)
        v = ids - o
        out = torch.where(m, o + (v % 12 + torch.as_tensor(k)) % 12 + 12 * (v // 12), out)
    return out


def stretch(tokenizer: Tokenizer, ids: torch.Tensor, f) -> torch.Tensor:
    """Play a window `f` times slower (a float, or a (B, 1) tensor: one factor per row): remi TEMPO
    tokens / f (qpm), performance TIME_SHIFT tokens x f (each shift rounded and capped at the
    longest; long gaps are several shifts, so this is close, not exact). Grid windows have no timing
    tokens and stay as they are."""
    v = tokenizer.vocab
    f = torch.as_tensor(f, dtype=torch.float64)
    if tokenizer.encoding == "remi":
        o, n, lo = v.offset["TEMPO"], v.sizes[v.kinds.index("TEMPO")], tokenizer.config.min_qpm
        new = o + ((ids - o + lo).double() / f - lo).round().long().clamp(0, n - 1)
    elif tokenizer.encoding == "performance":
        o, n = v.offset["TIME_SHIFT"], v.sizes[v.kinds.index("TIME_SHIFT")]
        new = o + ((ids - o + 1).double() * f - 1).round().long().clamp(0, n - 1)
    else:
        return ids
    return torch.where((ids >= o) & (ids < o + n), new, ids)
