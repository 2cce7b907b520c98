"""How often does the meter change within a piece, and how often does it open with silence: composed samples
vs real pieces (issue 26, item 7).

A sample's meter comes from the TIMESIG tokens the grammar lets the model write; a real tune almost never
changes meter. This counts, per piece, whether its time signatures name more than one meter, for `--samples`
pieces composed by a bundled model (`--bars` bars each, seeds 0..N-1) and for the real MIDI files given.

    PYTHONPATH=. python bench/meter_changes.py folk ../shared/data/nottingham --samples 20 --bars 8

Measured (2026-12-03, bundled folk, Nottingham's 1,034 MIDI files):
    --samples 40 --bars 16: samples 1/40 change meter; real 14/1,034
    --samples 15 --bars 8:  samples 1/15 change meter, 11/15 open with over 1 s of silence;
                            real 14/1,034 change meter, 678/1,034 open with over 1 s of silence
So the samples change meter at about the real rate (2.5 % vs 1.4 %; one sample in 40) and open with a rest
before the pickup as the real files do (their MIDI writes a pickup as a rest in a whole first bar): the
grammar is left as it is. Removing that rest would need a pickup bar of its own meter (a meter change).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pretty_midi

import musiclstm as ml
from musiclstm.generation.compose import compose


def changes(pm: pretty_midi.PrettyMIDI) -> bool:
    """Whether the piece names more than one meter."""
    return len({(t.numerator, t.denominator) for t in pm.time_signature_changes}) > 1


def late(pm: pretty_midi.PrettyMIDI) -> bool:
    """Whether the first note comes more than a second after the start (an opening silence)."""
    starts = [n.start for i in pm.instruments for n in i.notes]
    return bool(starts) and min(starts) > 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("real", nargs="*", help="folders of real MIDI files")
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--bars", type=int, default=8)
    ap.add_argument("--real-limit", type=int, default=300)
    args = ap.parse_args()
    model = ml.load(args.checkpoint)
    pms = [compose(model, bars=args.bars, seed=s) for s in range(args.samples)]
    sampled, opened = [changes(pm) for pm in pms], [late(pm) for pm in pms]
    print(f"samples: {sum(sampled)}/{len(sampled)} change meter, {sum(opened)}/{len(opened)} open with over 1 s of "
          f"silence ({args.checkpoint}, {args.bars} bars, seeds 0-{args.samples - 1})")
    files = sorted(p for d in args.real for p in Path(d).rglob("*") if p.suffix.lower() in (".mid", ".midi"))
    real, real_late = [], []
    for f in files[: args.real_limit]:
        try:
            pm = pretty_midi.PrettyMIDI(str(f))
        except Exception:  # a file pretty_midi cannot read is left out
            continue
        real.append(changes(pm))
        real_late.append(late(pm))
    if real:
        print(f"real: {sum(real)}/{len(real)} change meter, {sum(real_late)}/{len(real_late)} open with over 1 s of "
              f"silence ({', '.join(args.real)})")


if __name__ == "__main__":
    main()
