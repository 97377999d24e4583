"""benchmarks/compare_checkpoints.py: paired per-structure comparison of models evaluated on the same cases."""
import csv
import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
spec = importlib.util.spec_from_file_location("compare_checkpoints", BENCH / "compare_checkpoints.py")
cc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cc)


def _write(path: Path, rows: list) -> Path:
    with open(path, "w", newline="") as handle:
        w = csv.DictWriter(handle, ["case", "label", "slice", "model", "protocol", "dice"])
        w.writeheader()
        w.writerows(rows)
    return path


def _rows(model: str, dice_of_case) -> list:
    return [{"case": f"c{i}", "label": 1, "slice": s, "model": model, "protocol": pr, "dice": dice_of_case(i, pr) + o}
            for i in range(5) for pr in ("box", "point1") for s, o in ((0, -0.1), (1, 0.1))]


def test_models_of_one_run_are_compared_per_structure(tmp_path, capsys):
    rows = _rows("old", lambda i, pr: 0.5) + _rows("new", lambda i, pr: 0.5 + (0.1 if pr == "box" else -0.02 * i))
    path = _write(tmp_path / "slices.csv", rows)
    table = {(r["protocol"], r["model"]): r for r in cc.comparison(cc.load([path]), "old")}
    assert table["box", "old"]["dice"] == pytest.approx(0.5) and "diff" not in table["box", "old"]
    box = table["box", "new"]
    assert (box["diff"], box["lo"], box["hi"], box["better"], box["paired"]) == pytest.approx((0.1, 0.1, 0.1, 5, 5))
    point = table["point1", "new"]
    assert point["diff"] == pytest.approx(-0.04) and point["better"] == 0 and point["lo"] < -0.04 < point["hi"]
    cc.main([str(path), "--reference", "old"])
    assert "| box | new | 5 | 0.600 | +0.100 [+0.100, +0.100] 5/5 |" in capsys.readouterr().out


def test_runs_in_separate_files_and_bad_input(tmp_path):
    a = _write(tmp_path / "a.csv", _rows("old", lambda i, pr: 0.4))
    b = _write(tmp_path / "b.csv", _rows("new", lambda i, pr: 0.6))
    table = {(r["protocol"], r["model"]): r for r in cc.comparison(cc.load([a, b]), "old")}
    assert table["point1", "new"]["diff"] == pytest.approx(0.2)
    with pytest.raises(SystemExit, match="reference model 'shipped' is not in the evaluation"):
        cc.comparison(cc.load([a, b]), "shipped")
    with pytest.raises(SystemExit, match="given twice"):
        cc.load([a, a])
    (tmp_path / "old").mkdir(), (tmp_path / "new").mkdir()
    old = _write(tmp_path / "old" / "slices.csv", _rows("synthfm-lite", lambda i, pr: 0.4))
    new = _write(tmp_path / "new" / "slices.csv", _rows("synthfm-lite", lambda i, pr: 0.45))
    table = {(r["protocol"], r["model"]): r for r in cc.comparison(cc.load([old, new]), "synthfm-lite @ old")}
    assert table["box", "synthfm-lite @ new"]["diff"] == pytest.approx(0.05)
    with pytest.raises(SystemExit, match="two files of folder old"):
        cc.load([old, _write(tmp_path / "old" / "other.csv", _rows("synthfm-lite", lambda i, pr: 0.4))])
    with pytest.raises(SystemExit, match="no such file"):
        cc.load([tmp_path / "missing.csv"])
