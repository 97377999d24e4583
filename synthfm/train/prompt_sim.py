"""Prompt simulation: clicks and boxes placed the way people place them, plus correction clicks.

Everything works in the sample's pixel frame (``(x, y)``); callers map to the encoder input frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

import numpy as np
from scipy import ndimage as ndi

MODES = ("point1", "points", "pos_neg", "far_neg", "box", "box_point")


@dataclass
class SimPrompt:
    """Points ``(N, 2)`` xy with labels ``(N,)`` (1 positive, 0 negative) and an optional box."""

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    box: Optional[np.ndarray] = None

    def add(self, xy: Tuple[float, float], positive: bool) -> "SimPrompt":
        return SimPrompt(np.vstack([self.points, np.asarray(xy, np.float32)[None]]),
                         np.append(self.labels, int(positive)), self.box)


def _interior_point(rng: np.random.Generator, mask: np.ndarray, depth: float = 0.5) -> Tuple[float, float]:
    """A random pixel at least ``depth`` x the maximal distance to the boundary inside ``mask``."""
    dist = ndi.distance_transform_edt(mask)
    ys, xs = np.nonzero(dist >= depth * dist.max())
    i = int(rng.integers(len(xs)))
    return float(xs[i]), float(ys[i])


def _random_point(rng: np.random.Generator, mask: np.ndarray) -> Tuple[float, float]:
    ys, xs = np.nonzero(mask)
    i = int(rng.integers(len(xs)))
    return float(xs[i]), float(ys[i])


def jittered_box(rng: np.random.Generator, mask: np.ndarray, max_jitter: float = 0.1) -> np.ndarray:
    """Tight box of ``mask`` with each side moved by up to ``max_jitter`` of the box size (+ 3 px)."""
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    w, h = x1 - x0 + 1, y1 - y0 + 1
    jit = rng.uniform(-1, 1, 4) * (np.array([w, h, w, h]) * max_jitter + 3)
    box = np.array([x0, y0, x1, y1], np.float32) + jit
    H, W = mask.shape
    box = np.clip(box, 0, [W - 1, H - 1, W - 1, H - 1])
    return np.array([min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])], np.float32)


def _far_point(rng: np.random.Generator, mask: np.ndarray) -> Tuple[float, float]:
    """A background pixel in the far half of the distance to ``mask`` (where a user clicks "not this")."""
    dist = ndi.distance_transform_edt(~mask)
    ys, xs = np.nonzero(dist >= rng.uniform(0.3, 0.8) * dist.max())
    i = int(rng.integers(len(xs)))
    return float(xs[i]), float(ys[i])


def simulate(rng: np.random.Generator, mask: np.ndarray, labels: np.ndarray, mode: str) -> SimPrompt:
    """Prompts for target ``mask`` (``pos_neg``: negatives prefer other structures in ``labels`` near the
    target; ``far_neg``: one interior point and 1-3 negatives far outside, which must not change the answer)."""
    if mode not in MODES:
        raise ValueError(f"unknown prompt mode '{mode}'; choose one of {', '.join(MODES)}")
    prompt = SimPrompt()
    if mode in ("box", "box_point"):
        prompt.box = jittered_box(rng, mask)
        if mode == "box":
            return prompt
    prompt = prompt.add(_interior_point(rng, mask), True)
    if mode == "points":
        for _ in range(int(rng.integers(1, 4))):
            prompt = prompt.add(_random_point(rng, mask), True)
    elif mode == "pos_neg":
        ring = ndi.binary_dilation(mask, iterations=int(rng.integers(3, 15))) & ~mask
        near_other = ring & (labels > 1)
        for _ in range(int(rng.integers(1, 3))):
            pool = near_other if near_other.any() and rng.random() < 0.7 else (ring if ring.any() else ~mask)
            prompt = prompt.add(_random_point(rng, pool), False)
    elif mode == "far_neg" and not mask.all():
        for _ in range(int(rng.integers(1, 4))):
            prompt = prompt.add(_far_point(rng, mask), False)
    return prompt


def correction_click(rng: np.random.Generator, prompt: SimPrompt, pred: np.ndarray, mask: np.ndarray,
                     extra_prob: float = 0.0) -> SimPrompt:
    """Add a click at the most interior point of the largest error: positive if missed, negative if extra.

    With chance ``extra_prob`` the click is instead one a user adds without looking at the error (the answer must
    not change): half the time a positive anywhere in the target, half the time a negative far outside it."""
    if extra_prob and rng.random() < extra_prob:
        if rng.random() < 0.5 or mask.all():
            return prompt.add(_random_point(rng, mask), True)
        return prompt.add(_far_point(rng, mask), False)
    missed, extra = mask & ~pred, pred & ~mask
    error = missed if missed.sum() >= extra.sum() else extra
    if not error.any():
        return prompt
    comps, n = ndi.label(error)
    largest = comps == (1 + int(np.argmax(ndi.sum(error, comps, range(1, n + 1)))))
    return prompt.add(_interior_point(rng, largest, depth=0.9), positive=error is missed)
