#!/usr/bin/env bash
# The two CPU fine-tunes that made the shipped harmonizer (one core each; bf16 autocast where the CPU has it). Run
# it right after build_gpu.sh: the first starts from the harmonizer.pt that script wrote (`--init`: its weights and
# sizes), the second from the first's best; each anneals a fresh, lower learning rate over its time budget.
#
#   bash checkpoints/finetune_cpu.sh         # RUNS=runs/finetune; HARMONIZER=4500, MERGED=2700 seconds
#
# The second run is the first with re-strikes made holds in half the windows (training/harmonizer.py,
# MERGE_RESTRIKES), which the first run predates: the shipped model's first stage saw none, so a rerun of this
# script gives somewhat different numbers.
#
# The harmonizer's run also learns the fermata channel (DeepBach's metadata): `corpus export bach` writes
# corpora/bach/fermatas.json, and the new channel starts at zero, so the run starts from the GPU model's exact
# predictions. The JSB file (its test chorales are left out) comes from $JSB.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/finetune}; JSB=${JSB:-../shared/data/jsb}
mkdir -p "$RUNS"
musiclstm corpus export bach corpora/bach   # keeps the files there; writes fermatas.json if it is missing
musiclstm train corpora/bach --model harmonizer --init checkpoints/harmonizer.pt \
  --holdout "$JSB/Jsb16thSeparated.json" --out "$RUNS/harmonizer" --threads 1 --jobs 1 -q --force \
  --dropout 0.35 --seq-len 128 --batch-size 64 --lr 7e-4 --augment 6 --epochs 100000 --eval-every 100 \
  --patience 30 --max-time "${HARMONIZER:-4500}" --anneal-by-time --seed 1 > "$RUNS/harmonizer.log" 2>&1
musiclstm train corpora/bach --model harmonizer --init "$RUNS/harmonizer/best.pt" \
  --holdout "$JSB/Jsb16thSeparated.json" --out "$RUNS/merged" --threads 1 --jobs 1 -q --force \
  --dropout 0.35 --seq-len 128 --batch-size 64 --lr 4e-4 --augment 6 --epochs 100000 --eval-every 100 \
  --patience 30 --max-time "${MERGED:-2700}" --anneal-by-time --seed 2 > "$RUNS/merged.log" 2>&1
slim() { python -c "import sys; from musiclstm.models.checkpoint import slim; slim(sys.argv[1], sys.argv[2], description=sys.argv[3])" "$@"; }
slim "$RUNS/merged/best.pt" checkpoints/harmonizer.pt "Four-part chorale harmonizer (music21 chorales, JSB test split left out), bidirectional LSTM 2x320 with a fermata channel, re-strikes merged in half the windows (GPU, then two CPU fine-tunes)"
