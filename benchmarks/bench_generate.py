"""Generator speed: 2D samples/s at 256x256 and 3D volumes/s at 128x128x64, one process, and where time goes.

Run: .venv/bin/python benchmarks/bench_generate.py
"""
from __future__ import annotations

import cProfile
import io
import pstats
import time

from synthfm.generate import GeneratorConfig, SyntheticGenerator


def rate(fn, n: int) -> float:
    fn(0)
    start = time.perf_counter()
    for i in range(1, n + 1):
        fn(i)
    return n / (time.perf_counter() - start)


def main() -> None:
    rows = []
    for preset in ("ct", "mr", "us", "mixed"):
        gen = SyntheticGenerator(GeneratorConfig.from_preset(preset), 0)
        rows.append((f"2D 256x256 {preset}", rate(gen.sample_2d, 100), "samples/s"))
    gen3 = SyntheticGenerator(GeneratorConfig.from_preset("mixed", size=128, depth=64), 0)
    rows.append(("3D 128x128x64 mixed", rate(gen3.sample_3d, 5), "volumes/s"))
    print(f"{'case':<24}{'rate':>10}  unit")
    for name, value, unit in rows:
        print(f"{name:<24}{value:>10.1f}  {unit}")
    gen = SyntheticGenerator(GeneratorConfig.from_preset("mixed"), 0)
    profile = cProfile.Profile()
    profile.runcall(lambda: [gen.sample_2d(i) for i in range(50)])
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(8)
    print("\nwhere 2D time goes (top functions by own time):")
    print("\n".join(line for line in out.getvalue().splitlines() if "/" in line or "ncalls" in line))


if __name__ == "__main__":
    main()
