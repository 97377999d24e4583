"""SynthFMSegment's logic through the Slicer API stand-in: clicks land on the right voxel, prompts in RAS
segment the right structure and the result is written into the segment."""
import numpy as np
import pytest
import vtk
from vtk.util import numpy_support

import slicer
from SynthFMSegmentLib.geometry import ras_to_ijk, slice_axis, xy_to_ras
from SynthFMSegmentLib.logic import SynthFMSegmentLogic
from synthfm.io import Volume


def volume_node(array: np.ndarray, spacing=(0.8, 0.9, 2.5), angle=0.0, origin=(10.0, -20.0, 5.0), direction=None):
    """A scalar volume node as Slicer builds it: voxels in vtkImageData, geometry in IJK-to-RAS (``direction``: the
    3x3 direction cosines; default a rotation by ``angle`` about the k axis)."""
    c, s = np.cos(angle), np.sin(angle)
    direction = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) if direction is None else np.asarray(direction, float)
    geometry = Volume(array, spacing, origin, direction)
    image = vtk.vtkImageData()
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True))
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    node.SetAndObserveImageData(image)
    m = vtk.vtkMatrix4x4()
    for r, row in enumerate(geometry.ijk_to_ras_matrix()):
        for col, v in enumerate(row):
            m.SetElement(r, col, v)
    node.SetIJKToRASMatrix(m)
    return node, geometry


def click_on_voxel(slice_node, geometry, ijk):
    """The display (x, y) of a voxel centre after centring the view on it (what a user clicks)."""
    ras = geometry.index_to_ras(ijk)
    slice_node.JumpSliceByCentering(*ras)
    from SynthFMSegmentLib.geometry import matrix_to_numpy

    xy = np.linalg.inv(matrix_to_numpy(slice_node.GetXYToRAS())) @ np.r_[ras, 1]
    assert abs(xy[2]) < 1e-9  # on the slice plane
    return xy[:2] + np.array([0.3, -0.2])  # a click a fraction of a display pixel off the centre


@pytest.mark.parametrize("orientation, axis", [("Axial", 0), ("Coronal", 1), ("Sagittal", 2)])
@pytest.mark.parametrize("angle", [0.0, 0.3])
def test_clicks_land_on_the_right_voxel(orientation, axis, angle):
    node, geometry = volume_node(np.zeros((12, 20, 24), np.float32), angle=angle)
    view = slicer.SliceNode(f"{orientation} view", orientation)
    if angle and orientation != "Axial":  # a sagittal/coronal view of a rotated volume is oblique to its grid
        with pytest.raises(ValueError, match="oblique.*Rotate to volume plane"):
            slice_axis(view, node)
        return
    assert slice_axis(view, node) == axis
    for ijk in ([3, 4, 5], [20, 17, 11], [0, 0, 0]):
        xy = click_on_voxel(view, geometry, ijk)
        assert np.array_equal(np.round(ras_to_ijk(node, xy_to_ras(view, xy))).astype(int), ijk)


def test_logic_segments_from_ras_prompts_into_the_segment():
    zz, yy, xx = np.mgrid[:8, :48, :56]
    truth = ((xx - 28) / 14.0) ** 2 + ((yy - 24) / 10.0) ** 2 + ((zz - 4) / 3.2) ** 2 < 1
    image = (100 + 80 * truth + np.random.default_rng(0).normal(0, 6, truth.shape)).astype(np.float32)
    node, geometry = volume_node(image, angle=0.3)
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.GetSegmentation().AddEmptySegment("tumour")
    ys, xs = np.nonzero(truth[4])
    box = [geometry.index_to_ras([xs.min(), ys.min(), 4]), geometry.index_to_ras([xs.max(), ys.max(), 4])]
    logic = SynthFMSegmentLogic(model="medsam-lite", device="cpu")
    mask = logic.segment(node, segmentation, "tumour", box_ras=box, propagate=False)
    written = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "tumour", node)
    assert np.array_equal(written, mask.astype(np.uint8))
    dice = 2 * (mask[4] & truth[4]).sum() / (mask[4].sum() + truth[4].sum())
    assert dice > 0.85 and not mask[[0, 1, 2, 3, 5, 6, 7]].any()
    calls = logic.predictor.encoder_calls
    logic.segment(node, segmentation, "tumour", box_ras=box, propagate=False)  # same slice: embedding reused
    assert logic.predictor.encoder_calls == calls


def test_logic_fills_between_boxes_on_several_slices():
    """Boxes on slices 2 and 6 of a structure on slices 1..7: the slices between are filled, propagation runs
    beyond; the fake predictor (bright voxels near the box centre) stands in for the model."""
    from test_segment_effect import FakePredictor

    zz, yy, xx = np.mgrid[:9, :40, :48]
    truth = ((xx - 24) / 9.0) ** 2 + ((yy - 20) / 7.0) ** 2 + ((zz - 4) / 3.5) ** 2 < 1
    node, geometry = volume_node((100 + 80 * truth).astype(np.float32), angle=0.3)
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.GetSegmentation().AddEmptySegment("organ")
    logic = SynthFMSegmentLogic(device="cpu")
    logic._predictor = fake = FakePredictor()
    boxes = [[geometry.index_to_ras([17, 14, k]), geometry.index_to_ras([31, 26, k])] for k in (6, 2)]
    mask = logic.segment(node, segmentation, "organ", boxes_ras=boxes)
    assert sorted(set(np.nonzero(mask)[0])) == sorted(set(np.nonzero(truth)[0]))  # 1..7: filled and beyond
    assert [p.box is not None for p in fake.prompts[:2]] == [True, True] and (mask <= truth).all()
    assert fake.aspects and all(a == pytest.approx(0.9 / 0.8) for a in fake.aspects)  # axial: rows j 0.9, cols i 0.8
    assert np.array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "organ", node) > 0, mask)
    with pytest.raises(ValueError, match="use propagate=True"):
        logic.segment(node, segmentation, "organ", boxes_ras=boxes, propagate=False)
