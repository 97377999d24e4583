#!/usr/bin/env bash
# Generator version 4 judged by training (issue 11): the shipped stage-6 decoder fine-tuned for 1,500 steps x 8 with
# lite4's decay schedule (lr 1e-4, 50 warm-up steps, cosine to 5 %; prompt mix and correction rounds as lite3), on
#   v4: 2,500 new images of generator version 4 (seed 2; encoded into runs/gen4/cache, ~20 min on two cores), or
#   v3: lite4's 5,000 version-3 images (seed 1; runs/lite4/cache, encoded by lite4/COMMAND.sh): the control arm.
# Only the generator differs in what the two arms train on (and the number of images: 2,500 vs 5,000, each image
# seen about 5 vs 2.4 times). v3seen: the control's recipe on lite3's 5,000 version-3 images (seed 0, which stage 6
# was trained on), a replicate of the control. v3fresh: the control's recipe on 2,500 new version-3 images (seed 3, as
# many as the v4 arm), a replicate on independent images (2026-12-02 afternoon; decision rule written before it ran:
# the control is shipped if this replicate also gains on three prompted slices with one point, paired per structure
# vs stage 6, with one point in 2D no more than 0.01 below stage 6). Usage, from the project root after `bash setup.sh`:
# bash COMMAND.sh v4|v3|v3seen|v3fresh
set -euo pipefail
cd "$(dirname "$0")/../../.."
ARM=${1:?usage: COMMAND.sh v4|v3|v3seen|v3fresh}
shift
INIT=runs/gen4/stage6.pt
mkdir -p runs/gen4
[ -f "$INIT" ] || git show 4804fc0:Resources/models/synthfm-lite.pt > "$INIT"
case "$ARM" in
  v4) DATA=(--generator '{"version": 4}' --seed 2 --samples 2500 --cache runs/gen4/cache) ;;
  v3) DATA=(--generator '{}' --seed 1 --samples 5000 --cache runs/lite4/cache) ;;
  v3seen) DATA=(--generator '{}' --seed 0 --samples 5000 --cache runs/lite3/cache) ;;  # a replicate: lite3's images
  v3fresh) DATA=(--generator '{}' --seed 3 --samples 2500 --cache runs/gen4/cache_v3s3) ;;  # independent images
  *) echo "unknown arm '$ARM': v4, v3, v3seen or v3fresh" >&2; exit 2 ;;
esac
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} .venv/bin/synthfm train --model synthfm-lite --init "$INIT" --preset mixed \
  "${DATA[@]}" --val-samples 64 --steps 1500 --batch-size 8 --lr 1e-4 --lr-warmup 50 --correction-prob 0.6 \
  --correction-rounds 3 --val-every 250 --ckpt-every 50 --threads "${THREADS:-1}" --out "runs/gen4/$ARM" "$@"
# Then: runs/judge.sh-style evaluation (README's accuracy commands) of runs/gen4/$ARM/synthfm-lite.pt.
