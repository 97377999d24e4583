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

PROFILE_SAMPLES = 2048  # angular samples of a Shape.profile


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
    profile: Optional[np.ndarray] = None  # star shapes: radius offset (fraction) at PROFILE_SAMPLES angles on [-pi, pi)


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


def _star(shape: Shape, u: np.ndarray, v: np.ndarray, perturb: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """``(rho, r)`` of a harmonic 'star' outline in local coordinates (u, v): inside where ``rho < radius * r``.

    float32 throughout with in-place updates: numpy's SIMD float32 ``arctan2``/``cos`` are several
    times faster than the float64 ones, and the outline is smooth on the pixel scale anyway.
    """
    rho = np.square(v * np.float32(1.0 / shape.aspect))
    rho += u * u
    np.sqrt(rho, out=rho)
    theta = np.arctan2(v, u)
    r = np.ones_like(rho) if perturb is None else np.float32(shape.wobble) * perturb + np.float32(1.0)
    tmp = np.empty_like(rho)
    for k, (amp, phase) in enumerate(shape.harmonics, start=2):
        np.multiply(theta, np.float32(k), out=tmp)
        tmp += np.float32(phase)
        np.cos(tmp, out=tmp)
        tmp *= np.float32(amp)
        r += tmp
    if shape.profile is not None:  # a sampled outline (a folded cortex): nearest of PROFILE_SAMPLES angles
        n = len(shape.profile)
        index = np.multiply(theta, np.float32(n / (2 * np.pi)), out=tmp)
        index += np.float32(n / 2)
        r += shape.profile[np.clip(index.astype(np.int32), 0, n - 1)]
    return rho, r


def _radial(shape: Shape, u: np.ndarray, v: np.ndarray, radius: float, perturb: Optional[np.ndarray]) -> np.ndarray:
    """Inside test of a harmonic 'star' outline in local coordinates (u, v)."""
    rho, r = _star(shape, u, v, perturb)
    r *= np.float32(radius)
    return rho < r


def _local_box(shape: Shape, scale: float, split: float) -> Tuple[float, float, float, float]:
    """``(u0, u1, v0, v1)``: a box in the shape's own rotated frame that surely contains it (pixels).

    Tight for elongated shapes and tubes; the contour perturbation is taken up to 4 standard deviations.
    """
    swell = 1 + 4 * shape.wobble
    if shape.kind == "tube":
        length = max(shape.half_length * scale, 1.0)
        bend = length * (0.5 * abs(shape.bend[0]) + 0.3 * abs(shape.bend[1]))
        slope = abs(shape.bend[0]) + 0.9 * abs(shape.bend[1])  # the width is measured across the bent axis
        half_v = bend + shape.radius * scale * swell * float(np.hypot(1.0, slope))
        return -length, length, -half_v, half_v
    reach = shape.radius * scale * (1 + float(np.abs(shape.harmonics[:, 0]).sum()) + 4 * shape.wobble)
    offsets = [(px * scale * split, py * scale * split, ps) for px, py, ps in shape.parts] or [(0.0, 0.0, 1.0)]
    u0 = min(px - reach * ps for px, _, ps in offsets)
    u1 = max(px + reach * ps for px, _, ps in offsets)
    v0 = min(py - reach * ps * shape.aspect for _, py, ps in offsets)
    v1 = max(py + reach * ps * shape.aspect for _, py, ps in offsets)
    return u0, u1, v0, v1


def _window(shape: Shape, xx: np.ndarray, yy: np.ndarray, scale: float, shift: Tuple[float, float], split: float
            ) -> Optional[Tuple[Tuple[slice, slice], Tuple[float, float]]]:
    """The smallest grid window surely holding the shape, and its centre (None if off-grid)."""
    if scale <= 0:
        return None
    cx, cy = shape.center[0] + shift[0], shape.center[1] + shift[1]
    u0, u1, v0, v1 = _local_box(shape, scale, split)
    c, s = float(np.cos(shape.angle)), float(np.sin(shape.angle))
    # world = centre + u * (c, s) + v * (-s, c): bounding box of the rotated local box
    xs = [cx + c * u - s * v for u in (u0, u1) for v in (v0, v1)]
    ys = [cy + s * u + c * v for u in (u0, u1) for v in (v0, v1)]
    ox, oy = float(xx[0, 0]), float(yy[0, 0])
    x0, x1 = max(0, int(np.floor(min(xs) - 2 - ox))), min(xx.shape[1], int(np.ceil(max(xs) + 2 - ox)) + 1)
    y0, y1 = max(0, int(np.floor(min(ys) - 2 - oy))), min(xx.shape[0], int(np.ceil(max(ys) + 2 - oy)) + 1)
    if x0 >= x1 or y0 >= y1:
        return None
    return (slice(y0, y1), slice(x0, x1)), (cx, cy)


def render_window(shape: Shape, xx: np.ndarray, yy: np.ndarray, scale: float = 1.0,
                  shift: Tuple[float, float] = (0.0, 0.0), perturb: Optional[np.ndarray] = None, split: float = 1.0
                  ) -> Optional[Tuple[Tuple[slice, slice], np.ndarray]]:
    """``(window, mask)``: the shape's mask on the smallest grid window holding it, or None if it is off-grid.

    ``(xx, yy)`` must be a regular pixel grid as made by :func:`synthfm.generate.scene.grid`.
    """
    found = _window(shape, xx, yy, scale, shift, split)
    if found is None:
        return None
    window, (cx, cy) = found
    rows, cols = window
    local = _render_window(shape, xx[rows.start, cols], yy[rows, cols.start], scale, (cx, cy),
                           None if perturb is None else perturb[window], split)
    return window, local


def render_levels(shape: Shape, xx: np.ndarray, yy: np.ndarray, fractions, scale: float = 1.0,
                  shift: Tuple[float, float] = (0.0, 0.0), perturb: Optional[np.ndarray] = None
                  ) -> Optional[Tuple[Tuple[slice, slice], np.ndarray, List[np.ndarray]]]:
    """``(window, mask, inner masks)`` of a star shape and of its copies shrunk to each of ``fractions``.

    The outline is evaluated once: the inner copies are thresholds of the same normalised radius,
    which is how a body gets its skin, fat and muscle layers (and a bone its marrow) cheaply.
    Star shapes only ("blob"/"lobulated", no holes or rims); None when off-grid.
    """
    found = _window(shape, xx, yy, scale, shift, 1.0) if shape.kind not in ("tube", "multipart") else None
    if found is None:
        return None
    window, (cx, cy) = found
    c, s = np.float32(np.cos(shape.angle)), np.float32(np.sin(shape.angle))
    dx = (xx[window[0].start, window[1]].astype(np.float32) - np.float32(cx))[None, :]
    dy = (yy[window[0], window[1].start].astype(np.float32) - np.float32(cy))[:, None]
    rho, r = _star(shape, c * dx + s * dy, c * dy - s * dx, None if perturb is None else perturb[window])
    r *= np.float32(shape.radius * scale)
    rho /= np.maximum(r, np.float32(1e-6))
    mask = rho < np.float32(1.0)
    return window, mask, [mask & (rho < np.float32(f)) for f in fractions]


def render(shape: Shape, xx: np.ndarray, yy: np.ndarray, scale: float = 1.0, shift: Tuple[float, float] = (0.0, 0.0),
           perturb: Optional[np.ndarray] = None, split: float = 1.0) -> np.ndarray:
    """Boolean mask of ``shape`` on the grid ``(xx, yy)``; ``scale``/``shift`` animate it across slices.

    ``split`` (>= 1) pushes the parts of a multipart shape apart, letting a structure split in 3D.
    Only the shape's (rotated) bounding box is evaluated, so small structures cost little.
    """
    mask = np.zeros(xx.shape, bool)
    drawn = render_window(shape, xx, yy, scale, shift, perturb, split)
    if drawn is not None:
        mask[drawn[0]] = drawn[1]
    return mask


def _render_window(shape: Shape, x: np.ndarray, y: np.ndarray, scale: float, centre: Tuple[float, float],
                   perturb: Optional[np.ndarray], split: float) -> np.ndarray:
    """The mask on the window with pixel columns at ``x`` (1D) and rows at ``y`` (1D); float32 arithmetic."""
    cx, cy = centre
    c, s = np.float32(np.cos(shape.angle)), np.float32(np.sin(shape.angle))
    dx = (x.astype(np.float32) - np.float32(cx))[None, :]
    dy = (y.astype(np.float32) - np.float32(cy))[:, None]
    u = c * dx + s * dy  # broadcasting: one 2D pass per coordinate
    v = c * dy - s * dx
    radius = shape.radius * scale
    if shape.kind == "tube":
        L = max(shape.half_length * scale, 1.0)
        t = u * np.float32(1.0 / L)
        t2 = t * t
        b0, b1 = np.float32(shape.bend[0]), np.float32(shape.bend[1])
        centre_line = np.float32(L) * t2 * (np.float32(0.5) * b0 + np.float32(0.3) * b1 * t)
        slope = t * (b0 + np.float32(0.9) * b1 * t)
        taper = np.sqrt(np.clip(1 - t2 * t2 * t2, 0, 1))  # rounded, slightly narrowing ends
        width = np.float32(radius) * taper
        if perturb is not None:
            width *= np.float32(shape.wobble) * perturb + np.float32(1.0)
        dist = np.abs(v - centre_line)
        dist /= np.sqrt(slope * slope + np.float32(1.0))
        return dist < width
    if shape.kind == "multipart":
        mask = np.zeros(u.shape, bool)
        for px, py, ps in shape.parts:
            mask |= _radial(shape, u - np.float32(px * scale * split), v - np.float32(py * scale * split),
                            radius * ps, perturb)
        return mask
    rho, r = _star(shape, u, v, perturb)
    mask = rho < np.float32(radius) * r
    if shape.kind == "rim":
        mask &= rho >= np.float32(radius * shape.inner) * r
    for hx, hy, hr in shape.holes:
        mask &= np.square(u - np.float32(hx * scale)) + np.square(v - np.float32(hy * scale)) >= np.float32((hr * radius) ** 2)
    return mask


def contour_perturbation(rng: np.random.Generator, shape_hw: Tuple[int, ...]) -> np.ndarray:
    """A smooth field that makes outlines irregular (shared by a structure's slices in 3D).

    Lazy (:class:`synthfm.generate.fields.SmoothField`): only the windows a structure is drawn on are expanded.
    """
    return smooth_field(rng, shape_hw, 6, lazy=True)
