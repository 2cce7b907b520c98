"""Does the harmonizer's fermata channel carry information? (issue 25, item 3)

The music21 chorales mark their phrase ends with fermatas, which MIDI drops; `musiclstm corpus export bach`
keeps them in `fermatas.json` beside the MIDI files, and a harmonizer trained on such a folder reads them as a
channel beside the position in the beat (DeepBach's metadata; half the training windows get it as unknown, so
a melody without marks is harmonized as before). This scores a harmonizer's NLL per masked cell (the training
objective; the same masks, seed 0, in both columns) on two sets of chorales, with the channel as the chorales
mark it and with it unknown:

* the validation chorales (those whose content is a chorale of the JSB valid split), and
* the chorales left out of training because their content is a chorale of the JSB test split.

    python bench/fermatas.py                         # corpora/bach, the bundled harmonizer
    python bench/fermatas.py --harmonizer runs/h/best.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from musiclstm.data.collections import FERMATAS, fermatas_of
from musiclstm.encodings.tokenizer import Tokenizer
from musiclstm.generation import harmonize as H
from musiclstm.models.harmonizer import Cells, fermata_channel
from musiclstm.training.harmonizer import _grids, _validate, split_by_melody

ROOT = Path(__file__).resolve().parent.parent
JSB = ROOT.parent / "shared" / "data" / "jsb" / "Jsb16thSeparated.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(ROOT / "corpora" / "bach"))
    ap.add_argument("--jsb", default=str(JSB))
    ap.add_argument("--harmonizer", default=None, help="harmonizer checkpoint [bundled]")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if not (Path(args.corpus) / FERMATAS).is_file():
        raise SystemExit(f"skipped: {args.corpus}/{FERMATAS} not found (musiclstm corpus export bach {args.corpus})")
    if not Path(args.jsb).is_file():
        raise SystemExit(f"skipped: {args.jsb} not found (the JSB Chorales from ../shared/data)")
    h = H.load(args.harmonizer)
    if not h.net.config.fermatas:
        raise SystemExit("this harmonizer has no fermata channel (train it on a folder with fermatas.json)")
    cells = Cells(Tokenizer("grid", hold=True))
    grids, names, _ = _grids(args.corpus, cells.tokenizer)
    train, valid, _ = split_by_melody(grids, cells, args.jsb)
    left_out = sorted(set(range(len(grids))) - set(train) - set(valid))
    marks = [fermatas_of(n) for n in names]
    channel = [fermata_channel(g, cells, m) for g, m in zip(grids, marks, strict=True)]
    print(f"harmonizer {args.harmonizer or 'bundled'}; NLL per masked cell (nats), the same masks in both columns")
    print(f"{'chorales':44s} {'marked':>8s} {'unknown':>8s}")
    for label, idx in ((f"validation ({len(valid)})", valid), (f"left out: JSB test content ({len(left_out)})",
                                                                  left_out)):
        idx = [i for i in idx if marks[i]]  # those that mark fermatas
        known = _validate(h.net, grids, idx, cells, fermatas=channel)
        unknown = _validate(h.net, grids, idx, cells, fermatas=None)
        print(f"{label:44s} {known:8.4f} {unknown:8.4f}")


if __name__ == "__main__":
    main()
