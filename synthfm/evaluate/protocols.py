"""Prompt protocols for evaluation, deterministic given a seed (pixel coordinates of one slice)."""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
from scipy import ndimage as ndi

from synthfm.segment.prompts import Prompts
from synthfm.utils.masks import tight_box

#: "<prompt>-choose": those prompts, then the user presses "Other mask" (at most twice) until the best of the
#: decoder's three candidates is shown (the candidate closest to the truth; a per-slice, interactive protocol)
CHOOSE = "-choose"
#: interactive protocols: first prompts, then correction clicks (``next_click``) on each answer's largest error
CLICK_PROTOCOLS = ("clicks", "box-clicks")
PROTOCOLS = ("point1", "point3", "point1neg2", "box", "box-jitter") + CLICK_PROTOCOLS + \
    ("point1" + CHOOSE, "point3" + CHOOSE, "box" + CHOOSE)


def base_protocol(protocol: str) -> str:
    """The prompts a protocol starts from (``point1-choose`` -> ``point1``)."""
    return protocol[:-len(CHOOSE)] if protocol.endswith(CHOOSE) else protocol


def interior_point(mask: np.ndarray, spacing: Sequence[float] = (1.0, 1.0)) -> np.ndarray:
    """The most interior pixel ``(x, y)`` (maximum of the spacing-aware distance to the boundary; the first in
    row-major order among equals). Computed in the mask's bounding box grown by one background pixel: the nearest
    background pixel of any mask pixel lies in that box, so the distances and the chosen pixel are those of the
    whole slice."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return np.array([0.0, 0.0])  # no interior: the first pixel, as the whole-slice argmax gives
    crop = np.pad(mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], 1)
    dist = ndi.distance_transform_edt(crop, sampling=spacing)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return np.array([x + cols[0], y + rows[0]], float)


def make_prompts(protocol: str, mask: np.ndarray, rng: np.random.Generator,
                 spacing: Sequence[float] = (1.0, 1.0)) -> Prompts:
    """First prompts of ``protocol`` for the structure ``mask`` (``clicks`` starts like ``point1``, ``box-clicks``
    like ``box``)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown prompt protocol '{protocol}'; choose one of {', '.join(PROTOCOLS)}")
    if not mask.any():
        raise ValueError("cannot place prompts on an empty structure")
    protocol = base_protocol(protocol)
    centre = interior_point(mask, spacing)
    if protocol in ("point1", "clicks"):
        return Prompts.make([centre])
    if protocol == "point3":
        ys, xs = np.nonzero(mask)
        pick = rng.choice(len(xs), size=min(2, len(xs)), replace=False)
        return Prompts.make([centre] + [(xs[i], ys[i]) for i in pick])
    if protocol == "point1neg2":
        return Prompts.make([centre], _far_negatives(mask, rng))
    box = tight_box(mask)
    if protocol == "box-jitter":
        h, w = mask.shape
        size = np.array([box[2] - box[0] + 1, box[3] - box[1] + 1] * 2)
        box = box + rng.uniform(-0.1, 0.1, 4) * size
        box = np.clip(np.array([min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])]),
                      0, [w - 1, h - 1, w - 1, h - 1])
    return Prompts.make(box=box)


def point_and_box(mask: np.ndarray, with_point: bool = True) -> Prompts:
    """The tight box of ``mask`` and (for decoders trained with points) its most interior point."""
    return Prompts.make([interior_point(mask)] if with_point else [], box=tight_box(mask))


def _far_negatives(mask: np.ndarray, rng: np.random.Generator, n: int = 2) -> list:
    """``n`` background points far from the structure and from each other (greedy farthest-point)."""
    dist = ndi.distance_transform_edt(~mask)
    ys, xs = np.nonzero(dist >= 0.5 * dist.max())
    points = [int(rng.integers(len(xs)))]
    for _ in range(n - 1):
        d = np.min([np.hypot(xs - xs[p], ys - ys[p]) for p in points], axis=0)
        points.append(int(np.argmax(d)))
    return [(xs[p], ys[p]) for p in points]


def next_click(prompts: Prompts, pred: np.ndarray, truth: np.ndarray) -> Optional[Prompts]:
    """Correction click at the most interior point of the largest error region (None when perfect)."""
    missed, extra = truth & ~pred, pred & ~truth
    error = missed if missed.sum() >= extra.sum() else extra
    if not error.any():
        return None
    comps, n = ndi.label(error)
    largest = comps == 1 + int(np.argmax(ndi.sum(error, comps, range(1, n + 1))))
    xy = interior_point(largest)
    return Prompts(np.vstack([prompts.points, xy[None]]), np.append(prompts.labels, int(error is missed)),
                   prompts.box, None)


def prompt_slices(truth: np.ndarray, k: int = 1, axis: int = 0) -> List[int]:
    """Slices along ``axis`` a user would prompt for the 3D structure ``truth``: its largest slice, plus ``k - 1``
    slices spread from 10% to 90% of its extent (``k = 3``: near both ends; ``k = 2``: near the farther end)."""
    if k < 1:
        raise ValueError(f"the number of prompted slices must be at least 1, got {k}")
    areas = truth.sum(axis=tuple(a for a in range(3) if a != axis))
    present = np.nonzero(areas)[0]
    if not len(present):
        raise ValueError("cannot place prompts on an empty structure")
    largest = int(np.argmax(areas))
    if k == 1:
        return [largest]
    if k == 2:
        quantiles = [0.1 if largest - present[0] >= present[-1] - largest else 0.9]
    else:
        quantiles = np.linspace(0.1, 0.9, k - 1)
    picked = {int(present[int(round(q * (len(present) - 1)))]) for q in quantiles}
    return sorted(picked | {largest})
