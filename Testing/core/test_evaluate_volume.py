"""Volume evaluation: prompts on the largest slice, propagation, 3D metrics with the volume's spacing."""
import csv
import json

import numpy as np

from synthfm.cli import main
from synthfm.evaluate.cases import Case
from synthfm.evaluate.runner import evaluate
from synthfm.io import Volume, write_volume


def _ellipsoid_case(root, spacing=(0.8, 0.8, 3.0)):
    zz, yy, xx = np.mgrid[:12, :64, :64]
    truth = ((xx - 32) / 16.0) ** 2 + ((yy - 30) / 12.0) ** 2 + ((zz - 6) / 4.5) ** 2 < 1
    image = (100 + 80 * truth + np.random.default_rng(0).normal(0, 8, truth.shape)).astype(np.float32)
    write_volume(root / "img.nii.gz", Volume(image, spacing))
    write_volume(root / "lab.nii.gz", Volume(truth.astype(np.uint8) * 2, spacing))
    return Case("ellipsoid", root / "img.nii.gz", root / "lab.nii.gz"), truth


def test_volume_mode_propagates_from_the_largest_slice(tmp_path):
    case, truth = _ellipsoid_case(tmp_path)
    results = evaluate([case], ["medsam-lite", "floor-ellipse"], ["box", "clicks"], volume=True)
    assert len(results.rows) == 1  # medsam-lite | box; the rest skipped with reasons
    row = results.rows[0]
    assert row["slice"] == int(np.argmax(truth.sum(axis=(1, 2)))) and row["slices_truth"] == 9
    assert row["dice"] > 0.75 and 5 <= row["slices_kept"] <= 11  # follows the structure (small tips may stop it)
    reasons = {(s["model"], s["protocol"]): s["reason"] for s in results.skipped}
    assert "single slices" in reasons[("floor-ellipse", "box")]
    assert "box prompts only" in reasons[("medsam-lite", "clicks")]


def test_volume_mode_uses_3d_spacing_and_writes_the_report(tmp_path):
    case, truth = _ellipsoid_case(tmp_path)
    (tmp_path / "cases.csv").write_text("image,label,name\nimg.nii.gz,lab.nii.gz,ellipsoid\n")
    out = tmp_path / "out"
    assert main(["evaluate", "--pairs", str(tmp_path / "cases.csv"), "--model", "medsam-lite", "--prompt", "box",
                 "--volume", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["by_model_protocol"]) == ["medsam-lite | box"] and summary["by_model_protocol"][
        "medsam-lite | box"]["n"] == 1
    rows = list(csv.DictReader(open(out / "slices.csv")))
    assert int(rows[0]["slices_kept"]) >= 5
    # the same prediction scored with 10x the slice spacing: HD95 along z grows, so spacing reaches the metric
    (tmp_path / "wide").mkdir()
    wide, _ = _ellipsoid_case(tmp_path / "wide", spacing=(0.8, 0.8, 30.0))
    far = evaluate([wide], ["medsam-lite"], ["box"], volume=True).rows[0]
    assert far["dice"] == float(rows[0]["dice"]) and far["hd95"] >= float(rows[0]["hd95"])
    assert "propagation from one slice" in (out / "report.html").read_text()
