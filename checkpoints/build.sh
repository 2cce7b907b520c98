#!/usr/bin/env bash
# Rebuild the bundled models from public data (see checkpoints/README.md).
#
#   bash checkpoints/build.sh [bach] [folk] [pop] [jsb] [harmonizer]      (default: all five)
#
# folk and bach train for a fixed wall-clock budget (--max-time, with the learning-rate decay following the
# clock: --anneal-by-time), one thread each, the two side by side on this 2-core CPU, so a rebuild on a
# faster machine sees more epochs (runs land in runs/bundled/NAME; metrics.jsonl records every epoch).
# All on remi v4 (a repeated bar is one REPEAT_d token; key tokens; PROGRAM/VELOCITY only on change; ROLE tokens where
# tracks share a program, 8 velocity levels). The shipped folk, bach, pop, harmonizer and jsb16 files come from the GPU
# recipe, checkpoints/build_gpu.sh (the same networks, 470 s each on an H200: far more epochs than this CPU recipe
# gives, and better numbers: README "The bundled models"). Each piece from a fresh state (--windows pieces),
# 512-token windows so a repeat eight bars back is inside the window the gradient sees.
# bach transposes each chorale by up to 3 semitones (its KEY token moves with it); folk has data enough.
# POP909 is not bundled with music21: clone https://github.com/music-x-lab/POP909-Dataset and set
# POP909=/path/to/POP909-Dataset/POP909 (default: ../shared/data/pop909, the team's copy).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/bundled}
POP909=${POP909:-../shared/data/pop909}
JSB=${JSB:-../shared/data/jsb}
slim() {  # keep weights only, in fp16, with a description: the file that ships
    python -c "import sys; from musiclstm.models.checkpoint import slim; slim(sys.argv[1], sys.argv[2], description=sys.argv[3])" "$@"
}
# train now tunes the continuous cache (musiclstm/models/cache.py) on the validation pieces at the end of a run;
# checkpoints/finish.py does the same for a run made before it did, then slims it
for name in "${@:-bach folk pop jsb harmonizer}"; do
  for name in $name; do
    case $name in
      bach)
        [ -d corpora/bach ] || musiclstm corpus export bach corpora/bach
        musiclstm train corpora/bach --out "$RUNS/bach" --embed 256 --hidden 512 --layers 2 --dropout 0.3 \
          --seq-len 512 --batch-size 16 --lr 2e-3 --epochs 40 --patience 8 --augment 3 \
          --max-time 5400 --anneal-by-time --seed 0 --threads 1 --force -q
        slim "$RUNS/bach" checkpoints/bach.pt "Bach four-part chorales (music21 corpus; S A T B as four programs), remi v4 (repeats as tokens), LSTM 2x512" ;;
      folk)
        [ -d corpora/folk ] || musiclstm corpus export folk corpora/folk
        musiclstm train corpora/folk --out "$RUNS/folk" --embed 256 --hidden 512 --layers 2 --dropout 0.2 \
          --seq-len 512 --batch-size 16 --lr 2e-3 --epochs 20 --patience 8 \
          --max-time 5400 --anneal-by-time --seed 0 --threads 1 --force -q
        slim "$RUNS/folk" checkpoints/folk.pt "Irish/American fiddle tunes (music21 corpus: O'Neill, Ryan), remi v4 (repeats as tokens), LSTM 2x512" ;;
      pop)
        # remi v4: MELODY, BRIDGE and PIANO (all program 0) kept apart by ROLE tokens; 8 velocity levels
        musiclstm train "$POP909" --out "$RUNS/pop" --embed 256 --hidden 512 --layers 2 --dropout 0.1 \
          --seq-len 512 --batch-size 16 --lr 2e-3 --epochs 10 --patience 8 --eval-every 100 --val-tokens 100000 \
          --max-time 6000 --anneal-by-time --seed 0 --threads 1 --force -q
        slim "$RUNS/pop" checkpoints/pop.pt "POP909 pop songs (melody, counter-melody, accompaniment tracks by role; 1/4 meters read as 4/4), remi v4, LSTM 2x512" ;;
      jsb)
        musiclstm benchmark jsb "$JSB" --out "$RUNS/jsb" --force
        cp "$RUNS"/jsb/jsb16.pt "$RUNS"/jsb/jsb_quarter.pt checkpoints/ ;;
      harmonizer)  # harmonize / infill: the bidirectional chorale model, JSB test chorales left out by content
        [ -d corpora/bach ] || musiclstm corpus export bach corpora/bach
        musiclstm train corpora/bach --model harmonizer --holdout "$JSB/Jsb16thSeparated.json" --out "$RUNS/harmonizer" \
          --embed 64 --hidden 256 --layers 2 --dropout 0.2 --seq-len 128 --batch-size 32 --lr 2e-3 --augment 6 \
          --epochs 1000 --eval-every 100 --patience 10 --max-time 4800 --anneal-by-time --seed 0 --threads 1 --force -q
        slim "$RUNS/harmonizer" checkpoints/harmonizer.pt "Four-part chorale harmonizer (music21 chorales, JSB test split left out), bidirectional LSTM 2x256 (CPU recipe; the shipped one is build_gpu.sh's 2x320)" ;;
      *) echo "unknown model $name (bach, folk, pop, jsb or harmonizer)" >&2; exit 2 ;;
    esac
  done
done
