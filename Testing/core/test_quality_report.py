"""benchmarks/quality_report.py --ceiling: how far a linear model of the signals gets on an evaluation's rows."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np

from synthfm.segment.quality import SIGNALS

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
spec = importlib.util.spec_from_file_location("quality_report", BENCH / "quality_report.py")
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def _rows(rng, informative: bool, n_cases: int = 6, per_case: int = 12) -> list:
    rows = []
    for c in range(n_cases):
        for _ in range(per_case):
            iou = float(rng.uniform(0.1, 0.95))
            row = {"case": f"case {c}", "iou": iou, **{s: np.nan for s in SIGNALS}}
            row["iou_head"] = iou + rng.normal(0, 0.02) if informative else float(rng.uniform())
            row["stability"] = float(rng.uniform())  # noise either way
            row["area"] = 0.5  # constant: left out
            rows.append(row)
    return rows


def test_a_signal_that_tracks_the_iou_reaches_the_ceiling_and_noise_does_not():
    rng = np.random.default_rng(0)
    inside, held_out = report.signal_ceiling(_rows(rng, informative=True))
    assert inside > 0.95 and held_out > 0.95
    inside, held_out = report.signal_ceiling(_rows(rng, informative=False))
    assert inside < 0.5 and held_out < inside  # fitting noise flatters the in-sample figure only


def test_the_command_prints_the_ceiling_per_protocol(tmp_path):
    rng = np.random.default_rng(1)
    lines = ["case,model,protocol,iou,pred_iou," + ",".join(SIGNALS)]
    for r in _rows(rng, informative=True):
        values = [r[s] for s in SIGNALS]
        lines.append(f"{r['case']},m,box,{r['iou']},{r['iou_head']}," + ",".join("" if v != v else str(v) for v in values))
    csv_path = tmp_path / "slices.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    calibration = Path(__file__).resolve().parents[2] / "Resources/models/synthfm-lite.quality.json"
    out = subprocess.run([sys.executable, str(BENCH / "quality_report.py"), "--slices", str(csv_path), "--model", "m",
                          "--calibration", str(calibration), "--ceiling"], capture_output=True, text=True, check=True)
    line = [x for x in out.stdout.splitlines() if x.startswith("m | box")][-1].split()
    assert float(line[-1]) > 0.95 and float(line[-2]) > 0.95  # leave-one-structure-out, in-sample
