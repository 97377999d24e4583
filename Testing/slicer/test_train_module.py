"""SynthFMTrain logic through the Slicer stand-in: preview geometry, a short real training in the
worker thread with live chart rows, cancel + resume, and registration the effect can load."""
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import vtk

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "SynthFMTrain"))

import slicer  # noqa: E402
from SynthFMTrainLib.logic import SynthFMTrainLogic  # noqa: E402
from synthfm.models import available_models, load_model  # noqa: E402


def _wait(logic, job, table=None, timeout=240):
    deadline = time.monotonic() + timeout
    while job.running and time.monotonic() < deadline:
        job.poll()
        if table is not None:
            logic.update_chart(table, job.history)
        time.sleep(0.05)
    job.poll()
    assert not job.running, "training did not finish in time"


def test_preview_puts_volume_and_mask_with_spacing():
    vol, seg = SynthFMTrainLogic().preview("ct", seed=3, overrides={"size": 64})
    mat = vtk.vtkMatrix4x4()
    vol.GetIJKToRASMatrix(mat)
    m = np.array([[mat.GetElement(r, c) for c in range(4)] for r in range(4)])
    arr = slicer.util.arrayFromVolume(vol)
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(seg, "target")
    assert arr.shape == mask.shape and mask.any() and 0 < mask.mean() < 1
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    from synthfm.generate import GeneratorConfig, SyntheticGenerator
    ref = SyntheticGenerator(GeneratorConfig.from_preset("ct", size=64), 3).sample_3d(0)
    np.testing.assert_allclose(spacing, ref.spacing, rtol=1e-6)
    np.testing.assert_allclose(arr, ref.image)
    assert m[0, 0] < 0 and m[1, 1] < 0  # LPS volume seen in RAS


def test_train_cancel_resume_register(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHFM_MODELS", str(tmp_path / "models"))
    logic = SynthFMTrainLogic()
    table, chart = logic.create_chart()
    cfg = logic.train_config(tmp_path / "run", model="tiny-test", samples=8, steps=6, batch_size=4,
                             val_samples=4, val_every=3, ckpt_every=1, overrides={"size": 64})
    job = logic.start(cfg)
    while job.running and len(job.history["step"]) < 2:
        job.poll()
        time.sleep(0.01)
    job.cancel.cancel()
    _wait(logic, job, table)
    assert job.cancelled and job.checkpoint is None and job.error is None
    done = len(job.history["step"])
    assert 1 <= done < 6

    job = logic.start(logic.train_config(tmp_path / "run", model="tiny-test", samples=8, steps=6, batch_size=4,
                                         val_samples=4, val_every=3, ckpt_every=1, overrides={"size": 64}))
    _wait(logic, job)
    assert job.error is None and job.checkpoint is not None, job.error
    assert job.history["step"][0] > 1  # resumed, not restarted
    assert load_model(job.checkpoint).checkpoint_meta["step"] == 6

    logic.update_chart(table, job.history)
    assert table.GetTable().GetNumberOfColumns() == 3 and table.GetTable().GetNumberOfRows() >= 2
    assert len(chart.series_ids) == 2

    target = logic.register(job.checkpoint, "my-ct-decoder")
    assert "my-ct-decoder" in available_models()
    assert (target.parent / "my-ct-decoder.md").read_text().startswith("# my-ct-decoder")
    model = load_model("my-ct-decoder")
    assert model.checkpoint_meta["step"] == 6
    # the effect's logic picks it by name and segments a previewed volume with it
    from SynthFMSegmentLib.logic import SynthFMSegmentLogic
    effect = SynthFMSegmentLogic(model="my-ct-decoder", device="cpu")
    vol, seg = logic.preview("ct", seed=2, overrides={"size": 64})
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(seg, "target")
    k, j, i = np.argwhere(mask)[len(np.argwhere(mask)) // 2]
    mat = vtk.vtkMatrix4x4()
    vol.GetIJKToRASMatrix(mat)
    ras = np.array([[mat.GetElement(r, c) for c in range(4)] for r in range(4)]) @ [i, j, k, 1]
    pred, score = effect.predict(vol, positive_ras=[ras[:3]])
    assert effect.predictor.model.checkpoint_meta["step"] == 6
    assert pred.shape == mask.shape and np.isfinite(score)
    with pytest.raises(ValueError, match="plain file name"):
        logic.register(job.checkpoint, "../evil")


def test_bad_setting_is_named(tmp_path):
    with pytest.raises(ValueError, match="steps"):
        SynthFMTrainLogic().train_config(tmp_path, model="tiny-test", steps=0)


def _phantom_scene():
    """A volume (6 x 48 x 80, 0.8 x 0.8 x 2 mm) with a bright block drawn as segment 'organ' on slices 1-4,
    plus an empty segment 'unused'."""
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 10.0, (6, 48, 80)).astype(np.float32)
    mask = np.zeros(image.shape, np.uint8)
    for z in range(1, 5):
        mask[z, 10 + 2 * z:28 + 2 * z, 20 + 4 * z:46 + 4 * z] = 1
    image[mask > 0] += 120.0
    vol = slicer.util.addVolumeFromArray(image, np.diag([-0.8, -0.8, 2.0, 1.0]), "patient CT")
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my labels")
    organ = seg.GetSegmentation().AddEmptySegment("organ")
    seg.GetSegmentation().AddEmptySegment("unused")
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, seg, organ, vol)
    return vol, seg, image, mask


def test_fine_tune_on_scene_segmentation_and_use_in_effect(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHFM_MODELS", str(tmp_path / "models"))
    logic = SynthFMTrainLogic()
    vol, seg, image, mask = _phantom_scene()
    assert logic.segment_ids(seg) == ["organ", "unused"]
    case = logic.user_case(vol, seg, ["organ"])
    assert np.array_equal(case.image, image) and np.array_equal(case.label, mask) and case.labels == [1]
    job = logic.start(logic.train_config(tmp_path / "run", model="tiny-test", samples=8, steps=4, batch_size=4,
                                         val_samples=4, val_every=2, ckpt_every=2, overrides={"size": 64},
                                         user_data=[case], user_fraction=0.5))
    _wait(logic, job)
    assert job.error is None and job.checkpoint is not None, job.error
    meta = load_model(job.checkpoint).checkpoint_meta
    assert meta["train_config"]["user_data"][0]["name"] == "patient CT / my labels" and "val_user_point" in meta["val"]

    target = logic.register(job.checkpoint, "my-finetuned")
    assert "user's labelled volumes" in (target.parent / "my-finetuned.md").read_text()
    from SynthFMSegmentLib.logic import SynthFMSegmentLogic
    effect = SynthFMSegmentLogic(model="my-finetuned", device="cpu")
    mat = vtk.vtkMatrix4x4()
    vol.GetIJKToRASMatrix(mat)
    ras = np.array([[mat.GetElement(r, c) for c in range(4)] for r in range(4)]) @ [36, 24, 2, 1]  # inside, slice 2
    pred, score = effect.predict(vol, positive_ras=[ras[:3]])
    assert effect.predictor.model.checkpoint_meta["train_config"]["user_data"]
    assert pred.shape == mask.shape and np.isfinite(score)


def test_fine_tune_inputs_are_checked():
    logic = SynthFMTrainLogic()
    vol, seg, _, _ = _phantom_scene()
    with pytest.raises(ValueError, match="no slice contains"):
        from synthfm.train.user_data import UserSlices
        UserSlices([logic.user_case(vol, seg, ["unused"])], 64)
    with pytest.raises(ValueError, match="segment 'liver' is not in segmentation 'my labels'"):
        logic.user_case(vol, seg, ["liver"])
    empty = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "nothing")
    with pytest.raises(ValueError, match="has no segments"):
        logic.user_case(vol, empty)
    with pytest.raises(ValueError, match="choose a volume"):
        logic.user_case(None, seg)
