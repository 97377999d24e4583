"""How a viewer shows a slice of a ``(k, j, i)`` array: which array axis runs across the screen and which up it, and
which way. Slicer's default views are the reference (``vtkMRMLSliceNode::GetAxial/Coronal/SagittalSliceToRASMatrix``,
patient right on the screen's left), so that the command line's pictures look as the Slicer effect shows the slice.
Plain numpy; the Slicer module calls it with a view's own screen directions."""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import numpy as np

#: Slicer's preset views: the RAS directions of the screen's x (left to right), y (upwards) and the view's normal.
SLICER_VIEWS = {
    "Axial": ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),  # patient right on the left, anterior up
    "Coronal": ((-1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 1.0, 0.0)),  # patient right on the left, superior up
    "Sagittal": ((0.0, -1.0, 0.0), (0.0, 0.0, 1.0), (-1.0, 0.0, 0.0)),  # anterior on the left, superior up
}


class SliceView(NamedTuple):
    """Where a slice's two array axes (0: its rows, 1: its columns) go on the screen, and a pixel's shape there."""

    x_axis: int  # the slice axis that runs along the screen's x
    x_forward: bool  # its index grows from left to right
    y_axis: int  # the slice axis that runs along the screen's y
    y_up: bool  # its index grows upwards
    aspect: float  # a pixel's height over its width on the screen (views show square millimetres)

    def show(self, slice_2d: np.ndarray) -> np.ndarray:
        """``slice_2d`` turned and flipped as the view shows it: rows from the screen's top down, columns from left
        to right (extra trailing axes, such as colour, are kept)."""
        array = np.asarray(slice_2d)
        seen = np.moveaxis(array, (self.y_axis, self.x_axis), (0, 1))
        return seen[::-1 if self.y_up else 1, ::1 if self.x_forward else -1]


def preset_view(ijk_to_ras: np.ndarray, axis: int) -> str:
    """The name of Slicer's preset view whose normal is closest to array axis ``axis`` of a volume."""
    direction = np.asarray(ijk_to_ras, float)[:3, 2 - axis]  # array axis d is IJK axis 2 - d
    return max(SLICER_VIEWS, key=lambda name: abs(float(np.dot(SLICER_VIEWS[name][2], direction))))


def slice_view(ijk_to_ras: np.ndarray, axis: int, screen_xy: Optional[Sequence[Sequence[float]]] = None,
               name: Optional[str] = None) -> SliceView:
    """How a view shows slices along array ``axis`` of a volume with this 4x4 IJK-to-RAS matrix. ``screen_xy``: the
    RAS directions of the view's x and y, as the columns of a 3x2 array (a Slicer view's ``XYToRAS``); default: the
    preset view ``name`` of :data:`SLICER_VIEWS`, else :func:`preset_view`'s. ``name`` also names the view in errors.
    The view must be aligned with the volume's grid (else ValueError)."""
    m = np.asarray(ijk_to_ras, float)[:3, :3]
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    if screen_xy is None:
        name = name or preset_view(ijk_to_ras, axis)
        screen_xy = np.array(SLICER_VIEWS[name][:2]).T
    ijk_dirs = np.linalg.solve(m, np.asarray(screen_xy, float))  # screen x and y in IJK steps
    remaining = [d for d in range(3) if d != axis]  # the slice's rows, columns; array axis d is IJK axis 2 - d
    picks = []
    for column in range(2):
        weights = np.array([ijk_dirs[2 - d, column] for d in remaining])
        best = int(np.argmax(np.abs(weights)))
        picks.append((best, bool(weights[best] > 0)))
    (x_axis, x_forward), (y_axis, y_up) = picks
    if x_axis == y_axis:
        raise ValueError(f"the {name or 'view'} does not show slices along array axis {axis}")
    spacing = np.linalg.norm(m, axis=0)  # along i, j, k
    aspect = float(spacing[2 - remaining[y_axis]] / spacing[2 - remaining[x_axis]])
    return SliceView(x_axis, x_forward, y_axis, y_up, aspect)
