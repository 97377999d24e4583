"""SynthFMTrain through the Slicer stand-in: preview geometry, a short real training in its own process with
live chart rows, cancel + resume, registration the effect can load, and no training left running when Slicer
goes away."""
import json
import os
import subprocess
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
    assert job.process.processId() != os.getpid()  # its own process
    while job.running and len(job.history["step"]) < 2:
        job.poll()
        time.sleep(0.01)
    job.cancel()
    _wait(logic, job, table)
    assert job.cancelled and job.checkpoint is None and job.error is None, job.error
    assert "SynthFM Train panel" in job.cancel_reason
    done = len(job.history["step"])
    assert 1 <= done < 6
    assert load_model(tmp_path / "run" / "tiny-test.pt").checkpoint_meta["step"] >= done  # saved on cancel

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


def test_a_colour_volume_is_learnt_from_as_its_grey():
    """A colour (vector) volume's user case holds the grey the SynthFM effect segments (its luminance), on the grid
    of its segments."""
    from test_segment_effect import colour_volume_node

    grey = np.zeros((3, 20, 24), np.float32)
    grey[1, 5:12, 6:15] = 150.0
    rgb = np.stack([grey * 0.5, grey, np.zeros_like(grey)], -1).astype(np.uint8)  # red and green differ inside
    vol, _ = colour_volume_node(rgb)
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "labels")
    organ = seg.GetSegmentation().AddEmptySegment("organ")
    slicer.util.updateSegmentBinaryLabelmapFromArray((grey > 0).astype(np.uint8), seg, organ, vol)
    case = SynthFMTrainLogic().user_case(vol, seg, ["organ"])
    assert case.image.shape == grey.shape and np.allclose(case.image, grey * (0.299 * 0.5 + 0.587), atol=1e-3)
    assert np.array_equal(case.label, (grey > 0).astype(case.label.dtype))


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


def test_panel_trains_in_a_process_polled_by_its_timer_and_cleanup_stops_it(tmp_path, monkeypatch):
    """The panel as a user drives it: Train starts a process, the timer fills the chart and progress, Cancel keeps
    the checkpoint; closing Slicer (cleanup) stops a running training."""
    import SynthFMTrain

    monkeypatch.setenv("SYNTHFM_MODELS", str(tmp_path / "models"))
    monkeypatch.setattr("SynthFMSegmentLib.dependencies.missing_packages", lambda: [])
    widget = SynthFMTrain.SynthFMTrainWidget()
    widget.setup()
    widget.model.addItem("tiny-test")  # a test-only registry entry (not a trainable decoder users see)
    widget.model.setCurrentText("tiny-test")
    small = widget.logic.train_config  # the panel's settings, with a small validation set to keep the test short
    monkeypatch.setattr(widget.logic, "train_config", lambda *a, **k: small(*a, val_samples=4, batch_size=4, **k))
    widget.out.currentPath, widget.steps.value, widget.samples.value, widget.size.value = str(tmp_path / "run"), 40, 8, 64
    widget.startButton.click()
    assert widget.job is not None and widget.timer.isActive() and not widget.startButton.enabled
    deadline = time.monotonic() + 240
    while widget.job.running and len(widget.job.history["step"]) < 2 and time.monotonic() < deadline:
        widget.timer.fire()  # what the event loop does every 250 ms
        time.sleep(0.05)
    widget.timer.fire()
    assert widget.table.GetTable().GetNumberOfRows() >= 2 and widget.progress.value >= 2
    widget.cleanup()  # Slicer closes while training
    assert widget.job.process.state() == widget.job.process.NotRunning
    widget.job.poll()
    assert widget.job.cancelled and (tmp_path / "run" / "tiny-test.pt").is_file()  # the checkpoint was kept


def test_training_process_stops_when_the_slicer_that_started_it_is_gone(tmp_path):
    """A crashed Slicer runs no cleanup: the process notices its parent is gone, saves and stops."""
    from SynthFMTrainLib import train_process

    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # plays Slicer
    logic = SynthFMTrainLogic()
    cfg = logic.train_config(tmp_path / "run", model="tiny-test", samples=8, steps=100000, batch_size=4,
                             val_samples=4, val_every=1000, ckpt_every=1000, overrides={"size": 64})
    folder = tmp_path / "run" / "slicer-job"
    folder.mkdir(parents=True)
    settings = {k: v for k, v in cfg.to_dict().items() if k != "user_data"}
    (folder / train_process.JOB).write_text(json.dumps({"config": settings, "resume": True, "parent_pid": parent.pid}))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen([sys.executable, str(ROOT / "SynthFMTrain" / "SynthFMTrainLib" / "train_process.py"),
                              str(folder)], env=env)
    events, deadline = folder / train_process.EVENTS, time.monotonic() + 180
    while '"metrics"' not in (events.read_text() if events.is_file() else "") and time.monotonic() < deadline:
        time.sleep(0.1)  # training has started
    parent.kill()  # Slicer crashes: no cleanup runs
    parent.wait()
    assert child.wait(timeout=180) == 0
    last = json.loads((folder / train_process.EVENTS).read_text().splitlines()[-1])
    assert last["kind"] == "cancelled" and f"process {parent.pid}) exited" in last["reason"]
    assert load_model(tmp_path / "run" / "tiny-test.pt").checkpoint_meta["step"] > 0


def test_a_second_training_into_the_same_folder_is_refused_with_a_message(tmp_path):
    """The process holds the output folder's run lock, as `synthfm train` does."""
    from synthfm.utils.run_lock import RunLock

    logic = SynthFMTrainLogic()
    cfg = logic.train_config(tmp_path / "run", model="tiny-test", samples=8, steps=2, batch_size=4, val_samples=4,
                             overrides={"size": 64})
    with RunLock(tmp_path / "run", "synthfm train"):  # e.g. a command-line run into the same folder
        with pytest.raises(Exception, match="synthfm train"):
            logic.start(cfg)
    assert not (tmp_path / "run" / "slicer-job").exists()  # refused before anything was written
