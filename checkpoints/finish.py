"""Finish a bundled model: tune its continuous cache on the run's own validation pieces, then slim it.

    python checkpoints/finish.py RUN CORPUS OUT.pt "description"

(what `musiclstm train` now does at the end of every run, for runs made before it did, then
`checkpoint.slim`: fp16 weights, no resume state.)
"""

import sys

import musiclstm as ml
from musiclstm import data
from musiclstm.models import checkpoint
from musiclstm.training.tune import tune_checkpoint


def main() -> None:
    run, corpus, out, description = sys.argv[1:5]
    best = checkpoint.resolve(run)
    model = ml.load(best)
    val_fraction = model.meta.get("train", {}).get("val_fraction", 0.1)
    prepared = data.prepare(data.as_paths(corpus), model.tokenizer, val_fraction=val_fraction, jobs=1, progress=False)
    if prepared.fingerprint != model.meta.get("fingerprint"):
        raise SystemExit(f"{corpus} is not the data {run} was trained on (fingerprint differs)")
    cache = tune_checkpoint(best, [data.sequence(p, model.tokenizer) for p in prepared.split("valid")][:40])
    print(f"{run}: cache lam {cache.lam} theta {cache.theta} skip {cache.skip}; meta {ml.load(best).meta['cache']}")
    checkpoint.slim(best, out, description=description)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
