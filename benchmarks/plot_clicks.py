"""Dice after each correction click, several evaluation runs in one picture (the README's correction-click figure).

Each argument is a ``slices.csv`` of a ``synthfm evaluate`` run with the ``clicks`` and/or ``box-clicks`` protocols,
optionally followed by ``=LABEL`` (default: the run's folder name); every (model, protocol) of every run is a line,
as the report's own ``clicks.png`` draws one run:

    python benchmarks/plot_clicks.py runs/eval_slices/slices.csv=table runs/bc_judge/slices.csv="judging set" \\
        --out Resources/correction_clicks.png
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from synthfm.evaluate.report import by_model_protocol, click_plot
from synthfm.evaluate.runner import mean_click_curve


def read_runs(specs: list) -> list:
    """Rows with a click curve from every ``PATH[=LABEL]``, the label put before each row's model name."""
    rows = []
    for spec in specs:
        path, _, label = spec.partition("=")
        path = Path(path)
        if not path.is_file():
            raise SystemExit(f"plot_clicks: {path} is not a file; give the slices.csv of a synthfm evaluate run")
        label = label or path.parent.name
        for r in csv.DictReader(path.open()):
            if r.get("dice_per_click"):
                rows.append({**r, "model": f"{label}: {r['model']}", "dice_per_click": json.loads(r["dice_per_click"])})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="SLICES_CSV[=LABEL]")
    p.add_argument("--out", required=True, help="PNG to write")
    args = p.parse_args(argv)
    rows = read_runs(args.runs)
    if not click_plot(rows, Path(args.out)):
        raise SystemExit("plot_clicks: no row has a click curve; evaluate with --prompt clicks or --prompt box-clicks")
    for name, group in by_model_protocol(rows).items():
        print(f"{name} (n = {len(group)}): " + " / ".join(f"{v:.3f}" for v in mean_click_curve(group)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
