"""From a 2D slice to the encoder's input, and from the decoder's output back to the slice.

Intensities are windowed to [0, 1] (CT window presets, or robust percentiles for MR/US), the slice
is resized so its longest side equals the encoder's input size and padded bottom/right, as SAM and
LiteMedSAM do (to square physical pixels when its pixels are not square: a coronal slice of thick axial slices).  :class:`SliceTransform` maps prompt coordinates and masks between the two frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from synthfm.models.sam import LOW_RES

#: CT windows as (width, level) in Hounsfield units.
CT_WINDOWS = {
    "ct-soft": (400.0, 40.0),
    "ct-abdomen": (350.0, 50.0),
    "ct-liver": (150.0, 60.0),
    "ct-lung": (1500.0, -600.0),
    "ct-bone": (1800.0, 400.0),
    "ct-brain": (80.0, 40.0),
}
WINDOWS = ("auto", "percentile", "minmax", *CT_WINDOWS)
Window = Union[str, Tuple[float, float]]


def looks_like_ct(array: np.ndarray) -> bool:
    """Hounsfield-like values: air near -1000 and dense tissue well above 0."""
    lo, hi = np.percentile(array, [0.5, 99.5])
    return lo <= -500 and hi >= 100


def intensity_range(array: np.ndarray, window: Window = "auto") -> Tuple[float, float]:
    """The (low, high) intensities mapped to 0 and 1; computed once per volume, applied to every slice."""
    if isinstance(window, tuple):
        lo, hi = float(window[0]), float(window[1])
    elif window in CT_WINDOWS:
        width, level = CT_WINDOWS[window]
        lo, hi = level - width / 2, level + width / 2
    elif window == "auto":
        return intensity_range(array, "ct-soft" if looks_like_ct(array) else "percentile")
    elif window == "percentile":
        lo, hi = (float(v) for v in np.percentile(array, [0.5, 99.5]))
    elif window == "minmax":
        lo, hi = float(array.min()), float(array.max())
    else:
        raise ValueError(f"unknown window '{window}'; choose one of {', '.join(WINDOWS)} or give (low, high)")
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def normalize(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((np.asarray(image, np.float32) - lo) / (hi - lo), 0.0, 1.0)


@dataclass(frozen=True)
class SliceTransform:
    """Geometry of one slice in the encoder's ``size x size`` input (resized longest side, padded).

    ``aspect`` is a pixel's height over its width (row spacing / column spacing, :func:`slice_aspect`): the slice is
    resized to its physical shape, square pixels in the input as a viewer shows it and as the model was trained, so a
    coronal slice of 5 mm axial slices is not squashed. 1: square pixels (the slice's own pixel grid)."""

    height: int
    width: int
    size: int
    aspect: float = 1.0

    @property
    def scale(self) -> float:
        """Input pixels per column of the slice (the longest physical side becomes ``size``)."""
        return self.size / max(self.height * self.aspect, self.width)

    @property
    def resized(self) -> Tuple[int, int]:
        """(height, width) of the slice inside the input, before padding."""
        return (max(1, int(self.height * self.aspect * self.scale + 0.5)),
                max(1, int(self.width * self.scale + 0.5)))

    @property
    def lowres_shape(self) -> Tuple[int, int]:
        """(height, width) of the part of the decoder's 256 x 256 low-res logits that covers the slice."""
        rh, rw = self.resized
        return max(1, round(rh * LOW_RES / self.size)), max(1, round(rw * LOW_RES / self.size))

    def _factors(self) -> np.ndarray:
        rh, rw = self.resized
        return np.array([rw / self.width, rh / self.height])

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        """Pixel ``(x, y)`` coordinates (``(..., 2)``; boxes as ``(..., 2, 2)`` corners) -> input frame."""
        return np.asarray(xy, np.float64) * self._factors()

    def to_pixel(self, xy: np.ndarray) -> np.ndarray:
        """Input-frame ``(x, y)`` -> pixel coordinates of the slice."""
        return np.asarray(xy, np.float64) / self._factors()

    def box_to_input(self, box: np.ndarray) -> np.ndarray:
        return self.to_input(np.asarray(box, np.float64).reshape(2, 2)).reshape(4)

    def logits_to_slice(self, logits: torch.Tensor) -> torch.Tensor:
        """Low-res logits ``(..., 256, 256)`` -> logits on the slice's pixel grid ``(..., H, W)``."""
        crop_h, crop_w = self.lowres_shape
        lead = logits.shape[:-2]
        x = logits.reshape(-1, 1, *logits.shape[-2:])[..., :crop_h, :crop_w].float()
        x = F.interpolate(x, size=(self.height, self.width), mode="bilinear", align_corners=False)
        return x.reshape(*lead, self.height, self.width)

    def mask_to_lowres(self, mask: np.ndarray) -> torch.Tensor:
        """A slice mask -> ``(256, 256)`` float map in the low-res decoder frame (for mask prompts/targets)."""
        rh, rw = self.resized
        x = torch.from_numpy(np.asarray(mask, np.float32))[None, None]
        x = F.interpolate(x, size=(round(rh * LOW_RES / self.size), round(rw * LOW_RES / self.size)), mode="bilinear",
                          align_corners=False)
        return F.pad(x, (0, LOW_RES - x.shape[-1], 0, LOW_RES - x.shape[-2]))[0, 0]


def slice_spacing(spacing: Sequence[float], axis: int) -> Tuple[float, float]:
    """Pixel spacing (rows, columns) of slices normal to array ``axis`` of a ``(z, y, x)`` volume whose ``spacing``
    is ``(x, y, z)`` (axis 0: rows y, columns x; 1: rows z, columns x; 2: rows z, columns y)."""
    x, y, z = (float(v) for v in spacing)
    if min(x, y, z) <= 0:
        raise ValueError(f"spacing must be three positive sizes (x, y, z), got {tuple(spacing)}")
    return {0: (y, x), 1: (z, x), 2: (z, y)}[axis]


def slice_aspect(spacing: Sequence[float], axis: int) -> float:
    """A pixel's height over its width in slices normal to ``axis`` (:func:`slice_spacing`)."""
    rows, cols = slice_spacing(spacing, axis)
    return rows / cols


def to_model_input(image01: np.ndarray, size: int, aspect: float = 1.0) -> Tuple[torch.Tensor, SliceTransform]:
    """A [0, 1] slice ``(H, W)`` -> ``(3, size, size)`` float tensor (resized to square physical pixels for a pixel
    ``aspect`` of height over width, padded) and its transform."""
    image01 = np.asarray(image01, np.float32)
    if image01.ndim != 2:
        raise ValueError(f"expected a 2D slice (H, W), got shape {image01.shape}")
    transform = SliceTransform(image01.shape[0], image01.shape[1], size, float(aspect))
    rh, rw = transform.resized
    x = torch.from_numpy(image01)[None, None]
    x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True)
    x = F.pad(x, (0, size - rw, 0, size - rh))
    return x[0].expand(3, -1, -1).contiguous(), transform


def prepare_slice(image: np.ndarray, size: int, window: Window = "auto",
                  value_range: Optional[Tuple[float, float]] = None,
                  aspect: float = 1.0) -> Tuple[torch.Tensor, SliceTransform]:
    """Window (or use ``value_range`` computed for the whole volume) and convert one slice (pixel ``aspect``:
    height over width)."""
    lo, hi = value_range if value_range is not None else intensity_range(np.asarray(image), window)
    return to_model_input(normalize(image, lo, hi), size, aspect)
