"""Shape-aware structures: smooth, anatomical-looking 2D shapes described by a few parameters.

A :class:`Shape` is drawn once (:func:`draw_shape`) and rendered on any pixel grid
(:func:`render`), optionally scaled and shifted, which is how 3D structures evolve slice by slice.
Contours come from smooth radius functions (Fourier harmonics) plus a smooth random perturbation,
never from polygons.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from synthfm.generate.fields import smooth_field


@dataclass
class Shape:
    """Parameters of one structure's outline (pixel units)."""

    kind: str
    center: Tuple[float, float]  # (x, y)
    radius: float
    angle: float = 0.0
    aspect: float = 1.0
    harmonics: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # rows: amplitude, phase
    parts: List[Tuple[float, float, float]] = field(default_factory=list)  # multipart: (dx, dy, scale)
    holes: List[Tuple[float, float, float]] = field(default_factory=list)  # (dx, dy, radius fraction)
    inner: float = 0.0  # rim: inner radius fraction
    bend: Tuple[float, float] = (0.0, 0.0)  # tube: quadratic and cubic bend
    half_length: float = 0.0  # tube
    wobble: float = 0.0  # amplitude of the smooth contour perturbation (fraction of radius)


def draw_shape(rng: np.random.Generator, kind: str, center: Tuple[float, float], area_px: float) -> Shape:
    """A random shape of ``kind`` with roughly ``area_px`` pixels around ``center``."""
    n_harm = rng.integers(2, 6)
    amp_scale = 0.35 if kind == "lobulated" else 0.12
    harmonics = np.stack([rng.uniform(0, amp_scale, n_harm) / np.arange(1, n_harm + 1) ** 0.5,
                          rng.uniform(0, 2 * np.pi, n_harm)], axis=1)
    aspect = float(rng.uniform(0.45, 1.0)) if kind != "tube" else 1.0
    common = dict(center=center, angle=float(rng.uniform(0, np.pi)), aspect=aspect, harmonics=harmonics,
                  wobble=float(rng.uniform(0.0, 0.12)))
    if kind == "tube":
        width = float(np.sqrt(area_px) * rng.uniform(0.12, 0.3))
        half = float(np.clip(area_px / (4 * width), 2 * width, 4 * np.sqrt(area_px)))
        return Shape(kind, radius=width, half_length=half,
                     bend=(float(rng.uniform(-1, 1)), float(rng.uniform(-0.6, 0.6))), **common)
    if kind == "multipart":
        n = int(rng.integers(2, 4))
        r = float(np.sqrt(area_px / (np.pi * aspect * n)))
        theta0 = rng.uniform(0, 2 * np.pi)
        parts = [(float(np.cos(theta0 + 2 * np.pi * i / n) * r * rng.uniform(1.3, 2.2)),
                  float(np.sin(theta0 + 2 * np.pi * i / n) * r * rng.uniform(1.3, 2.2)),
                  float(rng.uniform(0.6, 1.0))) for i in range(n)]
        return Shape(kind, radius=r, parts=parts, **common)
    if kind == "rim":
        inner = float(rng.uniform(0.45, 0.85))
        r = float(np.sqrt(area_px / (np.pi * aspect * (1 - inner ** 2))))
        return Shape(kind, radius=r, inner=inner, **common)
    r = float(np.sqrt(area_px / (np.pi * aspect)))
    holes = []
    if kind == "holes":
        for _ in range(int(rng.integers(1, 4))):
            rho, phi = rng.uniform(0, 0.45), rng.uniform(0, 2 * np.pi)
            holes.append((float(rho * r * np.cos(phi)), float(rho * r * np.sin(phi)), float(rng.uniform(0.12, 0.3))))
        r *= 1.1
    return Shape(kind, radius=r, holes=holes, **common)


def _radial(shape: Shape, u: np.ndarray, v: np.ndarray, radius: float, perturb: Optional[np.ndarray]) -> np.ndarray:
    """Inside test of a harmonic 'star' outline in local coordinates (u, v)."""
    rho = np.sqrt(u * u + (v / shape.aspect) ** 2)
    theta = np.arctan2(v, u)
    r = np.ones_like(rho)
    for k, (amp, phase) in enumerate(shape.harmonics, start=2):
        r += amp * np.cos(k * theta + phase)
    if perturb is not None:
        r += shape.wobble * perturb
    return rho < radius * r


def extent(shape: Shape, scale: float = 1.0, split: float = 1.0) -> float:
    """A radius around the centre that surely contains the whole shape (pixels)."""
    reach = shape.radius * (1 + float(np.abs(shape.harmonics[:, 0]).sum()) + 4 * shape.wobble)
    if shape.kind == "tube":
        reach = np.hypot(shape.half_length, shape.half_length * (abs(shape.bend[0]) + abs(shape.bend[1]))) + reach
    if shape.parts:
        reach += max(np.hypot(px, py) for px, py, _ in shape.parts) * split
    return float(reach * scale) + 2.0


def render(shape: Shape, xx: np.ndarray, yy: np.ndarray, scale: float = 1.0, shift: Tuple[float, float] = (0.0, 0.0),
           perturb: Optional[np.ndarray] = None, split: float = 1.0) -> np.ndarray:
    """Boolean mask of ``shape`` on the grid ``(xx, yy)``; ``scale``/``shift`` animate it across slices.

    ``split`` (>= 1) pushes the parts of a multipart shape apart, letting a structure split in 3D.
    Only the shape's bounding square is evaluated, so small structures cost little.
    """
    mask = np.zeros(xx.shape, bool)
    if scale <= 0:
        return mask
    cx, cy = shape.center[0] + shift[0], shape.center[1] + shift[1]
    reach = extent(shape, scale, split)
    x0, x1 = int(max(0, np.floor(cx - reach - xx[0, 0]))), int(min(xx.shape[1], np.ceil(cx + reach - xx[0, 0]) + 1))
    y0, y1 = int(max(0, np.floor(cy - reach - yy[0, 0]))), int(min(xx.shape[0], np.ceil(cy + reach - yy[0, 0]) + 1))
    if x0 >= x1 or y0 >= y1:
        return mask
    window = (slice(y0, y1), slice(x0, x1))
    mask[window] = _render_window(shape, xx[window], yy[window], scale, (cx, cy),
                                  None if perturb is None else perturb[window], split)
    return mask


def _render_window(shape: Shape, xx: np.ndarray, yy: np.ndarray, scale: float, centre: Tuple[float, float],
                   perturb: Optional[np.ndarray], split: float) -> np.ndarray:
    cx, cy = centre
    c, s = np.cos(shape.angle), np.sin(shape.angle)
    dx, dy = xx - cx, yy - cy
    u, v = c * dx + s * dy, -s * dx + c * dy
    radius = shape.radius * scale
    if shape.kind == "tube":
        L = max(shape.half_length * scale, 1.0)
        t = u / L
        centre_line = L * (0.5 * shape.bend[0] * t * t + 0.3 * shape.bend[1] * t ** 3)
        slope = L * (shape.bend[0] * t + 0.9 * shape.bend[1] * t * t) / L
        taper = np.sqrt(np.clip(1 - t ** 6, 0, 1))  # rounded, slightly narrowing ends
        width = radius * taper * (1 + (shape.wobble * perturb if perturb is not None else 0))
        return np.abs(v - centre_line) / np.sqrt(1 + slope * slope) < width
    if shape.kind == "multipart":
        mask = np.zeros(xx.shape, bool)
        for px, py, ps in shape.parts:
            mask |= _radial(shape, u - px * scale * split, v - py * scale * split, radius * ps, perturb)
        return mask
    mask = _radial(shape, u, v, radius, perturb)
    if shape.kind == "rim":
        mask &= ~_radial(shape, u, v, radius * shape.inner, perturb)
    for hx, hy, hr in shape.holes:
        mask &= (u - hx * scale) ** 2 + (v - hy * scale) ** 2 >= (hr * radius) ** 2
    return mask


def contour_perturbation(rng: np.random.Generator, shape_hw: Tuple[int, ...]) -> np.ndarray:
    """A smooth field that makes outlines irregular (shared by a structure's slices in 3D)."""
    return smooth_field(rng, shape_hw, 6)
