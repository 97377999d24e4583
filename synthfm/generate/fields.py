"""Smooth random fields, fast: coarse Gaussian noise expanded by separable Gaussian-RBF bases.

A field with ``cells`` control points per axis is a small coefficient tensor times one smooth basis
per axis.  Everything that only depends on the coefficients is done on them: the zero-mean,
unit-std normalisation (exact, through the bases' column means and Gram matrices) and the sum of
several scales (one block-diagonal coefficient tensor).  The image-sized array is made by one
expansion at the end, and a field can also be expanded on a window only (:class:`SmoothField`),
which is how contour perturbations cost little for small structures.
"""
from __future__ import annotations

from functools import lru_cache
from typing import List, Optional, Sequence, Tuple

import numpy as np


@lru_cache(maxsize=64)
def _basis64(n: int, cells: int) -> np.ndarray:
    """``(n, cells + 2)`` smooth interpolation basis over ``n`` samples (centres extend past the edges)."""
    centres = np.linspace(-1.0, cells, cells + 2) / max(cells - 1, 1)
    x = np.linspace(0.0, 1.0, n)[:, None]
    width = 1.0 / max(cells - 1, 1)
    basis = np.exp(-0.5 * ((x - centres[None]) / (0.8 * width)) ** 2)
    basis = basis / basis.sum(axis=1, keepdims=True)
    basis.flags.writeable = False
    return basis


@lru_cache(maxsize=64)
def _basis(n: int, cells: int) -> np.ndarray:
    basis = _basis64(n, cells).astype(np.float32)
    basis.flags.writeable = False
    return basis


@lru_cache(maxsize=64)
def _moments(n: int, cells: int) -> Tuple[np.ndarray, np.ndarray]:
    """Column means and Gram matrix / n of a basis: the field's mean and mean square from its coefficients."""
    basis = _basis64(n, cells)
    return basis.mean(axis=0), basis.T @ basis / n


def _along(core: np.ndarray, matrix: np.ndarray, axis: int) -> np.ndarray:
    """Apply ``matrix`` (new, old) to ``core`` along ``axis``."""
    return np.moveaxis(np.tensordot(matrix, np.moveaxis(core, axis, 0), axes=(1, 0)), 0, axis)


def _along_last(core: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``_along(core, matrix, core.ndim - 1)`` with the same products, laid out C-contiguous.

    ``_along`` on the last axis returns a transposed view, and every later full-volume pass over such
    a view runs about 20x slower than over a contiguous array.  Here the rows of ``core`` times
    ``matrix.T`` land in memory order (one BLAS product, the same dot products: identical values).
    """
    rows = np.ascontiguousarray(core).reshape(-1, core.shape[-1])
    return (rows @ matrix.T).reshape(core.shape[:-1] + (matrix.shape[0],))


def _transform(core: np.ndarray, matrices: Sequence[np.ndarray], contiguous: bool = False) -> np.ndarray:
    """``core`` with ``matrices[axis]`` (new, old) applied along every axis.

    2D (the common case) is two matrix products in the cheaper order.  ``contiguous`` (nD): the result
    is C-contiguous (see :func:`_along_last`), for fields that whole images are computed with.
    """
    if len(matrices) == 2:
        a, b = matrices
        if a.shape[0] * b.shape[1] > b.shape[0] * a.shape[1]:
            return a @ (core @ b.T)
        return (a @ core) @ b.T
    last = len(matrices) - 1
    for axis, matrix in enumerate(matrices):
        core = _along_last(core, matrix) if contiguous and axis == last else _along(core, matrix, axis)
    return core


class SmoothField:
    """A smooth field held as coefficients: ``field[window]`` expands only the requested window.

    ``np.asarray(field)`` gives the whole array.  Supports the basic slicing used by the renderer
    (a tuple of slices, one per axis).  The last window expanded is kept (read-only): the slices of a
    volume ask a structure's contour perturbation for the same window again and again.
    """

    def __init__(self, core: np.ndarray, bases: Sequence[np.ndarray]) -> None:
        self.core = core.astype(np.float32)
        self.bases = list(bases)
        self.shape = tuple(b.shape[0] for b in self.bases)
        self.ndim = len(self.shape)
        self._last: Tuple[object, Optional[np.ndarray]] = (None, None)

    def _expand(self, bases: Sequence[np.ndarray]) -> np.ndarray:
        return _transform(self.core, bases, contiguous=True)

    def __getitem__(self, window) -> np.ndarray:
        if not isinstance(window, tuple):
            window = (window,)
        if len(window) != self.ndim or not all(isinstance(w, slice) for w in window):
            return np.asarray(self)[window]
        key = tuple(w.indices(n) for w, n in zip(window, self.shape))
        if key != self._last[0]:
            values = self._expand([b[w] for b, w in zip(self.bases, window)])
            values.flags.writeable = False
            self._last = (key, values)
        return self._last[1]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        field = self._expand(self.bases)
        return field if dtype is None else field.astype(dtype)


def _normalised(rng: np.random.Generator, shape: Tuple[int, ...], cells: Sequence[int]
                ) -> Tuple[np.ndarray, List[Tuple[int, int]]]:
    """Coefficients (float64) of one zero-mean, unit-std field, and the ``(n, cells)`` of its bases."""
    keys = [(n, max(2, c)) for n, c in zip(shape, cells)]
    core = rng.standard_normal([c + 2 for _, c in keys]).astype(np.float32).astype(np.float64)
    moments = [_moments(*key) for key in keys]
    if len(keys) == 2:
        (m0, _), (m1, _) = moments
        mean = m0 @ core @ m1
    else:
        mean = core
        for m, _ in moments:
            mean = np.tensordot(m, mean, axes=(0, 0))
    core -= mean  # the bases' rows sum to one: a constant offset of the coefficients is a constant field
    var = _mean_square(core, [g for _, g in moments])
    return (core / np.sqrt(var) if var > 0 else core), keys


def _mean_square(core: np.ndarray, grams: Sequence[np.ndarray]) -> float:
    """Mean square of the (zero-mean) field of ``core``, from the Gram matrices / n of its bases."""
    return float((core * _transform(core, grams)).sum())


def _cells(shape: Sequence[int], cells: int | Sequence[int]) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    shape = tuple(int(s) for s in shape)
    return shape, ((cells,) * len(shape) if isinstance(cells, (int, np.integer)) else tuple(cells))


def smooth_field(rng: np.random.Generator, shape: Sequence[int], cells: int | Sequence[int],
                 lazy: bool = False) -> np.ndarray:
    """A zero-mean, unit-std smooth random field of ``shape`` with about ``cells`` bumps per axis.

    ``lazy=True`` returns a :class:`SmoothField` that expands only the windows asked for.
    """
    shape, cells_t = _cells(shape, cells)
    core, keys = _normalised(rng, shape, cells_t)
    field = SmoothField(core, [_basis(*key) for key in keys])
    return field if lazy else np.asarray(field)


def multiscale_field(rng: np.random.Generator, shape: Sequence[int], scales: Sequence[int] = (3, 8, 24),
                     falloff: float = 0.6) -> np.ndarray:
    """Sum of smooth fields at several scales (coarse strongest), normalised to unit std.

    The scales are summed as one block-diagonal coefficient tensor over the concatenated bases, so
    the image-sized array is made once.
    """
    shape = tuple(int(s) for s in shape)
    parts = [_normalised(rng, shape, _cells(shape, cells)[1]) for cells in scales]
    sizes = [[c + 2 for _, c in keys] for _, keys in parts]
    core = np.zeros([sum(s[axis] for s in sizes) for axis in range(len(shape))])
    offset = np.zeros(len(shape), int)
    for i, ((part, _), size) in enumerate(zip(parts, sizes)):
        core[tuple(slice(o, o + s) for o, s in zip(offset, size))] = (falloff ** i) * part
        offset += size
    # mean square of the sum, through the concatenated bases' Gram matrices (the sum is zero-mean)
    per_axis = [tuple(keys[axis][1] for _, keys in parts) for axis in range(len(shape))]
    var = _mean_square(core, [_stacked(n, per_axis[axis])[1] for axis, n in enumerate(shape)])
    if var > 0:
        core /= np.sqrt(var)
    return np.asarray(SmoothField(core, [_stacked(n, per_axis[axis])[0] for axis, n in enumerate(shape)]))


@lru_cache(maxsize=64)
def _stacked(n: int, cells: Tuple[int, ...]) -> Tuple[np.ndarray, np.ndarray]:
    """Bases of several scales side by side (float32), and their Gram matrix / n (float64)."""
    basis = np.concatenate([_basis64(n, c) for c in cells], axis=1)
    return basis.astype(np.float32), basis.T @ basis / n


def gaussian_noise(rng: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
    """Standard normal float32 noise by the Box-Muller transform of float32 uniforms.

    About 3x faster than ``rng.standard_normal(dtype=float32)`` on image-sized arrays; the tails are
    cut at about 5.8 standard deviations (a 1e-8 event), which image noise never notices.
    """
    shape = tuple(int(s) for s in shape)
    size = int(np.prod(shape))
    half = (size + 1) // 2
    uniform = rng.random((2, half), dtype=np.float32)
    radius = np.log1p(-uniform[0])  # 1 - u lies in (0, 1]: no log(0)
    radius *= np.float32(-2.0)
    np.sqrt(radius, out=radius)
    angle = uniform[1]
    angle *= np.float32(2 * np.pi)
    out = np.empty((2, half), np.float32)
    np.cos(angle, out=out[0])
    np.sin(angle, out=out[1])
    out *= radius
    return out.reshape(-1)[:size].reshape(shape)
