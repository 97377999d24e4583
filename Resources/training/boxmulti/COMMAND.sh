#!/usr/bin/env bash
# Box prompts trained with three candidates (issue 11, 2026-12-07, session 43). Training decodes three candidates
# (SAM's min-over-masks loss) only for one-point first rounds, yet synthfm-lite asks for three candidates with every
# box and keeps the one whose bounding box fits the box best (docs/segment.md item 4: its trained single-mask output
# undersegments boxes), so the box masks users get come from outputs never trained on boxes, and the IoU head never
# learnt to rate them. This arm: the DSU control's recipe exactly (Resources/training/dsu/COMMAND.sh control: stage 7
# + 1,500 steps x 8 on the 2,500 version-3 images of seed 11 in runs/dsu/cache) with box and box+point first rounds
# decoded as three candidates too (`--multimask-modes point1 box box_point`).
# Decision rule, written before it ran (/work/notes/boxmulti/rule.md on the machine that ran it): scratch judge (stage
# 7's calibration copied next to the decoder, the README's 2D command on both real sets, one core each); a lead for a
# full judge only if arm - control on the mean of the six per-slice 2D figures is >= +0.01 on both sets, the tight box
# not below the control on either and 3 points not below it by more than 0.005. Nothing is shipped from it.
# Usage, from the project root after `bash setup.sh`: bash Resources/training/boxmulti/COMMAND.sh (run again to resume;
# without runs/dsu/cache it first encodes the 2,500 images, about 19 min on two cores).
set -euo pipefail
cd "$(dirname "$0")/../../.."
INIT=runs/clicks/stage7.pt
mkdir -p runs/clicks runs/boxmulti
[ -f "$INIT" ] || git show 587c00c:Resources/models/synthfm-lite.pt > "$INIT"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} .venv/bin/synthfm train --model synthfm-lite --init "$INIT" --preset mixed \
  --generator '{}' --seed 11 --samples 2500 --cache runs/dsu/cache --val-samples 64 --steps "${STEPS:-1500}" \
  --batch-size 8 --lr 1e-4 --lr-warmup 50 --correction-prob 0.6 --correction-rounds 3 \
  --val-every 250 --ckpt-every 50 --threads "${THREADS:-2}" --multimask-modes point1 box box_point \
  --out "${OUT:-runs/boxmulti/arm}" "$@"
