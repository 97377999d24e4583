"""Re-score an evaluation's slices with a decoder's quality calibration: Spearman(signal, true IoU) per model and
protocol for every raw signal and the calibrated score, and a reliability plot (raw IoU head vs calibrated).

Run: .venv/bin/python benchmarks/quality_report.py --slices runs/eval/slices.csv [--model synthfm-lite]
     [--calibration Resources/models/synthfm-lite.quality.json] [--plot reliability.png]
The slices.csv of `synthfm evaluate` holds every signal of every prediction, so an evaluation run without a
calibration (or before one was fitted) can be re-scored without running the models again (the masks do not
depend on the calibration: the decoder's IoU head still picks among its candidates). For reporting only: the
calibration is fitted on synthetic data (benchmarks/fit_quality.py), nothing here changes it.
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
            row = {"model": r["model"], "protocol": r["protocol"], "iou": float(r["iou"])}
            for k in ("pred_iou", *SIGNALS):
                row[k] = float(r[k]) if r.get(k) not in (None, "") else np.nan
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slices", type=Path, required=True)
    parser.add_argument("--model", default="synthfm-lite", help="the model whose rows are re-scored")
    parser.add_argument("--calibration", type=Path)
    parser.add_argument("--plot", type=Path)
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
