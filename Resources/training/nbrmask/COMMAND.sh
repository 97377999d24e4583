#!/usr/bin/env bash
# Propagation-style training (issue 14, 2026-12-04, twenty-first session). With three prompted slices a perfect stop
# gains nothing: the loss is in how the filled slices fit (real structures 0.056 below each slice prompted with its
# own box). Those slices are decoded from a box and the PREVIOUS SLICE's low-res logits as mask prompt, a pairing
# the decoder never saw in training: its mask prompts came only in correction rounds, as its own previous answer on
# the same image plus a new click. This arm adds neighbouring-slice steps (--neighbour-volumes, docs/train.md) in
# which the first round also gets the structure's mask on the neighbouring slice as simulated logits
# (--neighbour-mask-prob; synthfm.train.neighbour_data.carried_logits; three candidates trained min-over-masks, as
# propagation picks among three), the target being this slice's mask (empty past
# the structure's end). Otherwise it is smoothmr2's command (same seed 7, same 2,500 images and cache), so smoothmr2 is
# the control: the arms differ only in the neighbour steps.
# Decision rule, written before it ran:
#  1. held-out synthetic volumes 0..23 (bench_propagation.py --models synthfm-lite ARM CONTROL --volumes 24
#     --prompted-slices 1 3 --only default --prompt box, then point1; seed 777): the mean of the four rows (box / one
#     point x K = 1 / 3) must gain >= 0.01 against both stage 7 and smoothmr2, with the K = 3 box row gaining against both;
#  2. then the real volumes of both sets (benchmarks/judge_propagation.sh with MODEL=ARM, after its quality
#     calibration is fitted as judge.sh fits it), paired per structure against stage 7's runs on the same machine: the
#     mean over the eight rows (two sets x box / one point x K = 1 / 3) must gain and no set's worst leak grow by more
#     than 5 slices;
#  3. it replaces stage 7 only if also the README's 2D protocols (judge.sh) lose no more than 0.01 each, mean over
#     both sets. Otherwise it is reported and not shipped.
# Second arm, "present" (written after the first arm's 2D validation and synthetic box rows were seen, before it
# ran): the first arm's 2D validation with one point fell (its 64 images: 0.449 vs smoothmr2's 0.513) because its IoU
# head learned, on slices past a structure's end, that an empty candidate can have IoU 1 (it picks an empty mask for
# 3.1 % of one-point prompts; the best of three candidates fell less, 0.576 -> 0.554). The "present" arm draws the
# carried-mask steps only from slices where the structure is (--no-neighbour-mask-past-end); the steps without the
# carried mask keep the slices past the ends. Judged by the same rule; if both arms pass step 1, only the one with the
# higher mean of the four synthetic rows is judged on real volumes.
# Third arm, "noiou" (written after both arms' synthetic rows were seen, before it ran): the first arm gained three
# prompted slices with a box (0.669 -> 0.689) and lost them with one point (0.388 -> 0.349); the present arm lost the
# box gain (0.661). The box gain came with the slices past the ends; the point loss plausibly with the IoU head picking
# empty masks on the prompted slices. "noiou" is the first arm with the IoU head not trained on the carried-mask steps'
# first round (--no-neighbour-mask-iou). Judged by the same rule (step 1 against stage 7 and smoothmr2).
# Fourth arm, "big" (written 2026-12-05 about 00:41 UTC, twenty-second session, before it ran): noiou with four times
# the neighbour volumes (600 instead of 150: 3,600 slices, each seen about 1.3 times instead of 5), the larger
# neighbour set the twenty-first session's note proposed; one variable against noiou. Judged by the same rule (step 1
# against stage 7 and smoothmr2 on volumes 0..23), and it must also keep noiou's box K = 3 gain (>= 0.680) while its
# one-point K = 3 row is not below stage 7's 0.388 by more than 0.01 (noiou: 0.367, what failed it).
# Result (2026-12-05 01:40 UTC): box K = 1 0.560, K = 3 0.690; one point K = 1 0.281, K = 3 0.336 (mean of four 0.467):
# fails step 1 (and the one-point K = 3 condition); not adopted (docs/train.md).
# Usage, from the project root after `bash setup.sh` (run again to resume from runs/nbrmask/ARM):
#   bash Resources/training/nbrmask/COMMAND.sh [arm|present|noiou|big]
set -euo pipefail
cd "$(dirname "$0")/../../.."
ARM=${1:-arm}
case "$ARM" in
  arm) EXTRA=() ;;
  present) EXTRA=(--no-neighbour-mask-past-end) ;;
  noiou) EXTRA=(--no-neighbour-mask-iou) ;;
  big) EXTRA=(--no-neighbour-mask-iou); NBR=600 ;;
  *) echo "unknown arm '$ARM': arm, present, noiou or big" >&2; exit 2 ;;
esac
[ $# -gt 0 ] && shift
INIT=runs/clicks/stage7.pt
mkdir -p runs/clicks runs/nbrmask/$ARM
[ -f "$INIT" ] || git show 587c00c:Resources/models/synthfm-lite.pt > "$INIT"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} .venv/bin/synthfm train --model synthfm-lite --init "$INIT" --preset mixed \
  --generator '{"noise": [0.002, 0.04]}' --seed 7 \
  --samples 2500 --cache runs/smoothmr2/cache --val-samples 64 --steps 1500 \
  --batch-size 8 --lr 1e-4 --lr-warmup 50 --correction-prob 0.6 --correction-rounds 3 \
  --neighbour-volumes ${NBR:-150} --neighbour-prob 0.4 --neighbour-mask-prob 0.75 "${EXTRA[@]}" \
  --val-every 250 --ckpt-every 50 --threads "${THREADS:-2}" --out "runs/nbrmask/$ARM" "$@"
