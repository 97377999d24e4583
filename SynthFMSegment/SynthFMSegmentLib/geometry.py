"""The one place where Slicer's views and nodes meet the core's voxel arrays.

Slicer gives RAS millimetres (``vtkMRMLVolumeNode.GetIJKToRASMatrix``, ``vtkMRMLSliceNode.GetXYToRAS``)
and numpy views indexed ``(k, j, i)`` (``slicer.util.arrayFromVolume``); the core works on ``(z, y, x)``
arrays with voxel prompts, which are the same thing.  Only VTK matrices are used here, so the module
is tested without Slicer through ``Testing/slicer_standin``.
"""
from __future__ import annotations

import itertools
from typing import List, Sequence

import numpy as np

ALIGNED_COS = 0.999  # |cos| between a slice normal and a volume axis to count as aligned


def matrix_to_numpy(vtk_matrix) -> np.ndarray:
    """A ``vtkMatrix4x4`` as a 4x4 numpy array."""
    return np.array([[vtk_matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def numpy_to_matrix(array: np.ndarray):
    """A 4x4 numpy array as a ``vtkMatrix4x4``."""
    import vtk

    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(array[r, c]))
    return m


def ijk_to_ras_matrix(volume_node) -> np.ndarray:
    import vtk

    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    return matrix_to_numpy(m)


def volume_shape(volume_node) -> tuple:
    """The voxel grid's ``(k, j, i)`` size (without the colour components a vector volume has)."""
    return tuple(reversed(volume_node.GetImageData().GetDimensions()))


def voxels(volume_node) -> np.ndarray:
    """The volume's voxels as the core takes them, ``(k, j, i)``: ``slicer.util.arrayFromVolume`` (a view, no copy),
    or for a colour (vector) volume, such as an RGB ultrasound frame, the grey a viewer shows
    (:func:`synthfm.io.volume.as_grey`; Slicer's own effects take its first component)."""
    import slicer

    array = slicer.util.arrayFromVolume(volume_node)
    if array.ndim == 4:
        from synthfm.io.volume import as_grey

        return as_grey(array)
    return array


def voxel_spacing(volume_node) -> tuple:
    """The voxel size in mm along ``(i, j, k)`` (the core's ``(x, y, z)`` spacing): the IJK-to-RAS matrix's column
    lengths, as ``vtkMRMLVolumeNode.GetSpacing`` holds them."""
    return tuple(float(v) for v in np.linalg.norm(ijk_to_ras_matrix(volume_node)[:3, :3], axis=0))


def ras_to_ijk(volume_node, ras: Sequence[float]) -> np.ndarray:
    """RAS millimetres -> continuous voxel index ``(i, j, k)`` of ``volume_node``."""
    return (np.linalg.inv(ijk_to_ras_matrix(volume_node)) @ np.r_[np.asarray(ras, float), 1.0])[:3]


def on_slice(volume_node, ras: Sequence[float], axis: int, index: int) -> np.ndarray:
    """``ras`` moved along array ``axis`` onto the centre of slice ``index`` (RAS): a point a view shows on that
    slice, whatever rounding put the prompt near it."""
    ijk = ras_to_ijk(volume_node, ras)
    ijk[2 - axis] = index
    return (ijk_to_ras_matrix(volume_node) @ np.r_[ijk, 1.0])[:3]


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


def _view(slice_node, volume_node, axis: int):
    """How ``slice_node``'s view shows slices along array ``axis`` (the core's :class:`synthfm.io.views.SliceView`)."""
    from synthfm.io.views import slice_view

    screen_xy = matrix_to_numpy(slice_node.GetXYToRAS())[:3, :2]  # RAS directions of screen x and screen y (up)
    return slice_view(ijk_to_ras_matrix(volume_node), axis, screen_xy, name=f"{slice_node.GetName()} view")


def as_seen(slice_node, volume_node, axis: int, slice_2d: np.ndarray) -> np.ndarray:
    """A slice of the ``(k, j, i)`` array along ``axis`` (its two remaining array axes in order) turned and flipped
    as ``slice_node``'s view shows it: rows along the view's y from its top down, columns along its x from left
    to right (the view aligned with the volume's grid, as :func:`slice_axis` requires)."""
    return _view(slice_node, volume_node, axis).show(slice_2d)


def seen_aspect(slice_node, volume_node, axis: int) -> float:
    """A voxel's height over its width in :func:`as_seen`'s picture (the view shows square millimetres)."""
    return _view(slice_node, volume_node, axis).aspect


# ---- the box prompt as a markups ROI (vtkMRMLMarkupsROINode: ObjectToNode matrix + Size in the object frame) ----
def box_roi(volume_node, corner0: Sequence[float], corner1: Sequence[float], axis: int, index: int):
    """A drag from ``corner0`` to ``corner1`` (RAS) on slice ``index`` along array ``axis`` -> the ROI that shows it.

    Returns ``(object_to_node, size)``: a 4x4 matrix whose columns are the volume's i, j, k directions (the
    third flipped if needed: ROI frames are right-handed) with the box centre as origin, and the side lengths in
    mm along those axes.  The box spans the two corners in the slice and one voxel across it, centred on the slice.
    """
    m = ijk_to_ras_matrix(volume_node)
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    a, b = ras_to_ijk(volume_node, corner0), ras_to_ijk(volume_node, corner1)
    centre, size = (a + b) / 2, np.abs(b - a)
    centre[2 - axis], size[2 - axis] = index, 1.0
    rotation = m[:3, :3] / spacing
    if np.linalg.det(rotation) < 0:
        rotation[:, 2] *= -1
    object_to_node = np.eye(4)
    object_to_node[:3, :3], object_to_node[:3, 3] = rotation, (m @ np.r_[centre, 1.0])[:3]
    return object_to_node, size * spacing


def box_from_roi(volume_node, object_to_world, size: Sequence[float], axis: int, index: int) -> List[List[float]]:
    """The box prompt an ROI gives: two opposite RAS corners on slice ``index`` of the voxel-grid box that holds
    the ROI (the bounds of its 8 corners in IJK; exactly its own corners when it is aligned with the grid)."""
    half = np.array(list(itertools.product((-0.5, 0.5), repeat=3))) * np.asarray(size, float)
    corners = (matrix_to_numpy(object_to_world) @ np.c_[half, np.ones(8)].T)[:3].T
    ijk = np.array([ras_to_ijk(volume_node, c) for c in corners])
    lo, hi = ijk.min(axis=0), ijk.max(axis=0)
    lo[2 - axis] = hi[2 - axis] = index
    m = ijk_to_ras_matrix(volume_node)
    return [(m @ np.r_[p, 1.0])[:3].tolist() for p in (lo, hi)]


def box_outline(volume_node, box: Sequence[Sequence[float]], axis: int) -> np.ndarray:
    """The 4 RAS corners, in order around it, of a box prompt (two opposite RAS corners on a slice along ``axis``)."""
    a, b = (ras_to_ijk(volume_node, c) for c in box)
    u, v = [d for d in range(3) if d != 2 - axis]
    corners = []
    for cu, cv in ((a[u], a[v]), (b[u], a[v]), (b[u], b[v]), (a[u], b[v])):
        p = a.copy()
        p[u], p[v] = cu, cv
        corners.append(p)
    return (ijk_to_ras_matrix(volume_node) @ np.c_[corners, np.ones(4)].T)[:3].T


def distance_to_outline(xy: Sequence[float], polygon: np.ndarray) -> float:
    """Distance (display pixels) from ``xy`` to the closed polygon ``polygon`` (n x 2) drawn in a view."""
    p, a = np.asarray(xy, float), np.asarray(polygon, float)
    b = np.roll(a, -1, axis=0)
    t = np.clip(np.einsum("ij,ij->i", p - a, b - a) / np.maximum(np.einsum("ij,ij->i", b - a, b - a), 1e-12), 0, 1)
    return float(np.min(np.linalg.norm(a + t[:, None] * (b - a) - p, axis=1)))
