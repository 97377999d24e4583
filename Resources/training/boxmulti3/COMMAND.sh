#!/usr/bin/env bash
# The box-candidates arm three times as long (issue 11, 2026-12-07, session 44): Resources/training/boxmulti's command
# (stage 7 + box and box+point first rounds decoded as three candidates, on the 2,500 version-3 images of seed 11)
# with 4,500 steps x 8 instead of 1,500 (36,000 samples; the cosine schedule stretched, same lr, warm-up and images).
# Every CPU arm so far saw 12,000 samples; this one asks whether a longer fine-tune moves the real figures.
# Decision rule, written before it ran (/work/notes/boxmulti3/rule.md on the machine that ran it): scratch judge as
# session 43 (stage 7's calibration stamped for the arm's file, the README's 2D command on both real sets, one core
# each) against the DSU control (1,500 steps, same images, no option); a lead for the next session (a 3x control,
# volumes, a calibration refit) only if the mean of the six per-slice figures gains >= +0.01 on both sets, the tight
# box is not below the control on either and 3 points not below it by more than 0.005. Nothing is shipped from it.
# Usage, from the project root after `bash setup.sh`: bash Resources/training/boxmulti3/COMMAND.sh (run again to
# resume; without runs/dsu/cache the boxmulti command first encodes the 2,500 images, about 19 min on two cores).
set -euo pipefail
cd "$(dirname "$0")/../../.."
STEPS=4500 OUT=runs/boxmulti3/arm bash Resources/training/boxmulti/COMMAND.sh "$@"
