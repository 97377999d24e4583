"""The effect and its worker process: the GUI thread never waits for the model, and every fault (a request that
fails, an unreachable server, a wrong token, a worker that cannot start or crashes) ends in one clear message in
the effect's panel with no user segment changed.
"""
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import vtk

import qt
import slicer
from slicer import editor
from SynthFMSegmentLib.settings import PREFIX

from test_segment_effect import SliceWidget, click, display_xy, fake_worker, scene, settle  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[2]


def press_release(effect, view, xy) -> float:
    """One click through the C++ wrapper without running the timer; the seconds the GUI thread spent."""
    from test_segment_effect import Interactor

    interactor, start = Interactor(), time.perf_counter()
    interactor.xy = tuple(xy)
    effect.scriptedEffect.processInteractionEvents(interactor, vtk.vtkCommand.LeftButtonPressEvent, view)
    effect.scriptedEffect.processInteractionEvents(interactor, vtk.vtkCommand.LeftButtonReleaseEvent, view)
    return time.perf_counter() - start


def segment_of(segmentation, node):
    return slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "organ", node).copy()


def test_the_gui_thread_never_waits_for_the_model(scene, fake_worker):
    effect, wrapper, node, geometry, *_ = scene
    worker, fake, _ = fake_worker
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    click(effect, view, display_xy(view.node, geometry.index_to_ras([24, 20, 5])))  # volume sent, worker warm
    slow = fake.predict
    fake.predict = lambda *a, **k: (time.sleep(0.5), slow(*a, **k))[1]  # a model that takes half a second
    spent = press_release(effect, view, display_xy(view.node, geometry.index_to_ras([32, 20, 5]), centre=False))
    ticks = []
    while effect.workerTimer.isActive():
        start = time.perf_counter()
        effect.workerTimer.fire()
        ticks.append(time.perf_counter() - start)
        time.sleep(0.005)
    assert spent < 0.2 and max(ticks) < 0.2 and len(ticks) > 10  # the answer took >0.5 s; no step waited for it
    assert len(effect.prompts()[0]) == 2 and effect.preview[5].any()


def test_a_failed_request_says_why_and_changes_no_segment(scene, fake_worker):
    effect, wrapper, node, geometry, segmentation, truth, existing = scene
    worker, fake, _ = fake_worker
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    click(effect, view, display_xy(view.node, geometry.index_to_ras([24, 20, 5])))
    assert effect.preview is not None

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    fake.predict = broken
    click(effect, view, display_xy(view.node, geometry.index_to_ras([32, 20, 5]), centre=False))
    assert "could not predict a mask: the worker failed: RuntimeError: CUDA out of memory" in effect.workerLabel.text
    assert effect.preview is None and effect.previewNode is None  # the older prompts' preview is not left to apply
    effect.onApply()
    assert "nothing to apply yet" in editor.messages[-1]
    effect.onPropagate()
    settle(effect)
    assert "propagation failed" in effect.workerLabel.text and effect._progress is None
    assert np.array_equal(segment_of(segmentation, node), existing) and not wrapper.undo_stack


@pytest.mark.parametrize("fault", ["unreachable", "wrong token"])
def test_an_unreachable_server_or_wrong_token_is_a_message_in_the_panel(scene, fake_worker, fault):
    effect, wrapper, node, geometry, segmentation, truth, existing = scene
    from SynthFMSegmentLib.settings import Settings

    if fault == "unreachable":
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        Settings().server = f"http://127.0.0.1:{sock.getsockname()[1]}"
        sock.close()
    else:
        Settings().token = "not-the-token"
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    click(effect, view, display_xy(view.node, geometry.index_to_ras([24, 20, 5])))
    words = "cannot reach the SynthFM worker" if fault == "unreachable" else "wrong access token"
    assert "the SynthFM worker is unavailable" in effect.workerLabel.text and words in effect.workerLabel.text
    assert effect.preview is None and "Traceback" not in effect.workerLabel.text and not editor.messages
    assert np.array_equal(segment_of(segmentation, node), existing)


# ---- the local worker: a real `synthfm serve` process started by the effect ----------------------------------
@pytest.fixture()
def local_mode(monkeypatch, tmp_path):
    """Settings for a local worker with the tiny model; the process imports this checkout's synthfm."""
    from SynthFMSegmentLib.settings import Settings
    from SynthFMSegmentLib.worker_client import stop_shared_link

    monkeypatch.setattr("SynthFMSegmentLib.dependencies.missing_packages", lambda: [])
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr("SynthFMSegmentLib.worker_client.slicer_python", lambda: sys.executable)
    settings = Settings()
    settings.server, settings.model, settings.device = "", "tiny-test", "cpu"
    settings.embedding_cache = str(tmp_path / "embeddings")  # not the stand-in's default folder, shared by tests
    yield settings
    stop_shared_link()
    settings.model, settings.device = "synthfm-lite", "auto"
    for name in ("embedding_cache", "embedding_cache_gb"):  # back to the defaults
        qt.QSettings.store.pop(PREFIX + name, None)


def test_the_effect_starts_its_worker_restarts_it_after_a_crash_and_keeps_the_prompts(scene, local_mode, tmp_path):
    effect, wrapper, node, geometry, segmentation, truth, existing = scene
    from SynthFMSegmentLib.worker_client import current_link

    effect.activate()
    settle(effect, timeout=120)
    link = current_link()
    assert link.state == "ready" and not link.remote and link.local.alive()
    assert "Slices encoded in the background: 12/12" in effect.workerLabel.text
    distinct = len({truth[k].tobytes() for k in range(12)})  # embeddings are keyed by what the encoder sees
    assert len(list((tmp_path / "embeddings").rglob("*.npy"))) == distinct  # kept on disk for the next session
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    click(effect, view, display_xy(view.node, geometry.index_to_ras([24, 20, 5])))
    assert effect.preview is not None and effect.preview.shape == truth.shape
    first = link.local.process
    first.kill()  # the worker crashes
    first.wait(10)
    effect.addPoint(geometry.index_to_ras([26, 21, 5]), True)  # the next prompt finds it gone
    effect.workerTimer.fire()
    effect.workerTimer.fire()
    assert "Restarting the SynthFM worker (your prompts are kept)" in effect.workerLabel.text
    assert effect.preview is None or effect.preview.shape == truth.shape
    settle(effect, timeout=120)
    assert link.local.process is not first and link.local.alive() and link.restarts == 1
    assert len(effect.prompts()[0]) == 2 and effect.preview is not None  # the prompts' preview came back
    effect.deactivate()
    process = link.local.process
    from SynthFMSegmentLib.worker_client import stop_shared_link

    stop_shared_link()  # what Slicer's exit does (atexit); the worker also ends when its stdin closes
    assert process.wait(10) is not None


@pytest.fixture()
def worker_commands(monkeypatch):
    """The command lines of the local workers the effect starts; none is really started (each stays starting)."""
    commands = []

    class Started:  # a worker process that is starting
        stdin = None

        def poll(self):
            return None

        def terminate(self):
            pass

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr("SynthFMSegmentLib.worker_client._popen_hidden",
                        lambda argv, **kwargs: commands.append(argv) or Started())
    return commands


def test_the_embedding_cache_settings_reach_the_local_workers_command_line(scene, local_mode, tmp_path,
                                                                           worker_commands):
    """Folder and cap go to ``synthfm serve`` as options it accepts; an empty folder turns the disk cache off; the
    default folder is in Slicer's per-user cache location (not its SlicerIO folder, which Slicer prunes)."""
    from synthfm.cli import build_parser

    effect, commands = scene[0], worker_commands
    local_mode.embedding_cache, local_mode.embedding_cache_gb = str(tmp_path / "emb"), "0.5"
    effect._link()
    args = build_parser().parse_args(commands[-1][3:])  # [python, -m, synthfm.cli, serve, ...]
    assert (args.embedding_cache, args.embedding_cache_gb) == (str(tmp_path / "emb"), 0.5)
    local_mode.embedding_cache = ""  # off: a worker started again, without it
    effect._link()
    assert len(commands) == 2 and build_parser().parse_args(commands[-1][3:]).embedding_cache is None
    qt.QSettings.store.pop(PREFIX + "embedding_cache")  # never set: the default
    effect._link()
    cache = qt.QStandardPaths.writableLocation(qt.QStandardPaths.CacheLocation)
    assert build_parser().parse_args(commands[-1][3:]).embedding_cache == os.path.join(cache, "SynthFM", "embeddings")
    assert not os.path.exists(os.path.join(cache, "SynthFM"))  # nothing written by Slicer: the worker creates it


def test_an_unusable_embedding_cache_setting_is_named_in_the_panel(scene, local_mode, tmp_path):
    effect = scene[0]
    (tmp_path / "a-file").write_text("the user's file")
    local_mode.embedding_cache = str(tmp_path / "a-file")
    effect.activate()
    settle(effect, timeout=120)
    text = effect.workerLabel.text
    assert "the SynthFM worker is unavailable" in text and f"--embedding-cache {tmp_path / 'a-file'}" in text
    assert "is a file, not a folder" in text and "Traceback" not in text
    assert (tmp_path / "a-file").read_text() == "the user's file"


def test_a_worker_that_cannot_start_says_why_in_the_panel(scene, local_mode, tmp_path, monkeypatch):
    effect, wrapper, node, geometry, segmentation, truth, existing = scene
    (tmp_path / "sitecustomize.py").write_text(  # a Slicer Python without torch
        "import sys\nclass _NoTorch:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ModuleNotFoundError(\"No module named 'torch'\")\n"
        "sys.meta_path.insert(0, _NoTorch())\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(tmp_path)]))
    effect.activate()
    settle(effect, timeout=120)
    text = effect.workerLabel.text
    assert "the SynthFM worker is unavailable" in text and "torch not installed" in text and "Traceback" not in text
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    click(effect, view, display_xy(view.node, geometry.index_to_ras([24, 20, 5])))
    assert effect.preview is None and np.array_equal(segment_of(segmentation, node), existing)
