"""Read + encode speed on POP909 against miditok 3.1 REMI, one core, in one run.

    python bench/read_speed.py [--data ../shared/data/pop909] [--limit N]

Prints files/s of musiclstm's `Tokenizer(enc).encode(path)` (reader + tokenizer) for each
encoding beside miditok's REMI `tokenizer(path)` and pretty_midi's bare parse of the same files.
Goal: musiclstm REMI >= 2x miditok REMI. miditok and pretty_midi are only needed by this script.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from musiclstm import Tokenizer  # noqa: E402


def rate(fn, files) -> float:
    t = time.perf_counter()
    for f in files:
        fn(f)
    return len(files) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "pop909"))
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    files = sorted(Path(args.data).glob("*.mid"))[: args.limit]
    if not files:
        sys.exit(f"no MIDI files in {args.data}")
    print(f"{len(files)} files from {args.data}, one process, OMP_NUM_THREADS=1")
    results = {}
    try:
        import miditok

        plain = miditok.REMI()  # default config: one stream, no tempo/meter tokens
        results["miditok 3.1 REMI default"] = rate(lambda f: plain(f), files)
        mt = miditok.REMI(miditok.TokenizerConfig(use_programs=True, use_tempos=True, use_time_signatures=True))
        results["miditok 3.1 REMI +programs/tempo"] = rate(lambda f: mt(f), files)
        # the anchor is the faster of the two, so the ratio is the conservative one
        results["miditok 3.1 REMI (anchor)"] = max(results["miditok 3.1 REMI default"],
                                                   results["miditok 3.1 REMI +programs/tempo"])
    except ImportError:
        print("miditok not installed: pip install miditok==3.1.0 to measure the anchor")
    try:
        import pretty_midi

        results["pretty_midi parse only"] = rate(lambda f: pretty_midi.PrettyMIDI(str(f)), files)
    except ImportError:
        pass
    for enc in ("remi", "performance", "grid"):
        tok = Tokenizer(enc)
        results[f"musiclstm read + encode {enc}"] = rate(tok.encode_array, files)
    anchor = results.get("miditok 3.1 REMI (anchor)")
    for name, r in results.items():
        ratio = f"{r / anchor:6.2f}x" if anchor else ""
        print(f"{name:36} {r:9.1f} files/s {ratio}")
    if anchor:
        print(f"goal: remi >= 2.00x miditok -> {results['musiclstm read + encode remi'] / anchor:.2f}x")


if __name__ == "__main__":
    main()
