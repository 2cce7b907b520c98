"""The end of a training run: tune the continuous cache (`models.cache`) on held-out pieces.

A run ends with the best weights still in memory: `save_tuned` tunes the cache on them and writes
best.pt once (no save, load, read and save again). `tune_checkpoint` does the same for a file.
May import: errors, encodings, models. Not: data, generation, evaluation, app.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..encodings.tokenizer import Tokenizer
from ..models import checkpoint
from ..models.cache import Cache, tune


def save_tuned(path: Path, net, tokenizer: Tokenizer, meta: dict, pieces: list[np.ndarray],
               resume: dict | None = None) -> Cache:
    """Tune the cache of `net` on held-out pieces (BOS..EOS arrays) and save it with `meta` (plus
    meta "cache") at `path`, once. Returns the cache chosen."""
    best, results = tune(net, pieces)
    meta = {**meta, "cache": {**asdict(best), "tuned_on_pieces": len(pieces), "val_nll_without": results[(0.0, 10.0)],
                              "val_nll_with": results[(best.lam, best.theta)]}}
    checkpoint.save(path, net, tokenizer, meta, resume)
    return best


def tune_checkpoint(path, pieces: list[np.ndarray]) -> Cache:
    """Tune the cache of the checkpoint at `path` on held-out pieces and store it there (meta "cache")."""
    blob = checkpoint.read(path)
    model = checkpoint.load(path)
    meta = {k: v for k, v in blob["meta"].items() if k not in ("format", "version", "tokenizer", "model")}
    return save_tuned(path, model.net, model.tokenizer, meta, pieces, blob.get("resume"))
