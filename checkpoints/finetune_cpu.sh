#!/usr/bin/env bash
# After build_gpu.sh: the CPU fine-tunes that made the shipped harmonizer and jsb16 (one core each, side by side,
# on a 2-core CPU; bf16 autocast where the CPU has it). Each starts from the GPU model (`--init`, its weights
# and sizes) and anneals a fresh, lower learning rate over its time budget.
#
#   bash checkpoints/finetune_cpu.sh         # RUNS=runs/finetune; HARMONIZER=4500 JSB16=3300 seconds
#
# The harmonizer's run also learns the fermata channel (DeepBach's metadata): `corpus export bach` writes
# corpora/bach/fermatas.json, and the new channel starts at zero, so the run starts from the GPU model's exact
# predictions. The JSB files come from $JSB.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/finetune}; JSB=${JSB:-../shared/data/jsb}
mkdir -p "$RUNS"
musiclstm corpus export bach corpora/bach   # keeps the files there; writes fermatas.json if it is missing
musiclstm train corpora/bach --model harmonizer --init checkpoints/harmonizer.pt \
  --holdout "$JSB/Jsb16thSeparated.json" --out "$RUNS/harmonizer" --threads 1 --jobs 1 -q --force \
  --dropout 0.35 --seq-len 128 --batch-size 64 --lr 7e-4 --augment 6 --epochs 100000 --eval-every 100 \
  --patience 30 --max-time "${HARMONIZER:-4500}" --anneal-by-time --seed 1 > "$RUNS/harmonizer.log" 2>&1 &
python - "$JSB" "$RUNS/jsb16" "${JSB16:-3300}" > "$RUNS/jsb16.log" 2>&1 <<'PY' &
import sys
from pathlib import Path
from musiclstm.evaluation.benchmark import RECIPES, jsb_corpus
from musiclstm.training.lm import train
root, run, t = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
opts = {**RECIPES["16th"], "device": "cpu", "jobs": 1, "epochs": 2000, "patience": 15, "max_time": t,
        "anneal_by_time": True, "dropout": 0.5, "batch_size": 32, "lr": 2.5e-4, "warmup_steps": 20}
for k in ("embed", "hidden", "layers"):  # the checkpoint's own
    opts.pop(k)
train(jsb_corpus(root, "16th"), run, force=True, progress=False, init="checkpoints/jsb16.pt", **opts)
PY
wait
slim() { python -c "import sys; from musiclstm.models.checkpoint import slim; slim(sys.argv[1], sys.argv[2], description=sys.argv[3])" "$@"; }
slim "$RUNS/harmonizer/best.pt" checkpoints/harmonizer.pt "Four-part chorale harmonizer (music21 chorales, JSB test split left out), bidirectional LSTM 2x320 with a fermata channel (GPU, then CPU fine-tune)"
slim "$RUNS/jsb16/best.pt" checkpoints/jsb16.pt "JSB Chorales benchmark model (16th table), grid hold=False (GPU, then CPU fine-tune)"
