#!/usr/bin/env bash
# Rebuild folk, bach, pop, harmonizer and jsb16 on one CUDA GPU, all five side by side, in about 9 minutes:
# the recipe that made the shipped files (an NVIDIA H200, 470 s of training each, 16 CPU cores).
#
#   bash checkpoints/build_gpu.sh            # MAX_TIME=470 RUNS=runs/gpu by default
#
# Each run is `musiclstm train ... --device cuda` (bf16 autocast, `--precision auto`) with the learning-rate decay
# following the clock (--anneal-by-time). On the GPU the same 2x512 LSTMs see 20-60 epochs where the CPU
# recipe (checkpoints/build.sh) saw 3-9. Corpora as in build.sh: corpora/bach and corpora/folk from
# `musiclstm corpus export`, POP909 from $POP909, the JSB files from $JSB.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/gpu}; T=${MAX_TIME:-470}
POP909=${POP909:-../shared/data/pop909}; JSB=${JSB:-../shared/data/jsb}
for c in bach folk; do [ -d corpora/$c ] || musiclstm corpus export $c corpora/$c; done
mkdir -p "$RUNS"
LM="musiclstm train --device cuda --threads 1 --jobs 2 --force -q --seq-len 512 --lr 2e-3 --embed 256 --hidden 512
    --layers 2 --epochs 1000 --seed 0 --max-time $T --anneal-by-time --patience 12"
$LM corpora/bach --out "$RUNS/bach" --dropout 0.3 --batch-size 16 --augment 3 --eval-every 100 > "$RUNS/bach.log" 2>&1 &
$LM corpora/folk --out "$RUNS/folk" --dropout 0.2 --batch-size 16 --eval-every 200 > "$RUNS/folk.log" 2>&1 &
$LM "$POP909" --out "$RUNS/pop" --dropout 0.1 --batch-size 32 --eval-every 300 --val-tokens 100000 > "$RUNS/pop.log" 2>&1 &
musiclstm train corpora/bach --model harmonizer --holdout "$JSB/Jsb16thSeparated.json" --out "$RUNS/harmonizer" \
  --device cuda --threads 1 --jobs 2 --force -q --embed 64 --hidden 320 --layers 2 --dropout 0.35 --seq-len 128 \
  --batch-size 64 --lr 2e-3 --augment 6 --epochs 100000 --eval-every 200 --patience 15 --max-time "$T" \
  --anneal-by-time --seed 0 > "$RUNS/harmonizer.log" 2>&1 &
python - "$JSB" "$RUNS/jsb" "$T" > "$RUNS/jsb.log" 2>&1 <<'PY' &
import sys
from pathlib import Path
from musiclstm.evaluation.benchmark import RECIPES, jsb_corpus
from musiclstm.models import checkpoint
from musiclstm.training.lm import train
root, run, t = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
best = train(jsb_corpus(root, "16th"), run, force=True, progress=False, **{**RECIPES["16th"], "device": "cuda",
             "jobs": 1, "epochs": 2000, "patience": 15, "max_time": t, "anneal_by_time": True, "hidden": 512,
             "dropout": 0.5, "batch_size": 32})
checkpoint.slim(best, "checkpoints/jsb16.pt", description="JSB Chorales benchmark model (16th table), grid hold=False")
PY
wait
slim() { python -c "import sys; from musiclstm.models.checkpoint import slim; slim(sys.argv[1], sys.argv[2], description=sys.argv[3])" "$@"; }
slim "$RUNS/bach/best.pt" checkpoints/bach.pt "Bach four-part chorales (music21 corpus; S A T B as four programs), remi v4, LSTM 2x512 (GPU)"
slim "$RUNS/folk/best.pt" checkpoints/folk.pt "Irish/American fiddle tunes (music21 corpus: O'Neill, Ryan), remi v4, LSTM 2x512 (GPU)"
slim "$RUNS/pop/best.pt" checkpoints/pop.pt "POP909 pop songs (melody, counter-melody, accompaniment tracks by role; 1/4 meters read as 4/4), remi v4, LSTM 2x512 (GPU)"
slim "$RUNS/harmonizer/best.pt" checkpoints/harmonizer.pt "Four-part chorale harmonizer (music21 chorales, JSB test split left out), bidirectional LSTM 2x320 (GPU)"
