"""The one place where Slicer's views and nodes meet the core's voxel arrays.

Slicer gives RAS millimetres (``vtkMRMLVolumeNode.GetIJKToRASMatrix``, ``vtkMRMLSliceNode.GetXYToRAS``)
and numpy views indexed ``(k, j, i)`` (``slicer.util.arrayFromVolume``); the core works on ``(z, y, x)``
arrays with voxel prompts, which are the same thing.  Only VTK matrices are used here, so the module
is tested without Slicer through ``Testing/slicer_standin``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

ALIGNED_COS = 0.999  # |cos| between a slice normal and a volume axis to count as aligned


def matrix_to_numpy(vtk_matrix) -> np.ndarray:
    """A ``vtkMatrix4x4`` as a 4x4 numpy array."""
    return np.array([[vtk_matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def ijk_to_ras_matrix(volume_node) -> np.ndarray:
    import vtk

    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    return matrix_to_numpy(m)


def ras_to_ijk(volume_node, ras: Sequence[float]) -> np.ndarray:
    """RAS millimetres -> continuous voxel index ``(i, j, k)`` of ``volume_node``."""
    return (np.linalg.inv(ijk_to_ras_matrix(volume_node)) @ np.r_[np.asarray(ras, float), 1.0])[:3]


def xy_to_ras(slice_node, xy: Sequence[float]) -> np.ndarray:
    """A click in a slice view (display pixels ``x, y``) -> RAS millimetres, as Slicer maps it."""
    return (matrix_to_numpy(slice_node.GetXYToRAS()) @ np.array([xy[0], xy[1], 0.0, 1.0]))[:3]


def slice_axis(slice_node, volume_node) -> int:
    """The array axis (0: k, 1: j, 2: i) normal to the view, or ValueError for an oblique view."""
    normal = matrix_to_numpy(slice_node.GetSliceToRAS())[:3, 2]
    normal = normal / np.linalg.norm(normal)
    axes = ijk_to_ras_matrix(volume_node)[:3, :3]
    cosines = np.abs(normal @ (axes / np.linalg.norm(axes, axis=0)))
    best = int(np.argmax(cosines))
    if cosines[best] < ALIGNED_COS:
        raise ValueError(
            f"the {slice_node.GetName()} view is oblique to the volume (best alignment {cosines[best]:.3f}); SynthFM "
            "segments slices of the volume's own grid: use the view's 'Reformat' > 'Rotate to volume plane'"
        )
    return 2 - best  # IJK axis i/j/k is array axis 2/1/0
