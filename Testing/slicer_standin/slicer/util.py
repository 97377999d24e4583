"""slicer.util helpers used by SynthFM (Slicer/Base/Python/slicer/util.py semantics)."""
from __future__ import annotations

import numpy as np
from vtk.util import numpy_support


def arrayFromVolume(volumeNode) -> np.ndarray:
    """A (k, j, i) numpy view of the volume's voxels (shares memory with the vtkImageData); as Slicer's
    ``slicer.util.arrayFromVolume``: (k, j, i, components) for a vector volume with several components, and a
    RuntimeError for other node classes."""
    image = volumeNode.GetImageData()
    shape = tuple(reversed(image.GetDimensions()))
    name = volumeNode.GetClassName()
    if name in ("vtkMRMLVectorVolumeNode", "vtkMRMLMultiVolumeNode", "vtkMRMLDiffusionWeightedVolumeNode"):
        components = image.GetNumberOfScalarComponents()
        shape = shape + ((components,) if components > 1 else ())
    elif name not in ("vtkMRMLScalarVolumeNode", "vtkMRMLLabelMapVolumeNode"):
        raise RuntimeError("Unsupported volume type: " + name)
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(shape)


def _grid_shape(volumeNode) -> tuple:
    """(k, j, i): the voxel grid a segmentation takes from a reference volume (its image data's dimensions; a colour
    volume's components are not part of it). Not a Slicer function: the stand-in's own helper."""
    return tuple(reversed(volumeNode.GetImageData().GetDimensions()))


def arrayFromVolumeModified(volumeNode) -> None:
    """Tell the volume (and its image data) that the voxels changed."""
    volumeNode.GetImageData().Modified()
    volumeNode.Modified()


def ijk_to_ras(volumeNode) -> np.ndarray:
    import vtk

    m = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def resample_nearest(array: np.ndarray, source_ijk_to_ras: np.ndarray, target_ijk_to_ras: np.ndarray,
                     target_shape) -> np.ndarray:
    """``array`` (k, j, i) on one grid onto another (nearest voxel; 0 outside), as vtkOrientedImageDataResample."""
    k, j, i = np.indices(tuple(target_shape)).reshape(3, -1)
    src = np.linalg.inv(source_ijk_to_ras) @ target_ijk_to_ras @ np.vstack([i, j, k, np.ones_like(i)])
    idx = np.floor(src[:3] + 0.5).astype(int)
    inside = np.all((idx >= 0) & (idx < np.array(array.shape[::-1])[:, None]), axis=0)
    out = np.zeros(len(i), array.dtype)
    out[inside] = array[idx[2, inside], idx[1, inside], idx[0, inside]]
    return out.reshape(tuple(target_shape))


def _temporary_labelmap_node():
    """Both helpers go through a temporary vtkMRMLLabelMapVolumeNode '__temp__' in the scene (added, removed)."""
    import slicer

    return slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__temp__")


def _reference(segmentationNode, referenceVolumeNode):
    """The given volume, else the one the segmentation's geometry was set from (its node reference)."""
    node = referenceVolumeNode or getattr(segmentationNode, "reference_volume", None)
    if node is None:
        raise RuntimeError("No reference volume is found in the input segmentationNode, therefore a valid "
                           "referenceVolumeNode input is required.")
    return node


def updateSegmentBinaryLabelmapFromArray(narray, segmentationNode, segmentId, referenceVolumeNode=None) -> None:
    """Set a segment from a (k, j, i) array on the reference volume's grid; it is stored on the segmentation's
    own geometry (resampled when that differs; a segmentation without one takes the reference volume's)."""
    import slicer

    referenceVolumeNode = _reference(segmentationNode, referenceVolumeNode)
    if narray.shape != _grid_shape(referenceVolumeNode):
        raise ValueError("array shape does not match the reference volume")
    temp = _temporary_labelmap_node()
    try:
        if segmentId not in segmentationNode.segments:
            raise RuntimeError("Importing of segment failed.")
        if segmentationNode.geometry is None:  # the first labelmap imported sets the geometry (no node reference)
            segmentationNode.geometry = (ijk_to_ras(referenceVolumeNode), _grid_shape(referenceVolumeNode))
        matrix, shape = segmentationNode.geometry
        mask = (np.asarray(narray) > 0).astype(np.uint8)
        segmentationNode.segments[segmentId] = resample_nearest(mask, ijk_to_ras(referenceVolumeNode), matrix, shape)
        segmentationNode.Modified()
    finally:
        slicer.mrmlScene.RemoveNode(temp)


def arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, referenceVolumeNode=None) -> np.ndarray:
    """A copy of the segment exported on the reference volume's grid (an empty segment gives zeros); Slicer
    raises RuntimeError when the export fails."""
    import slicer

    referenceVolumeNode = _reference(segmentationNode, referenceVolumeNode)
    shape = _grid_shape(referenceVolumeNode)
    temp = _temporary_labelmap_node()
    try:
        if segmentId not in segmentationNode.segments:
            raise RuntimeError("Export of segment failed.")
        narray = segmentationNode.segments[segmentId]
        if narray is None:
            return np.zeros(shape, np.uint8)
        matrix, _ = segmentationNode.geometry
        return resample_nearest(narray, matrix, ijk_to_ras(referenceVolumeNode), shape)
    finally:
        slicer.mrmlScene.RemoveNode(temp)
