#!/usr/bin/env bash
# A learning-rate decay forked from the lite4 run (as lite3's ANNEAL.sh made stage 5): the lite4 decoder at the
# step it had reached (INIT, default runs/lite4/fork.pt, copied from runs/lite4/synthfm-lite.pt when absent),
# 1,500 steps x 8 on lite4's cached images (runs/lite4/cache; seed 1), lr 1e-4 (lite4's rate there) with 50
# warm-up steps and a cosine decay to 5%. Run from the project root after `bash setup.sh`; output in runs/decay4.
set -euo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p runs/decay4
INIT=${INIT:-runs/lite4/fork.pt}
[ -f "$INIT" ] || cp runs/lite4/synthfm-lite.pt "$INIT"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} .venv/bin/synthfm train --model synthfm-lite \
  --init "$INIT" --cache runs/lite4/cache --seed 1 --preset mixed --generator '{}' --samples 5000 \
  --val-samples 64 --steps 1500 --batch-size 8 --lr 1e-4 --lr-warmup 50 --correction-prob 0.6 \
  --correction-rounds 3 --val-every 250 --ckpt-every 50 --threads "${THREADS:-1}" --out runs/decay4 "$@"
# Then: python benchmarks/fit_quality.py --model runs/decay4/synthfm-lite.pt --fit-volumes 0 --test-volumes 0 --write
