"""Same-budget training comparison of generators (issue 12): old vs new, and the paper's four-way ablation.

Each run trains a decoder with ``synthfm train`` (same steps, samples, seed and learning rate; only the
generator differs), evaluates it with ``synthfm evaluate`` on real labelled cases, and the table of
Dice per prompt protocol is printed and written to ``OUT/table.md`` / ``OUT/table.json``.

    python benchmarks/compare_generators.py --pairs data/real/cases.csv --out runs/compare \\
        --steps 3000 --samples 1000 --time-budget 45            # the issue's comparison (hours of CPU)
    python benchmarks/compare_generators.py --pairs data/real/cases.csv --out /tmp/cmp \\
        --steps 2 --samples 4 --batch-size 2 --val-samples 2 --max-slices 1 --limit-cases 1   # smoke test

Runs (``--runs`` picks some): v2 (today's generator, ``{"version": 2}``), v3 (the new one = both parts on),
neither / shape-only / boundary-only (v3 with ``shape_aware`` / ``boundary_aware`` switched off).
A run whose folder already holds a checkpoint is resumed by ``synthfm train`` (same settings) and re-evaluated.
"""
from __future__ import annotations

import argparse
import csv
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

RUNS: Dict[str, dict] = {
    "v2": {"version": 2},
    "v3": {},
    "neither": {"shape_aware": False, "boundary_aware": False},
    "shape-only": {"boundary_aware": False},
    "boundary-only": {"shape_aware": False},
}
PROTOCOLS = ("point1", "point3", "box")


def _run(cmd: List[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def limited_cases(pairs: Path, out: Path, limit: int) -> Path:
    """A copy of ``pairs`` with its first ``limit`` rows (absolute paths), for quick checks."""
    with open(pairs, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise SystemExit(f"{pairs} has no rows")
    for row in rows:
        for key in ("image", "label"):
            row[key] = str((pairs.parent / row[key]).resolve())
    out.mkdir(parents=True, exist_ok=True)
    path = out / "cases_subset.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[:limit])
    return path


def evaluate(py: List[str], pairs: Path, model: str, run: Path, args: argparse.Namespace) -> None:
    """Evaluate one decoder on the real cases (every protocol) into ``run/eval``."""
    cmd = py + ["evaluate", "--pairs", str(pairs), "--model", model, "--max-slices", str(args.max_slices),
                "--seed", str(args.seed), "--device", args.device, "--out", str(run / "eval"), "--overwrite"]
    for protocol in PROTOCOLS:
        cmd += ["--prompt", protocol]
    _run(cmd)


def per_structure_dice_by_model(slices_csv: Path) -> Dict[str, Dict[Tuple[str, str, str], float]]:
    """Per model: mean Dice per (protocol, case, label) from an evaluation's ``slices.csv`` (one pass)."""
    groups: Dict[str, Dict[Tuple[str, str, str], List[float]]] = {}
    with open(slices_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            per_model = groups.setdefault(row["model"], {})
            per_model.setdefault((row["protocol"], row["case"], row["label"]), []).append(float(row["dice"]))
    return {model: {key: float(np.mean(v)) for key, v in g.items()} for model, g in groups.items()}


def per_structure_dice(slices_csv: Path) -> Dict[Tuple[str, str, str], float]:
    """Mean Dice per (protocol, case, label) from a one-model evaluation's ``slices.csv``."""
    by_model = per_structure_dice_by_model(slices_csv)
    if len(by_model) > 1:
        raise SystemExit(f"{slices_csv} holds several models ({sorted(by_model)}); use per_structure_dice_by_model")
    return next(iter(by_model.values()), {})


def paired_difference(a: Dict[tuple, float], b: Dict[tuple, float], protocol: str, seed: int = 0,
                      rounds: int = 5000) -> Tuple[float, float, float, int, int]:
    """Mean per-structure Dice difference a - b for one protocol, its 95% bootstrap interval over structures,
    and on how many of the shared structures a is better."""
    keys = sorted(k for k in a if k[0] == protocol and k in b)
    diff = np.array([a[k] - b[k] for k in keys])
    if not len(diff):
        return float("nan"), float("nan"), float("nan"), 0, 0
    rng = np.random.default_rng(seed)
    boot = rng.choice(diff, (rounds, len(diff))).mean(1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(diff.mean()), float(lo), float(hi), int((diff > 0).sum()), len(diff)


def comparison_table(runs: Dict[str, Path], reference: str, header: str) -> Tuple[dict, str]:
    """Markdown table of mean Dice per run and protocol (slice-weighted, as `synthfm evaluate` reports), then
    each run's paired per-structure difference to ``reference`` with a bootstrap interval."""
    per_slice = {n: {} for n in runs}
    for name, path in runs.items():
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                per_slice[name].setdefault(row["protocol"], []).append(float(row["dice"]))
    table = {n: {pr: float(np.mean(v)) for pr, v in rows.items()} for n, rows in per_slice.items()}
    lines = [header, "", "| generator | " + " | ".join(PROTOCOLS) + " |", "| --- |" + " --- |" * len(PROTOCOLS)]
    for name, row in table.items():
        lines.append(f"| {name} | " + " | ".join(f"{row.get(pr, float('nan')):.3f}" for pr in PROTOCOLS) + " |")
    if reference in runs and len(runs) > 1:
        ref = per_structure_dice(runs[reference])
        lines += ["", f"Paired per structure against `{reference}` (mean Dice difference, 95% bootstrap interval over "
                  "structures, structures better):", "",
                  "| generator | " + " | ".join(PROTOCOLS) + " |", "| --- |" + " --- |" * len(PROTOCOLS)]
        for name in runs:
            if name == reference:
                continue
            mine = per_structure_dice(runs[name])
            cells = []
            for pr in PROTOCOLS:
                d, lo, hi, better, n = paired_difference(mine, ref, pr)
                cells.append(f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}] {better}/{n}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return table, "\n".join(lines) + "\n"


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", required=True, help="real cases CSV (synthfm evaluate-data --out data/real)")
    p.add_argument("--out", required=True)
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--preset", default="mixed")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--val-samples", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-budget", type=float, help="minutes per run (same for every run)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--max-slices", type=int, default=10, help="evaluated slices per structure")
    p.add_argument("--limit-cases", type=int, help="evaluate only the first N rows of --pairs (smoke tests)")
    p.add_argument("--device", default="auto")
    p.add_argument("--init", help="fine-tune every run from this decoder (model name or checkpoint) instead of "
                   "from scratch; it is evaluated too, as the row 'init'")
    p.add_argument("--train-args", default="", help="more `synthfm train` options, the same for every run, "
                   "e.g. '--correction-prob 0.6 --correction-rounds 3 --lr-warmup 50'")
    p.add_argument("--no-init-eval", action="store_true", help="do not evaluate --init (another process does)")
    p.add_argument("--report-only", action="store_true", help="only build the table from the runs' existing "
                   "evaluations (OUT/<run>/eval/slices.csv)")
    p.add_argument("--reference", default="v2", help="run the others are compared to per structure (default v2)")
    args = p.parse_args(argv)

    out = Path(args.out)
    pairs = Path(args.pairs)
    if not pairs.is_file():
        raise SystemExit(f"--pairs {pairs} does not exist; create it with `synthfm evaluate-data --out data/real`")
    if args.limit_cases:
        pairs = limited_cases(pairs, out, args.limit_cases)
    py = [sys.executable, "-m", "synthfm.cli"]
    names = (["init"] if args.init else []) + list(args.runs)
    for name in names if not args.report_only else ():
        run = out / name
        if name == "init":
            if not args.no_init_eval:
                evaluate(py, pairs, args.init, run, args)
            continue
        train = py + ["train", "--preset", args.preset, "--generator", json.dumps(RUNS[name]),
                      "--steps", str(args.steps), "--samples", str(args.samples), "--val-samples", str(args.val_samples),
                      "--batch-size", str(args.batch_size),
                      "--val-every", str(max(1, args.steps)), "--ckpt-every", str(max(1, min(100, args.steps))),
                      "--lr", str(args.lr), "--seed", str(args.seed), "--device", args.device, "--out", str(run)]
        if args.time_budget:
            train += ["--time-budget", str(args.time_budget)]
        if args.threads:
            train += ["--threads", str(args.threads)]
        if args.init:
            train += ["--init", args.init]
        train += shlex.split(args.train_args)
        _run(train)
        evaluate(py, pairs, str(run / "synthfm-lite.pt"), run, args)
    evaluated = [n for n in names if (out / n / "eval" / "slices.csv").is_file()]
    if not evaluated:
        raise SystemExit(f"no evaluated run in {out} (expected {out}/<run>/eval/slices.csv)")
    header = (f"Same budget: {args.steps} steps, {args.samples} samples, seed {args.seed}, lr {args.lr}"
              + (f", {args.time_budget} min" if args.time_budget else "")
              + (f", fine-tuned from {args.init}" if args.init else ", from scratch")
              + (f", {args.train_args}" if args.train_args else "") + f"; Dice on {pairs.name}")
    table, text = comparison_table({n: out / n / "eval" / "slices.csv" for n in evaluated}, args.reference, header)
    print(text)
    from synthfm.io.atomic import atomic_write_text

    atomic_write_text(out / "table.md", text)
    atomic_write_text(out / "table.json", json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
