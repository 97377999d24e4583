"""Generator speed: 2D samples/s at 256x256 and 3D volumes/s at 128x128x64 on ONE core, and where time goes.

Run: .venv/bin/python benchmarks/bench_generate.py                       (versions 3 and 2, then profiles)
     .venv/bin/python benchmarks/bench_generate.py --baseline f11a951      (this checkout vs another commit)
     .venv/bin/python benchmarks/bench_generate.py --quick                 (small counts, while developing)

numpy/scipy are pinned to one thread, so the rates are per core.  Two rates are printed: per CPU second
(``time.process_time``: what one free core would give; a data loader with N workers gets about N times as
much on N free cores) and per wall second (lower whenever the core is shared with other jobs; the ``cpu
share`` column says how much of the core this process got).  The targets of issue 12 are per core: 2D >= 100
images/s, 3D >= 5 volumes/s.

``--baseline REV`` extracts ``synthfm/`` of git commit REV into a temporary folder and measures it and this
checkout in alternating rounds (subprocesses, the same cases and sample indices), so both see the same
load; it prints each side's median rate, the ratio, and whether both drew identical samples (SHA-256 of
images, label maps and masks): a speed change that keeps a generator version must print ``identical``.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # per-core rates: before numpy loads
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import cProfile  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import pstats  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, Dict, List, Tuple  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if "--worker" not in sys.argv:  # measure this checkout (workers get the side to measure from PYTHONPATH)
    sys.path.insert(0, str(ROOT))

from synthfm.generate import GENERATOR_VERSION, GeneratorConfig, SyntheticGenerator  # noqa: E402

TARGETS = {"2D": 100.0, "3D": 5.0}  # issue 12, per core


def case_sampler(case: str) -> Tuple[Callable[[int], object], str]:
    """``"v3 2D mixed"`` / ``"v2 3D mixed"`` -> (sample function, unit)."""
    version, dim, preset = case.split()
    version_n = int(version[1:])
    if dim == "3D":
        gen = SyntheticGenerator(GeneratorConfig.from_preset(preset, size=128, depth=64, version=version_n), 0)
        return gen.sample_3d, "volumes"
    return SyntheticGenerator(GeneratorConfig.from_preset(preset, version=version_n), 0).sample_2d, "images"


def measure(fn: Callable[[int], object], n: int, first: int = 1) -> Dict[str, object]:
    """CPU and wall seconds for samples ``first .. first + n - 1`` (after one warm-up sample), and their hash."""
    fn(0)
    digest = hashlib.sha256()
    cpu, wall = time.process_time(), time.perf_counter()
    samples = [fn(i) for i in range(first, first + n)]
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    for s in samples:
        for array in (s.image, s.labels, s.mask):
            digest.update(array.tobytes())
    return {"n": n, "cpu": cpu, "wall": wall, "hash": digest.hexdigest()[:16]}


def cases(quick: bool) -> List[Tuple[str, int]]:
    n2, n3 = (20, 2) if quick else (100, 6)
    out = []
    for version in (GENERATOR_VERSION, 4, 2):
        out += [(f"v{version} 2D {preset}", n2) for preset in ("ct", "mr", "us", "mixed")]
        out.append((f"v{version} 3D mixed", n3))
    return out


def print_rates(quick: bool) -> None:
    print(f"generator version {GENERATOR_VERSION} (and 4, 2), one thread; 2D 256x256, 3D 128x128x64")
    print(f"{'case':<16}{'per cpu s':>10}{'ms each':>9}{'per wall s':>11}{'cpu share':>10}  unit  target")
    for case, n in cases(quick):
        fn, unit = case_sampler(case)
        m = measure(fn, n)
        dim = case.split()[1]
        cpu_rate = m["n"] / m["cpu"]
        print(f"{case:<16}{cpu_rate:>10.1f}{1e3 / cpu_rate:>9.1f}{m['n'] / m['wall']:>11.1f}"
              f"{m['cpu'] / m['wall']:>10.2f}  {unit}/s  >= {TARGETS[dim]:g} "
              f"{'met' if cpu_rate >= TARGETS[dim] else 'MISSED'}")


def where_time_goes(dim: str, n: int, top: int = 14) -> None:
    """Functions by own CPU time per sample (version 3, mixed preset), with their cumulative time."""
    fn, _ = case_sampler(f"v{GENERATOR_VERSION} {dim} mixed")
    fn(0)
    profile = cProfile.Profile(time.process_time)
    profile.runcall(lambda: [fn(i) for i in range(1, n + 1)])
    stats = pstats.Stats(profile).stats
    rows = sorted(((tt, ct, name, path) for (path, _, name), (_, _, tt, ct, _) in stats.items()), reverse=True)
    print(f"\nwhere {dim} time goes (v{GENERATOR_VERSION} mixed, {n} samples under cProfile, CPU ms per sample):")
    print(f"{'function':<44}{'own':>8}{'cumulative':>11}")
    for tt, ct, name, path in rows[:top]:
        where = os.path.basename(path) + ":" + name if path != "~" else name
        print(f"{where[:43]:<44}{1e3 * tt / n:>8.2f}{1e3 * ct / n:>11.2f}")


# ------------------------------------------------------------------------------------- baseline comparison
def extract(rev: str, into: Path) -> Path:
    """``synthfm/`` of git commit ``rev`` under ``into`` (a folder to put first on PYTHONPATH)."""
    archive = into / "src.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "-C", str(ROOT), "archive", rev, "synthfm"], stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "src", filter="data")
    return into / "src"


def run_worker(src: Path, case: str, n: int) -> Dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", case, str(n)],
                         env=env, check=True, capture_output=True, text=True, cwd=str(src))
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(rev: str, rounds: int, quick: bool) -> None:
    todo = [(c, n) for c, n in cases(quick) if c.startswith(f"v{GENERATOR_VERSION}")]
    with tempfile.TemporaryDirectory() as tmp:
        sides = {rev: extract(rev, Path(tmp)), "this checkout": ROOT}
        results: Dict[Tuple[str, str], List[Dict[str, object]]] = {}
        for r in range(rounds):  # alternate the sides so both see the same load
            for case, n in todo:
                for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
                    results.setdefault((case, name), []).append(run_worker(sides[name], case, n))
    print(f"\n{rev} vs this checkout: median CPU rate over {rounds} alternating rounds (per core)")
    print(f"{'case':<16}{rev[:12]:>13}{'this':>10}{'ratio':>8}{'cpu share':>10}  samples")
    for case, _ in todo:
        old, new = results[(case, rev)], results[(case, "this checkout")]
        old_rate = statistics.median(m["n"] / m["cpu"] for m in old)
        new_rate = statistics.median(m["n"] / m["cpu"] for m in new)
        share = statistics.median(m["cpu"] / m["wall"] for m in old + new)
        same = "identical" if {m["hash"] for m in old} == {m["hash"] for m in new} else "DIFFERENT"
        print(f"{case:<16}{old_rate:>13.1f}{new_rate:>10.1f}{new_rate / old_rate:>7.2f}x{share:>10.2f}  {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", metavar="REV", help="also compare this checkout with git commit REV")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the comparison")
    parser.add_argument("--quick", action="store_true", help="small sample counts (development)")
    parser.add_argument("--no-profile", action="store_true", help="skip the where-time-goes tables")
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        case, n = args.worker
        print(json.dumps(measure(case_sampler(case)[0], int(n))))
        return
    print_rates(args.quick)
    if args.baseline:
        compare(args.baseline, args.rounds, args.quick)
    if not args.no_profile:
        where_time_goes("2D", 30 if args.quick else 100)
        where_time_goes("3D", 2 if args.quick else 6)


if __name__ == "__main__":
    main()
