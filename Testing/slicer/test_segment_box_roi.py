"""The box prompt as a markups ROI: a drag shows it on the volume's grid, dragging its handles re-predicts once,
what the model sees comes from the ROI, and no ROI outlives the prompt set.

The volume is rotated about an oblique axis, anisotropic and left-handed, with the slice views rotated to its
planes (Slicer's "Rotate to volume plane"), so a box that ignored the volume's directions or spacing, or one
aligned with RAS instead of IJK, lands on the wrong voxels.
"""
import numpy as np
import pytest
import vtk

import slicer
from SynthFMSegmentLib.geometry import matrix_to_numpy
from slicer.nodes import ORIENTATIONS
from synthfm.segment.volume_prompts import AXIS_INDEX

from test_segment_effect import SliceWidget, click, display_xy, fake_worker, scene, settle  # noqa: F401  (fixtures)

SPACING = np.array([0.8, 0.9, 2.5])
AXES = {"Axial": 0, "Coronal": 1, "Sagittal": 2}  # array axis normal to the view once rotated to the volume plane


def rotation(axis, angle) -> np.ndarray:
    """Rodrigues' rotation about a unit ``axis``."""
    k = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


DIRECTIONS = rotation([0.3, -0.5, 0.8], 0.4) @ np.diag([1.0, 1.0, -1.0])  # left-handed: k points down


def oblique_volume(wrapper):
    """An ellipsoid in a (12, 40, 48) volume with DIRECTIONS and SPACING; it becomes the editor's source volume."""
    zz, yy, xx = np.mgrid[:12, :40, :48]
    truth = ((xx - 24) / 12.0) ** 2 + ((yy - 20) / 10.0) ** 2 + ((zz - 6) / 4.0) ** 2 < 1
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3], ijk_to_ras[:3, 3] = DIRECTIONS * SPACING, [12.0, -30.0, 7.0]
    node = slicer.util.addVolumeFromArray((100 + 80 * truth).astype(np.float32), ijk_to_ras)
    wrapper.parameter_node.volume = node
    wrapper.self().sourceVolumeNodeChanged()
    return node, lambda ijk: (ijk_to_ras @ np.r_[ijk, 1.0])[:3]


def view_on_volume(orientation: str) -> SliceWidget:
    """A slice view rotated to the volume plane: its axes are the volume's directions (kept right-handed)."""
    node = slicer.SliceNode(orientation, orientation)
    m = DIRECTIONS @ np.array(ORIENTATIONS[orientation], float)
    if np.linalg.det(m) < 0:
        m[:, 0] *= -1
    node.slice_to_ras[:3, :3] = m
    return SliceWidget(node)


def drag(effect, view, to_ras, a, b) -> None:
    """Press on voxel ``a`` (view centred on it), release on voxel ``b`` (same slice)."""
    click(effect, view, display_xy(view.node, to_ras(a)), drag_to=display_xy(view.node, to_ras(b), centre=False))


def roi_corners_ijk(roi, volume) -> np.ndarray:
    """The ROI's 8 corners, as continuous voxel indices (i, j, k)."""
    half = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)]) * roi.GetSize()
    ras = matrix_to_numpy(roi.GetObjectToWorldMatrix()) @ np.c_[half, np.ones(8)].T
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(ijk_to_ras)
    return (np.linalg.inv(matrix_to_numpy(ijk_to_ras)) @ ras)[:3].T


def expected_box(axis, a, b) -> list:
    """The 2D box [x0, y0, x1, y1] (the core's slice axes) between voxels ``a`` and ``b``."""
    _, cx, cy = AXIS_INDEX[axis]
    a, b = np.asarray(a), np.asarray(b)
    return [min(a[cx], b[cx]), min(a[cy], b[cy]), max(a[cx], b[cx]), max(a[cy], b[cy])]


DRAGS = {"Axial": ([16, 12, 6], [33, 27, 6]), "Coronal": ([15, 20, 3], [31, 20, 9]),
         "Sagittal": ([24, 11, 2], [24, 30, 10])}


@pytest.mark.parametrize("orientation", list(DRAGS))
def test_drag_puts_the_roi_on_the_voxels_of_a_rotated_anisotropic_volume(scene, orientation):  # noqa: F811
    effect, wrapper, *_ = scene
    volume, to_ras = oblique_volume(wrapper)
    view, (a, b), axis = view_on_volume(orientation), DRAGS[orientation], AXES[orientation]
    drag(effect, view, to_ras, a, b)
    predictor = effect.logic.predictor
    settle(effect)
    assert len(predictor.prompts) == 1  # the ROI's own events while it is set up do not predict
    assert effect.plane[1:] == (axis, a[2 - axis])
    roi = effect.boxNode
    assert roi.GetClassName() == "vtkMRMLMarkupsROINode" and roi.GetROIType() == roi.ROITypeBox
    assert roi.GetHideFromEditors() and not roi.save_with_scene
    # the ROI's axes are the volume's i, j, k (up to sign): a box in the voxel grid, not in RAS
    axes = matrix_to_numpy(roi.GetObjectToWorldMatrix())[:3, :3]
    assert np.allclose(np.abs(np.sum(axes * DIRECTIONS, axis=0)), 1.0, atol=1e-9)
    corners = roi_corners_ijk(roi, volume)
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    in_plane = [d for d in range(3) if d != 2 - axis]
    assert np.array_equal(np.round(lo[in_plane]), np.minimum(a, b)[in_plane])  # the corners land on the dragged voxels
    assert np.array_equal(np.round(hi[in_plane]), np.maximum(a, b)[in_plane])
    assert np.allclose([lo[2 - axis], hi[2 - axis]], [a[2 - axis] - 0.5, a[2 - axis] + 0.5])  # one voxel thick
    settle(effect)
    assert np.allclose(predictor.prompts[-1].box, expected_box(axis, a, b), atol=0.35)


def scale_handle_drag(roi, moves) -> None:
    """What vtkSlicerMarkupsInteractionWidget does when the user drags an ROI handle in a view: Start, then per
    mouse move SetCenterWorld + SetSize inside a MRMLNodeModifyBlocker (ScaleWidgetROI), then End."""
    roi.InvokeCustomModifiedEvent(slicer.vtkMRMLMarkupsNode.PointStartInteractionEvent)
    for center, size in moves:
        blocked = roi.StartModify()
        roi.SetCenterWorld(*center)
        roi.SetSize(*size)
        roi.EndModify(blocked)
    roi.InvokeCustomModifiedEvent(slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent)


def test_dragging_the_roi_handles_changes_the_box_the_model_sees_with_one_prediction(scene):  # noqa: F811
    effect, wrapper, *_ = scene
    volume, to_ras = oblique_volume(wrapper)
    view = view_on_volume("Axial")
    drag(effect, view, to_ras, [16, 12, 6], [33, 27, 6])
    roi, predictor = effect.boxNode, effect.logic.predictor
    calls, object_to_world = len(predictor.prompts), matrix_to_numpy(roi.GetObjectToWorldMatrix())
    size0, centre0 = np.array(roi.GetSize()), object_to_world[:3, 3]
    i_axis = object_to_world[:3, 0] * np.sign(object_to_world[:3, 0] @ DIRECTIONS[:, 0])  # object x is +/- i
    # drag the +i face handle 5 voxels out, in three mouse moves
    moves = [(centre0 + i_axis * SPACING[0] * n / 2, size0 + [SPACING[0] * n, 0, 0]) for n in (2, 4, 5)]
    scale_handle_drag(roi, moves)
    settle(effect)
    assert len(predictor.prompts) == calls + 1  # one prediction for the whole drag, at its end
    settle(effect)
    assert np.allclose(predictor.prompts[-1].box, [16, 12, 38, 27], atol=0.35)
    assert effect.prompts()[2] == effect.box  # the box given to the logic is the ROI's
    # an edit outside a drag (the Markups module's ROI panel): one prediction; one that leaves the box as it is: none
    roi.SetCenterWorld(*(np.array(roi.GetCenterWorld()) + DIRECTIONS[:, 1] * SPACING[1] * 3))
    settle(effect)
    assert len(predictor.prompts) == calls + 2
    settle(effect)
    assert np.allclose(predictor.prompts[-1].box, [16, 15, 38, 30], atol=0.35)
    size = np.array(roi.GetSize())
    roi.SetSize(*size + np.abs(DIRECTIONS[:, 2] @ matrix_to_numpy(roi.GetObjectToWorldMatrix())[:3, :3]) * 4)
    settle(effect)
    assert len(predictor.prompts) == calls + 2  # thicker across the slice: the same box on the prompted slice
    scale_handle_drag(roi, [])  # a click on a handle without moving it
    settle(effect)
    assert len(predictor.prompts) == calls + 2


def test_a_press_on_the_box_outline_is_left_to_the_roi_handles(scene):  # noqa: F811
    effect, wrapper, *_ = scene
    volume, to_ras = oblique_volume(wrapper)
    view = view_on_volume("Axial")
    drag(effect, view, to_ras, [16, 12, 6], [33, 27, 6])
    on_edge = display_xy(view.node, to_ras([33, 20, 6]), centre=False) + [1, 1]
    click(effect, view, on_edge, consumed=False)
    click(effect, view, display_xy(view.node, to_ras([24.5, 19.5, 6]), centre=False))  # its centre: a point
    assert [len(p) for p in effect.prompts()[:2]] == [1, 0] and effect.prompts()[2] is not None


@pytest.mark.parametrize("action", ["clear", "cancel", "apply", "deactivate", "other slice", "other volume"])
def test_no_roi_outlives_its_prompt_set(scene, action):  # noqa: F811
    effect, wrapper, *_ = scene
    volume, to_ras = oblique_volume(wrapper)
    view = view_on_volume("Axial")
    drag(effect, view, to_ras, [16, 12, 6], [33, 27, 6])
    roi = effect.boxNode
    assert slicer.mrmlScene.GetNodesByClass("vtkMRMLMarkupsROINode") == [roi]
    if action == "clear":
        effect.clearPrompts()
    elif action == "cancel":
        effect.onCancel()
    elif action == "apply":
        effect.onApply()
    elif action == "deactivate":
        effect.deactivate()
    elif action == "other slice":
        click(effect, view, display_xy(view.node, to_ras([24, 20, 7])))
    else:
        oblique_volume(wrapper)
    assert slicer.mrmlScene.GetNodesByClass("vtkMRMLMarkupsROINode") == [] and effect.boxNode is None
    assert effect.prompts()[2] is None
    calls = len(effect.logic.predictor.prompts)
    roi.SetSize(1.0, 2.0, 3.0)  # the removed node is no longer listened to
    settle(effect)
    assert len(effect.logic.predictor.prompts) == calls


def test_standin_roi_fires_events_as_slicer():
    """vtkMRMLMarkupsROINode: one ModifiedEvent per Set call (then the centre control point's events), a blocker
    batches a handle move into one ModifiedEvent, custom MRML events reach Python observers as "NoEvent"."""
    roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    seen = []
    for name in ("ModifiedEvent", "PointAddedEvent", "PointModifiedEvent"):
        event = getattr(vtk.vtkCommand, name, None) or getattr(slicer.vtkMRMLMarkupsNode, name)
        roi.AddObserver(event, lambda caller, event_name, name=name: seen.append((name, event_name, caller is roi)))
    roi.SetSize(2.0, 4.0, 1.0)
    assert seen == [("ModifiedEvent", "ModifiedEvent", True), ("PointAddedEvent", "NoEvent", True),
                    ("PointModifiedEvent", "NoEvent", True)]
    seen.clear()
    roi.SetSize(2.0, 4.0, 1.0)  # unchanged: nothing
    blocked = roi.StartModify()
    roi.SetCenterWorld(1.0, 2.0, 3.0)
    roi.SetSize(3.0, 4.0, 1.0)
    assert seen == []
    roi.EndModify(blocked)
    assert [s[0] for s in seen] == ["ModifiedEvent", "PointModifiedEvent"]
    m = vtk.vtkMatrix4x4()
    m.DeepCopy([0, -1, 0, 5, 1, 0, 0, 6, 0, 0, -1, 7, 0, 0, 0, 1])  # left-handed: ObjectToWorld is orthogonalised
    roi.SetAndObserveObjectToNodeMatrix(m)
    world = matrix_to_numpy(roi.GetObjectToWorldMatrix())
    assert np.allclose(world[:3, 2], [0, 0, 1]) and np.allclose(world[:3, 3], [5, 6, 7])
    assert list(roi.GetCenterWorld()) == [5.0, 6.0, 7.0] and roi.GetSize() == (3.0, 4.0, 1.0)
