#!/usr/bin/env bash
# Organ vessels that belong to the organ's mask (issue 11, 2026-12-06, session 42). Real liver, spleen and kidney
# labels include the vessels inside the organ; generator version 3 draws these organs without inner vessels (vessels
# and bowel only cross them as separate structures), and a point on the real MR liver gives a small blob (one point
# 0.355 on the README table). The knob `organ_vessels_prob` (new; default 0 leaves version 3 bit for bit) draws 3-15
# small vessels inside a liver, spleen or kidney, merged into its mask. This arm: stage 7 + 1,500 steps x 8 (the DSU
# control's recipe, Resources/training/dsu/COMMAND.sh) on 2,500 fresh version-3 images of seed 12 with the knob at 0.7.
# Control: the DSU control (same recipe, 2,500 version-3 images of seed 11) and stage 7, whose scratch-judge figures
# docs/train.md "Thirty-ninth session" gives.
# Decision rule, written before it ran (/work/notes/vessels/rule.md on the machine that ran it): scratch judge (stage
# 7's calibration copied next to the decoder, the README's 2D command on both real sets); a lead for a full judge only
# if arm - control on the mean of the six per-slice 2D figures is >= +0.01 on both sets and 3 points are not below the
# control on either. Nothing is shipped from the scratch judge.
# Usage, from the project root after `bash setup.sh`: bash Resources/training/vessels/COMMAND.sh (run again to resume).
set -euo pipefail
cd "$(dirname "$0")/../../.."
INIT=runs/clicks/stage7.pt
mkdir -p runs/clicks runs/vessels
[ -f "$INIT" ] || git show 587c00c:Resources/models/synthfm-lite.pt > "$INIT"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} .venv/bin/synthfm train --model synthfm-lite --init "$INIT" --preset mixed \
  --generator '{"organ_vessels_prob": 0.7}' --seed 12 --samples 2500 --cache runs/vessels/cache --val-samples 64 \
  --steps 1500 --batch-size 8 --lr 1e-4 --lr-warmup 50 --correction-prob 0.6 --correction-rounds 3 \
  --val-every 250 --ckpt-every 50 --threads "${THREADS:-2}" --out runs/vessels/arm "$@"
