"""How much the JSB arrays' missing re-strikes cost the harmonizer (issue 25, item 2).

The JSB arrays (`bench/harmonize.py`'s test data) hold a pitch per voice per 16th, so a note struck again at
the same pitch reads as one held note; the music21 chorales the harmonizer learns from mark them. This scores
the harmonizer's left-to-right view (`bench/harmonize.py`'s `bi_nll`: Bach's A T B at each 16th given the whole
soprano, the lower voices before and the voices above) on the chorales left out of its training because they
are JSB test chorales, read from `corpora/bach` twice: as they are, and with every re-strike made a hold, as the
JSB arrays read. About 17 minutes on one core for the default 20.

    python bench/restrikes.py                       # the first 20 left-out chorales
    python bench/restrikes.py --model runs/h/best.pt --limit 78
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from harmonize import JSB, bi_nll  # bench/harmonize.py

from musiclstm.generation import harmonize as H
from musiclstm.training.harmonizer import _grids, split_by_melody

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(ROOT / "corpora" / "bach"))
    ap.add_argument("--jsb", default=str(JSB))
    ap.add_argument("--model", default="harmonizer")
    ap.add_argument("--limit", type=int, default=20, help="the first N left-out chorales")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if not Path(args.corpus).is_dir():
        raise SystemExit(f"skipped: {args.corpus} not found (musiclstm corpus export bach {args.corpus})")
    if not Path(args.jsb).is_file():
        raise SystemExit(f"skipped: {args.jsb} not found (the JSB Chorales from ../shared/data)")
    h = H.load(args.model)
    grids, _, _ = _grids(args.corpus, h.cells.tokenizer)
    train, valid, _ = split_by_melody(grids, h.cells, args.jsb)
    left_out = sorted(set(range(len(grids))) - set(train) - set(valid))[: args.limit]
    totals = {"as written (re-strikes struck)": [0.0, 0.0, 0], "re-strikes held (as JSB reads)": [0.0, 0.0, 0]}
    for i in left_out:
        g = np.asarray(grids[i])
        p = h.cells.pitches(g)
        for t, onset in zip(totals.values(), (h.cells.onsets(g), None), strict=True):
            nll, correct, n = bi_nll(h, p, onset=onset)
            t[0] += nll
            t[1] += correct
            t[2] += n
    print(f"harmonizer {args.model}; {len(left_out)} chorales left out of its training (JSB test content); "
          f"its left-to-right view, NLL per lower-voice 16th and accuracy:")
    for label, (nll, correct, n) in totals.items():
        print(f"  {label:32s} {nll / n:.4f}   {correct / n:.3f}")


if __name__ == "__main__":
    main()
