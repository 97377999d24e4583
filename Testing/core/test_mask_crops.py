"""synthfm.utils.masks computes on a mask's bounding box grown by what each operation reaches
(``around``): the results must be those of the whole image, masks touching the image's edges included."""
import numpy as np
import pytest
from scipy import ndimage as ndi

from synthfm.utils import masks as M


def _cases(n=400, seed=0):
    rng = np.random.default_rng(seed)
    while n:
        h, w = (int(v) for v in rng.integers(5, 48, 2))
        image = rng.normal(size=(h, w)).astype(np.float32)
        mask = ndi.gaussian_filter(rng.normal(size=(h, w)), rng.uniform(0.5, 4)) > rng.normal(0.3, 0.3)
        if rng.random() < 0.3:  # parts on the first row and the last column
            mask[0, :] |= rng.random(w) < 0.5
            mask[:, -1] |= rng.random(h) < 0.5
        if mask.any():
            n -= 1
            yield rng, image, mask


def test_around_is_the_bounding_box_grown_and_clipped():
    mask = np.zeros((10, 12), bool)
    mask[3:5, 8:11] = True
    assert M.around(mask, 2) == (slice(1, 7), slice(6, 12))
    assert M.around(mask, 0) == (slice(3, 5), slice(8, 11))


def test_the_interior_point_is_the_whole_images_first_farthest_pixel():
    for _, _, mask in _cases():
        y, x = np.unravel_index(int(np.argmax(ndi.distance_transform_edt(mask))), mask.shape)
        assert M.interior_point(mask) == (x, y)


def test_the_intensity_cut_equals_the_whole_images_opening_and_filling():
    for rng, image, mask in _cases(seed=1):
        smooth = ndi.gaussian_filter(image, 1)
        centre, limit = float(smooth[mask].mean()), abs(float(rng.normal(0.5, 0.3)))
        whole = ndi.binary_fill_holes(ndi.binary_opening(mask & (np.abs(smooth - centre) <= limit),
                                                         np.ones((3, 3), bool)))
        assert np.array_equal(M.cut_to_intensity(mask, smooth, centre, limit), whole)
    assert not M.cut_to_intensity(np.zeros((6, 6), bool), np.zeros((6, 6)), 0.0, 1.0).any()


@pytest.mark.parametrize("width", [1, 3])
def test_inside_and_ring_means_equal_the_whole_images(width):
    for _, image, mask in _cases(seed=2):
        ring = ndi.binary_dilation(mask, iterations=width) & ~mask
        inside = float(image[mask].mean())
        assert M.inside_and_ring(image, mask, width) == (inside, float(image[ring].mean()) if ring.any() else inside)


def _whole_image_mean_shape(a, b):
    return M.signed_distance(a) + M.signed_distance(b) < 0


def test_mean_shape_on_the_window_is_that_of_the_whole_image():
    for rng, _, mask in _cases(150, seed=3):
        other = np.roll(mask, tuple(int(v) for v in rng.integers(-3, 4, 2)), axis=(0, 1))
        if other.any():
            assert np.array_equal(M.mean_shape(mask, other), _whole_image_mean_shape(mask, other))


def test_mean_shape_lies_half_way_between_two_outlines():
    yy, xx = np.mgrid[:64, :64]
    disc = lambda cy, cx, r: (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2  # noqa: E731
    small, large = disc(32, 32, 6), disc(32, 32, 14)
    assert M.dice(M.mean_shape(small, large), disc(32, 32, 10)) > 0.97  # concentric: the middle radius
    left, right = disc(32, 24, 9), disc(32, 36, 9)
    mid = M.mean_shape(left, right)
    ellipse = (np.hypot(yy - 32, xx - 24) + np.hypot(yy - 32, xx - 36)) / 2 < 9  # mean distance to the centres
    assert M.dice(mid, ellipse) > 0.95 and np.nonzero(mid)[1].mean() == pytest.approx(30.0, abs=0.1)
    assert not (mid & ~(left | right)).any()
    empty = np.zeros_like(small)
    assert np.array_equal(M.mean_shape(empty, large), large) and np.array_equal(M.mean_shape(small, empty), small)
