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
