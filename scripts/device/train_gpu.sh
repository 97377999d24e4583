#!/usr/bin/env bash
# Train a synthfm-lite decoder ON the lent GPU machine, inside one `run` call of the device tool (< 10 min).
# Prepare it here with `bash scripts/device/prepare.sh`, which prints the exact call. On that machine:
#
#   SYNTHFM_GPU_MINUTES=8 bash scripts/device/train_gpu.sh [more `synthfm train` options, which win]
#
# Steps: install the carried wheels into a private folder, point the weights cache at the carried
# lite_medsam.pth (SHA-256 checked), then `synthfm train --data on-the-fly --device cuda` (images generated,
# prompted by --workers processes and encoded on the GPU at every step; bf16) for the time budget, and put
# into $OUT (flat, 6 files): <model>.pt, <model>.md (model card), history.json, curve.png, train.log and
# summary.json (steps, samples/s, peak GPU memory).
#
# Settings (environment):            default
#   SYNTHFM_GPU_MINUTES   training budget in minutes      8   (the whole call then ends after about 9)
#   SYNTHFM_GPU_INIT      fine-tune from this decoder     ""  (from scratch; e.g. synthfm-lite or a carried file)
#   SYNTHFM_GPU_PRESET    generator preset                mixed
#   SYNTHFM_GPU_GENERATOR generator overrides (JSON)      {}
#   SYNTHFM_GPU_BATCH / _STEPS / _WORKERS / _VAL         64 / 3000 / CPUs - 2 / 256
#                         (_STEPS sets the learning-rate schedule; the budget may stop the run before it)
#   SYNTHFM_GPU_RESUME    folder with <model>.pt + history.json of an earlier run to continue
#   SYNTHFM_CARRY         the carried folder              .device_carry
#   SYNTHFM_GPU_DEADLINE  seconds after start by which everything must be in $OUT   570
#   SYNTHFM_DEVICE_TEST=1 allow a CPU (tests only)
# Exit codes: 0 trained; 3 no GPU; 4 carry folder missing or incomplete; 5 packages or weights unusable;
# 124 stopped at the deadline (checkpoint kept); other: training's.
set -uo pipefail
START=$(date +%s)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
say() { echo "train_gpu [$(( $(date +%s) - START )) s]: $*"; }
die() { local code=$1; shift; echo "train_gpu: $*" >&2; exit "$code"; }

[ -n "${OUT:-}" ] || die 2 "\$OUT is not set: the device tool sets it; by hand, set OUT to a folder for the results"
mkdir -p "$OUT" || die 2 "cannot create \$OUT=$OUT"
exec > >(tee -a "$OUT/train.log") 2>&1
TEE=$!
trap 'rc=$?; exec 1>&- 2>&-; wait "$TEE" 2>/dev/null; exit $rc' EXIT  # the log complete before the call returns

PY=${PYTHON:-python3}
CARRY=${SYNTHFM_CARRY:-.device_carry}
MINUTES=${SYNTHFM_GPU_MINUTES:-8}
DEADLINE=${SYNTHFM_GPU_DEADLINE:-570}
MODEL=synthfm-lite
WORK=${SYNTHFM_GPU_WORK:-/tmp/synthfm-gpu}
CALL="$WORK/call-$START"  # a new run per call, also on a machine still warm from the last one
RUN="$CALL/run"

# 1. a GPU (unless a test allows the CPU)
DEVICE=cuda
if [ "${SYNTHFM_DEVICE_TEST:-0}" = 1 ]; then
  DEVICE=cpu
  say "SYNTHFM_DEVICE_TEST=1: running on the CPU (tests only)"
else
  "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else
      f'train_gpu: no CUDA GPU is visible to torch {torch.__version__} here: this script is for the lent GPU machine '
      '(the device tool\'s run); on a CPU use \`synthfm train\` (docs/train.md)')" || exit 3
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/train_gpu: GPU /'
fi

# 2. the carried folder: wheels + weights
[ -d "$CARRY" ] || die 4 "the carried folder $CARRY is missing: run \`bash scripts/device/prepare.sh\` on the CPU machine and name $CARRY in the run call's carry list"
[ -f "$CARRY/lite_medsam.pth" ] || die 4 "$CARRY has no lite_medsam.pth: run \`bash scripts/device/prepare.sh\` again"
CARRY=$(cd "$CARRY" && pwd)
SITE=${SYNTHFM_SITE:-$WORK/site}
if ls "$CARRY"/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$CARRY"/*.whl \
    || die 5 "installing the carried wheels failed (see above)"
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's synthfm, also for scripts/device/*.py
export SYNTHFM_CACHE="$WORK/cache" SYNTHFM_MODELS="$WORK/models"
mkdir -p "$SYNTHFM_CACHE" "$SYNTHFM_MODELS"
"$PY" - "$CARRY/lite_medsam.pth" <<'PY' || die 5 "packages or weights are not usable here (see above)"
import sys
try:
    import matplotlib, scipy, segment_anything, torch, tqdm  # noqa: F401  what training imports
except ImportError as exc:
    sys.exit(f"train_gpu: {exc}: prepare.sh carries segment-anything; the others come with the machine's image")
from pathlib import Path

from synthfm.models.registry import LITEMEDSAM
from synthfm.models.weights import sha256_of

weights = Path(sys.argv[1])  # the whole published file, or its encoder part with its SHA-256 beside it (prepare.sh)
sums = weights.with_suffix(".sha256")
wanted = sums.read_text().split()[0] if sums.is_file() else LITEMEDSAM.sha256
if sha256_of(weights) != wanted:
    sys.exit(f"train_gpu: {weights} is not the LiteMedSAM weight file prepare.sh made (SHA-256 differs from {wanted}); "
             "run prepare.sh again")
PY
ln -sf "$CARRY/lite_medsam.pth" "$SYNTHFM_CACHE/lite_medsam.pth"

# 3. train (an earlier run to continue goes into the run folder first)
mkdir -p "$RUN"
if [ -n "${SYNTHFM_GPU_RESUME:-}" ]; then
  cp "$SYNTHFM_GPU_RESUME"/*.pt "$SYNTHFM_GPU_RESUME/history.json" "$RUN/" \
    || die 4 "SYNTHFM_GPU_RESUME=$SYNTHFM_GPU_RESUME: cannot copy its <model>.pt and history.json"
fi
WORKERS=${SYNTHFM_GPU_WORKERS:-$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))}
GENERATOR='{}'
[ -n "${SYNTHFM_GPU_GENERATOR:-}" ] && GENERATOR=$SYNTHFM_GPU_GENERATOR
ARGS=(train --model "$MODEL" --data on-the-fly --device "$DEVICE" --preset "${SYNTHFM_GPU_PRESET:-mixed}"
      --generator "$GENERATOR" --samples 5000000 --val-samples "${SYNTHFM_GPU_VAL:-256}"
      --steps "${SYNTHFM_GPU_STEPS:-3000}" --batch-size "${SYNTHFM_GPU_BATCH:-64}" --workers "$WORKERS"
      --time-budget "$MINUTES" --val-every 250 --ckpt-every 500 --out "$RUN" --cache "$CALL/data" --debug)
[ -n "${SYNTHFM_GPU_INIT:-}" ] && ARGS+=(--init "$SYNTHFM_GPU_INIT")
ARGS+=("$@")
left=$(( DEADLINE - ($(date +%s) - START) - 20 ))  # 20 s to copy the results
[ "$left" -gt 30 ] || die 2 "only $left s left before the deadline of $DEADLINE s; raise SYNTHFM_GPU_DEADLINE"
say "synthfm ${ARGS[*]}"
say "hard stop after $left s (SIGTERM: the trainer saves at the end of its step)"
# --foreground: only the trainer gets SIGTERM; it then stops its drawing workers itself
PYTHONUNBUFFERED=1 timeout --foreground -k 20 "$left" "$PY" scripts/device/train_report.py "$OUT/summary.json" "${ARGS[@]}"
rc=$?

# 4. bring back what exists, flat
for f in "$MODEL.pt" "$MODEL.md" history.json curve.png; do
  [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT/"
done
say "in \$OUT: $(ls "$OUT" | tr '\n' ' ')($(( $(date +%s) - START )) s in all)"
case "$rc" in
  0) ;;
  124) say "stopped at the deadline (SIGTERM): the checkpoint of the last finished step is in \$OUT" ;;
  *) say "training ended with exit code $rc (see above); whatever it saved is in \$OUT" ;;
esac
exit "$rc"
