"""The SynthFM Segment Editor effect in the Slicer stand-in: registration, clicks -> preview at the right
voxel, Apply writes exactly the preview with undo, Propagate fills the structure's slices and stops at its end.

A fake predictor (threshold near the prompt) replaces the network inside a real worker (``synthfm serve``'s app on
127.0.0.1, in a thread of this process): these tests check the effect's translation between MRML and the worker,
not the model (Testing/core covers that).  The stand-in's QTimer runs only when a test fires it, as Qt's event loop
would: ``settle`` does that until nothing is in flight.
"""
import time

import numpy as np
import pytest
import vtk
from vtk.util import numpy_support

import qt
import slicer
from slicer import editor
from synthfm.segment import Prediction

from test_segment_logic import volume_node


class FakePredictor:
    """SlicePredictor's interface: bright voxels within 8 px of the first point (or the box centre)."""

    window, model = "auto", None

    def __init__(self) -> None:
        self.cache, self.prompts, self.ranges, self.order, self.aspects = set(), [], [], [], []

    def is_cached(self, key) -> bool:
        return key in self.cache

    def embed(self, image, key=None, value_range=None, aspect=None):
        if key not in self.cache:
            self.order.append(key)
        self.cache.add(key)

    def predict(self, image, prompts, key=None, value_range=None, multimask="auto", aspect=None) -> Prediction:
        self.prompts.append(prompts)
        self.ranges.append(value_range)
        self.aspects.append(aspect)
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
    """vtkRenderWindowInteractor: GetEventPosition() is two ints (display pixels); modifier keys."""

    def __init__(self, modifiers=()) -> None:
        self.xy, self.modifiers = (0, 0), set(modifiers)

    def GetEventPosition(self):
        return tuple(int(round(v)) for v in self.xy)

    def GetShiftKey(self) -> bool:
        return "shift" in self.modifiers

    def GetControlKey(self) -> bool:
        return "ctrl" in self.modifiers

    def GetAltKey(self) -> bool:
        return "alt" in self.modifiers


def click(effect, view, xy, negative=False, drag_to=None, button="Left", consumed=True, modifiers=()) -> None:
    """Press + release through the C++ wrapper (which insists on a bool result), as the Segment Editor calls it;
    ``negative`` first switches the effect's point type (its options panel) and switches it back afterwards."""
    wrapper = effect.scriptedEffect
    interactor = Interactor(modifiers)
    interactor.xy = tuple(xy)
    if negative:
        effect.negativeButton.click()
    assert wrapper.processInteractionEvents(interactor, getattr(vtk.vtkCommand, f"{button}ButtonPressEvent"), view) is consumed
    interactor.xy = tuple(drag_to if drag_to is not None else xy)
    assert wrapper.processInteractionEvents(interactor, getattr(vtk.vtkCommand, f"{button}ButtonReleaseEvent"), view) is consumed
    assert not wrapper.warnings
    if negative:
        effect.negativeButton.click()
    settle(effect)


def settle(effect, timeout=20.0) -> None:
    """Run the effect's timer as Qt's event loop would, until no request is in flight (bounded)."""
    end = time.monotonic() + timeout
    while effect.workerTimer.isActive():
        assert time.monotonic() < end, "the worker did not answer in time"
        effect.workerTimer.fire()
        time.sleep(0.002)


def display_xy(slice_node, ras, centre=True) -> np.ndarray:
    """Display pixel of a RAS point; ``centre`` first centres the view on it (so it is on the slice)."""
    from SynthFMSegmentLib.geometry import matrix_to_numpy

    if centre:
        slice_node.JumpSliceByCentering(*ras)
    return (np.linalg.inv(matrix_to_numpy(slice_node.GetXYToRAS())) @ np.r_[ras, 1])[:2]


TOKEN = "effect-test-token"


@pytest.fixture()
def fake_worker():
    """A worker serving the fake predictor on 127.0.0.1; the effect reaches it as a remote server."""
    from synthfm.serve.app import BackgroundServer, create_app
    from synthfm.serve.worker import Worker
    from SynthFMSegmentLib.settings import Settings
    from SynthFMSegmentLib.worker_client import stop_shared_link

    fake = FakePredictor()
    worker = Worker("fake", "cpu", predictor_factory=lambda model, device: fake, quiet_s=0.0)
    server = BackgroundServer(create_app(worker, TOKEN)).wait_ready()
    settings = Settings()
    settings.server, settings.token = server.url, TOKEN
    yield worker, fake, server
    stop_shared_link()
    settings.server, settings.token = "", ""
    server.stop()


@pytest.fixture()
def scene(fake_worker):
    """An ellipsoid (slices 3..8 of 12) in a rotated anisotropic volume, a segment, the effect."""
    zz, yy, xx = np.mgrid[:12, :40, :48]
    truth = ((xx - 24) / 9.0) ** 2 + ((yy - 20) / 7.0) ** 2 + ((zz - 5.5) / 3.0) ** 2 < 1
    node, geometry = volume_node((100 + 80 * truth).astype(np.float32), angle=0.3)
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.GetSegmentation().AddEmptySegment("organ")
    existing = np.zeros(truth.shape, np.uint8)
    existing[0, :3, :3] = 1  # something already drawn, for undo
    slicer.util.updateSegmentBinaryLabelmapFromArray(existing, segmentation, "organ", node)
    from SynthFMSegment import registerEffect

    slicer.qSlicerSegmentEditorEffectFactory._instance = None
    registerEffect()
    wrapper = slicer.qSlicerSegmentEditorEffectFactory.instance().effects[0]
    wrapper.parameter_node = editor.SegmentEditorNode(node, segmentation, "organ")
    effect = wrapper.self()
    from SynthFMSegmentLib.settings import Settings

    # the option at its default: QSettings (one store, like Slicer's settings file) remembers a test's tick
    Settings().keep_slices = Settings.defaults["keep_slices"]
    effect.setupOptionsFrame()
    effect.logic._predictor = fake_worker[1]  # the worker's predictor, to look at what it was sent
    editor.messages.clear()
    yield effect, wrapper, node, geometry, segmentation, truth, existing
    effect.deactivate()
    wrapper.cleanup()


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


def test_module_panel_opens_the_effect_in_the_segment_editor():
    import SynthFMSegment

    widget = SynthFMSegment.SynthFMSegmentWidget()
    widget.setup()
    widget.openButton.clicked.emit()
    assert slicer.app.selectedModule == "SegmentEditor"
    assert slicer.modules.SegmentEditorWidget.editor.activeEffectName == "SynthFM"


@pytest.mark.parametrize("negative", [False, True])
def test_click_adds_a_point_on_the_voxel_and_previews_that_slice(scene, negative):
    effect, wrapper, node, geometry, segmentation, truth, _ = scene
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    ras = geometry.index_to_ras([25, 19, 6])
    click(effect, view, display_xy(view.node, ras) + [0.3, -0.2], negative=negative)
    pos, neg, box = effect.prompts()
    assert (len(pos), len(neg), box) == ((0, 1, None) if negative else (1, 0, None))
    if negative:  # the worker refuses negative points alone: the panel says so, nothing is previewed
        assert "only negative points given: add a positive point" in effect.workerLabel.text
        assert effect.preview is None and effect.previewNode is None and not editor.messages
        return
    sent = effect.logic.predictor.prompts[-1]
    assert np.allclose(sent.points[0], [25, 19], atol=0.5) and list(sent.labels) == [0 if negative else 1]
    assert effect.preview[6].any() and not np.delete(effect.preview, 6, axis=0).any()
    assert "0.93" in effect.qualityLabel.text and effect.previewNode is not None
    assert len(effect.logic.predictor.prompts) == 1  # one prediction per click (markups events are muted)


def test_drag_draws_a_box_and_moving_a_point_re_predicts(scene):
    effect, wrapper, node, geometry, *_ = scene
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    a = display_xy(view.node, geometry.index_to_ras([18, 15, 5]))
    b = display_xy(view.node, geometry.index_to_ras([30, 25, 5]), centre=False)
    click(effect, view, a, drag_to=b)
    assert np.allclose(effect.logic.predictor.prompts[-1].box, [18, 15, 30, 25], atol=0.5)
    click(effect, view, display_xy(view.node, geometry.index_to_ras([24, 20, 5]), centre=False), negative=True)
    assert len(effect.prompts()[1]) == 1  # a click in negative mode
    click(effect, view, display_xy(view.node, geometry.index_to_ras([34, 20, 5]), centre=False))
    # a press on a prompt point is left to the markups widget (the user drags the point), not a new prompt
    click(effect, view, display_xy(view.node, geometry.index_to_ras([34, 20, 5]), centre=False) + 2, consumed=False)
    assert [len(p) for p in effect.prompts()[:2]] == [1, 1]
    calls = len(effect.logic.predictor.prompts)
    effect.promptNodes[True].SetNthControlPointPositionWorld(0, *geometry.index_to_ras([22, 20, 5]))
    settle(effect)
    assert len(effect.logic.predictor.prompts) == calls + 1
    assert np.allclose(effect.logic.predictor.prompts[-1].points[0], [22, 20], atol=1e-6)


@pytest.mark.parametrize("button, modifiers", [("Left", ["shift"]), ("Left", ["ctrl"]), ("Left", ["alt", "shift"]),
                                                ("Left", ["ctrl", "alt"]), ("Right", []), ("Right", ["alt"]),
                                                ("Middle", [])])
def test_slicer_view_gestures_are_left_to_slicer(scene, button, modifiers):
    """Shift/Ctrl/Alt + left drag (pan, blend, rotate, translate), right drag (zoom) and right click (menu) stay
    Slicer's: vtkMRMLSliceIntersectionWidget binds them; Slicer's own Draw effect consumes only unmodified clicks."""
    effect, wrapper, node, geometry, *_ = scene
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    xy = display_xy(view.node, geometry.index_to_ras([24, 20, 6]))
    click(effect, view, xy, drag_to=xy + 30, button=button, modifiers=modifiers, consumed=False)
    click(effect, view, xy, button=button, modifiers=modifiers, consumed=False)
    assert effect.prompts() == ([], [], None) and not effect.logic.predictor.prompts


def test_negative_points_come_from_the_point_type_toggle(scene):
    effect, wrapper, node, geometry, *_ = scene
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    effect.negativeButton.click()
    assert effect.negativeButton.checked
    click(effect, view, display_xy(view.node, geometry.index_to_ras([18, 20, 6])))
    click(effect, view, display_xy(view.node, geometry.index_to_ras([30, 20, 6]), centre=False))
    effect.negativeButton.click()
    click(effect, view, display_xy(view.node, geometry.index_to_ras([24, 14, 6]), centre=False))
    assert [len(p) for p in effect.prompts()[:2]] == [1, 2]


def test_prompt_lists_never_become_the_active_place_list(scene):
    """vtkSlicerMarkupsLogic makes each markups node added the active place list: the toolbar's place tool must
    keep targeting the user's list (or none), and no ID of a removed prompt list may stay behind."""
    effect, wrapper, node, geometry, *_ = scene
    selection = slicer.app.applicationLogic().GetSelectionNode()
    mine = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "my landmarks")
    assert selection.GetActivePlaceNodeID() == mine.GetID()
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    click(effect, view, display_xy(view.node, geometry.index_to_ras([18, 20, 6])))
    click(effect, view, display_xy(view.node, geometry.index_to_ras([30, 20, 6]), centre=False), negative=True)
    a = display_xy(view.node, geometry.index_to_ras([18, 15, 6]), centre=False)
    click(effect, view, a, drag_to=display_xy(view.node, geometry.index_to_ras([30, 25, 6]), centre=False))
    assert effect.boxNode is not None and all(effect.promptNodes.values())
    assert selection.GetActivePlaceNodeID() == mine.GetID()
    assert selection.GetActivePlaceNodeClassName() == "vtkMRMLMarkupsFiducialNode"
    effect.deactivate()
    slicer.mrmlScene.RemoveNode(mine)
    click(effect, view, display_xy(view.node, geometry.index_to_ras([24, 20, 6])))  # new prompt lists
    assert selection.GetActivePlaceNodeID() is None  # the user's list is gone: none, never a prompt list
    selection.SetReferenceActivePlaceNodeID(effect.promptNodes[True].GetID())  # the user picked it in the toolbar
    effect.deactivate()
    assert selection.GetActivePlaceNodeID() is None  # no stale ID of a removed node


def test_apply_writes_exactly_the_preview_and_undo_restores(scene):
    effect, wrapper, node, geometry, segmentation, truth, existing = scene
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    click(effect, view, display_xy(view.node, geometry.index_to_ras([24, 20, 6])))
    preview = effect.preview.copy()
    effect.onApply()
    written = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "organ", node)
    assert np.array_equal(written, preview.astype(np.uint8))  # Set mode: the old drawing is replaced
    assert effect.preview is None and effect.previewNode is None and effect.prompts() == ([], [], None)
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


@pytest.mark.parametrize("masking", ["editable area", "intensity range", "none"])
def test_apply_writes_into_a_segmentation_on_another_geometry(scene, masking):
    """The segmentation's geometry differs from the source volume's (another reference volume: finer, shifted):
    Apply resamples the preview into it, masking and the editable intensity range still apply, and the new voxels
    are erased from the other segments (OverwriteMode: all)."""
    effect, wrapper, node, geometry, segmentation, truth, existing = scene
    fine_matrix = slicer.util.ijk_to_ras(node) @ np.diag([0.5, 0.5, 1.0, 1.0])
    fine_matrix[:3, 3] += fine_matrix[:3, :3] @ [-0.5, -0.5, 0.0]  # voxel corners stay where they were
    fine = slicer.util.addVolumeFromArray(np.zeros((12, 80, 96), np.float32), fine_matrix, "finer reference")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(fine)
    segmentation.GetSegmentation().AddEmptySegment("other")
    other = np.zeros(truth.shape, np.uint8)
    other[6, 18:22, 20:28] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(other, segmentation, "other", node)
    p = wrapper.parameter_node
    if masking == "editable area":
        p.mask = np.ones((12, 80, 96), bool)
        p.mask[:, :, 48:] = False  # the right half (fine grid) is not editable
    elif masking == "intensity range":
        p.intensity_range = (150.0, 1000.0)  # everything inside the ellipsoid (180) is editable
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    click(effect, view, display_xy(view.node, geometry.index_to_ras([24, 20, 6])))
    preview = effect.preview.copy()
    effect.onApply()
    assert not wrapper.errors, wrapper.errors
    written = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "organ", node) > 0
    expected = preview.copy()
    if masking == "editable area":
        expected[:, :, 24:] = existing[:, :, 24:] > 0
    elif masking == "intensity range":  # outside the range (the background, 100) the old drawing stays
        expected |= (existing > 0) & ~truth
    assert np.array_equal(written, expected) and written[6].sum() > 20
    left = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "other", node) > 0
    assert np.array_equal(left, (other > 0) & ~(written & ~(existing > 0)))  # overwritten where organ now is


def test_apply_does_nothing_when_the_user_refuses_to_edit_a_hidden_segment(scene):
    effect, wrapper, node, geometry, segmentation, truth, existing = scene
    wrapper.confirm = wrapper.NotConfirmed
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    click(effect, view, display_xy(view.node, geometry.index_to_ras([24, 20, 6])))
    effect.onApply()
    assert not wrapper.undo_stack and effect.preview is not None  # nothing written, the preview is kept
    assert np.array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "organ", node), existing)


@pytest.mark.parametrize("orientation, index", [("Axial", [24, 20, 5]), ("Coronal", [24, 20, 5])])
def test_propagate_fills_the_structure_and_stops_at_its_end(scene, orientation, index):
    effect, wrapper, node, geometry, segmentation, truth, existing = scene
    if orientation == "Coronal":  # a coronal view of the rotated volume is oblique: use an axis-aligned one
        node, geometry = volume_node(slicer.util.arrayFromVolume(node).copy(), angle=0.0)
        wrapper.parameter_node.volume = node
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(node)  # the segments follow the new grid
        existing = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "organ", node)
    view = SliceWidget(slicer.SliceNode("V", orientation))
    click(effect, view, display_xy(view.node, geometry.index_to_ras(index)))
    effect.onPropagate()
    settle(effect)
    filled = sorted(set(np.nonzero(effect.preview)[0]))
    assert filled == sorted(set(np.nonzero(truth)[0]))  # every slice of the ellipsoid, nothing beyond
    assert (effect.preview <= truth).all()
    along = sorted(set(np.nonzero(effect.preview)[{"Axial": 0, "Coronal": 1}[orientation]]))  # the propagation axis
    first, last = along[0], along[-1]
    assert effect.qualityLabel.text == (f"Propagated over {len(along)} slices ({first}..{last}), stopped before slice "
                                        f"{first - 1} (empty) and before slice {last + 1} (empty). Apply to keep.")
    preview = effect.preview.copy()
    effect.onApply()
    assert np.array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "organ", node).astype(bool), preview)
    wrapper.undo()  # one undo step removes the whole propagation
    assert np.array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "organ", node), existing)


def test_points_alone_on_a_thin_strip_get_a_note_and_a_box_does_not(scene):
    """A coronal slice of a short volume (12 slices of 0.5 mm across 48 columns of 2 mm: 6 x 96 mm) is a strip where
    one point took whole tissue bands on the real sets: the panel says so under the preview; a box, or the axial
    slice of the same volume (36 x 96 mm), gets no note."""
    effect, wrapper, node, geometry, segmentation, truth, existing = scene
    node, geometry = volume_node(slicer.util.arrayFromVolume(node).copy(), spacing=(2.0, 0.9, 0.5))
    wrapper.parameter_node.volume = node
    effect.sourceVolumeNodeChanged()
    coronal = SliceWidget(slicer.SliceNode("Green", "Coronal"))
    click(effect, coronal, display_xy(coronal.node, geometry.index_to_ras([24, 20, 5])))
    assert effect.plane[1:] == (1, 20) and effect.preview is not None
    assert "Slice 20 is a 6 x 96 mm strip: points alone there can take a whole band" in effect.qualityLabel.text
    a = display_xy(coronal.node, geometry.index_to_ras([16, 20, 3]))
    click(effect, coronal, a, drag_to=display_xy(coronal.node, geometry.index_to_ras([32, 20, 8]), centre=False))
    assert effect.prompts()[2] is not None and "strip" not in effect.qualityLabel.text
    effect.clearPrompts()
    axial = SliceWidget(slicer.SliceNode("Red", "Axial"))
    click(effect, axial, display_xy(axial.node, geometry.index_to_ras([24, 20, 5])))
    assert effect.plane[1:] == (0, 5) and effect.qualityLabel.text and "strip" not in effect.qualityLabel.text


def colour_volume_node(rgb: np.ndarray, spacing=(0.8, 0.9, 2.5)):
    """A vtkMRMLVectorVolumeNode of ``(k, j, i, 3)`` colour voxels, as Slicer loads an RGB PNG or screenshot."""
    node, geometry = volume_node(rgb[..., 0].copy(), spacing=spacing)
    vector = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLVectorVolumeNode")
    image = vtk.vtkImageData()
    image.SetDimensions(rgb.shape[2], rgb.shape[1], rgb.shape[0])
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(rgb).reshape(-1, 3), deep=True))
    vector.SetAndObserveImageData(image)
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    vector.SetIJKToRASMatrix(m)
    return vector, geometry


def test_a_colour_volume_is_segmented_on_the_grey_a_viewer_shows(scene):
    """An RGB volume (an ultrasound screenshot loaded in Slicer is a vtkMRMLVectorVolumeNode): the model gets its
    luminance, not its first (red) component, which is empty here; the preview has the grid's shape."""
    effect, wrapper, node, geometry, segmentation, truth, existing = scene
    green = np.where(truth, 255, 170).astype(np.uint8)  # green only (luminance 150 / 100), the red channel empty
    rgb = np.stack([np.zeros_like(green), green, np.zeros_like(green)], -1)
    colour, geometry = colour_volume_node(rgb)
    wrapper.parameter_node.volume = colour
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(colour)
    effect.sourceVolumeNodeChanged()
    assert slicer.util.arrayFromVolume(colour).shape == truth.shape + (3,)  # as Slicer gives a vector volume
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    click(effect, view, display_xy(view.node, geometry.index_to_ras([24, 20, 5])))
    assert effect.preview is not None and effect.preview.shape == truth.shape
    assert effect.preview[5].sum() > 50 and (effect.preview <= truth).all()
    preview = effect.preview.copy()
    effect.onApply()
    written = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "organ", colour)
    assert written.shape == truth.shape and np.array_equal(written[5] > 0, preview[5])


def test_cancelled_propagation_leaves_the_slice_preview(scene):
    effect, wrapper, node, geometry, *_ = scene
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    click(effect, view, display_xy(view.node, geometry.index_to_ras([24, 20, 5])))
    before = effect.preview.copy()
    editor.progress_dialog_cancel_at[0] = 1
    try:
        effect.onPropagate()
        settle(effect)
    finally:
        editor.progress_dialog_cancel_at[0] = None
    assert np.array_equal(effect.preview, before) and not editor.messages


def test_propagation_dialog_is_modal_and_clicks_meanwhile_do_not_re_enter(scene):
    """Propagation runs in the worker while Qt's event loop goes on: a click on Clear/Apply/Propagate or in a view
    meanwhile must neither run (the dialog is window-modal, Qt blocks that input) nor, if delivered, re-enter."""
    effect, wrapper, node, geometry, *_ = scene
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    click(effect, view, display_xy(view.node, geometry.index_to_ras([24, 20, 5])))
    prompts = effect.prompts()
    effect.onPropagate()
    dialog = editor.open_dialogs[-1]
    assert dialog.windowModality == qt.Qt.WindowModal and not dialog.closed and effect._busy
    for user_click in (effect.clearButton.click, effect.applyButton.click, effect.propagateButton.click):
        user_click()  # input delivered anyway (another window): the effect ignores it until the run ends
    interactor = __import__("test_segment_effect").Interactor()
    interactor.xy = tuple(display_xy(view.node, geometry.index_to_ras([20, 20, 5]), centre=False))
    assert wrapper.processInteractionEvents(interactor, vtk.vtkCommand.LeftButtonPressEvent, view) is False
    assert effect.prompts() == prompts and not wrapper.undo_stack and len(editor.open_dialogs) == 1 + dialog_count(dialog)
    settle(effect)
    assert dialog.closed and not effect._busy and effect.preview.any(axis=(1, 2)).sum() > 1
    assert effect.prompts() == prompts and not wrapper.undo_stack


def dialog_count(dialog) -> int:
    """Dialogs opened before ``dialog`` (open_dialogs is kept for the whole session)."""
    return editor.open_dialogs.index(dialog)


def test_oblique_view_gives_a_clear_message(scene):
    effect, wrapper, node, geometry, *_ = scene
    view = SliceWidget(slicer.SliceNode("Yellow", "Sagittal"))  # oblique to the rotated volume
    click(effect, view, (250, 250))
    assert effect.prompts() == ([], [], None) and "Rotate to volume plane" in editor.messages[-1]


def test_background_encoding_runs_in_the_worker_along_the_prompted_axis(scene, monkeypatch):
    effect, wrapper, node, geometry, *_ = scene
    fake = effect.logic.predictor
    node, geometry = volume_node(slicer.util.arrayFromVolume(node).copy(), angle=0.0)  # coronal views aligned
    wrapper.parameter_node.volume = node
    effect.sourceVolumeNodeChanged()
    effect.activate()
    assert effect.workerTimer.isActive() and effect._encode_axis == 0
    settle(effect)
    assert sorted(k[2] for k in fake.order if k[1] == 0) == list(range(12))  # every axial slice, in the worker
    assert "Slices encoded in the background: 12/12" in effect.workerLabel.text
    view = SliceWidget(slicer.SliceNode("Green", "Coronal"))
    click(effect, view, display_xy(view.node, geometry.index_to_ras([24, 17, 5])))
    coronal = [k[2] for k in fake.order if k[1] == 1]
    assert effect._encode_axis == 1 and coronal[:3] in ([17, 16, 18], [17, 18, 16])  # the prompt's slice, then out
    assert sorted(coronal) == list(range(40))  # every coronal slice (j = 0..39) once
    effect.deactivate()
    assert not effect.workerTimer.isActive()
    effect.activate()
    wrapper.parameter_node.volume, _ = volume_node(np.zeros((5, 8, 8), np.float32))
    effect.sourceVolumeNodeChanged()  # a new source volume: sent, and encoded on it (5 axial slices)
    settle(effect)
    assert effect._encode_axis == 0 and len(fake.order) == 12 + 40 + 5


def test_the_model_sees_the_display_window_unless_auto_is_chosen(scene):
    """Default: intensities are mapped with the volume's current window/level (what the user sees); a new
    window/level re-encodes; 'auto' ignores the display."""
    effect, wrapper, node, geometry, *_ = scene
    node.CreateDefaultDisplayNodes()
    node.GetDisplayNode().SetWindowLevel(80.0, 140.0)
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    xy = display_xy(view.node, geometry.index_to_ras([24, 20, 6]))
    click(effect, view, xy)
    predictor = effect.logic.predictor
    assert effect.windowBox.currentText == "display" and predictor.ranges[-1] == (100.0, 180.0)
    node.GetDisplayNode().SetWindowLevel(200.0, 100.0)
    effect.clearPrompts()
    click(effect, view, xy)
    assert predictor.ranges[-1] == (0.0, 200.0) and len(predictor.cache) == 2  # re-encoded with the new window
    effect.clearPrompts()
    effect.windowBox.setCurrentText("auto")
    assert effect.logic.window == "auto" and qt.QSettings().value("SynthFM/window") == "auto"
    effect.logic._predictor = predictor
    click(effect, view, xy)
    from synthfm.segment.preprocess import intensity_range

    assert predictor.ranges[-1] == intensity_range(slicer.util.arrayFromVolume(node), "auto")
    effect.clearPrompts()
    effect.windowBox.setCurrentText("display")


def test_renaming_the_volume_keeps_its_encoded_slices(scene):
    """A node's GetMTime changes with its name, attributes or display node; only new voxels re-encode."""
    effect, wrapper, node, geometry, *_ = scene
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    xy = display_xy(view.node, geometry.index_to_ras([24, 20, 6]))
    click(effect, view, xy)
    predictor = effect.logic.predictor
    node.SetName("renamed")
    node.SetAttribute("DICOM.instanceUIDs", "1.2.3")
    effect.clearPrompts()
    click(effect, view, xy)
    assert len(predictor.cache) == 1  # the same embedding
    slicer.util.arrayFromVolume(node)[6] += 1.0
    slicer.util.arrayFromVolumeModified(node)
    effect.clearPrompts()
    click(effect, view, xy)
    assert len(predictor.cache) == 2  # new voxels: encoded again


def test_nothing_keeps_running_on_slicer_5_8_which_never_calls_cleanup(scene, monkeypatch):
    effect, wrapper, *_ = scene
    monkeypatch.setattr(slicer.app, "minorVersion", 8)
    monkeypatch.setattr("SynthFMSegmentLib.dependencies.missing_packages", lambda: [])
    effect.activate()
    assert effect.workerTimer.isActive()
    effect.deactivate()
    wrapper.cleanup()  # a no-op on 5.8
    assert not effect.workerTimer.isActive() and effect.previewNode is None


def test_settings_persist_in_qsettings(scene):
    effect = scene[0]
    effect.deviceBox.setCurrentText("cpu")
    from SynthFMSegmentLib.settings import Settings

    assert Settings().device == "cpu" and qt.QSettings().value("SynthFM/device") == "cpu"
    assert effect.logic.device == "cpu"


def test_prompts_on_another_slice_or_view_start_a_new_set(scene):
    effect, wrapper, node, geometry, *_ = scene
    node, geometry = volume_node(slicer.util.arrayFromVolume(node).copy(), angle=0.0)
    wrapper.parameter_node.volume = node
    red, green = SliceWidget(slicer.SliceNode("Red", "Axial")), SliceWidget(slicer.SliceNode("Green", "Coronal"))
    click(effect, red, display_xy(red.node, geometry.index_to_ras([24, 20, 5])))
    click(effect, red, display_xy(red.node, geometry.index_to_ras([30, 14, 5]), centre=False), negative=True)
    assert [len(p) for p in effect.prompts()[:2]] == [1, 1] and effect.plane[1:] == (0, 5)
    click(effect, red, display_xy(red.node, geometry.index_to_ras([24, 20, 6])))  # next axial slice
    assert [len(p) for p in effect.prompts()[:2]] == [1, 0] and effect.plane[1:] == (0, 6)
    assert effect.preview[6].any() and not effect.preview[5].any()
    click(effect, green, display_xy(green.node, geometry.index_to_ras([27, 20, 7])))  # coronal view
    assert [len(p) for p in effect.prompts()[:2]] == [1, 0] and effect.plane[1:] == (1, 20)


@pytest.mark.parametrize("missing", ["volume", "segment", "segmentation"])
def test_missing_selection_gives_a_clear_message(scene, missing):
    effect, wrapper, node, geometry, segmentation, truth, existing = scene
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    xy = display_xy(view.node, geometry.index_to_ras([24, 20, 5]))
    setattr(wrapper.parameter_node, {"volume": "volume", "segment": "segment_id", "segmentation": "segmentation"}[missing], None)
    click(effect, view, xy)
    assert effect.prompts() == ([], [], None) and effect.preview is None
    assert f"Select a {'source volume' if missing == 'volume' else missing}" in editor.messages[-1]
    effect.onApply()
    effect.onPropagate()
    assert len(editor.messages) == 3 and all(m.startswith("SynthFM: ") for m in editor.messages)


def test_click_outside_the_volume_gives_a_clear_message(scene):
    effect, wrapper, node, geometry, *_ = scene
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    click(effect, view, display_xy(view.node, geometry.index_to_ras([60, 20, 5])))
    assert effect.prompts() == ([], [], None) and "outside the volume" in editor.messages[-1]


def test_older_slicer_without_source_volume_api_uses_the_master_volume(scene):
    effect, wrapper, node, geometry, *_ = scene

    class OldSegmentEditorNode(editor.SegmentEditorNode):  # Slicer < 5.4
        GetSourceVolumeNode = property(lambda self: (_ for _ in ()).throw(AttributeError("GetSourceVolumeNode")))

    p = wrapper.parameter_node
    wrapper.parameter_node = OldSegmentEditorNode(p.volume, p.segmentation, p.segment_id)
    assert not hasattr(wrapper.parameter_node, "GetSourceVolumeNode")
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    click(effect, view, display_xy(view.node, geometry.index_to_ras([24, 20, 5])))
    assert effect.preview is not None and not editor.messages


def test_cancel_discards_and_deactivate_leaves_only_the_users_nodes(scene):
    effect, wrapper, node, geometry, segmentation, truth, existing = scene
    before = set(slicer.mrmlScene.nodes)
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    click(effect, view, display_xy(view.node, geometry.index_to_ras([24, 20, 5])))
    click(effect, view, display_xy(view.node, geometry.index_to_ras([30, 14, 5]), centre=False), negative=True)
    added = [slicer.mrmlScene.nodes[i] for i in set(slicer.mrmlScene.nodes) - before]
    assert sorted(n.GetName() for n in added) == ["SynthFM negative prompts", "SynthFM positive prompts", "SynthFM preview"]
    assert all(not n.save_with_scene for n in added) and effect.previewNode.GetHideFromEditors()
    effect.onCancel()
    assert effect.preview is None and effect.prompts() == ([], [], None) and effect.previewNode is None
    assert np.array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "organ", node), existing)
    click(effect, view, display_xy(view.node, geometry.index_to_ras([24, 20, 5])))
    effect.deactivate()
    assert set(slicer.mrmlScene.nodes) == before  # nothing left behind
    assert slicer.mrmlScene.GetNodeByID(segmentation.GetID()) is segmentation
    assert list(segmentation.segments) == ["organ"] and np.array_equal(segmentation.segments["organ"], existing)
    assert not wrapper.undo_stack


def test_options_frame_does_not_need_synthfm_installed(scene, monkeypatch):
    """setupOptionsFrame runs for every registered effect when a Segment Editor is created, before any install."""
    import builtins

    real_import = builtins.__import__

    def no_synthfm(name, *args, **kwargs):
        if name.startswith("synthfm"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    wrapper = scene[1]
    monkeypatch.setattr(builtins, "__import__", no_synthfm)
    clone = wrapper.self().clone()
    clone.self().setupOptionsFrame()
    assert clone.self().modelBox.items == [clone.self().settings.model]


def test_standin_rejects_what_slicer_rejects(tmp_path):
    """The stand-in is only useful if it fails where Slicer fails."""
    lib = tmp_path / "SomeEffectLib"
    lib.mkdir()
    (lib / "effect.py").write_text("class SegmentEditorEffect:\n    def __init__(self, scriptedEffect):\n        pass\n")
    wrapper = slicer.qSlicerSegmentEditorScriptedEffect(None)  # class name comes from the file name
    assert wrapper.setPythonSource(str(lib / "effect.py")) is False and wrapper.self() is None
    assert "class effectEffect was not found" in wrapper.errors[-1]  # printed by PythonQt, not raised
    (tmp_path / "OtherEffectLib").mkdir()
    (tmp_path / "OtherEffectLib" / "SegmentEditorEffect.py").write_text("from OtherEffectLib.helpers import x\n")
    wrapper = slicer.qSlicerSegmentEditorScriptedEffect(None)  # run as a plain module: not a package
    assert wrapper.setPythonSource(str(tmp_path / "OtherEffectLib" / "SegmentEditorEffect.py")) is False
    assert "'OtherEffectLib' is not a package" in wrapper.errors[-1]
    with pytest.raises(TypeError):
        qt.QPoint(10.5, 3)  # VTK event positions are ints; PythonQt's QPoint takes ints
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    assert not hasattr(segmentation, "AddEmptySegment")  # it is vtkSegmentation's: GetSegmentation().AddEmptySegment
    with pytest.raises(TypeError):
        slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode").AddControlPointWorld(1.0, 2.0)
    combo, seen = qt.QComboBox(), []
    combo.currentTextChanged.connect(seen.append)
    combo.addItems(["a", "b"])
    combo.clear()
    assert seen == ["a", ""]  # Qt: the first item added becomes current, clear() empties it, both signal
    wrapper = slicer.qSlicerSegmentEditorScriptedEffect(None)
    wrapper._self = type("E", (), {"processInteractionEvents": lambda self, *a: None})()
    assert wrapper.processInteractionEvents(None, 0, None) is False and wrapper.warnings  # must return a bool
