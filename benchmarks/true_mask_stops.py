"""Would the intensity stops end propagation early even with perfect masks? A diagnosis of the stop rule.

From each structure's largest slice, the intensity stops of synthfm-lite's propagation ("intensity jump": the mean
under the mask moves by more than T spreads from the previous slice; "intensity drift": by more than T from the
prompted slice; spread as ``intensity_scale="spread-single"``) are applied to the **true** mask of every slice, up and
down, until the structure ends. Printed: the share of the truth's slices reached, per real structure and as means
for the real cases and the held-out synthetic volumes of ``bench_propagation.py``. Nothing is decoded: no model.

Run: .venv/bin/python benchmarks/true_mask_stops.py [--real data/real data/real_judge] [--volumes 48]
     [--thresholds 0.5 1.0]
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Tuple

import numpy as np

from synthfm.evaluate.cases import load_case, read_cases_csv
from synthfm.generate import GeneratorConfig, SyntheticGenerator
from synthfm.segment.propagate import VolumeSegmenter

SEED = 777  # bench_propagation.py's held-out volumes


class _Window:
    """The only part of a predictor that VolumeSegmenter reads here: its intensity window."""

    window = "auto"


def reached(volume: np.ndarray, truth: np.ndarray, threshold: float) -> Tuple[int, int, List[str]]:
    """(slices reached, slices of the truth, the stops that ended each direction) from the largest slice."""
    seg = VolumeSegmenter(_Window(), volume)
    areas = truth.sum(axis=(1, 2))
    start = int(np.argmax(areas))
    ref = seg._reference(start, truth[start], "mean")
    count, stops = 1, []
    for step in (1, -1):
        i, prev = start + step, ref.mean
        while 0 <= i < len(areas) and areas[i] > 0:
            mean = seg._mean_in(i, truth[i])
            if abs(mean - prev) / ref.spread > threshold:
                stops.append("jump")
                break
            if abs(mean - ref.mean) / ref.spread > threshold:
                stops.append("drift")
                break
            count, prev, i = count + 1, mean, i + step
    return count, int((areas > 0).sum()), stops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", nargs="*", default=["data/real", "data/real_judge"],
                        help="folders of `synthfm evaluate-data` (their cases.csv)")
    parser.add_argument("--volumes", type=int, default=48, help="held-out synthetic volumes 0..N-1")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 1.0])
    args = parser.parse_args()
    for folder in args.real:
        if not (Path(folder) / "cases.csv").is_file():
            parser.error(f"{folder}/cases.csv is missing: run `synthfm evaluate-data --out {folder}` first")
    gen = SyntheticGenerator(GeneratorConfig.from_preset("mixed", size=128, depth=40), SEED)
    synthetic = [gen.sample_3d(i) for i in range(args.volumes)]
    for t in args.thresholds:
        print(f"intensity stops at {t} spread, applied to the true masks:")
        for folder in args.real:
            shares = []
            for case in read_cases_csv(Path(folder) / "cases.csv"):
                loaded = load_case(case)
                n, total, stops = reached(loaded.image.array.astype(np.float32),
                                          loaded.label.array == loaded.values[0], t)
                shares.append(n / total)
                print(f"  {case.name[:44]:<44} {n:>4} of {total:<4} slices {', '.join(stops)}")
            print(f"{folder}: share of the truth's slices reached, mean over {len(shares)} structures "
                  f"{np.mean(shares):.3f}")
        shares = np.array([reached(s.image.astype(np.float32), s.mask.astype(bool), t)[0] / s.mask.any(axis=(1, 2)).sum()
                           for s in synthetic])
        print(f"synthetic volumes 0..{args.volumes - 1}: mean share reached {shares.mean():.3f}, "
              f"whole structure reached in {np.mean(shares == 1):.2f}\n")


if __name__ == "__main__":
    main()
