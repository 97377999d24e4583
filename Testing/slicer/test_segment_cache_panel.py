"""The effect's 'Advanced' section: the local worker's disk cache of slice embeddings (settings SynthFM/embedding_cache
and SynthFM/embedding_cache_gb) seen and changed in the panel, what the folder holds, and clearing it.

The worker's command line is looked at as test_segment_worker does (the process is not started); one test runs a real
worker to see a changed folder used at once.
"""
import os

import pytest

import qt
import slicer
from slicer import editor
from SynthFMSegmentLib.settings import PREFIX

from test_segment_effect import SliceWidget, click, display_xy, fake_worker, scene, settle  # noqa: F401  (fixtures)
from test_segment_worker import local_mode, worker_commands  # noqa: F401  (fixtures)

EMBEDDING = "ab" + "0" * 62 + ".npy"  # a name EmbeddingStore gives (64 hex digits, in subfolder "ab")


def embedding_folder(root, *sizes):
    """Files laid out as EmbeddingStore writes them, in one encoder folder of ``root``."""
    folder = root / ("tinyvit-" + "0123456789abcdef0123")
    for n, size in enumerate(sizes):
        name = f"{n:02x}" + f"{n:062x}" + ".npy"
        (folder / name[:2]).mkdir(parents=True, exist_ok=True)
        (folder / name[:2] / name).write_bytes(b"\0" * size)
    return folder


@pytest.fixture(autouse=True)
def default_cache_settings():
    """QSettings is one store for all tests, like Slicer's settings file: each test leaves the defaults behind."""
    yield
    for name in ("embedding_cache", "embedding_cache_gb", "encode_every_slice", "adapt_decoder",
                 "register_between", "between_fill"):
        qt.QSettings.store.pop(PREFIX + name, None)


def cache_options(argv):
    from synthfm.cli import build_parser

    args = build_parser().parse_args(argv[3:])  # [python, -m, synthfm.cli, serve, ...]
    return args.embedding_cache, args.embedding_cache_gb


def test_the_advanced_section_is_collapsed_and_shows_the_settings(scene, local_mode, tmp_path):
    effect = scene[0]
    local_mode.embedding_cache, local_mode.embedding_cache_gb = str(tmp_path / "emb"), "3.5"
    effect.setupOptionsFrame()
    assert effect.advancedButton.collapsed and effect.advancedButton in effect.scriptedEffect.options
    assert effect.cacheBox.checked and effect.cachePathEdit.enabled
    assert effect.cachePathEdit.currentPath == str(tmp_path / "emb") and effect.cacheLimitBox.value == 3.5
    assert effect.cachePathEdit.filters == ctk_dirs()
    assert (effect.cacheLimitBox.minimum, effect.cacheLimitBox.singleStep) == (0.1, 0.5)
    assert effect.cacheLimitBox.maximum >= 100
    for widget in (effect.advancedButton, effect.cacheBox, effect.cachePathEdit, effect.cacheLimitBox,
                   effect.cacheUsageLabel, effect.clearCacheButton):
        assert widget.toolTip
    for widget in (effect.cacheBox, effect.cachePathEdit, effect.cacheLimitBox):
        assert "next start" in widget.toolTip
    assert effect.cacheUsageLabel.text == ""  # not counted while collapsed
    local_mode.embedding_cache, local_mode.embedding_cache_gb = "", "not a number"  # set by hand in the console
    effect.setupOptionsFrame()
    assert not effect.cacheBox.checked and not effect.cachePathEdit.enabled
    cache = qt.QStandardPaths.writableLocation(qt.QStandardPaths.CacheLocation)
    assert effect.cachePathEdit.currentPath == os.path.join(cache, "SynthFM", "embeddings")  # what ticking turns on
    assert effect.cacheLimitBox.value == 2.0
    assert qt.QSettings().value(PREFIX + "embedding_cache") == "" and not effect.cacheTimer.isActive()  # nothing written


def ctk_dirs():
    import ctk

    return ctk.ctkPathLineEdit.Dirs


def test_a_changed_folder_or_limit_is_written_and_restarts_the_local_worker_once(scene, local_mode, tmp_path,
                                                                                 worker_commands):
    effect, commands = scene[0], worker_commands
    local_mode.embedding_cache = str(tmp_path / "first")
    effect.setupOptionsFrame()
    effect.activate()
    assert cache_options(commands[-1]) == (str(tmp_path / "first"), 2.0)
    for typed in ("/", str(tmp_path)[:4], str(tmp_path / "second")):  # typing: each key changes the path
        effect.cachePathEdit.currentPath = typed
    assert qt.QSettings().value(PREFIX + "embedding_cache") == str(tmp_path / "second")
    assert len(commands) == 1 and effect.cacheTimer.isActive()  # the worker waits for the edits to pause
    effect.cacheTimer.fire()
    assert len(commands) == 2 and cache_options(commands[-1]) == (str(tmp_path / "second"), 2.0)
    assert not effect.cacheTimer.isActive()  # one shot: nothing polls the folder
    effect.cacheLimitBox.value = 5.5
    assert qt.QSettings().value(PREFIX + "embedding_cache_gb") == "5.5"
    effect.cacheTimer.fire()
    assert len(commands) == 3 and cache_options(commands[-1]) == (str(tmp_path / "second"), 5.5)
    effect.cacheLimitBox.value = 6.0
    effect.cacheLimitBox.value = 5.5  # back before the pause: the same options, no restart
    effect.cacheTimer.fire()
    assert len(commands) == 3
    effect.deactivate()
    effect.cacheLimitBox.value = 4.0  # not active: the next activation starts the worker with it
    effect.cacheTimer.fire()
    assert len(commands) == 3
    effect.activate()
    assert len(commands) == 4 and cache_options(commands[-1]) == (str(tmp_path / "second"), 4.0)


def test_unticking_turns_the_disk_cache_off_and_ticking_brings_the_folder_back(scene, local_mode, tmp_path,
                                                                               worker_commands):
    effect, commands = scene[0], worker_commands
    local_mode.embedding_cache = str(tmp_path / "mine")
    effect.setupOptionsFrame()
    effect.activate()
    effect.cacheBox.click()
    assert not effect.cacheBox.checked and not effect.cachePathEdit.enabled
    assert qt.QSettings().value(PREFIX + "embedding_cache") == ""
    effect.cacheTimer.fire()
    assert cache_options(commands[-1]) == (None, None)  # neither option: no disk cache
    assert "--embedding-cache" not in commands[-1] and effect.cacheUsageLabel.text.startswith("Off")
    effect.cacheBox.click()
    assert qt.QSettings().value(PREFIX + "embedding_cache") == str(tmp_path / "mine")  # the last folder
    effect.cacheTimer.fire()
    assert cache_options(commands[-1]) == (str(tmp_path / "mine"), 2.0)
    effect.cachePathEdit.currentPath = ""  # emptied: the default folder
    cache = qt.QStandardPaths.writableLocation(qt.QStandardPaths.CacheLocation)
    assert qt.QSettings().value(PREFIX + "embedding_cache") == os.path.join(cache, "SynthFM", "embeddings")


def test_the_section_counts_embedding_files_only_and_clears_them_after_confirmation(scene, local_mode, tmp_path,
                                                                                   monkeypatch):
    effect = scene[0]
    root = tmp_path / "emb"
    folder = embedding_folder(root, 400_000, 600_000, 500_000)
    others = [root / "notes.txt", root / "ab" / EMBEDDING, folder / "ab" / "keep.npy", folder / "cd" / EMBEDDING,
              root / "my-scans" / "ab" / EMBEDDING]
    for path in others:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 1_000_000)
    local_mode.embedding_cache = str(root)
    effect.setupOptionsFrame()
    effect.advancedButton.collapsed = False  # the user opens the section
    assert effect.cacheUsageLabel.text == "Holds 1.5 MB: 3 slice embedding files."
    assert effect.clearCacheButton.enabled
    effect.clearCacheButton.click()  # the stand-in's confirmation answers Cancel
    assert "Delete the 3 slice embedding files (1.5 MB) in" in editor.messages[-1]
    assert len(list(folder.rglob("*.npy"))) == 5 and effect.cacheUsageLabel.text.startswith("Holds 1.5 MB")
    asked = []
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, **kw: asked.append(text) or True)
    effect.clearCacheButton.click()
    assert len(asked) == 1 and effect.cacheUsageLabel.text == "Empty: no slice embedding stored yet."
    assert not effect.clearCacheButton.enabled
    assert all(p.read_bytes() == b"x" * 1_000_000 for p in others)  # the user's files stay
    assert sorted(p.name for p in folder.rglob("*.npy")) == [EMBEDDING, "keep.npy"]  # not laid out as embeddings


def test_an_unusable_folder_is_named_in_the_section(scene, local_mode, tmp_path):
    effect = scene[0]
    (tmp_path / "a-file").write_text("the user's file")
    effect.setupOptionsFrame()
    effect.advancedButton.collapsed = False
    effect.cachePathEdit.currentPath = str(tmp_path / "a-file" / "emb")
    effect.cacheTimer.fire()
    text = effect.cacheUsageLabel.text
    assert text.startswith("Cannot be used:") and f"{tmp_path / 'a-file'} is a file, not a folder" in text
    assert not effect.clearCacheButton.enabled and (tmp_path / "a-file").read_text() == "the user's file"


def test_a_server_keeps_its_connection_when_the_local_cache_settings_change(scene, tmp_path):
    """A remote server keeps what its own command line says: a change here does not reconnect (the server would
    have to take the volume and encode it again)."""
    from SynthFMSegmentLib.worker_client import current_link

    effect = scene[0]
    effect.activate()
    link = current_link()
    assert link.remote and link.extra_args == []
    effect.cachePathEdit.currentPath = str(tmp_path / "elsewhere")
    effect.cacheLimitBox.value = 7.0
    effect.cacheTimer.fire()
    assert effect._link() is link and current_link() is link


def test_a_folder_changed_while_active_is_used_by_the_restarted_worker(scene, local_mode, tmp_path):
    """A real worker: slices encoded after the change are stored in the new folder; the prompts are kept."""
    from SynthFMSegmentLib.worker_client import current_link

    effect, wrapper, node, geometry, segmentation, truth, existing = scene
    local_mode.embedding_cache = str(tmp_path / "first")
    effect.setupOptionsFrame()
    effect.activate()
    settle(effect, timeout=120)
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    click(effect, view, display_xy(view.node, geometry.index_to_ras([24, 20, 5])))
    first = current_link()
    assert list((tmp_path / "first").rglob("*.npy")) and effect.preview is not None
    effect.cachePathEdit.currentPath = str(tmp_path / "second")
    effect.cacheTimer.fire()
    settle(effect, timeout=120)
    assert current_link() is not first and current_link().state == "ready"
    assert "--embedding-cache" in current_link().local.command and str(tmp_path / "second") in current_link().local.command
    distinct = len({truth[k].tobytes() for k in range(12)})
    assert len(list((tmp_path / "second").rglob("*.npy"))) >= distinct  # encoded again there, in the background
    assert len(effect.prompts()[0]) == 1 and effect.preview is not None  # the prompts' preview came back
    (tmp_path / "a-file").write_text("the user's file")
    effect.cachePathEdit.currentPath = str(tmp_path / "a-file")  # a folder the worker cannot use: it says why
    effect.cacheTimer.fire()
    settle(effect, timeout=120)
    text = effect.workerLabel.text
    assert "the SynthFM worker is unavailable" in text and f"--embedding-cache {tmp_path / 'a-file'}" in text
    assert "is a file, not a folder" in text and effect.cacheUsageLabel.text.startswith("Cannot be used:")
    assert (tmp_path / "a-file").read_text() == "the user's file"


def test_the_standins_widgets_behave_as_qt_and_ctk_do():
    """What these tests rely on, as Qt/CTK do it: a spin box rounds and bounds what is set and signals a change
    only; setting a path or collapsing signals a change only, not while signals are blocked; a single-shot timer
    stops when it fires."""
    import ctk

    spin, seen = qt.QDoubleSpinBox(), []
    spin.connect("valueChanged(double)", seen.append)
    assert (spin.minimum, spin.maximum, spin.decimals, spin.value) == (0.0, 99.99, 2, 0.0)
    spin.setDecimals(1)
    spin.setRange(0.1, 10)
    spin.value = 2.26
    spin.value = 2.3
    spin.value = 50
    assert seen == [0.1, 2.3, 10.0] and spin.value == 10.0
    path, paths = ctk.ctkPathLineEdit(), []
    path.connect("currentPathChanged(QString)", paths.append)
    path.currentPath = "/a"
    path.currentPath = "/a"
    path.blockSignals(True)
    path.currentPath = "/b"
    path.blockSignals(False)
    assert paths == ["/a"] and path.currentPath == "/b"
    button, states = ctk.ctkCollapsibleButton(), []
    button.connect("contentsCollapsed(bool)", states.append)
    button.collapsed = False
    button.collapsed = True
    assert states == [True] and button.collapsed
    timer, fired = qt.QTimer(), []
    timer.timeout.connect(lambda: fired.append(timer.isActive()))
    timer.setSingleShot(True)
    timer.start()
    timer.fire()
    timer.fire()
    assert fired == [False] and not timer.isActive()


def test_encode_every_slice_is_remembered_and_sent_with_propagate(scene, monkeypatch):
    """Unticked (the default) Propagate sends no propagation options (the model's encode_every); ticked, it sends
    encode_every=1, and the tick is remembered for the next session's panel."""
    from synthfm.segment import PropagationOptions
    from SynthFMSegmentLib.settings import Settings

    effect, _wrapper, _node, geometry, *_ = scene
    assert not effect.everySliceBox.checked and effect.everySliceBox.toolTip
    seen, parse = [], PropagationOptions.parse_overrides
    monkeypatch.setattr(PropagationOptions, "parse_overrides",
                        classmethod(lambda cls, items: seen.append(list(items)) or parse(items)))
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    click(effect, view, display_xy(view.node, geometry.index_to_ras([24, 20, 5])))
    effect.onPropagate()
    settle(effect)
    effect.everySliceBox.click()
    assert Settings().encode_every_slice == "true"
    effect.setupOptionsFrame()  # the panel built again (the next session) shows the tick
    assert effect.everySliceBox.checked
    effect.onPropagate()
    settle(effect)
    assert seen == [[], ["encode_every=1"]]
    assert effect.preview is not None and effect.preview.any() and not editor.messages


def test_unticking_the_adaptation_is_remembered_and_sends_adapt_steps_0(scene, monkeypatch):
    """Ticked (the default) Propagate sends nothing (the model's adapt_steps: synthfm-lite adapts its decoder);
    unticked it sends adapt_steps=0, the untick is remembered, and ticking again sends nothing."""
    from synthfm.segment import PropagationOptions
    from SynthFMSegmentLib.settings import Settings

    effect, _wrapper, _node, geometry, *_ = scene
    assert effect.adaptBox.checked and "4 s" in effect.adaptBox.toolTip
    seen, parse = [], PropagationOptions.parse_overrides
    monkeypatch.setattr(PropagationOptions, "parse_overrides",
                        classmethod(lambda cls, items: seen.append(list(items)) or parse(items)))
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    click(effect, view, display_xy(view.node, geometry.index_to_ras([24, 20, 5])))
    effect.adaptBox.click()
    assert Settings().adapt_decoder == "false"
    effect.setupOptionsFrame()  # the panel built again (the next session) shows the untick
    assert not effect.adaptBox.checked
    effect.onPropagate()
    settle(effect)
    effect.adaptBox.click()
    effect.onPropagate()
    settle(effect)
    assert seen == [["adapt_steps=0"], []]
    assert effect.preview is not None and effect.preview.any() and not editor.messages

