"""benchmarks/plot_clicks.py: click curves of several evaluation runs in one picture, with the means printed."""
import csv
import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
spec = importlib.util.spec_from_file_location("plot_clicks", BENCH / "plot_clicks.py")
plot_clicks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plot_clicks)


def _slices_csv(path: Path, curves: list) -> None:
    path.parent.mkdir(parents=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, ["case", "label", "slice", "model", "protocol", "dice", "dice_per_click"])
        w.writeheader()
        w.writerow({"case": "a", "label": 1, "slice": 0, "model": "m", "protocol": "box", "dice": 0.5,
                    "dice_per_click": ""})
        for i, curve in enumerate(curves):
            w.writerow({"case": "a", "label": 1, "slice": i, "model": "m", "protocol": "box-clicks",
                        "dice": curve[-1], "dice_per_click": str(curve)})


def test_runs_are_labelled_and_short_curves_keep_their_last_dice(tmp_path, capsys):
    _slices_csv(tmp_path / "one" / "slices.csv", [[0.5, 0.7, 0.9], [0.6, 1.0]])  # the second slice perfect early
    _slices_csv(tmp_path / "two" / "slices.csv", [[0.2, 0.4, 0.6]])
    out = tmp_path / "clicks.png"
    assert plot_clicks.main([str(tmp_path / "one" / "slices.csv") + "=table", str(tmp_path / "two" / "slices.csv"),
                             "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == ["table: m | box-clicks (n = 2): 0.550 / 0.850 / 0.950",
                       "two: m | box-clicks (n = 1): 0.200 / 0.400 / 0.600"]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 1000
    with pytest.raises(SystemExit, match="no row has a click curve"):
        _slices_csv(tmp_path / "none" / "slices.csv", [])
        plot_clicks.main([str(tmp_path / "none" / "slices.csv"), "--out", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit, match="is not a file"):
        plot_clicks.main([str(tmp_path / "missing.csv"), "--out", str(tmp_path / "x.png")])
