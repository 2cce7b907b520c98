"""Record the training data's programs and note density in a bundled model made before `train` recorded them.

    python checkpoints/record_data.py NAME CORPUS      # e.g. folk corpora/folk

`compose` refuses instruments a model never saw (meta data.programs) and redraws a sample far denser
than its data (data.density_p99); folk and bach were trained before checkpoints held these. The corpus
is prepared as the run prepared it and must have the run's data fingerprint; the weights are left
byte for byte as they are (the model fingerprint does not change), only the metadata is rewritten.
"""

import json
import os
import sys

import torch

import musiclstm as ml
from musiclstm import data
from musiclstm.models import checkpoint


def main() -> None:
    name, corpus = sys.argv[1:3]
    path = checkpoint.resolve(name)
    model = ml.load(path)
    train = model.meta.get("train", {})
    prepared = data.prepare(data.as_paths(corpus), model.tokenizer, val_fraction=train.get("val_fraction", 0.1),
                            styles=train.get("styles", "none"), progress=False)
    if prepared.fingerprint != model.meta.get("fingerprint"):
        raise SystemExit(f"{corpus} is not the data {name} was trained on (fingerprint differs)")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    meta = json.loads(blob["meta"])
    meta["data"] = {**meta.get("data", {}), "programs": prepared.programs(), "density_p99": prepared.density_p99()}
    blob["meta"] = json.dumps(meta)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    after = ml.load(path)
    assert after.fingerprint == model.fingerprint
    print(f"{path}: data {after.meta['data']}")


if __name__ == "__main__":
    main()
