#!/usr/bin/env bash
# Rebuild the bundled models from public data (see checkpoints/README.md).
#
#   bash checkpoints/build.sh [bach] [folk] [pop] [jsb]      (default: all four)
#
# Each model trains on this 2-core CPU in well under an hour (run folders land in runs/bundled/NAME;
# the bundled files were built with OMP_NUM_THREADS=1, two builds side by side).
# No transposition augmentation: at these budgets it slowed key learning (300 steps
# on 200 chorales: 0.71 of the pitch probability in the piece's key without it, 0.62 with +-5).
# POP909 is not bundled with music21: clone https://github.com/music-x-lab/POP909-Dataset and set
# POP909=/path/to/POP909-Dataset/POP909 (default: ../shared/data/pop909, the team's copy).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/bundled}
POP909=${POP909:-../shared/data/pop909}
JSB=${JSB:-../shared/data/jsb}
slim() {  # keep weights only, in fp16, with a description: the file that ships
    python -c "import sys; from musiclstm.checkpoint import slim; slim(sys.argv[1], sys.argv[2], description=sys.argv[3])" "$@"
}
for name in "${@:-bach folk pop jsb}"; do
  for name in $name; do
    case $name in
      bach)
        [ -d corpora/bach ] || musiclstm corpus export bach corpora/bach
        musiclstm train corpora/bach --out "$RUNS/bach" --preset small --epochs 20 --seed 0 --force -q
        slim "$RUNS/bach" checkpoints/bach.pt "Bach four-part chorales (music21 corpus), remi, LSTM 2x256" ;;
      folk)
        [ -d corpora/folk ] || musiclstm corpus export folk corpora/folk
        musiclstm train corpora/folk --out "$RUNS/folk" --preset small --epochs 4 --seed 0 --force -q
        slim "$RUNS/folk" checkpoints/folk.pt "Irish/American fiddle tunes (music21 corpus: O'Neill, Ryan), remi, LSTM 2x256" ;;
      pop)
        musiclstm train "$POP909" --out "$RUNS/pop" --preset small --epochs 3 --seed 0 --force -q
        slim "$RUNS/pop" checkpoints/pop.pt "POP909 pop songs (melody, bridge, piano), remi, LSTM 2x256" ;;
      jsb)
        musiclstm benchmark jsb "$JSB" --out "$RUNS/jsb" --force
        cp "$RUNS"/jsb/jsb16.pt "$RUNS"/jsb/jsb_quarter.pt checkpoints/ ;;
      *) echo "unknown model $name (bach, folk, pop or jsb)" >&2; exit 2 ;;
    esac
  done
done
