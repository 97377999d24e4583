"""slicer.util helpers used by SynthFM (Slicer/Base/Python/slicer/util.py semantics)."""
from __future__ import annotations

import numpy as np
from vtk.util import numpy_support


def arrayFromVolume(volumeNode) -> np.ndarray:
    """A (k, j, i) numpy view of the volume's voxels (shares memory with the vtkImageData)."""
    image = volumeNode.GetImageData()
    dims = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])


def updateSegmentBinaryLabelmapFromArray(narray, segmentationNode, segmentId, referenceVolumeNode=None) -> None:
    """Set a segment from a (k, j, i) array on the reference volume's grid."""
    if segmentId not in segmentationNode.segments:
        raise ValueError(f"segment {segmentId} not found")
    if referenceVolumeNode is not None and narray.shape != arrayFromVolume(referenceVolumeNode).shape:
        raise ValueError("array shape does not match the reference volume")
    segmentationNode.segments[segmentId] = np.array(narray, dtype=np.uint8)
    segmentationNode.Modified()


def arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, referenceVolumeNode=None) -> np.ndarray:
    """A copy of the segment exported on the reference volume's grid (an empty segment gives zeros); Slicer
    raises RuntimeError when the export fails. The stand-in keeps segments on one grid and cannot resample."""
    if segmentId not in segmentationNode.segments:
        raise RuntimeError("Export of segment failed.")
    narray = segmentationNode.segments[segmentId]
    if referenceVolumeNode is not None:
        shape = arrayFromVolume(referenceVolumeNode).shape
        if narray is None:
            return np.zeros(shape, np.uint8)
        if narray.shape != shape:
            raise NotImplementedError("stand-in: segment is not on the reference volume's grid (no resampling)")
    if narray is None:
        raise RuntimeError("No reference volume is found in the input segmentationNode, therefore a valid "
                           "referenceVolumeNode input is required.")
    return narray.copy()
