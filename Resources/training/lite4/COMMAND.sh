#!/usr/bin/env bash
# lite4 (issue 11): the shipped stage-6 decoder (lite3 at step 37,500) trained on, on 5,000 *new* synthetic images
# (seed 1; lite3 saw the 5,000 of seed 0 about 60 times each), learning rate 1e-4 with a 200-step warm-up and a
# cosine over 20,000 steps, the same prompt mix and correction rounds as lite3. Run from the project root after
# `bash setup.sh`. The first call on a machine encodes the 5,000 + 64 images into runs/lite4/cache (about 60
# minutes on one core, 10 GB; resumable); then training continues at the committed step (AdamW's moments start
# afresh: only the fp16 decoder and history.json are kept).
set -euo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p runs/lite4
INIT=runs/lite4/init.pt
[ -f "$INIT" ] || git show 4804fc0:Resources/models/synthfm-lite.pt > "$INIT"
for f in synthfm-lite.pt history.json; do
  [ -f "Resources/training/lite4/$f" ] && [ ! -f "runs/lite4/$f" ] && cp "Resources/training/lite4/$f" runs/lite4/
done
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} .venv/bin/synthfm train --model synthfm-lite \
  --init "$INIT" --preset mixed --generator '{}' --samples 5000 --val-samples 64 --seed 1 \
  --steps 20000 --batch-size 8 --lr 1e-4 --lr-warmup 200 --correction-prob 0.6 --correction-rounds 3 \
  --val-every 250 --ckpt-every 50 --threads "${THREADS:-1}" --out runs/lite4 "$@"
# Afterwards copy runs/lite4/{synthfm-lite.pt,synthfm-lite.md,history.json,curve.png} back here and commit.
