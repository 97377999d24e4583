#!/usr/bin/env bash
# The long synthfm-lite run (issue 11): continue it from the committed state in this folder.
# Run from the project root after `bash setup.sh`. The first call encodes the 1,500 training and 64 validation
# images into runs/lite2/cache (about 18 minutes on one core), then training goes on at the committed step with
# the same learning-rate schedule (AdamW's moments start afresh: only the fp16 decoder and history.json are kept).
set -euo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p runs/lite2
for f in synthfm-lite.pt history.json; do
  [ -f "runs/lite2/$f" ] || cp "Resources/training/lite2/$f" runs/lite2/
done
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} .venv/bin/synthfm train --model synthfm-lite --init synthfm-lite --preset mixed \
  --generator '{"low_contrast_prob": 0.05, "version": 2}' --samples 1500 --val-samples 64 --steps 37500 --batch-size 8 \
  --lr 2e-4 --lr-warmup 100 --correction-prob 0.6 --correction-rounds 3 --val-every 250 --ckpt-every 50 \
  --threads "${THREADS:-1}" --out runs/lite2 "$@"
# Afterwards copy runs/lite2/{synthfm-lite.pt,synthfm-lite.md,history.json,curve.png} back here and commit.
