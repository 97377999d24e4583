"""Smooth random fields, fast: coarse Gaussian noise expanded by separable Gaussian-RBF bases.

A field with ``cells`` control points per axis costs a few small matrix products instead of an
image-sized filter, so textures, bias fields and shape perturbations are nearly free.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence, Tuple

import numpy as np


@lru_cache(maxsize=64)
def _basis(n: int, cells: int) -> np.ndarray:
    """``(n, cells + 2)`` smooth interpolation basis over ``n`` samples (centres extend past the edges)."""
    centres = np.linspace(-1.0, cells, cells + 2) / max(cells - 1, 1)
    x = np.linspace(0.0, 1.0, n)[:, None]
    width = 1.0 / max(cells - 1, 1)
    basis = np.exp(-0.5 * ((x - centres[None]) / (0.8 * width)) ** 2)
    return (basis / basis.sum(axis=1, keepdims=True)).astype(np.float32)


def smooth_field(rng: np.random.Generator, shape: Sequence[int], cells: int | Sequence[int]) -> np.ndarray:
    """A zero-mean, unit-std smooth random field of ``shape`` with about ``cells`` bumps per axis."""
    shape = tuple(int(s) for s in shape)
    cells_t: Tuple[int, ...] = (cells,) * len(shape) if isinstance(cells, int) else tuple(cells)
    bases = [_basis(n, max(2, c)) for n, c in zip(shape, cells_t)]
    field = rng.standard_normal([b.shape[1] for b in bases]).astype(np.float32)
    for axis, basis in enumerate(bases):
        field = np.moveaxis(np.tensordot(basis, np.moveaxis(field, axis, 0), axes=(1, 0)), 0, axis)
    field -= field.mean()
    std = field.std()
    return field / std if std > 0 else field


def multiscale_field(rng: np.random.Generator, shape: Sequence[int], scales: Sequence[int] = (3, 8, 24),
                     falloff: float = 0.6) -> np.ndarray:
    """Sum of smooth fields at several scales (coarse strongest), normalised to unit std."""
    total = np.zeros(tuple(shape), np.float32)
    for i, cells in enumerate(scales):
        total += (falloff ** i) * smooth_field(rng, shape, cells)
    std = total.std()
    return total / std if std > 0 else total
