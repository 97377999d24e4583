"""For maintainers with 3D Slicer: run SynthFM's module self-tests inside a real Slicer and a check on Slicer's
CTChest sample; print pass/fail, Dice and timings, and exit with 0 only if everything passed.

    Slicer --no-main-window --python-script Testing/run_in_slicer.py
    Slicer --no-main-window --additional-module-paths SynthFMSegment SynthFMTrain \
           --python-script Testing/run_in_slicer.py            # from a source checkout, extension not installed

Needs torch and the other packages installed in that Slicer (open the SynthFM effect once and accept the install)
and, the first time, the network for the CTChest sample (SampleData caches it).  Not run by pytest: this repository's
tests use the Slicer stand-in (Testing/slicer_standin).
"""
import os
import sys
import time
import traceback

import numpy as np

import slicer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:
    import synthfm  # noqa: F401  (installed with the extension)
except ImportError:
    sys.path.insert(0, ROOT)  # a source checkout: the core package is beside Testing/
CT_LUNG_DICE = 0.6  # a box around a lung on CTChest's middle slice; the shipped decoder's CT box Dice is ~0.7


def ct_chest_lung() -> str:
    """Box prompt around the right lung on CTChest's middle axial slice; Dice against the lung's air region
    (below -400 HU, the largest air component not touching the image border on that side); timings cold and warm."""
    import SampleData
    from scipy import ndimage
    from SynthFMSegmentLib.geometry import ijk_to_ras_matrix
    from SynthFMSegmentLib.logic import SynthFMSegmentLogic

    volume = SampleData.SampleDataLogic().downloadCTChest()
    voxels = slicer.util.arrayFromVolume(volume)
    k = voxels.shape[0] // 2
    labels, count = ndimage.label(voxels[k] < -400)
    border = set(np.unique(np.r_[labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    inner = [n for n in range(1, count + 1) if n not in border]
    if not inner:
        raise AssertionError("no lung found on CTChest's middle slice")
    sizes = ndimage.sum(np.ones_like(labels), labels, inner)
    lungs = [inner[i] for i in np.argsort(sizes)[::-1][:2]]
    truth = labels == min(lungs, key=lambda n: np.nonzero(labels == n)[1].mean())  # smaller i: patient's right
    ys, xs = np.nonzero(truth)
    m = ijk_to_ras_matrix(volume)
    box = [(m @ [xs.min() - 2, ys.min() - 2, k, 1])[:3], (m @ [xs.max() + 2, ys.max() + 2, k, 1])[:3]]
    logic = SynthFMSegmentLogic(device="auto")
    start = time.perf_counter()
    mask, score = logic.predict(volume, box_ras=box, axis=0)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    logic.predict(volume, box_ras=box, axis=0)
    warm = time.perf_counter() - start
    dice = 2 * (mask[k] & truth).sum() / (mask[k].sum() + truth.sum())
    detail = f"Dice {dice:.3f} (IoU predicted {score:.2f}), first prompt {cold:.2f} s, next {warm * 1000:.0f} ms"
    if dice < CT_LUNG_DICE:
        raise AssertionError(detail + f" < {CT_LUNG_DICE}")
    return detail


def main() -> int:
    from SynthFMSegmentLib.dependencies import missing_packages

    missing = missing_packages()
    if missing:
        print(f"SynthFM: missing Python packages {', '.join(missing)}: open the SynthFM effect once in this Slicer "
              "and accept the install, then run this script again.")
        return 2
    import SynthFMSegment
    import SynthFMTrain

    checks = [("SynthFMSegment self-test (ellipsoid, box + propagation)",
               lambda: SynthFMSegment.SynthFMSegmentTest().runTest()),
              ("SynthFM effect logic on CTChest (right lung, box)", ct_chest_lung),
              ("SynthFMTrain self-test (preview, short training in its own process, segment with it)",
               lambda: SynthFMTrain.SynthFMTrainTest().runTest())]
    failed = 0
    print(f"Slicer {slicer.app.applicationVersion}, Python {sys.version.split()[0]}")
    for name, check in checks:
        start = time.perf_counter()
        try:
            detail, ok = check() or "", True
        except Exception:  # noqa: BLE001  report every check, then fail at the end
            detail, ok = traceback.format_exc(), False
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'}  {name}  {time.perf_counter() - start:.1f} s  {detail}", flush=True)
    print(f"{len(checks) - failed}/{len(checks)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    slicer.util.exit(main())
