"""The end of a training run: tune the continuous cache (`models.cache`) on held-out pieces.

May import: errors, models. Not: generation, evaluation, app.
"""

from __future__ import annotations

import numpy as np

from ..models.cache import Cache, tune


def tune_checkpoint(path, pieces: list[np.ndarray]) -> Cache:
    """Tune the cache of the checkpoint at `path` on held-out pieces and store it there (meta "cache")."""
    from dataclasses import asdict

    from ..models import checkpoint

    model = checkpoint.load(path)
    best, results = tune(model.net, pieces)
    blob = checkpoint.read(path)
    meta = {k: v for k, v in blob["meta"].items() if k not in ("format", "version", "tokenizer", "model")}
    meta["cache"] = {**asdict(best), "tuned_on_pieces": len(pieces), "val_nll_without": results[(0.0, 10.0)],
                     "val_nll_with": results[(best.lam, best.theta)]}
    checkpoint.save(path, model.net, model.tokenizer, meta, blob.get("resume"))
    return best
