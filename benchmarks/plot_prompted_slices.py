"""3D Dice against the number of prompted slices, from ``volume_budget.py`` CSVs (the README's volume figure).

Each argument is ``BUDGET_CSV[,BUDGET_CSV...][=LABEL]``: the CSVs of one set of structures (e.g. one run with K = 1 and
3, another with K = 2, 5 and 8) joined, one line per set and prompt: the mean over structures of the propagated 3D
Dice at each K, and as a dashed line the same structures with every slice prompted (the decoder's own level).

    python benchmarks/plot_prompted_slices.py runs/budget_table.csv,runs/budget_table_k.csv=table \\
        runs/budget_judge.csv,runs/budget_judge_k.csv="judging set" --prompt box --out Resources/prompted_slices.png
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from synthfm.io.atomic import atomic_path


def curves(paths: List[Path], prompt: str) -> Tuple[Dict[int, float], float]:
    """``({K: mean propagated 3D Dice}, mean with every slice prompted)`` over the structures of ``paths``; a K is
    kept only where every structure has it."""
    rows = [r for p in paths for r in csv.DictReader(p.open()) if r["protocol"] == prompt]
    if not rows:
        raise SystemExit(f"plot_prompted_slices: no {prompt!r} row in {', '.join(map(str, paths))}")
    structures = {(r["case"], r["label"]) for r in rows}
    by_k: Dict[int, Dict[tuple, float]] = {}
    every: Dict[tuple, float] = {}
    for r in rows:
        if r["setting"] == "propagated":
            by_k.setdefault(int(r["k"]), {})[(r["case"], r["label"])] = float(r["dice"])
        elif r["setting"] == "every slice prompted":
            every[(r["case"], r["label"])] = float(r["dice"])
    means = {k: float(np.mean(list(v.values()))) for k, v in sorted(by_k.items()) if set(v) == structures}
    return means, float(np.mean(list(every.values())))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sets", nargs="+", metavar="BUDGET_CSV[,BUDGET_CSV...][=LABEL]")
    p.add_argument("--prompt", default="box")
    p.add_argument("--out", required=True, help="PNG to write")
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for n, spec in enumerate(args.sets):
        files, _, label = spec.partition("=")
        paths = [Path(f) for f in files.split(",")]
        missing = [str(f) for f in paths if not f.is_file()]
        if missing:
            raise SystemExit(f"plot_prompted_slices: {', '.join(missing)} not found; write it with volume_budget.py")
        means, every = curves(paths, args.prompt)
        label = label or paths[0].stem
        colour = f"C{n}"
        ax.plot(list(means), list(means.values()), "o-", color=colour, label=f"{label}: propagated")
        ax.axhline(every, color=colour, ls="--", lw=1, label=f"{label}: every slice prompted")
        print(f"{label} ({args.prompt}): " + ", ".join(f"K = {k}: {v:.3f}" for k, v in means.items())
              + f"; every slice prompted {every:.3f}")
    ax.set(xlabel="prompted slices per structure", ylabel="mean 3D Dice", ylim=(0, 1),
           title=f"Whole volumes, {args.prompt} prompts")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_path(Path(args.out)) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
