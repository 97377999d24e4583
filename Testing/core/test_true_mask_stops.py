"""benchmarks/true_mask_stops.py: the intensity stops applied to true masks."""
import importlib.util
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
spec = importlib.util.spec_from_file_location("true_mask_stops", BENCH / "true_mask_stops.py")
tms = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tms)


def _volume(inside_by_slice):
    """A 30-slice structure on slices 5..24, largest on slice 15, inside intensity per slice, background 0."""
    volume = np.zeros((30, 40, 40), np.float32)
    truth = np.zeros(volume.shape, bool)
    for z in range(5, 25):
        r = 12 - (abs(z - 15) + 1) // 2  # largest on slice 15 alone
        truth[z, 20 - r:20 + r, 20 - r:20 + r] = True
        volume[z][truth[z]] = inside_by_slice(z)
    return volume, truth


def test_a_structure_of_constant_intensity_is_reached_whole():
    volume, truth = _volume(lambda z: 100.0)
    assert tms.reached(volume, truth, 0.5) == (20, 20, [])


def test_a_slow_drift_ends_at_the_threshold_and_a_jump_at_once():
    # contrast 100 = the spread; 8 per slice away from slice 15: the drift passes 0.5 spread past 6 slices
    volume, truth = _volume(lambda z: 100.0 + 8.0 * abs(z - 15))
    n, total, stops = tms.reached(volume, truth, 0.5)
    assert (total, stops) == (20, ["drift", "drift"]) and n == 1 + 6 + 6
    assert tms.reached(volume, truth, 1.0)[2] == []
    volume, truth = _volume(lambda z: 100.0 if z < 18 else 170.0)  # a step of 0.7 spread above slice 17
    assert tms.reached(volume, truth, 0.5) == (13, 20, ["jump"])
