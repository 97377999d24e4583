"""The segment and demo commands end to end: geometry kept, prompts in any coordinates, clear errors."""
import numpy as np
import pytest

from synthfm.cli import main
from synthfm.io import Volume, read_volume, write_volume


@pytest.fixture(scope="module")
def oblique_volume(tmp_path_factory):
    """A bright ellipsoid in an anisotropic, rotated volume."""
    zz, yy, xx = np.mgrid[:8, :48, :56]
    truth = ((xx - 28) / 14.0) ** 2 + ((yy - 24) / 10.0) ** 2 + ((zz - 4) / 3.2) ** 2 < 1
    image = (100 + 80 * truth + np.random.default_rng(0).normal(0, 6, truth.shape)).astype(np.float32)
    t = 0.4
    direction = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    vol = Volume(image, (0.8, 0.9, 3.0), (10.0, -20.0, 5.0), direction)
    path = write_volume(tmp_path_factory.mktemp("v") / "img.nrrd", vol)
    return path, vol, truth


def test_segment_writes_labels_with_input_geometry(oblique_volume, tmp_path):
    path, vol, truth = oblique_volume
    ys, xs = np.nonzero(truth[4])
    out = tmp_path / "label.nii.gz"
    assert main(["segment", "--image", str(path), "--model", "medsam-lite", "--out", str(out),
                 "--box", f"{xs.min()},{ys.min()},4,{xs.max()},{ys.max()},4", "--overlay", str(tmp_path / "o.png")]) == 0
    label = read_volume(out)
    np.testing.assert_allclose(label.spacing, vol.spacing, rtol=1e-6)
    np.testing.assert_allclose(label.origin, vol.origin, atol=1e-5)
    np.testing.assert_allclose(label.direction, vol.direction, atol=1e-6)
    mask = label.array[4] > 0  # the prompted slice (box-only LiteMedSAM tends to run past the ends)
    assert 2 * (mask & truth[4]).sum() / (mask.sum() + truth[4].sum()) > 0.85
    assert (label.array > 0).any(axis=(1, 2)).sum() >= 3  # propagated to neighbours
    from PIL import Image

    assert Image.open(tmp_path / "o.png").size == (112, 108)  # 56 x 48 pixels of 0.8 x 0.9 mm, shown as 2x square mm


def test_prompts_in_ras_land_on_the_same_voxels(oblique_volume, tmp_path):
    path, vol, truth = oblique_volume
    ys, xs = np.nonzero(truth[4])
    corners = [vol.index_to_ras([xs.min(), ys.min(), 4]), vol.index_to_ras([xs.max(), ys.max(), 4])]
    box = ",".join(f"{v:.6f}" for v in np.concatenate(corners))
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    assert main(["segment", "--image", str(path), "--model", "medsam-lite", "--no-propagate", "--out", str(a),
                 "--box", f"{xs.min()},{ys.min()},4,{xs.max()},{ys.max()},4"]) == 0
    assert main(["segment", "--image", str(path), "--model", "medsam-lite", "--no-propagate", "--out", str(b),
                 "--coords", "ras", f"--box={box}"]) == 0
    assert np.array_equal(read_volume(a).array, read_volume(b).array)


def test_segment_errors(oblique_volume, tmp_path, capsys):
    path, _, _ = oblique_volume
    flat = write_volume(tmp_path / "flat.nii.gz", Volume(np.zeros((1, 10, 10), np.float32)))
    assert main(["segment", "--image", str(flat), "--axis", "1", "--point", "5,0,5",
                 "--out", str(tmp_path / "x.nii.gz")]) == 2
    assert "is a 2D image: its one slice lies along axis 0, so --axis 1" in capsys.readouterr().err
    assert main(["segment", "--image", str(path), "--model", "medsam-lite", "--point", "20,20,4",
                 "--out", str(tmp_path / "v.png")]) == 2
    assert "a PNG holds one slice and" in capsys.readouterr().err and not (tmp_path / "v.png").exists()
    assert main(["segment", "--image", str(path), "--model", "medsam-lite", "--point", "500,5,4",
                 "--out", str(tmp_path / "y.nii.gz")]) == 2
    assert "outside the 56x48x8 volume" in capsys.readouterr().err
    assert main(["segment", "--image", str(path), "--out", str(tmp_path / "z.nii.gz")]) == 2
    assert "no prompts" in capsys.readouterr().err
    assert main(["segment", "--image", str(tmp_path / "missing.nii.gz"), "--point", "1,1,1",
                 "--out", str(tmp_path / "w.nii.gz")]) == 2


def test_a_2d_image_is_segmented_on_its_one_slice_without_asking(tmp_path, capsys):
    """A PNG frame (e.g. an ultrasound screenshot) needs no --no-propagate: its one slice is segmented, with a note."""
    from PIL import Image

    yy, xx = np.mgrid[:64, :80]
    truth = ((xx - 40) / 14.0) ** 2 + ((yy - 30) / 10.0) ** 2 < 1
    rng = np.random.default_rng(3)
    frame = np.clip(60 + 120 * truth + rng.normal(0, 8, truth.shape), 0, 255).astype(np.uint8)
    png = tmp_path / "frame.png"
    Image.fromarray(frame).save(png)
    out = tmp_path / "label.nii.gz"
    assert main(["segment", "--image", str(png), "--model", "medsam-lite", "--box", "25,19,0,55,41,0",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "frame.png is a 2D image: segmenting its one slice (nothing to propagate)" in text
    assert " pixels of label 1 (" in text and " mm2 at the file's pixel size, 1 x 1 mm)" in text  # an area
    assert " mL" not in text
    mask = read_volume(out).array[0] > 0
    assert mask.shape == truth.shape and 2 * (mask & truth).sum() / (mask.sum() + truth.sum()) > 0.8
    png_mask = tmp_path / "frame_mask.png"  # a mask image beside the frame, as 2D datasets keep them
    assert main(["segment", "--image", str(png), "--model", "medsam-lite", "--box", "25,19,0,55,41,0",
                 "--label", "255", "--out", str(png_mask)]) == 0
    assert np.array_equal(np.asarray(Image.open(png_mask)), np.where(mask, 255, 0).astype(np.uint8))


def test_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", "--model", "medsam-lite", "--size", "64", "--depth", "8", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "Dice" in text
    volume_dice = float(text.split("Dice ")[1].split()[0])
    slice_dice = float(text.split(" on the prompted slice")[0].split()[-1])
    # the prompted slice is what the box pins down: medsam-lite gave 0.79 on generator v3's 64 px demo volume
    # (seed 3, lobulated; > 0.8 on v2's tube), a broken prompt mapping gives < 0.3
    assert 0 <= volume_dice <= 1 and slice_dice > 0.7
    for name in ("image.nii.gz", "truth.nii.gz", "label.nii.gz", "overlay.png"):
        assert (tmp_path / name).exists(), name


def test_propagation_settings_from_the_command_line(oblique_volume, tmp_path, capsys):
    path, _, truth = oblique_volume
    ys, xs = np.nonzero(truth[4])
    box = f"{xs.min()},{ys.min()},4,{xs.max()},{ys.max()},4"
    out = tmp_path / "one.nii.gz"
    assert main(["segment", "--image", str(path), "--model", "medsam-lite", "--out", str(out), "--box", box,
                 "--propagation", "max_slices=1", "--propagation", "min_score=0"]) == 0
    assert (read_volume(out).array > 0).any(axis=(1, 2)).nonzero()[0].tolist() == [3, 4, 5]
    assert main(["segment", "--image", str(path), "--model", "medsam-lite", "--out", str(tmp_path / "x.nii.gz"),
                 "--box", box, "--propagation", "max_slice=1"]) == 2
    assert "KEY one of" in capsys.readouterr().err


@pytest.fixture(scope="module")
def sagittal_tube(tmp_path_factory):
    """A bright tube along i (x) in an anisotropic, rotated volume: sagittal slices cut across it."""
    zz, yy, xx = np.mgrid[:14, :24, :30]
    truth = (((zz - 7) / 4.0) ** 2 + ((yy - 12) / 7.0) ** 2 < 1) & (xx >= 8) & (xx <= 21)
    image = (100 + 80 * truth + np.random.default_rng(2).normal(0, 6, truth.shape)).astype(np.float32)
    t = 0.3
    direction = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    vol = Volume(image, (0.8, 1.1, 2.5), (3.0, 4.0, -5.0), direction)
    return write_volume(tmp_path_factory.mktemp("s") / "tube.nrrd", vol), vol, truth


def _sagittal_box(truth, i):
    zs, ys = np.nonzero(truth[:, :, i])
    return f"{i},{ys.min()},{zs.min()},{i},{ys.max()},{zs.max()}"


def test_boxes_on_several_sagittal_slices_fill_between_and_keep_geometry(sagittal_tube, tmp_path, capsys):
    path, vol, truth = sagittal_tube
    out = tmp_path / "label.nii.gz"
    # synthfm-lite (the default) since the slices reach the model with square millimetres (2026-12-05): on this toy's
    # 14 x 24 sagittal slices medsam-lite's box masks fell from 0.73 / 0.79 to 0.64 / 0.66 Dice and its IoU-floor stop
    # no longer ends the tube, so the test of geometry and filling would measure medsam-lite's stop rule instead
    assert main(["segment", "--image", str(path), "--axis", "2", "--out", str(out),
                 "--box", _sagittal_box(truth, 10), "--box", _sagittal_box(truth, 19)]) == 0
    assert "along axis 2, sagittal; prompted 10, 19" in capsys.readouterr().out
    label = read_volume(out)
    assert label.shape == vol.shape
    np.testing.assert_allclose(label.spacing, vol.spacing, rtol=1e-6)
    np.testing.assert_allclose(label.origin, vol.origin, atol=1e-5)
    np.testing.assert_allclose(label.direction, vol.direction, atol=1e-6)
    mask = label.array > 0
    assert mask[:, :, 10:20].any(axis=(0, 1)).all()  # every slice between the prompted ones is filled
    assert 2 * (mask & truth).sum() / (mask.sum() + truth.sum()) > 0.75  # 0.838 measured


def test_several_prompted_slices_from_a_prompts_file_and_bad_combinations(sagittal_tube, tmp_path, capsys):
    import json

    path, _, truth = sagittal_tube
    boxes = [[[int(v) for v in _sagittal_box(truth, i).split(",")[:3]],
              [int(v) for v in _sagittal_box(truth, i).split(",")[3:]]] for i in (9, 20)]
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"boxes": boxes, "axis": 2}))
    out = tmp_path / "l.nii.gz"
    assert main(["segment", "--image", str(path), "--model", "medsam-lite", "--prompts", str(prompts),
                 "--no-propagate", "--out", str(out)]) == 0
    assert (read_volume(out).array > 0).any(axis=(0, 1)).nonzero()[0].tolist() == [9, 20]  # only the prompted slices
    assert main(["segment", "--image", str(path), "--prompts", str(prompts), "--axis", "0",
                 "--out", str(tmp_path / "x.nii.gz")]) == 2
    assert "disagree: prompts on different axes cannot be combined" in capsys.readouterr().err
    assert main(["segment", "--image", str(path), "--axis", "2", "--box", "9,2,3,12,20,10",
                 "--out", str(tmp_path / "y.nii.gz")]) == 2
    assert "corners on slices 9 and 12 along axis 2 (sagittal); draw each box on one slice" in capsys.readouterr().err
    assert main(["segment", "--image", str(path), "--axis", "2", "--box", "9,2,3,9,20,10", "--box", "9,4,3,9,20,10",
                 "--out", str(tmp_path / "z.nii.gz")]) == 2
    assert "two boxes on slice 9" in capsys.readouterr().err
    assert main(["segment", "--image", str(path), "--model", "medsam-lite", "--axis", "2", "--box", "9,2,3,9,20,10",
                 "--neg-point", "15,5,5", "--out", str(tmp_path / "w.nii.gz")]) == 2
    assert "prompts on slice 15 along axis 2 (sagittal): only negative points" in capsys.readouterr().err


def test_mirror_averaging_from_the_command_line(oblique_volume, tmp_path, monkeypatch):
    """--mirror auto follows the model (synthfm-lite: on, medsam-lite: off); on/off override it."""
    from synthfm.segment import propagate

    seen, original = [], propagate.VolumeSegmenter.__init__

    def spy(self, predictor, *args, **kwargs):
        seen.append(predictor.mirrors)
        original(self, predictor, *args, **kwargs)

    monkeypatch.setattr(propagate.VolumeSegmenter, "__init__", spy)
    path, vol, truth = oblique_volume
    ys, xs = np.nonzero(truth[4])
    box = f"{xs.min()},{ys.min()},4,{xs.max()},{ys.max()},4"
    for i, (model, flag) in enumerate((("synthfm-lite", "auto"), ("synthfm-lite", "off"), ("medsam-lite", "auto"),
                                       ("medsam-lite", "on"))):
        assert main(["segment", "--image", str(path), "--model", model, "--no-propagate", "--mirror", flag,
                     "--box", box, "--out", str(tmp_path / f"l{i}.nii.gz")]) == 0
    assert seen == [True, False, False, True]
    for i in range(4):
        mask = read_volume(tmp_path / f"l{i}.nii.gz").array[4] > 0
        assert 2 * (mask & truth[4]).sum() / (mask.sum() + truth[4].sum()) > 0.8


def test_choosing_another_candidate_from_the_command_line(oblique_volume, tmp_path, capsys):
    """--candidate keeps the decoder's k-th candidate on a prompted slice (one point: three candidates), says which
    one each prompted slice kept, starts propagation from it, and refuses choices it cannot honour."""
    path, _, truth = oblique_volume
    base = ["segment", "--image", str(path), "--model", "synthfm-lite", "--mirror", "off", "--point", "28,24,4"]

    def run(name, *extra):
        code = main([*base, "--out", str(tmp_path / name), *extra])
        return code, capsys.readouterr()

    code, out = run("pick.nii.gz", "--no-propagate")
    assert code == 0
    pick = int(out.out.split("slice 4: candidate ")[1].split()[0])
    assert "(the model's pick)" in out.out and f"--candidate 4={pick}" not in out.out
    masks = {}
    for k in range(3):
        code, out = run(f"c{k}.nii.gz", "--no-propagate", "--candidate", f"4={k}")
        assert code == 0 and f"slice 4: candidate {k} of 3 (your choice)" in out.out
        masks[k] = read_volume(tmp_path / f"c{k}.nii.gz").array > 0
    assert np.array_equal(masks[pick], read_volume(tmp_path / "pick.nii.gz").array > 0)
    assert len({m.tobytes() for m in masks.values()}) > 1  # the candidates are different masks
    code, out = run("two.nii.gz", "--no-propagate", "--point", "31,25,4")  # two points: the first one's candidates
    assert code == 0 and "slice 4: candidate " in out.out and " of 3 (the model's pick)" in out.out
    other = (pick + 1) % 3
    code, out = run("prop.nii.gz", "--candidate", str(other), "--propagation", "max_slices=1")
    assert code == 0 and f"slice 4: candidate {other} of 3 (your choice)" in out.out
    assert np.array_equal(read_volume(tmp_path / "prop.nii.gz").array[4] > 0, masks[other][4])

    for extra, message in ((["--candidate", "3"], "K 0, 1 or 2"), (["--candidate", "4=x"], "K 0, 1 or 2"),
                           (["--candidate", "1", "--candidate", "2"], "keep one"),
                           (["--candidate", "6=1"], "slice 6 along axis 0, which holds no prompts")):
        code, out = run("bad.nii.gz", *extra)
        assert code == 2 and message in out.err, (extra, out.err)
    ys, xs = np.nonzero(truth[4])
    box = f"{xs.min()},{ys.min()},4,{xs.max()},{ys.max()},4"
    for flags in ([], ["--no-propagate"]):  # LiteMedSAM gives one mask for a box: nothing to choose
        code = main(["segment", "--image", str(path), "--model", "medsam-lite", "--box", box, "--candidate", "1",
                     "--out", str(tmp_path / "box.nii.gz"), *flags])
        err = capsys.readouterr().err
        assert code == 2 and "slice 4" in err and "no candidates to choose from" in err, err
    assert not (tmp_path / "bad.nii.gz").exists() and not (tmp_path / "box.nii.gz").exists()


def test_the_candidates_as_a_picture_from_the_command_line(oblique_volume, tmp_path, capsys):
    """--choices-png draws the mask each candidate gives on each prompted slice, left to right, over one region of
    the slice; prompts with one mask only are refused before anything is written."""
    from PIL import Image

    path, _, truth = oblique_volume
    base = ["segment", "--image", str(path), "--model", "synthfm-lite", "--mirror", "off", "--point", "28,24,4",
            "--no-propagate"]
    sizes = []
    for k in range(3):
        assert main([*base, "--out", str(tmp_path / f"c{k}.nii.gz"), "--candidate", f"4={k}"]) == 0
        sizes.append(int((read_volume(tmp_path / f"c{k}.nii.gz").array > 0).sum()))
    png = tmp_path / "choices.png"
    assert main([*base, "--out", str(tmp_path / "pick.nii.gz"), "--choices-png", str(png)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {png}: candidates 0, 1, 2 from left to right, one row per prompted slice (4)" in out
    picture = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert picture.shape == (160, 3 * 160 + 2 * 4, 3)
    panels = [picture[:, k * 164:k * 164 + 160] for k in range(3)]
    marked = [int(((p[..., 0] != p[..., 1]) | (p[..., 1] != p[..., 2])).sum()) for p in panels]
    assert np.argsort(marked).tolist() == np.argsort(sizes).tolist()  # each panel is its candidate's mask
    ys, xs = np.nonzero(truth[4])
    box = f"{xs.min()},{ys.min()},4,{xs.max()},{ys.max()},4"
    code = main(["segment", "--image", str(path), "--model", "medsam-lite", "--box", box, "--out",
                 str(tmp_path / "box.nii.gz"), "--choices-png", str(tmp_path / "box.png")])
    err = capsys.readouterr().err
    assert code == 2 and "--choices-png" in err and "give one mask each" in err, err
    assert not (tmp_path / "box.nii.gz").exists() and not (tmp_path / "box.png").exists()


def test_coronal_overlay_is_drawn_as_slicer_shows_the_view(tmp_path, capsys):
    """--overlay of a coronal slice: superior at the top, in square millimetres (the array's rows run upwards)."""
    truth = np.zeros((12, 40, 40), bool)
    truth[7:11, 10:30, 10:30] = True  # near the top of the volume: k grows towards superior in an LPS grid
    image = (100 + 80 * truth + np.random.default_rng(1).normal(0, 4, truth.shape)).astype(np.float32)
    path = write_volume(tmp_path / "img.nii.gz", Volume(image, (1.0, 1.0, 2.0)))
    png = tmp_path / "coronal.png"
    assert main(["segment", "--image", str(path), "--model", "medsam-lite", "--axis", "1", "--no-propagate",
                 "--box", "10,20,7,29,20,10", "--out", str(tmp_path / "l.nii.gz"), "--overlay", str(png)]) == 0
    assert "as Slicer's coronal view shows it" in capsys.readouterr().out
    from PIL import Image

    picture = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert picture.shape[:2] == (48, 80)  # 12 slices of 2 mm over 40 columns of 1 mm, twice enlarged
    rows = np.nonzero((picture[..., 0] > 200) & (picture[..., 2] < 60))[0]  # the yellow outline
    assert len(rows) and rows.max() < 24  # in the upper half; the array's order would put it in the lower half


def test_points_alone_on_a_thin_strip_get_a_warning(tmp_path, capsys):
    """A coronal slice of a short volume (6 slices of 2 mm across 200 mm) is a strip where one point took whole
    bands of tissue on the real sets: points alone there are warned about, a box is not, nor a square slice."""
    from synthfm.segment import Prompts
    from synthfm.segment.cli import thin_strip_warning

    point, box = Prompts.make([(100, 3)]), Prompts.make(box=(90, 1, 110, 4))
    assert "12 x 200 mm strip" in thin_strip_warning(20, (6, 200), (2.0, 1.0), point, "coronal")
    assert thin_strip_warning(20, (6, 200), (2.0, 1.0), box, "coronal") is None
    assert thin_strip_warning(3, (200, 200), (1.0, 1.0), point, "axial") is None
    truth = np.zeros((6, 40, 200), bool)
    truth[1:5, 15:25, 80:120] = True
    image = (100 + 80 * truth + np.random.default_rng(2).normal(0, 4, truth.shape)).astype(np.float32)
    path = write_volume(tmp_path / "short.nii.gz", Volume(image, (1.0, 1.0, 2.0)))
    assert main(["segment", "--image", str(path), "--axis", "1", "--point", "100,20,3", "--no-propagate",
                 "--out", str(tmp_path / "l.nii.gz")]) == 0
    assert "warning: slice 20 (coronal) is a 12 x 200 mm strip" in capsys.readouterr().out


def test_the_command_line_bar_starts_again_for_the_slices_after_the_adaptation_steps(capsys):
    """A propagation reports its adaptation steps, then its slices, through one callback: the slices get a bar of
    their own instead of updates to the finished (closed, no longer drawn) bar of the steps."""
    from synthfm.segment.adapt import PROGRESS_MESSAGE
    from synthfm.segment.propagate import propagation_bar

    progress = propagation_bar()
    for step in (1, 2):
        progress(step, 2, PROGRESS_MESSAGE)
    steps = capsys.readouterr().err
    for done in (1, 2, 3):
        progress(done, 3, f"slice {done}")
    slices = capsys.readouterr().err
    assert "2/2" in steps and "adapting the decoder" in steps and "step/s" in steps and "slice/s" not in steps
    assert "3/3" in slices and "slice 3" in slices and "slice/s" in slices and "step/s" not in slices
