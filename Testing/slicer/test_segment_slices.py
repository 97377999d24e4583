"""Prompts on several slices in the SynthFM effect: with "Keep prompts on other slices" ticked, prompts on another
slice of the same view add to the set, each prompted slice keeps its preview and is listed in the panel, Propagate
sends every prompted slice to the worker, which fills the slices between them; unticked, a prompt on another slice
replaces the set as before.  Bad input (another view, slices that disagree, a single-slice volume) ends in a
message, never a traceback.

The worker is the real ``synthfm serve`` app with the fake predictor of test_segment_effect (bright voxels near
the first point or the box centre): the ellipsoid lies on axial slices 3..8 of 12.
"""
import numpy as np
import pytest

import qt
import slicer
from slicer import editor

from test_segment_effect import SliceWidget, click, display_xy, fake_worker, scene, settle  # noqa: F401  (fixtures)
from test_segment_logic import volume_node


def keep(effect, on=True) -> None:
    """Tick (or untick) the option as a user does: a click on the check box."""
    if bool(effect.keepSlicesBox.checked) != on:
        effect.keepSlicesBox.click()
    assert bool(effect.keepSlicesBox.checked) == on


def prompt(effect, view, geometry, ijk, negative=False) -> None:
    click(effect, view, display_xy(view.node, geometry.index_to_ras(ijk)), negative=negative)


def point_on_3_box_on_8(effect, geometry) -> None:
    """Prompts kept on two axial slices, as a user gives them: a point on slice 3, a box dragged on slice 8; both
    directions."""
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    keep(effect)
    effect.directionBox.setCurrentText("both")
    prompt(effect, view, geometry, [24, 20, 3])
    a = display_xy(view.node, geometry.index_to_ras([17, 14, 8]))
    click(effect, view, a, drag_to=display_xy(view.node, geometry.index_to_ras([31, 26, 8]), centre=False))


def slices_of(mask, axis=0):
    return sorted(set(np.nonzero(mask)[axis].tolist())) if mask is not None else []


def test_ticked_prompts_on_other_slices_add_up_and_each_slice_keeps_its_preview(scene):
    effect, wrapper, node, geometry, segmentation, truth, existing = scene
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    keep(effect)
    assert qt.QSettings().value("SynthFM/keep_slices") == "true"
    prompt(effect, view, geometry, [24, 20, 4])
    a = display_xy(view.node, geometry.index_to_ras([17, 14, 7]))
    click(effect, view, a, drag_to=display_xy(view.node, geometry.index_to_ras([31, 26, 7]), centre=False))
    prompt(effect, view, geometry, [24, 20, 7], negative=True)
    slices = effect.promptedSlices()
    assert list(slices) == [4, 7] and effect.plane[1:] == (0, 7)
    assert [len(slices[4][0]), len(slices[4][1]), slices[4][2]] == [1, 0, None]
    assert [len(slices[7][0]), len(slices[7][1]), slices[7][2] is not None] == [0, 1, True]
    assert slices_of(effect.preview) == [4, 7]  # slice 4's preview stays while slice 7 is prompted
    assert effect.prompts() == slices[7]  # the current slice's prompts
    assert effect.slicesLabel.text == "Prompted axial slices: 4, 7"
    assert effect.sliceBox.items == ["slice 4: 1 positive; IoU 0.93", "slice 7: box, 1 negative; IoU 0.93"]
    assert effect.sliceBox.currentText.startswith("slice 7")
    assert "on slice 7: 0.93 (2 prompted slices" in effect.qualityLabel.text
    fake = effect.logic.predictor
    calls = len(fake.prompts)
    effect.updatePreview()  # nothing changed: nothing sent
    effect.updatePreview(every_slice=True)  # e.g. another model: every slice again, one request per slice queued
    settle(effect)
    assert len(fake.prompts) == calls + 2 and slices_of(effect.preview) == [4, 7]
    preview = effect.preview.copy()
    effect.onApply()  # the prompted slices' previews, one undo step
    assert np.array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "organ", node) > 0, preview)
    assert effect.promptedSlices() == {} and effect.boxNodes == {} and effect.slicesLabel.text == "No prompted slice yet."
    wrapper.undo()
    assert np.array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "organ", node), existing)


def test_unticked_a_prompt_on_another_slice_replaces_the_set_as_before(scene):
    effect, wrapper, node, geometry, *_ = scene
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    keep(effect)
    prompt(effect, view, geometry, [24, 20, 4])
    prompt(effect, view, geometry, [24, 20, 7])
    assert list(effect.promptedSlices()) == [4, 7]
    keep(effect, False)
    assert qt.QSettings().value("SynthFM/keep_slices") == "false"
    assert list(effect.promptedSlices()) == [4, 7]  # unticking removes nothing by itself
    prompt(effect, view, geometry, [24, 20, 6])
    assert list(effect.promptedSlices()) == [6] and slices_of(effect.preview) == [6]
    assert effect.slicesLabel.text == "Prompted axial slice: 6"


def test_remove_slice_deletes_only_that_slices_prompts_and_preview(scene):
    effect, wrapper, node, geometry, *_ = scene
    from SynthFMSegmentLib.worker_client import current_link

    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    keep(effect)
    for k in (4, 6, 7):
        prompt(effect, view, geometry, [24, 20, k])
    a = display_xy(view.node, geometry.index_to_ras([17, 14, 6]))
    click(effect, view, a, drag_to=display_xy(view.node, geometry.index_to_ras([31, 26, 6]), centre=False))
    assert list(effect.promptedSlices()) == [4, 6, 7] and list(effect.boxNodes) == [6]
    roi = effect.boxNodes[6]
    effect.sliceBox.setCurrentText("slice 6: box, 1 positive; IoU 0.93")
    effect.removeSliceButton.click()
    assert list(effect.promptedSlices()) == [4, 7] and slices_of(effect.preview) == [4, 7]
    assert effect.boxNodes == {} and slicer.mrmlScene.GetNodeByID(roi.GetID()) is None  # its ROI left the scene
    assert sorted(slot[2] for slot in current_link().last_predict) == [4, 7]  # not sent again after a restart
    assert effect.plane[1:] == (0, 7)
    effect.removeSlice(7)  # the current slice: the nearest prompted one becomes current
    assert effect.plane[1:] == (0, 4) and slices_of(effect.preview) == [4]
    effect.clearButton.click()
    assert effect.promptedSlices() == {} and effect.preview is None and effect.previewNode is None


def test_propagate_fills_between_the_prompted_slices_in_the_worker(scene, fake_worker, monkeypatch):
    effect, wrapper, node, geometry, segmentation, truth, existing = scene
    worker = fake_worker[0]
    sent = []
    start = worker.start_propagation
    monkeypatch.setattr(worker, "start_propagation", lambda *a, **k: sent.append((a, k)) or start(*a, **k))
    point_on_3_box_on_8(effect, geometry)
    fake = effect.logic.predictor
    fake.prompts.clear()
    effect.onPropagate()
    assert editor.open_dialogs[-1].labelText == "SynthFM: filling between slices 3, 8 and propagating"
    settle(effect)
    (args, kwargs), = sent
    volume_id, axis, positive, negative, box, direction, options, boxes, candidates = args
    assert axis == 0 and box is None and [round(p[2]) for p in positive] == [3] and not negative
    assert candidates == {}  # no other mask chosen: the model's own choice on every prompted slice
    assert [[round(c[2]) for c in b] for b in boxes] == [[8, 8]]  # both prompted slices reached the worker
    assert slices_of(effect.preview) == list(range(3, 9))  # the slices between are filled: the whole ellipsoid
    assert (effect.preview <= truth).all()
    assert effect.qualityLabel.text.startswith("Propagated over 6 slices (3..8) from prompted slices 3, 8")
    between = fake.prompts[2:10]  # after the two prompted slices: slices 4..7 from each side's front
    assert all(p.box is not None and p.mask_logits is not None and len(p.points) == 1 for p in between)
    preview = effect.preview.copy()
    effect.onApply()
    assert np.array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "organ", node) > 0, preview)
    wrapper.undo()  # one undo step removes the whole result
    assert np.array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "organ", node), existing)


def test_prompts_whose_masks_do_not_overlap_are_filled_with_a_note(scene):
    effect, wrapper, node, geometry, *_ = scene
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    keep(effect)
    prompt(effect, view, geometry, [16, 20, 4])  # the left part of the structure
    prompt(effect, view, geometry, [32, 20, 7])  # the right part: two masks that do not overlap
    effect.onPropagate()
    settle(effect)
    assert slices_of(effect.preview) == list(range(3, 9)) and not editor.messages
    assert "Note: the masks on prompted slices 4 and 7 do not overlap in the slice plane" in effect.qualityLabel.text


def test_prompted_slices_that_disagree_end_in_a_message(scene):
    """A box on slice 10, past the structure's end (slices 3..8): the worker's message reaches the user, the
    dialog closes, nothing is written and the slices' previews stay."""
    effect, wrapper, node, geometry, segmentation, truth, existing = scene
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    keep(effect)
    prompt(effect, view, geometry, [24, 20, 5])
    a = display_xy(view.node, geometry.index_to_ras([17, 14, 10]))
    click(effect, view, a, drag_to=display_xy(view.node, geometry.index_to_ras([31, 26, 10]), centre=False))
    previews = effect.preview.copy()
    effect.onPropagate()
    dialog = editor.open_dialogs[-1]
    settle(effect)
    assert editor.messages == ["SynthFM: propagation failed: the prompts give an empty mask on slice 10; move or add "
                               "prompts there first (or leave that slice out)"]
    assert dialog.closed and not effect._busy and "Traceback" not in effect.workerLabel.text
    assert np.array_equal(effect.preview, previews) and not wrapper.undo_stack
    assert np.array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "organ", node), existing)
    effect.removeSlice(10)  # what the message says: leave that slice out
    effect.onPropagate()
    settle(effect)
    assert slices_of(effect.preview) == list(range(3, 9)) and len(editor.messages) == 1


def test_a_slice_with_negative_points_only_is_named_when_propagating(scene):
    effect, wrapper, node, geometry, *_ = scene
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    keep(effect)
    prompt(effect, view, geometry, [24, 20, 4])
    prompt(effect, view, geometry, [24, 20, 7], negative=True)
    assert "only negative points given" in effect.workerLabel.text  # its preview: refused, in the panel
    assert slices_of(effect.preview) == [4]
    effect.onPropagate()
    settle(effect)
    assert editor.messages == ["SynthFM: propagation did not start: slice 7: only negative points given: add a "
                               "positive point or a box inside the structure"]
    assert not effect._busy and slices_of(effect.preview) == [4]


def test_prompts_in_another_view_are_refused_while_slices_are_kept(scene):
    effect, wrapper, node, geometry, *_ = scene
    node, geometry = volume_node(slicer.util.arrayFromVolume(node).copy(), angle=0.0)  # coronal views aligned
    wrapper.parameter_node.volume = node
    effect.sourceVolumeNodeChanged()
    red, green = SliceWidget(slicer.SliceNode("Red", "Axial")), SliceWidget(slicer.SliceNode("Green", "Coronal"))
    keep(effect)
    prompt(effect, red, geometry, [24, 20, 4])
    prompt(effect, red, geometry, [24, 20, 7])
    prompt(effect, green, geometry, [30, 20, 5])  # away from the kept points, which this coronal plane shows
    assert editor.messages == ["SynthFM: prompts on several slices must all be in one view: yours are on axial slices "
                               "4, 7. Prompt in the axial view, or press 'Clear prompts' (or untick 'Keep prompts on "
                               "other slices') to start over in the coronal view."]
    assert list(effect.promptedSlices()) == [4, 7] and effect.plane[1] == 0
    effect.clearButton.click()
    prompt(effect, green, geometry, [24, 20, 5])  # after Clear: a set in the coronal view
    assert list(effect.promptedSlices()) == [20] and effect.plane[1] == 1 and slices_of(effect.preview, 1) == [20]


def test_a_single_slice_volume_propagates_to_itself(scene):
    """A 2D image loaded as a volume: the axial slice is segmented, Propagate keeps it; a coronal prompt is refused
    with the core's message (slices would be 1 pixel thick)."""
    effect, wrapper, node, geometry, segmentation, truth, existing = scene
    image = slicer.util.arrayFromVolume(node)[5:6].copy()
    node, geometry = volume_node(image, angle=0.0)
    wrapper.parameter_node.volume = node
    effect.sourceVolumeNodeChanged()
    red, green = SliceWidget(slicer.SliceNode("Red", "Axial")), SliceWidget(slicer.SliceNode("Green", "Coronal"))
    keep(effect)
    prompt(effect, red, geometry, [24, 20, 0])
    effect.onPropagate()
    settle(effect)
    assert slices_of(effect.preview) == [0] and not editor.messages
    assert effect.qualityLabel.text == "Propagated over 1 slice (0..0), up to the volume's ends. Apply to keep."
    effect.clearButton.click()
    prompt(effect, green, geometry, [24, 20, 0])
    assert "slices along axis 1 would be 1 pixel thick" in effect.workerLabel.text and effect.preview is None


@pytest.mark.parametrize("choice, between", [("registration", "register"), ("half-way", "mix")])
def test_the_fill_between_prompted_slices_is_sent_and_remembered(scene, fake_worker, monkeypatch, choice, between):
    """"Slices between prompted slices" (Advanced) sends its choice with Propagate and is remembered; with
    'registration' the worker segments only the prompted slices and the steps beyond them, with 'half-way' it
    segments the slices between too; either way the slices between come back, on the bright ellipsoid."""
    from SynthFMSegmentLib.settings import PREFIX, Settings

    effect, wrapper, node, geometry, segmentation, truth, existing = scene
    worker = fake_worker[0]
    sent = []
    start = worker.start_propagation
    monkeypatch.setattr(worker, "start_propagation", lambda *a, **k: sent.append(a[6]) or start(*a, **k))
    assert effect.betweenBox.currentText == "model" and "registration" in effect.betweenBox.toolTip
    effect.betweenBox.setCurrentText(choice)
    assert Settings().between_fill == choice
    effect.setupOptionsFrame()  # the panel built again (the next session) shows the choice
    assert effect.betweenBox.currentText == choice
    point_on_3_box_on_8(effect, geometry)
    fake = effect.logic.predictor
    decoded = []
    predict = fake.predict
    monkeypatch.setattr(fake, "predict", lambda image, prompts, key=None, **k: decoded.append(key[-1])
                        or predict(image, prompts, key, **k))
    effect.onPropagate()
    settle(effect)
    assert sent == [{"between": between}]
    assert bool(set(decoded) & {4, 5, 6, 7}) == (between == "mix")  # the model sees the slices between only in "mix"
    assert slices_of(effect.preview) == list(range(3, 9))  # ... and they are filled: the whole ellipsoid's extent
    inside = (effect.preview[4:8] & truth[4:8]).sum((1, 2))
    assert (inside > 0).all() and inside.sum() > 0.9 * effect.preview[4:8].sum()  # they follow the bright ellipsoid
    effect.betweenBox.setCurrentText("model")
    assert Settings().between_fill == "model" and effect._propagation_options() == {}
    qt.QSettings.store.pop(PREFIX + "between_fill", None)


def test_the_earlier_registration_check_box_is_kept_as_the_choice(scene):
    """A user who ticked the release before's 'Fill between prompted slices by image registration'
    (SynthFM/register_between) finds 'registration' chosen; a choice made since wins."""
    from SynthFMSegmentLib.settings import PREFIX, Settings

    effect = scene[0]
    qt.QSettings().setValue(PREFIX + "register_between", "true")
    effect.setupOptionsFrame()
    assert effect.betweenBox.currentText == "registration" and effect._propagation_options() == {"between": "register"}
    effect.betweenBox.setCurrentText("half-way")
    effect.setupOptionsFrame()
    assert effect.betweenBox.currentText == "half-way" and Settings().between_fill == "half-way"
    for name in ("register_between", "between_fill"):
        qt.QSettings.store.pop(PREFIX + name, None)
