"""Re-score an evaluation's slices with a decoder's quality calibration: Spearman(signal, true IoU) per model and
protocol for every raw signal and the calibrated score, and a reliability plot (raw IoU head vs calibrated).

Run: .venv/bin/python benchmarks/quality_report.py --slices runs/eval/slices.csv [--model synthfm-lite]
     [--calibration Resources/models/synthfm-lite.quality.json] [--plot reliability.png] [--ceiling]
The slices.csv of `synthfm evaluate` holds every signal of every prediction, so an evaluation run without a
calibration (or before one was fitted) can be re-scored without running the models again (the masks do not
depend on the calibration: the decoder's IoU head still picks among its candidates). For reporting only: the
calibration is fitted on synthetic data (benchmarks/fit_quality.py), nothing here changes it.

``--ceiling`` asks how far any calibration of these signals could go on these rows: per model and protocol, a
least-squares linear model of every signal the rows hold, fitted on the rows themselves (in-sample: an upper
bound no calibration fitted elsewhere reaches) and leave-one-structure-out (each structure scored by a model fitted
on the others), Spearman with the true IoU beside the shipped score's. A diagnosis, not a fit to ship.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from synthfm.evaluate.calibrate import spearman
from synthfm.evaluate.report import reliability_plot
from synthfm.models.registry import find_decoder, get_spec
from synthfm.segment.quality import SIGNALS, QualityCalibrator, calibration_path

BOX_PROTOCOLS = ("box", "box-jitter")


def read_rows(path: Path) -> list:
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            row = {"model": r["model"], "protocol": r["protocol"], "iou": float(r["iou"]), "case": r.get("case", "")}
            for k in ("pred_iou", *SIGNALS):
                row[k] = float(r[k]) if r.get(k) not in (None, "") else np.nan
            rows.append(row)
    return rows


def signal_ceiling(rows: list, signals=SIGNALS) -> tuple:
    """``(in-sample, leave-one-structure-out)`` Spearman with the true IoU of a least-squares linear model of the
    ``signals`` present (finite, not constant) in every row, fitted on ``rows`` (one model, one protocol)."""
    used = [s for s in signals if all(np.isfinite(r[s]) for r in rows) and np.ptp([r[s] for r in rows]) > 0]
    x = np.array([[r[s] for s in used] for r in rows], np.float64).reshape(len(rows), len(used))
    x = np.c_[np.ones(len(rows)), (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)]
    y = np.array([r["iou"] for r in rows])
    cases = np.array([r["case"] for r in rows])
    fitted = x @ np.linalg.lstsq(x, y, rcond=None)[0]
    held_out = np.empty_like(y)
    for case in set(cases):
        out = cases == case
        held_out[out] = x[out] @ np.linalg.lstsq(x[~out], y[~out], rcond=None)[0]
    def rho(values: np.ndarray) -> float:
        return spearman([{"fit": v, "iou": t} for v, t in zip(values, y)], "fit")
    return rho(fitted), rho(held_out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slices", type=Path, required=True)
    parser.add_argument("--model", default="synthfm-lite", help="the model whose rows are re-scored")
    parser.add_argument("--calibration", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--ceiling", action="store_true",
                        help="also a linear model of the signals fitted on these rows: in-sample and leave-one-structure-out")
    args = parser.parse_args()
    path = args.calibration or calibration_path(find_decoder(get_spec(args.model).decoder_file))
    calibrator = QualityCalibrator.from_json(path.read_text(), str(path))
    rows = read_rows(args.slices)
    for r in rows:
        if r["model"] == args.model and np.isfinite(r["iou_head"]):
            kind = "box" if r["protocol"] in BOX_PROTOCOLS else "points"
            r["calibrated"] = float(calibrator({k: np.array([r[k]]) for k in SIGNALS}, kind)[0])
    groups: dict = {}
    for r in rows:
        if np.isfinite(r["pred_iou"]):
            groups.setdefault(f"{r['model']} | {r['protocol']}", []).append(r)
    columns = ("pred_iou", *SIGNALS, "calibrated")
    print(f"Spearman(signal, true IoU) in {args.slices}; calibrated: {path}")
    print(f"{'model | protocol':<26}{'n':>5}" + "".join(f"{c:>13}" for c in columns))
    for name, g in groups.items():
        print(f"{name:<26}{len(g):>5}" + "".join(f"{spearman(g, c):>13.3f}" for c in columns))
    if args.ceiling:
        print("\nHow far a linear model of these signals gets, fitted on these rows (Spearman with the true IoU):")
        print(f"{'model | protocol':<26}{'n':>5}{'score':>9}{'in-sample':>11}{'leave-one-structure-out':>25}")
        for name, g in groups.items():
            if len(g) >= 10 and len({r['case'] for r in g}) >= 3:
                inside, held_out = signal_ceiling(g)
                print(f"{name:<26}{len(g):>5}{spearman(g, 'pred_iou'):>9.3f}{inside:>11.3f}{held_out:>25.3f}")
    if args.plot:
        panels = [{"panel": f"{r['model']} | {r['protocol']}: IoU head", "value": r["iou_head"], "iou": r["iou"]}
                  for g in groups.values() for r in g]
        panels += [{"panel": f"{r['model']} | {r['protocol']}: calibrated", "value": r["calibrated"], "iou": r["iou"]}
                   for g in groups.values() for r in g if "calibrated" in r]
        panels.sort(key=lambda p: p["panel"])
        reliability_plot(panels, args.plot, group="panel", score="value")
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
