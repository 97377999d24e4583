"""The evaluation's HD95 and NSD (one pass over cropped edges) give exactly MONAI's numbers."""
import math

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from synthfm.evaluate.metrics import all_metrics, monai_surface


def random_blob(rng, shape, touch_border=False):
    """A few smoothed-noise blobs (holes and several components included), optionally reaching the border."""
    noise = ndi.gaussian_filter(rng.normal(size=shape), sigma=rng.uniform(1.0, 4.0))
    mask = noise > np.quantile(noise, rng.uniform(0.6, 0.97))
    if touch_border:
        edge = [slice(None)] * len(shape)
        edge[int(rng.integers(len(shape)))] = 0 if rng.random() < 0.5 else -1
        mask[tuple(edge)] |= rng.random(mask[tuple(edge)].shape) < 0.5
    return mask


def cases(rng, n, ndim):
    for k in range(n):
        shape = tuple(int(s) for s in rng.integers(5 if ndim == 3 else 8, 24 if ndim == 3 else 70, ndim))
        truth = random_blob(rng, shape, touch_border=k % 3 == 0)
        kind = k % 4
        if kind == 0:  # an independent prediction
            pred = random_blob(rng, shape, touch_border=k % 2 == 0)
        elif kind == 1:  # the truth moved and grown, as a decoder's error
            pred = ndi.binary_dilation(np.roll(truth, int(rng.integers(-3, 4)), axis=0), iterations=int(rng.integers(0, 3)))
        elif kind == 2:  # a single voxel somewhere
            pred = np.zeros(shape, bool)
            pred[tuple(int(rng.integers(s)) for s in shape)] = True
        else:  # the whole array (every voxel on the border is an edge)
            pred = np.ones(shape, bool)
        if not truth.any():
            truth[tuple(s // 2 for s in shape)] = True
        spacing = tuple(float(s) for s in rng.choice([0.57, 0.78125, 1.0, 2.1, 3.0, 6.5], ndim))
        yield pred, truth, spacing


@pytest.mark.parametrize("ndim", [2, 3])
def test_surface_metrics_equal_monai_on_random_masks(ndim):
    rng = np.random.default_rng(7 + ndim)
    for pred, truth, spacing in cases(rng, 60 if ndim == 2 else 24, ndim):
        tolerance = float(rng.choice([1.1, 2.0, 3.7]))
        ours = all_metrics(pred, truth, spacing, tolerance)
        hd, nsd = monai_surface(pred, truth, spacing, tolerance)
        assert (ours["hd95"], ours["nsd"]) == (hd, nsd), (pred.shape, spacing, tolerance)


def test_empty_masks_keep_their_conventions():
    truth = np.zeros((12, 12), bool)
    truth[3:6, 4:9] = True
    empty = np.zeros_like(truth)
    assert all_metrics(empty, empty, (1.0, 1.0)) == {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "nsd": 1.0}
    for pred, gt in ((empty, truth), (truth, empty)):
        m = all_metrics(pred, gt, (0.7, 2.0))
        assert m["dice"] == 0 and m["nsd"] == 0 and math.isinf(m["hd95"])


def test_masks_filling_the_array_and_touching_corners():
    full = np.ones((9, 7), bool)
    corner = np.zeros((9, 7), bool)
    corner[0, 0] = True
    for pred, truth in ((full, corner), (corner, full), (full, full), (corner, corner)):
        ours = all_metrics(pred, truth, (0.5, 1.5), 2.0)
        assert (ours["hd95"], ours["nsd"]) == monai_surface(pred, truth, (0.5, 1.5), 2.0)


def test_interior_point_in_the_bounding_box_equals_the_whole_slice():
    from synthfm.evaluate.protocols import interior_point

    def whole_slice(mask, spacing):  # the computation before the crop
        dist = ndi.distance_transform_edt(np.pad(mask, 1), sampling=spacing)[1:-1, 1:-1]
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
        return np.array([x, y], float)

    rng = np.random.default_rng(3)
    for k in range(150):
        shape = tuple(int(s) for s in rng.integers(4, 80, 2))
        mask = random_blob(rng, shape, touch_border=k % 2 == 0)
        if k % 10 == 0:  # square blocks: many pixels equally interior
            mask = np.zeros(shape, bool)
            mask[1:shape[0] // 2 + 1, 2:shape[1] // 2 + 2] = True
        spacing = tuple(float(s) for s in rng.choice([0.57, 0.78125, 1.0, 2.1, 6.5], 2))
        assert np.array_equal(interior_point(mask, spacing), whole_slice(mask, spacing)), (k, spacing)
    assert np.array_equal(interior_point(np.zeros((5, 6), bool)), whole_slice(np.zeros((5, 6), bool), (1.0, 1.0)))
