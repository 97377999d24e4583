#!/usr/bin/env bash
# A propagation setting on the real volumes of both sets, for reporting after it was chosen on synthetic volumes
# (benchmarks/bench_propagation.py): the README's volume commands with one and three prompted slices, on the table's
# structures (data/real) and the judging set (data/real_judge), with --propagation overrides; one thread, as
# benchmarks/judge.sh runs the reference (compare with its runs/vol_TAG, runs/volk3_TAG and the judging set's).
# Usage, from the project root after `synthfm evaluate-data --out data/real` and `... --set judge --out data/real_judge`:
#   bash benchmarks/judge_propagation.sh TAG KEY=VALUE...    # outputs runs/{vol,volk3,jvol,jvolk3}_TAG
# CORE=0 pins to one core; KS=3 runs only three prompted slices; SETS="real:vol" runs one set (two sets at once: one per core). MODEL=CKPT another decoder.
# Then e.g. .venv/bin/python benchmarks/compare_checkpoints.py runs/vol_ref/slices.csv runs/vol_TAG/slices.csv \
#   --reference "synthfm-lite @ vol_ref"
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:?usage: judge_propagation.sh TAG KEY=VALUE...}
shift
P=()
for o in "$@"; do P+=(--propagation "$o"); done
export OMP_NUM_THREADS=1
PIN=()
[ -n "${CORE:-}" ] && PIN=(taskset -c "$CORE")
for s in ${SETS:-real:vol real_judge:jvol}; do
  d=${s%%:*}
  pre=${s##*:}
  [ -f "data/$d/cases.csv" ] || { echo "judge_propagation.sh: data/$d/cases.csv is missing (synthfm evaluate-data)" >&2; exit 2; }
  for k in ${KS:-1 3}; do
    out=runs/${pre}$([ "$k" = 3 ] && echo k3 || true)_$TAG
    "${PIN[@]}" .venv/bin/synthfm evaluate --pairs "data/$d/cases.csv" --model "${MODEL:-synthfm-lite}" --prompt point1 \
      --prompt box --volume --volume-slices $k "${P[@]}" --overwrite --embedding-cache runs/embeddings --out "$out" \
      > "$out.log" 2>&1
    grep -h "^[^ ]* | " "$out.log" | sed "s|^|$out: |"
  done
done
