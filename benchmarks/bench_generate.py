"""Generator speed: 2D samples/s at 256x256 and 3D volumes/s at 128x128x64 on ONE core, and where time goes.

Run: .venv/bin/python benchmarks/bench_generate.py   (numpy/scipy are pinned to one thread here, so the
rates are per core; a data-loader with N workers gets about N times as much on N free cores).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # per-core rates: before numpy loads
    os.environ.setdefault(_var, "1")

import cProfile  # noqa: E402
import pstats  # noqa: E402
import time  # noqa: E402

from synthfm.generate import GENERATOR_VERSION, GeneratorConfig, SyntheticGenerator  # noqa: E402


def rate(fn, n: int) -> float:
    fn(0)
    start = time.perf_counter()
    for i in range(1, n + 1):
        fn(i)
    return n / (time.perf_counter() - start)


def where_time_goes(n: int = 100, top: int = 12) -> None:
    """Generator functions by cumulative time per 2D sample (mixed preset), with their own time."""
    gen = SyntheticGenerator(GeneratorConfig.from_preset("mixed"), 0)
    gen.sample_2d(0)
    profile = cProfile.Profile()
    profile.runcall(lambda: [gen.sample_2d(i) for i in range(1, n + 1)])
    stats = pstats.Stats(profile).stats
    rows = [(ct, tt, name, path) for (path, _, name), (_, _, tt, ct, _) in stats.items()
            if "synthfm" in path or name in ("correlate1d", "euclidean_feature_transform", "binary_erosion")]
    rows.sort(reverse=True)
    print(f"\nwhere 2D time goes (mixed preset, {n} samples under cProfile; ms per sample):")
    print(f"{'function':<34}{'cumulative':>11}{'own':>8}")
    for ct, tt, name, path in rows[:top]:
        print(f"{os.path.basename(path) + ':' + name:<34}{1e3 * ct / n:>11.2f}{1e3 * tt / n:>8.2f}")


def main() -> None:
    rows = []
    for version in (GENERATOR_VERSION, 2):  # the previous version under the same load, for comparison
        for preset in ("ct", "mr", "us", "mixed"):
            gen = SyntheticGenerator(GeneratorConfig.from_preset(preset, version=version), 0)
            rows.append((f"v{version} 2D 256x256 {preset}", rate(gen.sample_2d, 100), "samples/s/core"))
        gen3 = SyntheticGenerator(GeneratorConfig.from_preset("mixed", size=128, depth=64, version=version), 0)
        rows.append((f"v{version} 3D 128x128x64 mixed", rate(gen3.sample_3d, 5), "volumes/s/core"))
    print(f"generator version {GENERATOR_VERSION} (and 2), one thread")
    print(f"{'case':<28}{'rate':>10}{'ms each':>10}  unit")
    for name, value, unit in rows:
        print(f"{name:<28}{value:>10.1f}{1e3 / value:>10.1f}  {unit}")
    where_time_goes()


if __name__ == "__main__":
    main()
