"""Masks carried from slice to slice by deformable image registration (no model).

Between two prompted slices the structure's outline follows the image: each prompted mask is carried to the next
slice by a demons registration of the two slices' images (SimpleITK's fast symmetric forces demons, on a window
around the mask), then to the next, and the two carried masks are mixed by distance (the nearer prompted slice
weighs more). ``between="register"`` in :class:`synthfm.segment.propagate.PropagationOptions`.
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import numpy as np
import SimpleITK as sitk

from synthfm.segment.preprocess import normalize
from synthfm.utils.masks import around

#: pixels of image around a mask's bounding box that its registration sees
PAD = 24


def carry(soft: np.ndarray, moving: np.ndarray, fixed: np.ndarray, value_range: Tuple[float, float],
          iterations: int = 50, smoothing: float = 2.0) -> np.ndarray:
    """The soft mask ``soft`` (0..1) of the slice ``moving`` carried onto the slice ``fixed``.

    ``iterations`` demons iterations; ``smoothing``: the displacement field's Gaussian smoothing, in pixels.
    """
    if not (soft > 0.5).any():
        return np.zeros_like(soft, dtype=np.float32)
    rows, cols = around(soft > 0.5, PAD)

    def image(array: np.ndarray) -> sitk.Image:
        return sitk.GetImageFromArray(normalize(array[rows, cols], *value_range))

    fixed_image = image(fixed)
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfIterations(int(iterations))
    demons.SetStandardDeviations(float(smoothing))
    field = demons.Execute(fixed_image, image(moving))
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    window = sitk.GetImageFromArray(np.ascontiguousarray(soft[rows, cols], dtype=np.float32))
    out = np.zeros(soft.shape, np.float32)
    out[rows, cols] = sitk.GetArrayFromImage(sitk.Resample(window, fixed_image, transform, sitk.sitkLinear, 0.0))
    return out


def registered_fill(slice_at: Callable[[int], np.ndarray], a: int, mask_a: np.ndarray, b: int, mask_b: np.ndarray,
                    value_range: Tuple[float, float], iterations: int = 50, smoothing: float = 2.0,
                    step: Callable[[int], None] = lambda i: None) -> Dict[int, np.ndarray]:
    """Masks of the slices strictly between ``a < b``: ``mask_a`` carried up and ``mask_b`` carried down slice by
    slice (:func:`carry` with ``iterations`` and ``smoothing``), mixed with weights ``1 - t`` and ``t``
    (``t = (i - a) / (b - a)``) and kept above 0.5. ``step(i)`` is called before each registration (progress,
    cancel)."""
    def chain(mask: np.ndarray, indices: range, back: int) -> Dict[int, np.ndarray]:
        """``mask`` carried onto each slice of ``indices`` in turn, from the slice ``back`` before it."""
        carried, soft = {}, mask.astype(np.float32)
        for i in indices:
            step(i)
            soft = carried[i] = carry(soft, slice_at(i - back), slice_at(i), value_range, iterations, smoothing)
        return carried

    up, down = chain(mask_a, range(a + 1, b), 1), chain(mask_b, range(b - 1, a, -1), -1)
    return {i: (1 - (i - a) / (b - a)) * up[i] + (i - a) / (b - a) * down[i] > 0.5 for i in range(a + 1, b)}
