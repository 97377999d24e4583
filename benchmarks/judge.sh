#!/usr/bin/env bash
# Judge a candidate decoder on the real cases with the README's commands, the way every shipped decoder was judged:
# its quality calibration fitted on held-out synthetic images as the shipped one was (fit_quality.py --fit-volumes 0
# --test-volumes 0 --write, next to the checkpoint), the 2D table (7 protocols, up to 10 slices per structure), the
# demo volume, and whole volumes with 1 and 3 prompted slices.
# Usage, from the project root after `bash setup.sh` and `synthfm evaluate-data --out data/real`:
#   CORE=0 bash benchmarks/judge.sh CHECKPOINT TAG      # ~20 min on one core; outputs in runs/*_TAG
# CORE pins the job to one core (two judges, or a judge beside training, then share the machine's two cores);
# SKIP_FIT=1 keeps an existing calibration. The real slices' embeddings, and the calibration's synthetic images', are
# kept in runs/embeddings between judges
# (EMBEDDINGS=DIR elsewhere, EMBEDDINGS= to encode every time): every later decoder on the same encoder and precision
# decodes them without an encoder call (docs/evaluate.md "Embedding cache"). Then compare, paired per structure, e.g.
#   .venv/bin/python benchmarks/compare_checkpoints.py runs/eval_REF/slices.csv runs/eval_TAG/slices.csv
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:?usage: judge.sh CHECKPOINT TAG}
TAG=${2:?usage: judge.sh CHECKPOINT TAG}
PAIRS=${PAIRS:-data/real/cases.csv}
[ -f "$PAIRS" ] || { echo "judge.sh: $PAIRS is missing: run 'synthfm evaluate-data --out data/real' first" >&2; exit 2; }
export OMP_NUM_THREADS=1
PIN=()
[ -n "${CORE:-}" ] && PIN=(taskset -c "$CORE")
run() { echo "== $*" >&2; "${PIN[@]}" "$@"; }
EMBEDDINGS=${EMBEDDINGS-runs/embeddings}
CACHE=()
[ -n "$EMBEDDINGS" ] && CACHE=(--embedding-cache "$EMBEDDINGS")
mkdir -p runs
[ -n "${SKIP_FIT:-}" ] || run .venv/bin/python benchmarks/fit_quality.py --model "$MODEL" --fit-volumes 0 --test-volumes 0 --write "${CACHE[@]}" \
  > "runs/fit_$TAG.log"
run .venv/bin/synthfm evaluate --pairs "$PAIRS" --model "$MODEL" --prompt point1 --prompt point3 --prompt point1neg2 \
  --prompt box --prompt box-jitter --prompt clicks --prompt box-clicks --max-slices 10 --overwrite "${CACHE[@]}" --out "runs/eval_$TAG" > "runs/eval_$TAG.log" 2>&1
run .venv/bin/synthfm demo --model "$MODEL" --overwrite --out "runs/demo_$TAG" > "runs/demo_$TAG.log" 2>&1
run .venv/bin/synthfm evaluate --pairs "$PAIRS" --model "$MODEL" --prompt point1 --prompt box --volume --overwrite \
  "${CACHE[@]}" --out "runs/vol_$TAG" > "runs/vol_$TAG.log" 2>&1
run .venv/bin/synthfm evaluate --pairs "$PAIRS" --model "$MODEL" --prompt point1 --prompt box --volume \
  --volume-slices 3 --overwrite "${CACHE[@]}" --out "runs/volk3_$TAG" > "runs/volk3_$TAG.log" 2>&1
grep -h " | " "runs/eval_$TAG.log" "runs/vol_$TAG.log" "runs/volk3_$TAG.log" | grep -v -e "worst leak" -e "^evaluate" || true
grep -i "dice" "runs/demo_$TAG.log" | tail -3 || true
