"""The three masks of a prompted slice as pictures on the effect's buttons: Slicer's side of
``synthfm.io.thumbnails`` (numpy RGBA -> vtkImageData -> QImage -> QIcon, as Slicer's Data Probe draws its
magnifier with ``qMRMLUtils.vtkImageDataToQImage``)."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

THUMBNAIL_PX = 72  # side of each mask button's picture


def icon_from_rgba(rgba: np.ndarray):
    """An ``(H, W, 4)`` uint8 picture, rows from the top down, as a ``qt.QIcon``. Four components: CTK copies the
    scalars into the QImage without its 4-byte scanline padding, which only RGBA never needs."""
    import qt
    import slicer
    import vtk
    from vtk.util import numpy_support

    rgba = np.asarray(rgba)
    if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8:
        raise ValueError(f"icon_from_rgba takes (H, W, 4) uint8, got {rgba.shape} {rgba.dtype}")
    height, width = rgba.shape[:2]
    image = vtk.vtkImageData()
    image.SetDimensions(width, height, 1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 4)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = rgba[::-1].reshape(-1, 4)  # VTK rows go up
    qimage = qt.QImage()
    if not slicer.qMRMLUtils().vtkImageDataToQImage(image, qimage):
        raise ValueError("Slicer could not turn the mask picture into an image")
    return qt.QIcon(qt.QPixmap.fromImage(qimage))


def choice_icons(slice_node, volume_node, axis: int, image: np.ndarray, masks: Sequence[np.ndarray],
                 positive: Sequence = (), negative: Sequence = (), box: Sequence = None,
                 window: Tuple[float, float] = None) -> List:
    """One icon per mask of a slice (its ``(k, j, i)`` array's slice along ``axis``), turned as ``slice_node``'s view
    shows it and in square millimetres as it does, all over the same region around the masks, with the prompts
    (voxel ijk: points as dots, the box's two corners outlined)."""
    from synthfm.io.thumbnails import choice_thumbnails, prompt_marks
    from SynthFMSegmentLib.geometry import as_seen, seen_aspect

    rows, cols = [2 - d for d in range(3) if d != axis]  # the IJK axes of the slice array's rows and columns

    def xy(points):  # voxel (i, j, k) -> (x, y) = (column, row) of the slice array
        return [(p[cols], p[rows]) for p in points]

    marks = prompt_marks(image.shape, xy(positive), xy(negative), xy(box) if box else None)
    seen = [as_seen(slice_node, volume_node, axis, a) for a in (image, marks, *masks)]
    pictures = choice_thumbnails(seen[0], seen[2:], size=THUMBNAIL_PX, window=window, marks=seen[1],
                                 aspect=seen_aspect(slice_node, volume_node, axis))
    return [icon_from_rgba(p) for p in pictures]
