#!/usr/bin/env bash
# Feature-statistics augmentation (issue 11, 2026-12-06, session 39). The per-channel means of the TinyViT embeddings
# tell real slices from synthetic ones almost perfectly (nearest neighbour 99.7 % on 150 + 150 slices), and moving the
# real ones toward the synthetic mean at test time did not help (docs/segment.md item 8). This arm asks whether a
# decoder trained to be indifferent to each slice's channel statistics carries better to real slices: stage 7 + 1,500
# steps x 8 (the v3fresh recipe) on 2,500 fresh version-3 images of seed 11 with --feature-stats-aug 0.5 (DSU: half of
# the samples get their per-channel mean and std redrawn around them with the batch's spread; synthfm.train.feature_aug).
# The control is the same command without it (same images, prompts and seed).
# Decision rule, written before it ran (/work/notes/dsu/rule.md on the machine that ran it): a scratch judge (stage 7's
# calibration copied next to both decoders, the README's 2D command on both real sets, one core each); a lead for a
# full judge (its own calibration, volumes, demo) only if arm - control on the mean of the six per-slice 2D figures is
# >= +0.01 on both sets and 3 points are not below the control on either. Nothing is shipped from the scratch judge.
# Usage, from the project root after `bash setup.sh`: bash Resources/training/dsu/COMMAND.sh arm|control
# (run again to resume from runs/dsu/ARM). Two arms at once: OMP_NUM_THREADS=1 THREADS=1 taskset -c 0|1 ...
set -euo pipefail
cd "$(dirname "$0")/../../.."
ARM=${1:?usage: COMMAND.sh arm|control}
shift
case "$ARM" in
  arm) AUG=0.5 ;;
  control) AUG=0 ;;
  *) echo "unknown arm '$ARM': arm or control" >&2; exit 2 ;;
esac
INIT=runs/clicks/stage7.pt
mkdir -p runs/clicks runs/dsu
[ -f "$INIT" ] || git show 587c00c:Resources/models/synthfm-lite.pt > "$INIT"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} .venv/bin/synthfm train --model synthfm-lite --init "$INIT" --preset mixed \
  --generator '{}' --seed 11 --samples 2500 --cache runs/dsu/cache --val-samples 64 --steps 1500 \
  --batch-size 8 --lr 1e-4 --lr-warmup 50 --correction-prob 0.6 --correction-rounds 3 \
  --val-every 250 --ckpt-every 50 --threads "${THREADS:-2}" --feature-stats-aug "$AUG" --out "runs/dsu/$ARM" "$@"
