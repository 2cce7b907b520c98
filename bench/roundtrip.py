"""Round-trip note recovery of each encoding on every folder of ../shared/data.

    python bench/roundtrip.py [--data ../shared/data] [--limit N]

Prints, per encoding and folder, the onset F1 (same pitch, onset within 50 ms) of
decode(encode(f)) against the notes of f that the encoding promises to keep (performance: the
non-drum notes; remi: every note), pooled over all notes of the folder. Anchor: >= 99 %.
For performance a second column scores against the notes a single keyboard can sound: several
tracks playing the same pitch at the same 10 ms step are one key press (POP909 doubles its
melody in the piano track), which one merged stream cannot hold twice.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from musiclstm import MidiReadError, Score, Tokenizer, Track, read  # noqa: E402
from musiclstm.evaluation.metrics import onset_f1  # noqa: E402
from musiclstm.io.midi import is_music_file  # noqa: E402

FOLDERS = {"performance": ["nottingham", "pop909", "fixtures", "edge"],
           "remi": ["nottingham", "fixtures/music21", "pop909", "fixtures/miditok-multitrack"]}


def folder_f1(tok: Tokenizer, folder: Path, limit: int | None, merged: bool = False) -> tuple[float, int, int]:
    files = sorted(p for p in folder.rglob("*") if is_music_file(p))[:limit]
    matched_ref = matched_est = n_ref = n_est = n_files = 0
    for f in files:
        try:
            score = read(f)
        except MidiReadError:
            continue
        if tok.encoding == "performance":
            score = score.select(~score.is_drum)
        est = tok.decode_score(tok.encode(score))
        if merged and tok.encoding == "performance":
            on, _, pitch, _ = tok.codec.notes(score)
            score = Score(on / 100 * 2, on / 100 * 2 + 0.1, pitch, np.full(len(on), 64), np.zeros(len(on)),
                          [Track()])
        m = onset_f1(score, est)
        matched_ref += m["recall"] * m["reference"]
        matched_est += m["precision"] * m["estimate"]
        n_ref, n_est, n_files = n_ref + m["reference"], n_est + m["estimate"], n_files + 1
    p = matched_est / n_est if n_est else 1.0
    r = matched_ref / n_ref if n_ref else 1.0
    return (2 * p * r / (p + r) if p + r else 0.0), n_files, n_ref


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--limit", type=int, default=None, help="files per folder")
    args = ap.parse_args()
    data = Path(args.data)
    if not data.is_dir():
        sys.exit(f"no data folder at {data}")
    print(f"{'encoding':12} {'folder':28} {'files':>6} {'notes':>9} {'onset F1':>9} {'keys F1':>8}  anchor")
    for enc, folders in FOLDERS.items():
        tok = Tokenizer(enc)
        for name in folders:
            f1, n_files, n_notes = folder_f1(tok, data / name, args.limit)
            keys = "       -"
            if enc == "performance":
                keys = f"{100 * folder_f1(tok, data / name, args.limit, True)[0]:7.2f}%"
            print(f"{enc:12} {name:28} {n_files:6d} {n_notes:9d} {100 * f1:8.2f}% {keys}  >= 99%", flush=True)


if __name__ == "__main__":
    main()
