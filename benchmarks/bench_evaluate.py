"""Time of the README's accuracy evaluation (``synthfm evaluate``), this tree against an earlier commit, in one run.

Both versions evaluate the same cases with the README's models and prompts, each in its own process (started one
after the other, alternating with ``--repeats``), and the table gives per mode and version: wall and CPU seconds,
the CPU seconds inside the encoder, the decoder and the metrics, the counts (slices encoded, decoder calls, rows),
and whether the rows are identical to the baseline's (every number of every row).

Run (a subset; paths in the CSV are relative to it):
    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python benchmarks/bench_evaluate.py --pairs subset.csv --max-slices 2
The baseline is extracted with ``git archive REF synthfm Resources/models`` into a temporary folder (default REF:
the commit before the evaluation speed-ups). CPU seconds are the processes' own (``time.process_time``): on a
shared core they stay comparable where wall times do not.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "0dcdbfb"  # main before the evaluation speed-ups (issue 11)
MODES = {  # the README's two commands (models, prompts, volume)
    "2d": (["synthfm-lite", "medsam-lite", "floor-ellipse", "floor-region-growing"],
           ["point1", "point3", "point1neg2", "box", "box-jitter", "clicks"], False),
    "volume": (["synthfm-lite", "medsam-lite"], ["point1", "box"], True),
}

CHILD = r'''
import json, sys, time
t0, c0 = time.perf_counter(), time.process_time()
from pathlib import Path
import synthfm.evaluate.runner as runner
from synthfm.evaluate.cases import read_cases_csv
from synthfm.models.sam import PromptableModel
from synthfm.segment.predictor import SlicePredictor

spent = {"encoder": 0.0, "decoder": 0.0, "metrics": 0.0}
counts = {"slices encoded": 0, "decoder calls": 0}
calls = {"metrics": []}  # CPU seconds of each metrics call (the first one imports the metrics' modules)

def timed(owner, name, part, count=None):
    inner = getattr(owner, name)
    def wrapper(*args, **kwargs):
        start = time.process_time()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[part] += time.process_time() - start
            if part in calls:
                calls[part].append(time.process_time() - start)
            if count == "images":
                counts["slices encoded"] += len(args[1])
            elif count:
                counts[count] += 1
    setattr(owner, name, wrapper)

timed(PromptableModel, "encode", "encoder", "images")
timed(PromptableModel, "decode", "decoder", "decoder calls")
timed(runner, "all_metrics", "metrics")
args = json.loads(sys.argv[1])
results = runner.evaluate(read_cases_csv(Path(args["pairs"])), args["models"], args["prompts"],
                          max_slices=args["max_slices"], volume=args["volume"])
rest = sorted(calls["metrics"][1:]) or [0.0]
out = {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, **spent, **counts,
       "metrics first": calls["metrics"][0] if calls["metrics"] else 0.0, "metrics median": rest[len(rest) // 2],
       "rows": [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in results.rows]}
Path(args["out"]).write_text(json.dumps(out, default=str))
'''


def baseline_tree(ref: str, folder: Path) -> Path:
    """``synthfm/`` and ``Resources/models`` of commit ``ref`` in ``folder``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "synthfm", "Resources/models"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def run(root: Path, mode: str, pairs: Path, max_slices: int, out: Path) -> dict:
    models, prompts, volume = MODES[mode]
    spec = {"pairs": str(pairs), "models": models, "prompts": prompts, "max_slices": max_slices or None,
            "volume": volume, "out": str(out)}
    env = {**os.environ, "PYTHONPATH": str(root)}
    subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], env=env, check=True, cwd=str(root))
    return json.loads(out.read_text())


def same_rows(a: list, b: list) -> str:
    """'yes' when every row holds the same values (inf == inf), else the first difference."""
    if len(a) != len(b):
        return f"no ({len(a)} vs {len(b)} rows)"
    for i, (x, y) in enumerate(zip(a, b)):
        for k in set(x) | set(y):
            u, v = x.get(k), y.get(k)
            if u != v and not (isinstance(u, float) and isinstance(v, float) and math.isinf(u) and u == v):
                return f"no (row {i} {k}: {u} vs {v})"
    return "yes"


def volume_metrics(path: Path) -> None:
    """CPU seconds of the 3D surface metrics per structure, MONAI (before) against this tree, same numbers."""
    import time

    import numpy as np
    from scipy import ndimage as ndi

    from synthfm.evaluate.cases import _label_values
    from synthfm.evaluate.metrics import _surface, monai_surface
    from synthfm.io import read_volume

    volume = read_volume(path)
    spacing = tuple(volume.spacing[::-1])
    monai_surface(np.ones((3, 3), bool), np.ones((3, 3), bool), (1.0, 1.0), 2.0)  # imports outside the timing
    _surface(np.ones((3, 3), bool), np.ones((3, 3), bool), (1.0, 1.0), 2.0)
    print(f"{path.name}, spacing {spacing}; prediction: the structure shifted by 2 voxels along axis 1 and dilated\n")
    print("| label | voxels | MONAI s | this tree s | same numbers |\n| --- | --- | --- | --- | --- |")
    for value in _label_values(volume.array):
        truth = volume.array == value
        pred = ndi.binary_dilation(np.roll(truth, 2, axis=1))
        start = time.process_time()
        before = monai_surface(pred, truth, spacing, 2.0)
        middle = time.process_time()
        after = _surface(pred, truth, spacing, 2.0)
        end = time.process_time()
        print(f"| {value} | {int(truth.sum())} | {middle - start:.2f} | {end - middle:.2f} | "
              f"{'yes' if before == after else f'no {before} vs {after}'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", help="cases CSV (e.g. a subset of data/real/cases.csv)")
    parser.add_argument("--modes", nargs="+", choices=tuple(MODES), default=list(MODES))
    parser.add_argument("--max-slices", type=int, default=10, help="per structure in the 2D mode (README: 10)")
    parser.add_argument("--baseline", default=BASELINE, help="git commit to compare with (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per mode and version, alternating")
    parser.add_argument("--volume-metrics", metavar="LABELMAP",
                        help="instead: 3D HD95/NSD of each structure of LABELMAP against itself shifted by 2 voxels "
                             "and dilated, MONAI's two calls against synthfm.evaluate.metrics")
    args = parser.parse_args()
    if args.volume_metrics:
        return volume_metrics(Path(args.volume_metrics))
    if not args.pairs:
        parser.error("give --pairs CSV (or --volume-metrics LABELMAP)")
    pairs = Path(args.pairs).resolve()
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        old = baseline_tree(args.baseline, Path(tmp))
        for mode in args.modes:
            for rep in range(args.repeats):
                results = {}
                for name, root in ((f"{args.baseline} (before)", old), ("this tree", ROOT)):
                    results[name] = run(root, mode, pairs, args.max_slices, Path(tmp) / f"{mode}_{rep}.json")
                    print(f"{mode} {name}: {results[name]['cpu']:.1f} CPU s", flush=True)
                base = next(iter(results.values()))
                for name, r in results.items():
                    table.append((mode, name, r, same_rows(base["rows"], r["rows"])))
    print(f"\ncases: {pairs}, max slices {args.max_slices}; CPU seconds per process (time.process_time)\n")
    head = ("mode", "version", "wall s", "CPU s", "encoder", "decoder", "metrics (1st call)", "other", "slices enc.",
            "dec. calls", "rows", "metrics ms/row (median)", "same rows")
    print("| " + " | ".join(head) + " |\n|" + " --- |" * len(head))
    for mode, name, r, same in table:
        other = r["cpu"] - r["encoder"] - r["decoder"] - r["metrics"]
        print(f"| {mode} | {name} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['encoder']:.1f} | {r['decoder']:.1f} | "
              f"{r['metrics']:.1f} ({r['metrics first']:.1f}) | {other:.1f} | {r['slices encoded']} | "
              f"{r['decoder calls']} | {len(r['rows'])} | {1e3 * r['metrics median']:.1f} | {same} |")


if __name__ == "__main__":
    main()
