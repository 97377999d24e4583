#!/usr/bin/env bash
# The long synthfm-lite run on generator version 3 (issues 11 and 12): continue it from the committed state here.
# Run from the project root after `bash setup.sh`. It starts from init.pt (the shipped decoder fine-tuned for 600
# steps on version 3: benchmarks/compare_generators.py, docs/generate.md). The first call on a new machine encodes
# the 5,000 training and 64 validation images into runs/lite3/cache (about 60 minutes on one core, 10 GB; resumable),
# then training goes on at the committed step with the same learning-rate schedule (AdamW's moments start afresh:
# only the fp16 decoder and history.json are kept).
set -euo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p runs/lite3
# The decoders are kept in git history, not in the working tree (a GPU call carries at most 64 MiB of it):
# init.pt as committed in d7c4cdf, the end of the run (step 37,500) = the shipped stage 6 of 4804fc0.
[ -f runs/lite3/init.pt ] || git show d7c4cdf:Resources/training/lite3/init.pt > runs/lite3/init.pt
[ -f runs/lite3/synthfm-lite.pt ] || git show 4804fc0:Resources/models/synthfm-lite.pt > runs/lite3/synthfm-lite.pt
[ -f runs/lite3/history.json ] || cp Resources/training/lite3/history.json runs/lite3/
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} .venv/bin/synthfm train --model synthfm-lite \
  --init runs/lite3/init.pt --preset mixed --generator '{}' --samples 5000 --val-samples 64 \
  --steps 37500 --batch-size 8 --lr 2e-4 --lr-warmup 100 --correction-prob 0.6 --correction-rounds 3 \
  --val-every 250 --ckpt-every 50 --threads "${THREADS:-1}" --out runs/lite3 "$@"
# Afterwards copy runs/lite3/{synthfm-lite.pt,synthfm-lite.md,history.json,curve.png} back here and commit.
