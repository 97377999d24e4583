"""Paired comparison of decoders on the real cases: is a candidate checkpoint better than the shipped one?

Reads the ``slices.csv`` of one or more ``synthfm evaluate`` runs (the README's 2D or volume command, with every
model to compare, or one run per model) and prints, per prompt protocol, each model's mean Dice and its mean
per-structure difference to the reference model with a 95% bootstrap interval over structures and on how many
structures it is better (the figures the README and the model card quote when a checkpoint is shipped).

    synthfm evaluate --pairs data/real/cases.csv --model Resources/models/synthfm-lite.pt --model runs/x/ckpt.pt \\
        --prompt point1 --prompt box --max-slices 10 --out runs/eval_x
    python benchmarks/compare_checkpoints.py runs/eval_x/slices.csv --reference Resources/models/synthfm-lite.pt
    python benchmarks/compare_checkpoints.py runs/eval_old/slices.csv runs/eval_new/slices.csv \\
        --reference "synthfm-lite @ eval_old"          # the same model name in two runs: told apart by folder
"""
from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_generators import paired_difference, per_structure_dice_by_model  # noqa: E402

Structure = Tuple[str, str, str]


def load(paths: Sequence[Path]) -> Dict[str, Dict[Structure, float]]:
    """Per model: mean Dice per (protocol, case, label) over every given ``slices.csv``. A model name found in
    several files (``synthfm-lite`` before and after a new checkpoint was shipped) is told apart by its folder:
    ``synthfm-lite @ eval_old``."""
    by_file: Dict[Path, Dict[str, Dict[Structure, float]]] = {}
    for path in map(Path, paths):
        if not path.is_file():
            raise SystemExit(f"{path}: no such file; give the slices.csv that `synthfm evaluate --out DIR` wrote")
        if path in by_file:
            raise SystemExit(f"{path} is given twice")
        by_file[path] = per_structure_dice_by_model(path)
    counts = Counter(m for models in by_file.values() for m in models)
    per_model: Dict[str, Dict[Structure, float]] = {}
    for path, models in by_file.items():
        for model, dice in models.items():
            key = model if counts[model] == 1 else f"{model} @ {path.parent.name}"
            if key in per_model:
                raise SystemExit(f"model {model!r} is in two files of folder {path.parent.name}: rename one folder")
            per_model[key] = dice
    return per_model


def comparison(per_model: Dict[str, Dict[Structure, float]], reference: str) -> List[dict]:
    """One row per (protocol, model): mean of per-structure Dice and the paired difference to ``reference``."""
    if reference not in per_model:
        raise SystemExit(f"reference model {reference!r} is not in the evaluation; models: {sorted(per_model)}")
    ref = per_model[reference]
    protocols = sorted({key[0] for key in ref})
    rows = []
    for protocol in protocols:
        for model, dice in sorted(per_model.items(), key=lambda item: item[0] != reference):  # reference first
            keys = [k for k in dice if k[0] == protocol]
            if not keys:
                continue
            row = {"protocol": protocol, "model": model, "structures": len(keys),
                   "dice": sum(dice[k] for k in keys) / len(keys)}
            if model != reference:
                d, lo, hi, better, n = paired_difference(dice, ref, protocol)
                row.update(diff=d, lo=lo, hi=hi, better=better, paired=n)
            rows.append(row)
    return rows


def markdown(rows: List[dict], reference: str) -> str:
    lines = [f"| protocol | model | structures | Dice (mean over structures) | vs {reference} [95% CI], better |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        paired = (f"{r['diff']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}] {r['better']}/{r['paired']}"
                  if "diff" in r else "reference")
        lines.append(f"| {r['protocol']} | {r['model']} | {r['structures']} | {r['dice']:.3f} | {paired} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("slices", nargs="+", type=Path, help="slices.csv of `synthfm evaluate` runs")
    p.add_argument("--reference", required=True, help="the model the others are compared with (as evaluated)")
    args = p.parse_args(argv)
    print(markdown(comparison(load(args.slices), args.reference), args.reference))


if __name__ == "__main__":
    main()
