"""The SynthFM Segment Editor effect in the Slicer stand-in: registration, clicks -> preview at the right
voxel, Apply writes exactly the preview with undo, Propagate fills the structure's slices and stops at its end.

A fake predictor (threshold near the prompt) replaces the network: these tests check the effect's
translation between MRML and the core, not the model (Testing/core covers that).
"""
import numpy as np
import pytest
import vtk

import qt
import slicer
from slicer import editor
from synthfm.segment import Prediction

from test_segment_logic import volume_node


class FakePredictor:
    """SlicePredictor's interface: bright voxels within 8 px of the first point (or the box centre)."""

    window, model = "auto", None

    def __init__(self) -> None:
        self.cache, self.prompts = set(), []

    def is_cached(self, key) -> bool:
        return key in self.cache

    def embed(self, image, key=None, value_range=None):
        self.cache.add(key)

    def predict(self, image, prompts, key=None, value_range=None, multimask="auto") -> Prediction:
        self.prompts.append(prompts)
        self.embed(image, key)
        if len(prompts.points):
            cx, cy = prompts.points[0]
        else:
            x0, y0, x1, y1 = prompts.box
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        yy, xx = np.mgrid[:image.shape[0], :image.shape[1]]
        mask = (image > 140) & ((xx - cx) ** 2 + (yy - cy) ** 2 < 64)
        return Prediction(mask, 0.93, np.where(mask, 5.0, -5.0).astype(np.float32), np.array([0.93]))


class SliceWidget:
    """qMRMLSliceWidget: className() and sliceLogic().GetSliceNode()."""

    def __init__(self, slice_node) -> None:
        self.node = slice_node

    def className(self) -> str:
        return "qMRMLSliceWidget"

    def sliceLogic(self):
        return self

    def GetSliceNode(self):
        return self.node


class Interactor:
    def __init__(self) -> None:
        self.xy, self.shift = (0, 0), False

    def GetEventPosition(self):
        return self.xy

    def GetShiftKey(self) -> bool:
        return self.shift

    def GetControlKey(self) -> bool:
        return False


def click(effect, view, xy, negative=False, drag_to=None, button="Left") -> None:
    interactor = Interactor()
    interactor.xy, interactor.shift = tuple(xy), negative
    assert effect.processInteractionEvents(interactor, getattr(vtk.vtkCommand, f"{button}ButtonPressEvent"), view)
    interactor.xy = tuple(drag_to if drag_to is not None else xy)
    assert effect.processInteractionEvents(interactor, getattr(vtk.vtkCommand, f"{button}ButtonReleaseEvent"), view)


def display_xy(slice_node, ras, centre=True) -> np.ndarray:
    """Display pixel of a RAS point; ``centre`` first centres the view on it (so it is on the slice)."""
    from SynthFMSegmentLib.geometry import matrix_to_numpy

    if centre:
        slice_node.JumpSliceByCentering(*ras)
    return (np.linalg.inv(matrix_to_numpy(slice_node.GetXYToRAS())) @ np.r_[ras, 1])[:2]


@pytest.fixture()
def scene():
    """An ellipsoid (slices 3..8 of 12) in a rotated anisotropic volume, a segment, the effect."""
    zz, yy, xx = np.mgrid[:12, :40, :48]
    truth = ((xx - 24) / 9.0) ** 2 + ((yy - 20) / 7.0) ** 2 + ((zz - 5.5) / 3.0) ** 2 < 1
    node, geometry = volume_node((100 + 80 * truth).astype(np.float32), angle=0.3)
    segmentation = slicer.SegmentationNode()
    segmentation.AddEmptySegment("organ")
    existing = np.zeros(truth.shape, np.uint8)
    existing[0, :3, :3] = 1  # something already drawn, for undo
    slicer.util.updateSegmentBinaryLabelmapFromArray(existing, segmentation, "organ", node)
    from SynthFMSegment import registerEffect

    slicer.qSlicerSegmentEditorEffectFactory._instance = None
    registerEffect()
    wrapper = slicer.qSlicerSegmentEditorEffectFactory.instance().effects[0]
    wrapper.parameter_node = editor.SegmentEditorNode(node, segmentation, "organ")
    effect = wrapper.self()
    effect.setupOptionsFrame()
    effect.logic._predictor = FakePredictor()
    editor.messages.clear()
    return effect, wrapper, node, geometry, segmentation, truth, existing


def test_module_registers_the_effect_after_startup():
    import SynthFMSegment

    parent = type("Parent", (), {})()
    SynthFMSegment.SynthFMSegment(parent)
    signal, slot = slicer.app.connections[-1]
    assert signal == "startupCompleted()" and parent.title == "SynthFM Segment"
    slicer.qSlicerSegmentEditorEffectFactory._instance = None
    slot()
    effects = slicer.qSlicerSegmentEditorEffectFactory.instance().effects
    assert [e.name for e in effects] == ["SynthFM"] and effects[0].perSegment
    assert "positive point" in effects[0].self().helpText()
    assert issubclass(SynthFMSegment.SynthFMSegmentTest, __import__("unittest").TestCase)


@pytest.mark.parametrize("negative", [False, True])
def test_click_adds_a_point_on_the_voxel_and_previews_that_slice(scene, negative):
    effect, wrapper, node, geometry, segmentation, truth, _ = scene
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    ras = geometry.index_to_ras([25, 19, 6])
    click(effect, view, display_xy(view.node, ras) + [0.3, -0.2], negative=negative)
    pos, neg, box = effect.prompts()
    assert (len(pos), len(neg), box) == ((0, 1, None) if negative else (1, 0, None))
    sent = effect.logic.predictor.prompts[-1]
    assert np.allclose(sent.points[0], [25, 19], atol=0.5) and list(sent.labels) == [0 if negative else 1]
    assert effect.preview[6].any() and not np.delete(effect.preview, 6, axis=0).any()
    assert "0.93" in effect.qualityLabel.text and effect._preview_node is not None


def test_drag_draws_a_box_and_moving_a_point_re_predicts(scene):
    effect, wrapper, node, geometry, *_ = scene
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    a = display_xy(view.node, geometry.index_to_ras([18, 15, 5]))
    b = display_xy(view.node, geometry.index_to_ras([30, 25, 5]), centre=False)
    click(effect, view, a, drag_to=b)
    assert np.allclose(effect.logic.predictor.prompts[-1].box, [18, 15, 30, 25], atol=0.5)
    click(effect, view, display_xy(view.node, geometry.index_to_ras([24, 20, 5]), centre=False), button="Right")
    assert len(effect.prompts()[1]) == 1  # right click: negative
    calls = len(effect.logic.predictor.prompts)
    effect.points.SetNthControlPointPositionWorld(0, *geometry.index_to_ras([22, 20, 5]))
    assert len(effect.logic.predictor.prompts) == calls + 1
    assert np.allclose(effect.logic.predictor.prompts[-1].points[0], [22, 20], atol=1e-6)


def test_apply_writes_exactly_the_preview_and_undo_restores(scene):
    effect, wrapper, node, geometry, segmentation, truth, existing = scene
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    click(effect, view, display_xy(view.node, geometry.index_to_ras([24, 20, 6])))
    preview = effect.preview.copy()
    effect.onApply()
    written = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "organ", node)
    assert np.array_equal(written, preview.astype(np.uint8))  # Set mode: the old drawing is replaced
    assert effect.preview is None and effect._preview_node is None and effect.prompts() == ([], [], None)
    wrapper.undo()
    assert np.array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "organ", node), existing)


def test_apply_respects_the_editable_area(scene):
    effect, wrapper, node, geometry, segmentation, truth, existing = scene
    wrapper.parameter_node.mask = np.zeros(truth.shape, bool)
    wrapper.parameter_node.mask[:, :, :24] = True
    click(effect, SliceWidget(view := slicer.SliceNode("Red", "Axial")), display_xy(view, geometry.index_to_ras([24, 20, 6])))
    preview = effect.preview.copy()
    effect.onApply()
    written = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "organ", node).astype(bool)
    assert np.array_equal(written[:, :, :24], preview[:, :, :24]) and np.array_equal(written[:, :, 24:], existing[:, :, 24:] > 0)


@pytest.mark.parametrize("orientation, index", [("Axial", [24, 20, 5]), ("Coronal", [24, 20, 5])])
def test_propagate_fills_the_structure_and_stops_at_its_end(scene, orientation, index):
    effect, wrapper, node, geometry, segmentation, truth, existing = scene
    if orientation == "Coronal":  # a coronal view of the rotated volume is oblique: use an axis-aligned one
        node, geometry = volume_node(slicer.util.arrayFromVolume(node).copy(), angle=0.0)
        wrapper.parameter_node.volume = node
    view = SliceWidget(slicer.SliceNode("V", orientation))
    click(effect, view, display_xy(view.node, geometry.index_to_ras(index)))
    effect.onPropagate()
    filled = sorted(set(np.nonzero(effect.preview)[0]))
    assert filled == sorted(set(np.nonzero(truth)[0]))  # every slice of the ellipsoid, nothing beyond
    assert (effect.preview <= truth).all()
    preview = effect.preview.copy()
    effect.onApply()
    assert np.array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "organ", node).astype(bool), preview)
    wrapper.undo()  # one undo step removes the whole propagation
    assert np.array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "organ", node), existing)


def test_cancelled_propagation_leaves_the_slice_preview(scene):
    effect, wrapper, node, geometry, *_ = scene
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    click(effect, view, display_xy(view.node, geometry.index_to_ras([24, 20, 5])))
    before = effect.preview.copy()
    editor.progress_dialog_cancel_at[0] = 1
    try:
        effect.onPropagate()
    finally:
        editor.progress_dialog_cancel_at[0] = None
    assert np.array_equal(effect.preview, before) and not editor.messages


def test_oblique_view_gives_a_clear_message(scene):
    effect, wrapper, node, geometry, *_ = scene
    view = SliceWidget(slicer.SliceNode("Yellow", "Sagittal"))  # oblique to the rotated volume
    click(effect, view, (250, 250))
    assert effect.prompts() == ([], [], None) and "Rotate to volume plane" in editor.messages[-1]


def test_background_encoding_runs_in_timer_chunks_and_settings_persist(scene):
    effect, wrapper, node, *_ = scene
    effect._start_encoding()
    ticks = 0
    while effect._encode_timer.isActive():
        effect._encode_timer.fire()
        ticks += 1
    assert len(effect.logic.predictor.cache) == 12 and ticks == 12 // 2 + 1
    effect.deviceBox.setCurrentText("cpu")
    from SynthFMSegmentLib.settings import Settings

    assert Settings().device == "cpu" and qt.QSettings().value("SynthFM/device") == "cpu"
    assert effect.logic.device == "cpu"
