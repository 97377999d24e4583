"""benchmarks/compare_generators.py: the table and the paired per-structure comparison it prints."""
import csv
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "compare_generators.py"
spec = importlib.util.spec_from_file_location("compare_generators", SCRIPT)
cg = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cg)


def _slices(path: Path, dice_by_structure: dict) -> Path:
    """A slices.csv with two slices per (protocol, structure)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        w = csv.DictWriter(handle, ["case", "label", "slice", "model", "protocol", "dice"])
        w.writeheader()
        for (protocol, case), d in dice_by_structure.items():
            for s, offset in ((0, -0.05), (1, 0.05)):
                w.writerow({"case": case, "label": 1, "slice": s, "model": "m", "protocol": protocol, "dice": d + offset})
    return path


def test_table_means_and_paired_difference(tmp_path):
    cases = [f"c{i}" for i in range(6)]
    ref = {(pr, c): 0.5 for pr in cg.PROTOCOLS for c in cases}
    better = {(pr, c): 0.5 + (0.1 if pr == "point1" else 0.0) + (0.01 * i if pr == "box" else 0.0)
              for pr in cg.PROTOCOLS for i, c in enumerate(cases)}
    runs = {"v2": _slices(tmp_path / "v2.csv", ref), "v3": _slices(tmp_path / "v3.csv", better)}
    table, text = cg.comparison_table(runs, "v2", "header")
    assert table["v2"]["point1"] == pytest.approx(0.5)
    assert table["v3"]["point1"] == pytest.approx(0.6)
    d, lo, hi, n_better, n = cg.paired_difference(cg.per_structure_dice(runs["v3"]),
                                                  cg.per_structure_dice(runs["v2"]), "point1")
    assert (d, lo, hi, n_better, n) == pytest.approx((0.1, 0.1, 0.1, 6, 6))
    d, lo, hi, n_better, _ = cg.paired_difference(cg.per_structure_dice(runs["v3"]),
                                                  cg.per_structure_dice(runs["v2"]), "box")
    assert d == pytest.approx(0.025) and lo < d < hi and n_better == 5  # c0 ties
    assert "| v3 | 0.600 | 0.500 | 0.525 |" in text and "+0.100 [+0.100, +0.100] 6/6" in text


def test_report_only_needs_evaluated_runs(tmp_path):
    pairs = tmp_path / "cases.csv"
    pairs.write_text("image,label\n")
    with pytest.raises(SystemExit, match="no evaluated run"):
        cg.main(["--pairs", str(pairs), "--out", str(tmp_path / "out"), "--runs", "v2", "--report-only"])
