"""Prompts given in 3D (voxel indices) -> a slice index and 2D prompts on that slice, for any axis."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from synthfm.segment.prompts import Prompts

#: For slicing axis a of a (z, y, x) array: which voxel index (i, j, k) gives the slice, x and y.
AXIS_INDEX = {0: (2, 0, 1), 1: (1, 0, 2), 2: (0, 1, 2)}


def slice_prompts(positive: Sequence[Sequence[float]] = (), negative: Sequence[Sequence[float]] = (),
                  box: Optional[Sequence[Sequence[float]]] = None, axis: int = 0) -> Tuple[int, Prompts]:
    """Voxel ``(i, j, k)`` points (and a box as two opposite corners) -> ``(slice index, Prompts)``.

    All prompts must lie on one slice along ``axis`` (0: k, axial; 1: j, coronal; 2: i, sagittal).
    """
    s, cx, cy = AXIS_INDEX[axis]
    pos = np.asarray(positive, float).reshape(-1, 3)
    neg = np.asarray(negative, float).reshape(-1, 3)
    corners = np.asarray(box, float).reshape(-1, 3) if box is not None else np.zeros((0, 3))
    if box is not None and len(corners) != 2:
        raise ValueError("a box needs two opposite corners (i, j, k each)")
    everything = np.vstack([pos, neg, corners])
    if not len(everything):
        raise ValueError("no prompts given: add --point (or --box) in voxel or physical coordinates")
    indices = np.unique(np.round(everything[:, s]).astype(int))
    if len(indices) != 1:
        raise ValueError(f"prompts lie on different slices {indices.tolist()} along axis {axis}; put them on one slice")
    xy = lambda a: a[:, [cx, cy]]  # noqa: E731
    box2d = None
    if box is not None:
        c = xy(corners)
        box2d = [c[:, 0].min(), c[:, 1].min(), c[:, 0].max(), c[:, 1].max()]
    return int(indices[0]), Prompts.make(xy(pos), xy(neg), box2d)
