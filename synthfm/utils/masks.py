"""Overlap of binary masks, shared by the stages (propagation compares slices; evaluation scores them)."""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
from scipy import ndimage as ndi


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient; 1.0 when both masks are empty (nothing to find, nothing found)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    total = pred.sum() + truth.sum()
    return 1.0 if total == 0 else float(2 * (pred & truth).sum() / total)


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union; 1.0 when both masks are empty."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    union = (pred | truth).sum()
    return 1.0 if union == 0 else float((pred & truth).sum() / union)


def box_region(shape: Tuple[int, int], box: Sequence[float]) -> np.ndarray:
    """Boolean ``shape`` map of the pixels a box ``x0, y0, x1, y1`` (inclusive, may be fractional) covers."""
    x0, y0, x1, y1 = box
    region = np.zeros(shape, bool)
    region[max(0, int(np.floor(y0))): max(0, int(np.ceil(y1)) + 1), max(0, int(np.floor(x0))): max(0, int(np.ceil(x1)) + 1)] = True
    return region


def box_fit(masks: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """IoU of each mask's bounding box (``masks``: (M, H, W)) with ``box`` ``x0, y0, x1, y1``; 0 for an empty mask."""
    fits = np.zeros(len(masks))
    bx0, by0, bx1, by1 = box
    for m, mask in enumerate(np.asarray(masks, bool)):
        if not mask.any():
            continue
        x0, y0, x1, y1 = tight_box(mask)
        inter = max(0.0, min(x1, bx1) - max(x0, bx0) + 1) * max(0.0, min(y1, by1) - max(y0, by0) + 1)
        fits[m] = inter / ((x1 - x0 + 1) * (y1 - y0 + 1) + (bx1 - bx0 + 1) * (by1 - by0 + 1) - inter)
    return fits


def best_box_fit(masks: np.ndarray, box: Sequence[float], tiebreak: np.ndarray) -> int:
    """Index of the mask whose bounding box fits ``box`` best; ties go to the highest ``tiebreak`` (e.g. the IoU
    head)."""
    return int(np.lexsort((np.asarray(tiebreak), box_fit(masks, box)))[-1])


def tight_box(mask: np.ndarray) -> np.ndarray:
    """``x0, y0, x1, y1`` (pixel columns and rows) of a non-empty 2D mask's pixels."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], float)


def around(mask: np.ndarray, pad: int) -> Tuple[slice, slice]:
    """Rows and columns of a non-empty 2D mask's bounding box grown by ``pad`` pixels each way, clipped to the
    image. Morphology and distances of the mask that reach at most ``pad`` pixels past it come out the same there
    as on the whole image (where the box is clipped, the image's edge is the crop's), in a fraction of the time."""
    rows, cols = np.nonzero(np.any(mask, 1))[0], np.nonzero(np.any(mask, 0))[0]
    height, width = np.shape(mask)
    return (slice(max(int(rows[0]) - pad, 0), min(int(rows[-1]) + pad + 1, height)),
            slice(max(int(cols[0]) - pad, 0), min(int(cols[-1]) + pad + 1, width)))


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Each pixel's distance to the mask's outline, negative inside, positive outside (half a pixel at the edge)."""
    mask = np.asarray(mask, bool)
    inside = ndi.distance_transform_edt(mask)
    outside = ndi.distance_transform_edt(~mask)
    return np.where(mask, 0.5 - inside, outside - 0.5)


def mean_shape(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The outline half-way between two masks' (their signed distances averaged, kept where the mean is inside);
    a subset of their union. When one mask is empty the other is returned."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if not a.any() or not b.any():
        return (a | b).copy()
    window = around(a | b, 2)  # every pixel of either mask and a ring of background: the distances are the same
    out = np.zeros(a.shape, bool)
    out[window] = signed_distance(a[window]) + signed_distance(b[window]) < 0
    return out


def interior_point(mask: np.ndarray) -> Tuple[int, int]:
    """``(x, y)`` of a non-empty 2D mask's most interior pixel (farthest from its boundary; the first of equals)."""
    window = around(mask, 1)  # every pixel's nearest background pixel is as near inside the 1-pixel ring
    dist = ndi.distance_transform_edt(np.asarray(mask)[window])
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x) + window[1].start, int(y) + window[0].start


def cut_to_intensity(mask: np.ndarray, smooth: np.ndarray, centre: float, limit: float) -> np.ndarray:
    """``mask`` without the pixels whose (smoothed) intensity lies further than ``limit`` from ``centre``, opened
    3 x 3 (no 1-2 px seams along a neighbour's edge) and with its holes filled (propagation's ``intensity_gate``
    and the point prompts' gate)."""
    mask = np.asarray(mask, bool)
    out = np.zeros(mask.shape, bool)
    if not mask.any():
        return out
    window = around(mask, 1)  # the opening reaches 1 pixel; the ring of background holds no hole
    kept = mask[window] & (np.abs(smooth[window] - centre) <= limit)
    out[window] = ndi.binary_fill_holes(ndi.binary_opening(kept, np.ones((3, 3), bool)))
    return out


def parts_touching(mask: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """The connected parts of ``mask`` that touch ``anchor``; all of ``mask`` when it is one part or none touches."""
    labels, n = ndi.label(mask)
    touching = np.unique(labels[anchor & mask])
    return np.isin(labels, touching) if n > 1 and touching.size else mask


def inside_and_ring(image: np.ndarray, mask: np.ndarray, width: int = 3) -> Tuple[float, float]:
    """Mean of ``image`` under a non-empty ``mask`` and in a ``width``-pixel ring outside it (the inside mean when
    there is no ring)."""
    window = around(mask, width)
    mask, image = np.asarray(mask, bool)[window], np.asarray(image)[window]
    ring = ndi.binary_dilation(mask, iterations=width) & ~mask
    inside = float(image[mask].mean())
    return inside, (float(image[ring].mean()) if ring.any() else inside)
