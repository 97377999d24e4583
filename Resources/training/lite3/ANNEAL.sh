#!/usr/bin/env bash
# How the shipped synthfm-lite decoder of 2026-12-01 was made from this run: a short learning-rate decay (lr 1.4e-4,
# 50 warm-up steps, cosine to 5% over 1,500 steps, batch 8) from the lite3 decoder at step 19,170, on the same
# cached images (runs/lite3/cache; the first call on a new machine encodes them: about 60 minutes on one core).
# Run from the project root after `bash setup.sh`. INIT defaults to the step-19,170 decoder kept in git.
set -euo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p runs/anneal
INIT=${INIT:-runs/anneal/init.pt}
[ -f "$INIT" ] || git show 679e5cd:Resources/training/lite3/synthfm-lite.pt > "$INIT"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} .venv/bin/synthfm train --model synthfm-lite \
  --init "$INIT" --cache runs/lite3/cache --seed 0 --preset mixed --generator '{}' --samples 5000 \
  --val-samples 64 --steps 1500 --batch-size 8 --lr 1.4e-4 --lr-warmup 50 --correction-prob 0.6 \
  --correction-rounds 3 --val-every 250 --ckpt-every 50 --threads "${THREADS:-1}" --out runs/anneal "$@"
# Then: python benchmarks/fit_quality.py --model runs/anneal/synthfm-lite.pt --fit-volumes 0 --test-volumes 0 --write
