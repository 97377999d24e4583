"""benchmarks/bench_propagation.py: per-volume figures and the paired column against the first model."""
import csv
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
spec = importlib.util.spec_from_file_location("bench_propagation", BENCH / "bench_propagation.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_two_models_get_a_paired_column_and_every_volume_a_csv_row(tmp_path, monkeypatch, capsys):
    out = tmp_path / "volumes.csv"
    monkeypatch.setattr(sys, "argv", ["bench_propagation.py", "--models", "tiny-test", "tiny-test", "--volumes", "2",
                                      "--first", "3", "--prompted-slices", "1", "3", "--only", "default",
                                      "--prompt", "box", "--csv", str(out)])
    bench.main()
    printed = capsys.readouterr().out
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["model"], r["K"], r["volume"]) for r in rows] == [
        ("tiny-test", k, v) for _ in range(2) for k in ("1", "3") for v in ("3", "4")]
    assert all(r["setting"] == "default" and r["prompt"] == "box" and 0 <= float(r["dice"]) <= 1 for r in rows)
    lines = [line for line in printed.splitlines() if line.startswith("tiny-test") and "default" in line]
    assert len(lines) == 4
    # the second model's rows pair with the first's, volume by volume (tiny-test: random weights at each load)
    assert "vs tiny-test [95% CI], better" in printed
    assert not any("[" in line for line in lines[:2])
    for k, line in zip(("1", "3"), lines[2:]):
        dice = {(i // 4, r["volume"]): float(r["dice"])  # rows: model 0 (K 1, K 3), then model 1
                for i, r in enumerate(rows) if r["K"] == k}
        diffs = [dice[1, v] - dice[0, v] for v in ("3", "4")]
        better = sum(d > 0 for d in diffs)
        low, high = sorted(diffs)
        assert line.endswith(f"{sum(diffs) / 2:+.3f} [{low:+.3f}, {high:+.3f}] {better}/2"), line


def test_one_model_pairs_each_setting_with_the_first_setting_of_its_k(tmp_path, monkeypatch, capsys):
    out = tmp_path / "volumes.csv"
    monkeypatch.setattr(sys, "argv", ["bench_propagation.py", "--models", "tiny-test", "--volumes", "2",
                                      "--prompted-slices", "1", "--only", "default", "default, encode every 1",
                                      "--prompt", "box", "--csv", str(out)])
    bench.main()
    printed = capsys.readouterr().out
    with open(out, newline="") as handle:
        dice = {(r["setting"], r["volume"]): float(r["dice"]) for r in csv.DictReader(handle)}
    assert "vs the K's first setting [95% CI], better" in printed
    lines = [line for line in printed.splitlines() if line.startswith("tiny-test ")]
    assert [("encode every 1" in line, "[" in line) for line in lines] == [(False, False), (True, True)]
    diffs = sorted(dice["default, encode every 1", v] - dice["default", v] for v in ("0", "1"))
    assert lines[1].endswith(f"{sum(diffs) / 2:+.3f} [{diffs[0]:+.3f}, {diffs[1]:+.3f}] {sum(d > 0 for d in diffs)}/2")


def test_other_targets_end_inside_the_volume_and_are_neither_tiny_nor_most_of_the_slice():
    labels = np.zeros((10, 20, 20), np.int32)
    labels[:, :18, :18] = 1  # most of every slice (a body)
    labels[2:6, 2:6, 2:6] = 2  # the generator's target
    labels[1:5, 10:14, 10:14] = 3  # 4% of the slice on 4 of 10 slices: measured
    labels[0:10, 15:17, 2:6] = 4  # on every slice: never ends inside the volume
    labels[3:5, 8, 8] = 5  # one pixel: tiny
    sample = SimpleNamespace(labels=labels, target_label=2, mask=labels == 2)
    assert [v for v, _ in bench.volume_targets(sample, "target")] == [2]
    found = bench.volume_targets(sample, "all")
    assert [v for v, _ in found] == [2, 3]
    assert found[0][1] is sample.mask and np.array_equal(found[1][1], labels == 3)


def test_all_targets_are_rows_of_their_own_and_pair_by_volume(tmp_path, monkeypatch, capsys):
    out = tmp_path / "volumes.csv"
    monkeypatch.setattr(sys, "argv", ["bench_propagation.py", "--models", "tiny-test", "tiny-test", "--volumes", "2",
                                      "--prompted-slices", "1", "--only", "default", "--prompt", "box",
                                      "--targets", "all", "--csv", str(out)])
    bench.main()
    printed = capsys.readouterr().out
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    half = len(rows) // 2
    assert len(rows) > 4 and [r["volume"] for r in rows[:half]] == [r["volume"] for r in rows[half:]]
    assert {r["volume"] for r in rows} == {"0", "1"}
    assert f"{half} targets" in printed
    per_volume = [[np.mean([float(r["dice"]) for r in part if r["volume"] == v]) for v in ("0", "1")]
                  for part in (rows[:half], rows[half:])]
    diffs = sorted(b - a for a, b in zip(*per_volume))
    line = [line for line in printed.splitlines() if line.startswith("tiny-test ")][1]
    assert line.endswith(f"{sum(diffs) / 2:+.3f} [{diffs[0]:+.3f}, {diffs[1]:+.3f}] {sum(d > 0 for d in diffs)}/2")
