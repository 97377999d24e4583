"""Choosing a prompted slice in the SynthFM panel's list (``Prompted slice:``) shows it: the slice views of the
prompted orientation move to that slice (vtkMRMLSliceNode::JumpSliceByOffsetting: along their normal, pan and zoom
kept), the slice becomes the current one of the prompt set, views of other orientations stay, and nothing is sent
to the worker.  Refilling the list (prompts added or removed) moves no view.

The scene of test_segment_effect: an ellipsoid on axial slices 3..8 of 12 in a volume rotated about S (coronal and
sagittal views are oblique to it), the real worker app with the fake predictor.
"""
import numpy as np
import pytest

import slicer
from slicer import editor
from SynthFMSegmentLib.geometry import matrix_to_numpy, ras_to_ijk

from test_segment_effect import SliceWidget, click, display_xy, fake_worker, scene, settle  # noqa: F401  (fixtures)
from test_segment_logic import volume_node
from test_segment_slices import keep, prompt, slices_of


@pytest.fixture()
def layout():
    """The layout's slice views (qSlicerLayoutManager.sliceViewNames / sliceWidget): ``show(name, orientation)``
    adds one; all leave the layout afterwards."""
    widgets = slicer.app.layoutManager().slice_widgets

    def show(name, orientation):
        widgets[name] = SliceWidget(slicer.SliceNode(name, orientation))
        return widgets[name]

    yield show
    widgets.clear()


def pick(effect, index: int) -> None:
    """What a user's choice of slice ``index`` in the list does in Qt: the item becomes current, then
    ``activated(row)`` (also when it was current already)."""
    box = effect.sliceBox
    row = [n for n, label in enumerate(box.items) if label.startswith(f"slice {index}:")][0]
    box.setCurrentText(box.items[row])
    box.activated.emit(row)


def slice_to_ras(view) -> np.ndarray:
    return matrix_to_numpy(view.node.GetSliceToRAS())


def shown_index(view, node, axis: int) -> float:
    """The (continuous) slice index along array ``axis`` of the plane the view shows (any point of it)."""
    return float(ras_to_ijk(node, slice_to_ras(view)[:3, 3])[2 - axis])


def pan(view) -> np.ndarray:
    """Where the view's centre is in its own plane (its x and y directions): what panning changes."""
    m = slice_to_ras(view)
    return m[:3, :2].T @ m[:3, 3]


def distance_to_plane(view, ras) -> float:
    return float(abs((np.linalg.inv(matrix_to_numpy(view.node.GetXYToRAS())) @ np.r_[ras, 1.0])[2]))


def move(view, translation) -> None:
    m = slice_to_ras(view)
    m[:3, 3] = translation
    view.node.SetSliceToRAS(m)


def test_the_stand_in_jumps_by_offsetting_as_slicer_does():
    """vtkMRMLSliceNode::JumpSliceByOffsetting: the plane moves along its normal to the point, the in-plane position
    stays (ActiveSlice 0)."""
    node = slicer.SliceNode("Red", "Axial")
    node.JumpSliceByCentering(10.0, 20.0, 30.0)
    node.JumpSliceByOffsetting(1.0, 2.0, 3.0)
    assert np.allclose(matrix_to_numpy(node.GetSliceToRAS())[:3, 3], [10.0, 20.0, 3.0])
    node = slicer.SliceNode("Yellow", "Sagittal")
    node.JumpSliceByOffsetting(-7.0, 2.0, 3.0)
    assert np.allclose(matrix_to_numpy(node.GetSliceToRAS())[:3, 3], [-7.0, 0.0, 0.0])


def test_picking_a_prompted_slice_shows_it_in_the_views_of_its_orientation(scene, layout):
    effect, wrapper, node, geometry, *_ = scene
    red, compare = layout("Red", "Axial"), layout("Compare", "Axial")
    yellow, green = layout("Yellow", "Sagittal"), layout("Green", "Coronal")  # oblique to this rotated volume
    keep(effect)
    prompt(effect, red, geometry, [20, 18, 4])
    prompt(effect, red, geometry, [28, 22, 4])
    a = display_xy(red.node, geometry.index_to_ras([17, 14, 7]))
    click(effect, red, a, drag_to=display_xy(red.node, geometry.index_to_ras([31, 26, 7]), centre=False))
    assert list(effect.promptedSlices()) == [4, 7] and effect.plane[1:] == (0, 7)
    move(compare, geometry.index_to_ras([5, 35, 1]))  # another axial view, panned elsewhere, on slice 1
    move(yellow, geometry.index_to_ras([30, 10, 2]))
    move(green, geometry.index_to_ras([12, 30, 9]))
    before = {name: slice_to_ras(view) for name, view in (("red", red), ("compare", compare), ("yellow", yellow),
                                                           ("green", green))}
    fake = effect.logic.predictor
    calls, quality, preview = len(fake.prompts), effect.qualityLabel.text, effect.preview.copy()

    pick(effect, 4)
    assert effect.plane[1:] == (0, 4) and effect.prompts() == effect.promptedSlices()[4] and effect.box is None
    assert effect.sliceBox.currentText.startswith("slice 4:")
    for view in (red, compare):  # both axial views now show slice 4, panned as they were
        assert shown_index(view, node, 0) == pytest.approx(4, abs=1e-6)
    assert np.allclose(pan(red), before["red"][:3, :2].T @ before["red"][:3, 3])
    assert np.allclose(pan(compare), before["compare"][:3, :2].T @ before["compare"][:3, 3])
    assert distance_to_plane(red, geometry.index_to_ras([24, 20, 4])) < 1e-6  # the points' centre is in sight
    assert np.array_equal(slice_to_ras(yellow), before["yellow"]) and np.array_equal(slice_to_ras(green),
                                                                                    before["green"])
    settle(effect)
    assert len(fake.prompts) == calls and not effect.workerTimer.isActive()  # nothing sent to the worker
    assert np.array_equal(effect.preview, preview) and effect.qualityLabel.text == quality and not editor.messages

    pick(effect, 7)  # back to the box's slice: the views show the box centre's slice
    assert effect.plane[1:] == (0, 7) and effect.box == effect.promptedSlices()[7][2]
    assert shown_index(red, node, 0) == pytest.approx(7, abs=1e-6)
    assert shown_index(compare, node, 0) == pytest.approx(7, abs=1e-6)
    assert distance_to_plane(red, geometry.index_to_ras([24, 20, 7])) < 1e-6
    assert np.array_equal(slice_to_ras(yellow), before["yellow"]) and np.array_equal(slice_to_ras(green),
                                                                                    before["green"])


def test_the_list_refilled_by_the_effect_moves_no_view_and_picks_map_to_the_new_rows(scene, layout):
    effect, wrapper, node, geometry, *_ = scene
    red, compare = layout("Red", "Axial"), layout("Compare", "Axial")
    move(compare, geometry.index_to_ras([5, 35, 1]))
    keep(effect)
    for k in (4, 6, 7):  # every prompt refills the list and selects the current slice in it
        prompt(effect, red, geometry, [24, 20, k])
    shown = slice_to_ras(compare)
    assert shown_index(compare, node, 0) == pytest.approx(1, abs=1e-6)
    effect.removeSlice(7)  # the current slice: the list is refilled with slice 6 current
    assert effect.plane[1:] == (0, 6) and effect.sliceBox.currentText.startswith("slice 6:")
    assert np.array_equal(slice_to_ras(compare), shown) and effect.sliceBox.items[1].startswith("slice 6:")
    pick(effect, 6)  # row 1 is slice 6 now
    assert shown_index(compare, node, 0) == pytest.approx(6, abs=1e-6)
    move(compare, geometry.index_to_ras([5, 35, 10]))  # the user scrolls away
    pick(effect, 6)  # and chooses the current slice again: Qt's activated fires for it too
    assert shown_index(compare, node, 0) == pytest.approx(6, abs=1e-6)
    effect.clearButton.click()  # an empty list: nothing to choose, nothing moves
    effect.sliceBox.activated.emit(0)
    assert effect.plane is None and shown_index(compare, node, 0) == pytest.approx(6, abs=1e-6)


def test_a_coronal_prompt_set_moves_only_the_coronal_views(scene, layout):
    effect, wrapper, node, geometry, *_ = scene
    node, geometry = volume_node(slicer.util.arrayFromVolume(node).copy(), angle=0.0)  # every view aligned
    wrapper.parameter_node.volume = node
    effect.sourceVolumeNodeChanged()
    red, yellow = layout("Red", "Axial"), layout("Yellow", "Sagittal")
    green, other = layout("Green", "Coronal"), layout("Compare", "Coronal")
    keep(effect)
    prompt(effect, green, geometry, [24, 18, 5])
    prompt(effect, green, geometry, [24, 22, 6])
    assert list(effect.promptedSlices()) == [18, 22] and effect.plane[1:] == (1, 22)
    move(red, geometry.index_to_ras([10, 10, 2]))
    move(yellow, geometry.index_to_ras([40, 10, 2]))
    move(other, geometry.index_to_ras([10, 2, 2]))
    axial, sagittal = slice_to_ras(red), slice_to_ras(yellow)
    pick(effect, 18)
    assert effect.plane[1:] == (1, 18)
    for view in (green, other):
        assert shown_index(view, node, 1) == pytest.approx(18, abs=1e-6)
    assert distance_to_plane(green, geometry.index_to_ras([24, 18, 5])) < 1e-6
    assert np.array_equal(slice_to_ras(red), axial) and np.array_equal(slice_to_ras(yellow), sagittal)


def test_a_pick_while_propagating_waits_and_a_pick_after_keeps_the_propagated_preview(scene, layout):
    effect, wrapper, node, geometry, *_ = scene
    red = layout("Red", "Axial")
    keep(effect)
    prompt(effect, red, geometry, [24, 20, 4])
    prompt(effect, red, geometry, [24, 20, 7])
    shown = slice_to_ras(red)
    effect.onPropagate()
    pick(effect, 4)  # the progress dialog is window-modal in Slicer; a pick that gets through changes nothing
    assert effect.plane[1:] == (0, 7) and np.array_equal(slice_to_ras(red), shown)
    settle(effect)
    assert slices_of(effect.preview) == list(range(3, 9))  # the propagation's result still arrived
    propagated, text = effect.preview.copy(), effect.qualityLabel.text
    pick(effect, 4)  # after it: the views go there, the propagated preview stays the one Apply writes
    assert effect.plane[1:] == (0, 4) and shown_index(red, node, 0) == pytest.approx(4, abs=1e-6)
    assert np.array_equal(effect.preview, propagated) and effect.qualityLabel.text == text


def test_without_a_layout_a_pick_only_changes_the_current_slice(scene, layout, monkeypatch):
    effect, wrapper, node, geometry, *_ = scene
    red = layout("Red", "Axial")
    keep(effect)
    prompt(effect, red, geometry, [24, 20, 4])
    prompt(effect, red, geometry, [24, 20, 7])
    monkeypatch.setattr(slicer.app, "layout", None)  # Slicer without a main window: layoutManager() is None
    pick(effect, 4)
    assert effect.plane[1:] == (0, 4) and not editor.messages
