"""Form in the data: what remi version 3's REPEAT tokens do to real corpora.

For each corpus: tokens per note in remi v2 and v3, the share of non-empty bars that repeat an earlier bar
(same length; same onsets, programs, pitches and durations; velocity aside), the share written as REPEAT
tokens (coverage of the distance set), and the most common distances.

    python bench/form_data.py [--files 400] folk=corpora/folk bach=corpora/bach pop=../shared/data/pop909 \
        jsb=../shared/data/jsb

A `jsb=DIR` entry reads the JSB Chorales 16th-grid json (all splits). Corpora that are absent are skipped.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from musiclstm import Tokenizer  # noqa: E402
from musiclstm.data import find_files  # noqa: E402
from musiclstm.encodings.grid import load_jsb  # noqa: E402
from musiclstm.errors import MusiclstmError  # noqa: E402
from musiclstm.evaluation.benchmark import FILES, _grid, jsb_tokenizer  # noqa: E402
from musiclstm.io.midi import read  # noqa: E402


def scores(kind: str, root: Path, limit: int):
    if kind == "jsb":
        path = root / FILES["16th"]
        tok = jsb_tokenizer("16th")
        chorales = [c for split in load_jsb(path).values() for c in split][:limit]
        for c in chorales:
            yield tok.decode_score(tok.codec.encode_grid(_grid(c, "16th"), tok.vocab))
        return
    files = find_files(root)
    step = max(1, len(files) // limit)
    for f in files[::step][:limit]:
        try:
            yield read(f)
        except MusiclstmError:
            continue


def measure(kind: str, root: Path, limit: int) -> dict:
    v2, v3 = Tokenizer("remi", version=2), Tokenizer("remi")
    every = Tokenizer("remi", repeat_distances=tuple(range(1, 4097)))  # any distance: every repeated bar
    t2 = t3 = notes = bars = rep_any = rep_set = pieces = 0
    dist: Counter = Counter()
    for s in scores(kind, root, limit):
        if len(s) == 0:
            continue
        pieces += 1
        a2, a3, aa = v2.encode_array(s), v3.encode_array(s), every.encode_array(s)
        notes += len(v2.decode_score(a2))
        t2, t3 = t2 + len(a2), t3 + len(a3)
        bars += int(sum(n.startswith("BAR") for n in v2.names(a2)))
        rep_any += int(sum(n.startswith("REPEAT") for n in every.names(aa)))
        used = [int(n.split("_")[1]) for n in v3.names(a3) if n.startswith("REPEAT")]
        rep_set += len(used)
        dist.update(used)
    if not pieces:
        return {}
    return {"corpus": kind, "pieces": pieces, "tpn_v2": t2 / notes, "tpn_v3": t3 / notes,
            "bars_repeating": rep_any / bars, "bars_as_repeat": rep_set / bars,
            "coverage": rep_set / rep_any if rep_any else float("nan"),
            "distances": [d for d, _ in dist.most_common(8)]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("corpora", nargs="+", help="NAME=DIR (NAME jsb reads the JSB json)")
    p.add_argument("--files", type=int, default=400, help="pieces per corpus (evenly spaced)")
    a = p.parse_args()
    print("| corpus | pieces | tokens per note v2 → v3 | bars repeating an earlier bar | written as REPEAT "
          "(coverage) | most common distances |")
    print("|---|---|---|---|---|---|")
    for item in a.corpora:
        kind, _, root = item.partition("=")
        if not Path(root).exists():
            print(f"| {kind} | absent: {root} | | | | |")
            continue
        r = measure(kind, Path(root), a.files)
        if r:
            print(f"| {kind} | {r['pieces']} | {r['tpn_v2']:.2f} → {r['tpn_v3']:.2f} | {r['bars_repeating']:.2f} | "
                  f"{r['bars_as_repeat']:.2f} ({r['coverage']:.2f}) | {', '.join(map(str, r['distances']))} |")


if __name__ == "__main__":
    main()
