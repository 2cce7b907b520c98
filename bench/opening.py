"""Does a piece's opening cost the model more than its middle? (issue 13: "train as you compose")

`compose` starts every piece from a zero LSTM state after BOS. A model trained on one long stream
(state carried from the end of one piece into the next) never saw that start and pays for it in
the first tokens. This scores each held-out piece (the checkpoint's own content-hash split) from a
zero state, exactly as `compose` starts, and prints the mean NLL of the first `--first` tokens
against the mean over the middle third of the pieces, beside the goal (opening <= 1.5x middle).

    python bench/opening.py folk corpora/folk
    python bench/opening.py bach corpora/bach --first 16
"""

from __future__ import annotations

import argparse

import numpy as np

import musiclstm as ml
from musiclstm import data
from musiclstm.models.cache import piece_nlls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("data", nargs="+")
    ap.add_argument("--first", type=int, default=16, help="opening tokens scored (after BOS)")
    ap.add_argument("--limit", type=int, default=60, help="held-out pieces scored at most")
    args = ap.parse_args()

    model = ml.load(args.checkpoint)
    tok = model.tokenizer
    val_fraction = model.meta.get("train", {}).get("val_fraction", 0.1)
    corpus = data.prepare(data.as_paths(args.data), tok, val_fraction=val_fraction, jobs=1, progress=False)
    pieces = corpus.split("valid")[: args.limit]
    opening, middle = [], []
    for p in pieces:
        nll = piece_nlls(model.net, data.sequence(p, tok), model.cache)  # nll[i]: token i+1 given BOS .. token i
        n = len(nll)
        if n < 3 * args.first:
            continue
        opening.append(nll[: args.first].mean())
        middle.append(nll[n // 3: 2 * n // 3].mean())
    if not opening:
        raise SystemExit("no held-out piece is long enough")
    o, m = float(np.mean(opening)), float(np.mean(middle))
    print(f"{args.checkpoint}: {len(opening)} held-out pieces, from a zero state after BOS (as compose starts)")
    print(f"  first {args.first} tokens  {o:.3f} nats/token")
    print(f"  middle third      {m:.3f} nats/token")
    print(f"  opening / middle  {o / m:.2f}   (goal <= 1.5)")


if __name__ == "__main__":
    main()
