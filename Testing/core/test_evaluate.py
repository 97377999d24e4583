"""Evaluation: metrics on hand-computed cases, prompt protocols, cases checks, report contents."""
import json
import math

import numpy as np
import pytest

from synthfm.cli import main
from synthfm.evaluate.cases import Case, load_case, read_cases_csv, read_msd_folder
from synthfm.evaluate.metrics import all_metrics
from synthfm.evaluate.protocols import make_prompts, next_click
from synthfm.io import Volume, write_volume


def test_metrics_on_hand_computed_cases():
    truth = np.zeros((20, 20), bool)
    truth[5:15, 5:15] = True  # 100 px
    pred = np.zeros_like(truth)
    pred[7:17, 5:15] = True  # shifted 2 rows: overlap 80
    m = all_metrics(pred, truth, spacing=(1.0, 1.0), tolerance_mm=1.0)
    assert m["dice"] == pytest.approx(0.8) and m["iou"] == pytest.approx(80 / 120)
    assert m["hd95"] == pytest.approx(2.0)
    anis = all_metrics(pred, truth, spacing=(0.5, 3.0), tolerance_mm=1.0)  # rows are 0.5 mm apart
    assert anis["hd95"] == pytest.approx(1.0) and anis["nsd"] == pytest.approx(1.0)
    assert all_metrics(np.zeros_like(truth), np.zeros_like(truth), (1, 1)) == {"dice": 1.0, "iou": 1.0, "hd95": 0.0,
                                                                               "nsd": 1.0}
    empty = all_metrics(np.zeros_like(truth), truth, (1, 1))
    assert empty["dice"] == 0 and math.isinf(empty["hd95"]) and empty["nsd"] == 0


def test_protocols_place_points_as_specified():
    mask = np.zeros((60, 80), bool)
    mask[20:40, 30:60] = True
    rng = np.random.default_rng(0)
    p1 = make_prompts("point1", mask, rng)
    assert p1.labels.tolist() == [1] and 29 <= p1.points[0][1] <= 30 and 39 <= p1.points[0][0] <= 50  # on the ridge
    p3 = make_prompts("point3", mask, rng)
    assert p3.labels.tolist() == [1, 1, 1] and all(mask[int(y), int(x)] for x, y in p3.points)
    pn = make_prompts("point1neg2", mask, rng)
    negs = pn.points[pn.labels == 0]
    assert len(negs) == 2 and not any(mask[int(y), int(x)] for x, y in negs)
    assert np.hypot(*(negs[0] - negs[1])) > 30  # far from each other
    assert make_prompts("box", mask, rng).box.tolist() == [30, 20, 59, 39]
    assert make_prompts("box-jitter", mask, rng).box.tolist() != [30, 20, 59, 39]
    assert make_prompts("point3", mask, np.random.default_rng(5)).points.tolist() == \
        make_prompts("point3", mask, np.random.default_rng(5)).points.tolist()
    half = mask.copy()
    half[:, 45:] = False
    click = next_click(p1, half, mask)
    assert click.labels[-1] == 1 and click.points[-1][0] >= 45
    with pytest.raises(ValueError, match="unknown prompt protocol"):
        make_prompts("scribble", mask, rng)
    boxed = make_prompts("box-clicks", mask, rng)  # a tight box first; a correction click keeps it
    assert boxed.box.tolist() == [30, 20, 59, 39] and len(boxed.labels) == 0
    wide = mask.copy()
    wide[10:20, 30:60] = True  # the answer spills above the structure: a negative click there, the box kept
    fixed = next_click(boxed, wide, mask)
    assert fixed.labels.tolist() == [0] and 10 <= fixed.points[0][1] < 20 and fixed.box.tolist() == boxed.box.tolist()


def _write_case(root, name, shape=(4, 30, 30), spacing=(1, 1, 2), label_value=3):
    img = np.random.default_rng(0).normal(100, 5, shape).astype(np.float32)
    lab = np.zeros(shape, np.uint8)
    lab[1:3, 10:20, 8:22] = label_value
    img[lab > 0] += 60
    write_volume(root / f"{name}_img.nii.gz", Volume(img, spacing))
    write_volume(root / f"{name}_lab.nii.gz", Volume(lab, spacing))


def test_case_checks_name_the_problem(tmp_path):
    _write_case(tmp_path, "a")
    write_volume(tmp_path / "b_lab.nii.gz", Volume(np.zeros((4, 30, 30), np.uint8), (1, 1, 3)))
    with pytest.raises(ValueError, match="spacing differ"):
        load_case(Case("bad", tmp_path / "a_img.nii.gz", tmp_path / "b_lab.nii.gz"))
    with pytest.raises(ValueError, match="label 7 is not in"):
        load_case(Case("a", tmp_path / "a_img.nii.gz", tmp_path / "a_lab.nii.gz", 7))
    (tmp_path / "broken.nii.gz").write_bytes(b"xx")
    with pytest.raises(ValueError, match="could not read"):
        load_case(Case("c", tmp_path / "broken.nii.gz", tmp_path / "a_lab.nii.gz"))
    (tmp_path / "cases.csv").write_text("picture,mask\nx,y\n")
    with pytest.raises(ValueError, match="'image' and 'label'"):
        read_cases_csv(tmp_path / "cases.csv")


def test_cases_sharing_files_read_them_once(tmp_path, monkeypatch):
    import synthfm.evaluate.cases as cases_module
    from synthfm.evaluate.cases import _label_values, load_cases

    _write_case(tmp_path, "a")
    reads = []
    real_read = cases_module.read_volume
    monkeypatch.setattr(cases_module, "read_volume", lambda path: reads.append(path) or real_read(path))
    img, lab = tmp_path / "a_img.nii.gz", tmp_path / "a_lab.nii.gz"
    shared = load_cases([Case("one", img, lab), Case("two", img, lab, 3), Case("all", img, lab)])
    assert len(reads) == 2  # one image, one label map
    alone = [load_case(Case("one", img, lab)), load_case(Case("two", img, lab, 3))]
    for got, want in zip(shared, alone):
        assert got.values == want.values and np.array_equal(got.image.array, want.image.array)
    for labels in (np.array([[0, 3], [7, 3]], np.uint8), np.array([-2, 0, 5], np.int16), np.array([0, 0], np.int64),
                   np.array([2 ** 40, 1], np.uint64), np.arange(6, dtype=np.int32) * 1000):
        assert _label_values(labels) == sorted(int(v) for v in np.unique(labels) if v != 0)


def test_msd_layout_is_read(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    _write_case(tmp_path, "tmp")
    (tmp_path / "tmp_img.nii.gz").rename(tmp_path / "imagesTr" / "liver_001_0000.nii.gz")
    (tmp_path / "tmp_lab.nii.gz").rename(tmp_path / "labelsTr" / "liver_001.nii.gz")
    cases = read_msd_folder(tmp_path)
    assert [c.name for c in cases] == ["liver_001"] and cases[0].image.name == "liver_001_0000.nii.gz"


def test_evaluate_command_reports_every_case(tmp_path):
    for n in ("one", "two"):
        _write_case(tmp_path, n)
    (tmp_path / "cases.csv").write_text("image,label,name\none_img.nii.gz,one_lab.nii.gz,one\n"
                                        "two_img.nii.gz,two_lab.nii.gz,two\n")
    out = tmp_path / "out"
    assert main(["evaluate", "--pairs", str(tmp_path / "cases.csv"), "--model", "floor-ellipse", "--model",
                 "floor-region-growing", "--prompt", "box", "--prompt", "point1", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert 0.5 < summary["mean_dice"] <= 1
    assert {k.split(" | ")[2] for k in summary["by_case"]} == {"one", "two"}
    assert {"floor-ellipse | box", "floor-region-growing | point1"} == set(summary["by_model_protocol"])
    assert len(summary["skipped"]) == 2 and all(s["reason"] for s in summary["skipped"])
    html = (out / "report.html").read_text()
    assert "one label 3" in html and "two label 3" in html and "data:image/png;base64" in html
    assert "extents.png" not in html and not (out / "extents.png").exists()  # slices: no extents along an axis
    assert len((out / "slices.csv").read_text().splitlines()) == 1 + 2 * 2 * 2  # 2 cases x 2 slices x 2 runs
    again = ["evaluate", "--pairs", str(tmp_path / "cases.csv"), "--model", "floor-ellipse", "--prompt", "box",
             "--out", str(out)]
    assert main(again) != 0 and len((out / "slices.csv").read_text().splitlines()) == 9  # earlier report kept
    assert main(again + ["--overwrite"]) == 0 and len((out / "slices.csv").read_text().splitlines()) == 5


def test_sdist_cases_are_written_with_their_geometry_and_labels(tmp_path):
    """CT/MR cases from the pyradiomics and totalsegmentator sdists that setup.sh fetches (docs/real_data.md)."""
    from synthfm.evaluate import realdata

    for name in realdata.SDISTS:
        try:
            realdata.sdist_archive(name)
        except FileNotFoundError as exc:
            pytest.fail(f"source distribution not fetched ({exc}); bash setup.sh downloads it from PyPI")
    rows = realdata.pyradiomics_cases(tmp_path) + realdata.totalsegmentator_cases(tmp_path)
    assert len(rows) == len(realdata.PYRADIOMICS_CASES) + len(realdata.TOTALSEG_CT) + len(realdata.TOTALSEG_MR)
    (tmp_path / "cases.csv").write_text("image,label,label_value,name\n"
                                        + "".join(",".join(map(str, r)) + "\n" for r in rows))
    expected = {  # (z, y, x) shape and (x, y, z) spacing of the shipped images
        "pyradiomics lung1 CT lung tumour": ((48, 512, 512), (0.5703125, 0.5703125, 5.0)),
        "pyradiomics lung2 CT lung tumour": ((61, 512, 512), (0.6269531, 0.6269531, 5.0)),
        "pyradiomics breast1 MR breast lesion": ((21, 120, 45), (0.664062, 0.664062, 2.1)),
        "totalseg CT liver": ((20, 512, 512), (0.9765625, 0.9765625, 2.0)),
        "totalseg MR liver": ((20, 91, 117), (3.0, 3.0, 3.0)),
    }
    for case in read_cases_csv(tmp_path / "cases.csv"):
        loaded = load_case(case)  # same grid for image and label, the label value present
        voxels = int((loaded.label.array == case.label_value).sum())
        assert voxels >= 50, case.name
        if case.name in expected:
            shape, spacing = expected[case.name]
            assert loaded.image.shape == shape and np.allclose(loaded.image.spacing, spacing, atol=1e-5), case.name
        if " CT " in case.name:
            image = loaded.image.array
            assert image.min() <= -1000 and image.max() >= 1000  # Hounsfield units: air and bone
            assert -200 < float(np.median(image[loaded.label.array == case.label_value])) < 400  # soft tissue
    ct = load_case(Case("ct", tmp_path / "totalseg_ct.nii.gz", tmp_path / "totalseg_ct_labels.nii.gz"))
    assert ct.values == sorted(realdata.TOTALSEG_CT)
    assert int((ct.label.array == 5).sum()) == 366708  # liver voxels as shipped: resampling lost none


def test_judge_set_holds_other_structures_than_the_table(tmp_path):
    """`evaluate-data --set judge`: 24 structures of the same images, none of them a case of the README table."""
    from synthfm.evaluate import realdata

    assert main(["evaluate-data", "--set", "judge", "--out", str(tmp_path / "judge")]) == 0
    judge = read_cases_csv(tmp_path / "judge" / "cases.csv")
    table_names = {f"mni152 {name}" for _, name in realdata.STRUCTURES.values()}
    table_names |= {f"totalseg {tag} {name}" for tag, classes in (("CT", realdata.TOTALSEG_CT),
                                                                  ("MR", realdata.TOTALSEG_MR))
                    for name in classes.values()}
    names = [case.name for case in judge]
    assert len(names) == 24 == len(set(names)) and not set(names) & table_names
    assert not set(realdata.JUDGE_STRUCTURES) & set(realdata.STRUCTURES)
    for case in judge:
        loaded = load_case(case)
        assert int((loaded.label.array == case.label_value).sum()) >= 50, case.name  # each structure is drawn
        if case.name.startswith("mni152"):  # the judge set's own atlas map: its 8 labels, nothing else
            assert np.unique(loaded.label.array).tolist() == list(range(9)), case.name
    import argparse

    from synthfm.evaluate import cli as evaluate_cli

    parser = argparse.ArgumentParser().add_subparsers()
    evaluate_cli.register(parser)  # the CLI lists the sets without importing realdata (it pulls torch): kept in step
    choices = next(a.choices for a in parser.choices["evaluate-data"]._actions if a.dest == "case_set")
    assert tuple(choices) == realdata.CASE_SETS
    with pytest.raises(ValueError, match="unknown case set 'other'; choose one of table, judge"):
        realdata.build_cases(tmp_path / "x", "other")


def test_iou_calibration_summary_and_reliability_plot(tmp_path):
    from synthfm.evaluate.report import reliability_plot
    from synthfm.evaluate.runner import iou_calibration

    true = np.linspace(0.1, 0.9, 20)
    ranked = [{"model": "m", "iou": t, "pred_iou": t ** 2} for t in true]  # monotone: perfect ranking
    shuffled = np.random.default_rng(0).permutation(true)
    flat = [{"model": "m", "iou": t, "pred_iou": 0.6 + 0.01 * s} for t, s in zip(true, shuffled)]  # unrelated head
    assert iou_calibration(ranked)["iou_spearman"] == pytest.approx(1.0)
    assert abs(iou_calibration(flat)["iou_spearman"]) < 0.7
    assert iou_calibration([{"model": "floor", "iou": 0.5}] * 5) == {}  # floors predict no IoU
    assert reliability_plot(ranked, tmp_path / "r.png") and (tmp_path / "r.png").stat().st_size > 1000
    assert not reliability_plot([{"model": "floor", "iou": 0.5}], tmp_path / "none.png")


def test_evaluate_mirror_setting_reaches_every_model(tmp_path, monkeypatch):
    """--mirror auto follows each model (synthfm-lite averages its mirror image, medsam-lite does not); off / on
    set it for every model, and the report's title says so."""
    from synthfm.segment import SlicePredictor

    _write_case(tmp_path, "one")
    (tmp_path / "cases.csv").write_text("image,label,name\none_img.nii.gz,one_lab.nii.gz,one\n")
    seen, original = [], SlicePredictor.predict

    def spy(self, *args, **kwargs):
        seen.append((self.model.name, self.mirrors))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SlicePredictor, "predict", spy)
    for flag, expected in (("auto", {("synthfm-lite", True), ("medsam-lite", False)}),
                           ("off", {("synthfm-lite", False), ("medsam-lite", False)}),
                           ("on", {("synthfm-lite", True), ("medsam-lite", True)})):
        seen.clear()
        out = tmp_path / f"out_{flag}"
        assert main(["evaluate", "--pairs", str(tmp_path / "cases.csv"), "--model", "synthfm-lite", "--model",
                     "medsam-lite", "--prompt", "box", "--mirror", flag, "--out", str(out)]) == 0
        assert set(seen) == expected
        assert ("mirror image" in (out / "report.html").read_text()) == (flag != "auto")


def test_choose_protocols_keep_the_best_candidate_and_count_the_presses(tmp_path):
    """``<prompt>-choose``: the prompts, then Other mask pressed until the best of the three candidates shows; the
    row is that candidate's (never worse than the model's pick, which is the plain protocol's row) with the presses
    it took; models and floors that give one mask are skipped with a reason. In volumes the prompted slice takes its
    best candidate and propagation starts from it."""
    import csv

    _write_case(tmp_path, "one")
    (tmp_path / "cases.csv").write_text("image,label,name\none_img.nii.gz,one_lab.nii.gz,one\n")
    out = tmp_path / "out"
    assert main(["evaluate", "--pairs", str(tmp_path / "cases.csv"), "--model", "synthfm-lite", "--model",
                 "medsam-lite", "--model", "floor-ellipse", "--prompt", "point1", "--prompt", "point1-choose",
                 "--prompt", "point3-choose", "--prompt", "box", "--prompt", "box-choose", "--mirror", "off",
                 "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "slices.csv").open()))
    by = {(r["model"], r["protocol"], r["slice"]): r for r in rows}
    slices = sorted({r["slice"] for r in rows})
    for model, plain, choose in (("synthfm-lite", "point1", "point1-choose"), ("synthfm-lite", "box", "box-choose")):
        for s in slices:
            pick, best = by[(model, plain, s)], by[(model, choose, s)]
            assert float(best["dice"]) >= float(pick["dice"]) - 1e-9
            assert best["presses"] in ("0", "1", "2") and pick["presses"] == ""
            assert (best["presses"] == "0") == (abs(float(best["dice"]) - float(pick["dice"])) < 1e-9)
    assert all((m, "point3-choose", s) in by for m in ("synthfm-lite",) for s in slices)  # rounds: the first point's
    skipped = {(s["model"], s["protocol"]): s["reason"] for s in json.loads((out / "summary.json").read_text())["skipped"]}
    assert "nothing to choose among" in skipped[("medsam-lite", "box-choose")]  # SAM's single mask for a box
    assert "nothing to choose among" in skipped[("floor-ellipse", "box-choose")]
    tiny = tmp_path / "tiny"  # tiny-test decodes several points at once: one mask
    assert main(["evaluate", "--pairs", str(tmp_path / "cases.csv"), "--model", "tiny-test", "--prompt", "point1-choose",
                 "--prompt", "point3-choose", "--out", str(tiny)]) == 0
    reasons = {s["protocol"]: s["reason"] for s in json.loads((tiny / "summary.json").read_text())["skipped"]}
    assert list(reasons) == ["point3-choose"] and "one mask for point3 prompts" in reasons["point3-choose"]
    vol = tmp_path / "vol"  # volumes: the best candidate on the prompted slice, then propagation from it
    assert main(["evaluate", "--pairs", str(tmp_path / "cases.csv"), "--model", "synthfm-lite", "--prompt", "point1",
                 "--prompt", "point1-choose", "--volume", "--out", str(vol)]) == 0
    rows = {r["protocol"]: r for r in csv.DictReader((vol / "slices.csv").open())}
    assert rows["point1-choose"]["presses"] in ("0", "1", "2") and rows["point1"]["presses"] == ""
    if rows["point1-choose"]["presses"] == "0":  # the model's pick was the best: the same volume
        assert rows["point1-choose"]["dice"] == rows["point1"]["dice"]
    assert not json.loads((vol / "summary.json").read_text())["skipped"]


def test_2d_image_pairs_are_evaluated_and_axis_1_is_refused(tmp_path, capsys):
    """A 2D dataset (PNG frames with 0/255 mask images, as ultrasound sets keep them) is evaluated frame by frame;
    --axis 1 on it is refused with the reason instead of failing inside the metrics."""
    from PIL import Image

    yy, xx = np.mgrid[:60, :72]
    truth = ((xx - 36) / 15.0) ** 2 + ((yy - 28) / 10.0) ** 2 < 1
    frame = np.clip(50 + 130 * truth + np.random.default_rng(4).normal(0, 10, truth.shape), 0, 255).astype(np.uint8)
    Image.fromarray(frame).save(tmp_path / "f.png")
    Image.fromarray((truth * 255).astype(np.uint8)).save(tmp_path / "f_mask.png")
    (tmp_path / "pairs.csv").write_text("image,label\nf.png,f_mask.png\n")
    base = ["evaluate", "--pairs", str(tmp_path / "pairs.csv"), "--model", "medsam-lite", "--prompt", "box"]
    assert main([*base, "--axis", "1", "--out", str(tmp_path / "a")]) == 2
    assert "case f is a 2D image: its one slice lies along axis 0, so --axis 1" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "b")]) == 0
    rows = (tmp_path / "b" / "slices.csv").read_text().splitlines()
    assert len(rows) == 2 and float(rows[1].split(",")[rows[0].split(",").index("dice")]) > 0.8


def test_box_clicks_protocol_corrects_a_box_with_clicks(tmp_path, monkeypatch):
    """``box-clicks``: a tight box, then correction clicks with the box kept; its first Dice is the box row's, and
    floors and box-only models are skipped with the reason."""
    import csv

    from synthfm.segment import SlicePredictor

    _write_case(tmp_path, "one")
    (tmp_path / "cases.csv").write_text("image,label,name\none_img.nii.gz,one_lab.nii.gz,one\n")
    calls, original = [], SlicePredictor.predict

    def spy(self, image, prompts, *args, **kwargs):
        calls.append((prompts.box is not None, prompts.labels.tolist()))
        return original(self, image, prompts, *args, **kwargs)

    monkeypatch.setattr(SlicePredictor, "predict", spy)
    out = tmp_path / "out"
    assert main(["evaluate", "--pairs", str(tmp_path / "cases.csv"), "--model", "synthfm-lite", "--model",
                 "medsam-lite", "--model", "floor-ellipse", "--prompt", "box", "--prompt", "box-clicks",
                 "--clicks", "3", "--mirror", "off", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "slices.csv").open()))
    by = {(r["model"], r["protocol"], r["slice"]): r for r in rows}
    clicked = [r for r in rows if r["protocol"] == "box-clicks"]
    assert clicked and all(r["model"] == "synthfm-lite" for r in clicked)
    for r in clicked:
        curve = json.loads(r["dice_per_click"])
        box_alone = float(by[("synthfm-lite", "box", r["slice"])]["dice"])
        assert 1 <= len(curve) <= 3 and curve[0] == pytest.approx(box_alone)
        assert curve[-1] == pytest.approx(float(r["dice"]))
    assert any(box and labels for box, labels in calls)  # a box with correction clicks reached the decoder
    report = json.loads((out / "summary.json").read_text())
    skipped = {(s["model"], s["protocol"]): s["reason"] for s in report["skipped"]}
    assert "box prompts only" in skipped[("medsam-lite", "box-clicks")]
    assert "no correction clicks" in skipped[("floor-ellipse", "box-clicks")]
    summary = json.loads((out / "summary.json").read_text())["by_model_protocol"]
    mean_curve = summary["synthfm-lite | box-clicks"]["dice_per_click"]  # slices perfect early keep their last Dice
    assert mean_curve[0] == pytest.approx(summary["synthfm-lite | box"]["dice"]) and len(mean_curve) == 3
    assert mean_curve[-1] == pytest.approx(summary["synthfm-lite | box-clicks"]["dice"])
    assert "dice_per_click" not in summary["synthfm-lite | box"]
    assert "src=clicks.png" in (out / "report.html").read_text() and (out / "clicks.png").stat().st_size > 1000
    assert main(["evaluate", "--pairs", str(tmp_path / "cases.csv"), "--model", "floor-ellipse", "--prompt", "box",
                 "--out", str(out)]) != 0  # the earlier report is kept unless --overwrite, its picture included
    assert main(["evaluate", "--pairs", str(tmp_path / "cases.csv"), "--model", "floor-ellipse", "--prompt", "box",
                 "--out", str(out), "--overwrite"]) == 0
    assert not (out / "clicks.png").exists() and "clicks.png" not in (out / "report.html").read_text()

