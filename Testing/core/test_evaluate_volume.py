"""Volume evaluation: prompts on the largest slice, propagation, 3D metrics with the volume's spacing."""
import csv
import json

import numpy as np
import pytest

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
    assert 0 <= row["slices_outside"] <= max(0, row["slices_kept"] - 5)
    z = np.flatnonzero(truth.any(axis=(1, 2)))
    assert row["truth_range"] == f"{z[0]}..{z[-1]}"
    first, last = map(int, row["kept_range"].split(".."))
    assert last - first + 1 >= row["slices_kept"] and first <= row["slice"] <= last
    # each direction that ended inside the volume names the slice it stopped before and why
    ends = [int(part.split(":")[0].removeprefix("before ")) for part in row["stops"].split("; ") if part]
    assert all(e in (first - 1, last + 1) for e in ends) and (first == 0 or first - 1 in ends)
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
    assert int(rows[0]["slices_kept"]) >= 5 and 0 <= int(rows[0]["slices_outside"]) <= int(rows[0]["slices_kept"])
    assert summary["by_model_protocol"]["medsam-lite | box"]["worst_leak"]["case"] == "ellipsoid"
    # the same prediction scored with 10x the slice spacing: HD95 along z grows, so spacing reaches the metric
    (tmp_path / "wide").mkdir()
    wide, _ = _ellipsoid_case(tmp_path / "wide", spacing=(0.8, 0.8, 30.0))
    far = evaluate([wide], ["medsam-lite"], ["box"], volume=True).rows[0]
    assert far["dice"] == float(rows[0]["dice"]) and far["hd95"] >= float(rows[0]["hd95"])
    assert "propagation from one slice" in (out / "report.html").read_text()
    assert "<img src=extents.png" in (out / "report.html").read_text() and (out / "extents.png").stat().st_size > 1000


def test_extent_plot_draws_volume_rows_only(tmp_path):
    """The picture of kept slices against each structure's extent needs volume rows (a truth range); a structure
    where nothing was kept and one that leaked are drawn too."""
    from synthfm.evaluate.report import extent_plot

    rows = [{"model": "m", "protocol": "box", "case": "a", "label": 1, "dice": 0.8, "truth_range": "3..12",
             "kept_range": "1..12", "prompted_slices": "7"},
            {"model": "m", "protocol": "box", "case": "b", "label": 2, "dice": 0.0, "truth_range": "0..4",
             "kept_range": "", "prompted_slices": "2"}]
    assert extent_plot(rows, tmp_path / "e.png") and (tmp_path / "e.png").stat().st_size > 1000
    assert not extent_plot([{"model": "m", "protocol": "box", "case": "a", "label": 1, "dice": 0.8}],
                           tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_prompt_slices_are_the_largest_and_near_both_ends():
    from synthfm.evaluate.protocols import prompt_slices

    truth = np.zeros((30, 8, 8), bool)
    truth[5:26, 2:6, 2:6] = True  # 21 slices, 5..25
    truth[9, :, :] = True  # the largest
    assert prompt_slices(truth, 1) == [9]
    assert prompt_slices(truth, 3) == [7, 9, 23]  # 10% and 90% of the extent
    assert prompt_slices(truth, 2) == [9, 23]  # the end farther from the largest slice
    assert prompt_slices(np.moveaxis(truth, 0, 2), 3, axis=2) == [7, 9, 23]
    with pytest.raises(ValueError, match="at least 1"):
        prompt_slices(truth, 0)


def _tube_case(root, axis):
    """A bright tube running along array ``axis`` of an anisotropic volume (9 x 20 x 24 voxels)."""
    zz, yy, xx = np.mgrid[:9, :20, :24]
    centre = {0: ((yy - 10) / 5.0) ** 2 + ((xx - 12) / 6.0) ** 2,
              1: ((zz - 4) / 2.6) ** 2 + ((xx - 12) / 6.0) ** 2,
              2: ((zz - 4) / 2.6) ** 2 + ((yy - 10) / 6.0) ** 2}[axis]
    along = (zz, yy, xx)[axis]
    truth = (centre < 1) & (along >= 0.2 * truth_len(axis)) & (along < 0.8 * truth_len(axis))
    image = (100 + 80 * truth + np.random.default_rng(1).normal(0, 6, truth.shape)).astype(np.float32)
    spacing = (0.7, 0.9, 2.5)
    write_volume(root / "img.nii.gz", Volume(image, spacing))
    write_volume(root / "lab.nii.gz", Volume(truth.astype(np.uint8), spacing))
    return Case(f"tube{axis}", root / "img.nii.gz", root / "lab.nii.gz"), truth


def truth_len(axis):
    return (9, 20, 24)[axis]


@pytest.mark.parametrize("axis", [1, 2])
def test_volume_mode_along_coronal_and_sagittal_axes(tmp_path, axis):
    case, truth = _tube_case(tmp_path, axis)
    one = evaluate([case], ["medsam-lite"], ["box"], volume=True, axis=axis).rows[0]
    present = np.nonzero(truth.any(axis=tuple(a for a in range(3) if a != axis)))[0]
    assert one["axis"] == axis and one["slices_truth"] == len(present)
    assert one["slice"] in present and one["prompted_slices"] == str(one["slice"])
    three = evaluate([case], ["medsam-lite"], ["box"], volume=True, axis=axis, volume_slices=3).rows[0]
    assert len(three["prompted_slices"].split()) == 3
    # on these tiny slices (9 x 20 sagittal) one tight box can stop medsam-lite early (coronal 0.97, sagittal 0.17);
    # three prompted slices hold the structure along either axis
    assert one["dice"] > 0.1 and three["dice"] > 0.75, (one["dice"], three["dice"])  # (coronal 0.81, sagittal 0.91)


def test_volume_slices_need_volume_mode(tmp_path, capsys):
    case, _ = _ellipsoid_case(tmp_path)
    with pytest.raises(ValueError, match="need volume mode"):
        evaluate([case], ["floor-ellipse"], ["box"], volume_slices=3)
    (tmp_path / "cases.csv").write_text("image,label,name\nimg.nii.gz,lab.nii.gz,ellipsoid\n")
    out = tmp_path / "out"
    assert main(["evaluate", "--pairs", str(tmp_path / "cases.csv"), "--model", "medsam-lite", "--prompt", "box",
                 "--volume", "--volume-slices", "3", "--axis", "0", "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "slices.csv")))
    assert rows[0]["axis"] == "0" and len(rows[0]["prompted_slices"].split()) == 3
    assert "propagation from 3 prompted slices (axial)" in (out / "report.html").read_text()


def test_volume_summary_reports_the_worst_leak_past_the_structure():
    from synthfm.evaluate.runner import Results, summarize

    base = {"model": "m", "protocol": "box", "label": 1, "dice": 0.5, "iou": 0.3, "nsd": 0.4, "hd95": 3.0}
    rows = [{**base, "case": "short", "slices_outside": 0, "slices_kept": 5, "slices_truth": 6},
            {**base, "case": "leaky", "slices_outside": 150, "slices_kept": 182, "slices_truth": 30}]
    summary = summarize(Results(rows=rows))
    assert summary["by_model_protocol"]["m | box"]["worst_leak"] == {
        "case": "leaky", "label": 1, "slices_outside": 150, "slices_kept": 182, "slices_truth": 30}
    slices_only = summarize(Results(rows=[{**base, "case": "a"}]))  # 2D rows: no leak to report
    assert "worst_leak" not in slices_only["by_model_protocol"]["m | box"]


def test_propagation_settings_override_the_models_defaults(tmp_path, capsys):
    case, _ = _ellipsoid_case(tmp_path)
    (tmp_path / "cases.csv").write_text("image,label,name\nimg.nii.gz,lab.nii.gz,ellipsoid\n")
    args = ["evaluate", "--pairs", str(tmp_path / "cases.csv"), "--model", "medsam-lite", "--prompt", "box"]
    out = tmp_path / "out"
    assert main(args + ["--volume", "--propagation", "max_slices=1", "--out", str(out)]) == 0
    row = list(csv.DictReader(open(out / "slices.csv")))[0]
    assert row["slices_kept"] == "3"  # the prompted slice and one slice each way
    assert "propagation max_slices=1" in (out / "report.html").read_text()
    for bad, message in ((["--volume", "--propagation", "max_slice=1"], "not KEY=VALUE with KEY one of"),
                         (["--propagation", "max_slices=1"], "applies to volume mode: add --volume")):
        assert main(args + bad + ["--out", str(tmp_path / "bad")]) != 0
        assert message in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_click_protocols_correct_each_prompted_slice_before_propagating(tmp_path, monkeypatch):
    """Volume mode with ``box-clicks``: on each prompted slice, correction clicks on the preview's errors there, then
    propagation from the box with those clicks; with ``clicks=1`` (no correction) it is the ``box`` row exactly."""
    from synthfm.segment import VolumeSegmenter

    case, truth = _ellipsoid_case(tmp_path)
    seen, original = [], VolumeSegmenter.propagate_slices

    def spy(self, prompted, *args, **kwargs):
        seen.append({i: (p.box is not None, p.labels.tolist(), p.points.tolist()) for i, p in prompted.items()})
        return original(self, prompted, *args, **kwargs)

    monkeypatch.setattr(VolumeSegmenter, "propagate_slices", spy)
    none = evaluate([case], ["synthfm-lite"], ["box", "box-clicks"], volume=True, clicks=1).rows
    assert none[1]["clicks_given"] == 0 and none[1]["dice"] == none[0]["dice"] and seen[0] == seen[1]
    seen.clear()
    rows = evaluate([case], ["synthfm-lite"], ["box-clicks"], volume=True, volume_slices=3, clicks=3).rows
    (prompted,) = seen
    assert len(prompted) == 3 and all(box for box, _, _ in prompted.values())
    placed = sum(len(labels) for _, labels, _ in prompted.values())
    assert rows[0]["clicks_given"] == placed and 0 < placed <= 2 * 3
    for i, (_, labels, points) in prompted.items():  # each click lies where the structure is (1) or is not (0)
        assert all(truth[i, int(round(y)), int(round(x))] == bool(lab) for lab, (x, y) in zip(labels, points))


def test_a_click_that_empties_a_prompted_slice_is_undone():
    """Propagate refuses an empty prompted slice, so the simulated user undoes a click that empties the preview and
    stops clicking there; clicks that keep a preview are kept."""
    from types import SimpleNamespace

    from synthfm.evaluate.protocols import make_prompts
    from synthfm.evaluate.runner import corrected_prompts

    truth = np.zeros((2, 20, 20), bool)
    truth[:, 5:15, 5:15] = True
    half = truth[0].copy()
    half[:, 10:] = False  # the box alone misses the right half: the first click is a positive there

    class Segmenter:
        def __init__(self, empty_after: int) -> None:
            self.empty_after = empty_after

        def segment_slice(self, index, prompts):
            clicks = len(prompts.labels)
            mask = np.zeros((20, 20), bool) if clicks >= self.empty_after else (truth[0] if clicks else half)
            return SimpleNamespace(mask=mask)

    box = {0: make_prompts("box", truth[0], np.random.default_rng(0))}
    undone, given = corrected_prompts(Segmenter(empty_after=1), box, truth, 0, clicks=5)
    assert given == 0 and len(undone[0].labels) == 0 and undone[0].box.tolist() == box[0].box.tolist()
    kept, given = corrected_prompts(Segmenter(empty_after=9), box, truth, 0, clicks=5)
    assert given == 1 and kept[0].labels.tolist() == [1]  # one click made the preview perfect: no more clicks
    _, given = corrected_prompts(Segmenter(empty_after=9), box, truth, 0, clicks=5, smallest=101)  # 100 px: too few
    assert given == 0
