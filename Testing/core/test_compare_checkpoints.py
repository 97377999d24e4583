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


def test_checkpoints_are_averaged_tensor_by_tensor_and_other_models_refused(tmp_path):
    import torch

    from synthfm.models import build_model, load_decoder_checkpoint, load_model, save_decoder_checkpoint

    spec_avg = importlib.util.spec_from_file_location("average_checkpoints", BENCH / "average_checkpoints.py")
    avg = importlib.util.module_from_spec(spec_avg)
    spec_avg.loader.exec_module(avg)
    torch.manual_seed(0)
    a, b = build_model("tiny-test"), build_model("tiny-test")  # the same random weights: b's decoder moved
    with torch.no_grad():
        for p in b.mask_decoder.parameters():
            p.add_(torch.randn_like(p))
    pa = save_decoder_checkpoint(tmp_path / "a.pt", a, {"model": "tiny-test", "step": 3})
    pb = save_decoder_checkpoint(tmp_path / "b.pt", b, {"model": "tiny-test", "step": 5})
    out = tmp_path / "soup.pt"
    sys.argv = ["average_checkpoints.py", str(pa), str(pb), "--out", str(out)]
    avg.main()
    state, meta = load_decoder_checkpoint(out)
    sa, sb = load_decoder_checkpoint(pa)[0], load_decoder_checkpoint(pb)[0]
    key = next(k for k, v in sa.items() if v.is_floating_point() and not torch.equal(v, sb[k]))
    assert torch.allclose(state[key].float(), (sa[key].float() + sb[key].float()) / 2, atol=1e-3)
    assert meta["step"] == 3 and meta["averaged_from"] == [str(pa), str(pb)]
    assert load_model(str(out)).name == "tiny-test"  # a loadable decoder checkpoint
    with pytest.raises(SystemExit, match="exists|overwrite|already"):
        avg.main()  # never replaces an earlier result
    other = save_decoder_checkpoint(tmp_path / "c.pt", a, {"model": "synthfm-lite"})
    sys.argv = ["average_checkpoints.py", str(pa), str(other), "--out", str(tmp_path / "bad.pt")]
    with pytest.raises(SystemExit, match="model 'synthfm-lite' differs"):
        avg.main()
