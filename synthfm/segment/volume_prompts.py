"""Prompts given in 3D (voxel indices) -> slice indices and 2D prompts on those slices, for any axis."""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from synthfm.segment.prompts import Prompts

#: For slicing axis a of a (z, y, x) array: which voxel index (i, j, k) gives the slice, x and y.
AXIS_INDEX = {0: (2, 0, 1), 1: (1, 0, 2), 2: (0, 1, 2)}
#: The views whose slices are normal to array axis 0, 1, 2.
VIEWS = ("axial", "coronal", "sagittal")


def prompts_by_slice(positive: Sequence[Sequence[float]] = (), negative: Sequence[Sequence[float]] = (),
                     boxes: Sequence[Sequence[Sequence[float]]] = (), axis: int = 0) -> Dict[int, Prompts]:
    """Voxel ``(i, j, k)`` points and boxes (each two opposite corners) -> ``{slice index: Prompts}``.

    Prompts are grouped by the slice they lie on along ``axis`` (0: k, axial; 1: j, coronal; 2: i, sagittal);
    each box lies on one slice and a slice has at most one box.
    """
    if axis not in AXIS_INDEX:
        raise ValueError(f"axis must be 0 (axial), 1 (coronal) or 2 (sagittal), got {axis}")
    s, cx, cy = AXIS_INDEX[axis]
    pos = np.asarray(positive, float).reshape(-1, 3)
    neg = np.asarray(negative, float).reshape(-1, 3)
    on = lambda p: int(np.round(p[s]))  # noqa: E731
    xy = lambda p: (p[cx], p[cy])  # noqa: E731
    slices: Dict[int, dict] = {}
    for box in boxes:
        corners = np.asarray(box, float).reshape(-1, 3)
        if len(corners) != 2:
            raise ValueError("a box needs two opposite corners (i, j, k each)")
        first, second = on(corners[0]), on(corners[1])
        if first != second:
            raise ValueError(f"a box has corners on slices {first} and {second} along axis {axis} "
                             f"({VIEWS[axis]}); draw each box on one slice")
        entry = slices.setdefault(first, {"pos": [], "neg": [], "box": None})
        if entry["box"] is not None:
            raise ValueError(f"two boxes on slice {first} along axis {axis}; give one box per slice")
        (x0, y0), (x1, y1) = xy(corners[0]), xy(corners[1])
        entry["box"] = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
    for kind, points in (("pos", pos), ("neg", neg)):
        for p in points:
            slices.setdefault(on(p), {"pos": [], "neg": [], "box": None})[kind].append(xy(p))
    if not slices:
        raise ValueError("no prompts given: add --point (or --box) in voxel or physical coordinates")
    return {i: Prompts.make(e["pos"], e["neg"], e["box"]) for i, e in sorted(slices.items())}


def slice_prompts(positive: Sequence[Sequence[float]] = (), negative: Sequence[Sequence[float]] = (),
                  box: Optional[Sequence[Sequence[float]]] = None, axis: int = 0) -> Tuple[int, Prompts]:
    """Voxel ``(i, j, k)`` points (and a box as two opposite corners), all on one slice -> ``(slice index, Prompts)``."""
    by_slice = prompts_by_slice(positive, negative, [box] if box is not None else [], axis)
    if len(by_slice) != 1:
        raise ValueError(f"prompts lie on different slices {list(by_slice)} along axis {axis}; put them on one slice")
    return next(iter(by_slice.items()))
