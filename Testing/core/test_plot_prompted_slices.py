"""benchmarks/plot_prompted_slices.py: mean propagated 3D Dice per number of prompted slices, from budget CSVs."""
import csv
import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
spec = importlib.util.spec_from_file_location("plot_prompted_slices", BENCH / "plot_prompted_slices.py")
plot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plot)


def _budget_csv(path: Path, rows: list) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, ["case", "label", "protocol", "setting", "k", "dice"])
        w.writeheader()
        for case, k, setting, value in rows:
            w.writerow({"case": case, "label": 1, "protocol": "box", "setting": setting, "k": k, "dice": value})
        w.writerow({"case": "a", "label": 1, "protocol": "point1", "setting": "propagated", "k": 1, "dice": 0.0})


def test_joined_csvs_give_one_curve_and_the_every_slice_level(tmp_path, capsys):
    _budget_csv(tmp_path / "k13.csv", [("a", 1, "propagated", 0.4), ("b", 1, "propagated", 0.6),
                                       ("a", 3, "propagated", 0.7), ("b", 3, "propagated", 0.9),
                                       ("a", 1, "perfect stop", 0.99), ("a", "", "every slice prompted", 0.8),
                                       ("b", "", "every slice prompted", 1.0)])
    _budget_csv(tmp_path / "k5.csv", [("a", 5, "propagated", 0.75), ("b", 5, "propagated", 0.95),
                                      ("a", 8, "propagated", 0.8)])  # K = 8 misses structure b: left out
    out = tmp_path / "k.png"
    assert plot.main([f"{tmp_path / 'k13.csv'},{tmp_path / 'k5.csv'}=table", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert capsys.readouterr().out.strip() == ("table (box): K = 1: 0.500, K = 3: 0.800, K = 5: 0.850; "
                                               "every slice prompted 0.900")


def test_a_missing_csv_or_prompt_is_named(tmp_path):
    with pytest.raises(SystemExit, match="nope.csv not found"):
        plot.main([str(tmp_path / "nope.csv"), "--out", str(tmp_path / "x.png")])
    _budget_csv(tmp_path / "b.csv", [("a", 1, "propagated", 0.5)])
    with pytest.raises(SystemExit, match="no 'box-jitter' row"):
        plot.main([str(tmp_path / "b.csv"), "--prompt", "box-jitter", "--out", str(tmp_path / "x.png")])
    assert not (tmp_path / "x.png").exists()
