"""Slices between prompted slices filled by image registration (``between="register"``, synthfm.segment.register)."""
from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage as ndi

from synthfm.segment import PropagationOptions, VolumeSegmenter
from synthfm.segment.register import carry, registered_fill
from synthfm.utils.masks import dice, mean_shape

from test_propagate_slices import BoxPredictor, _box, _tilted_tube


def _disc(centre, radius=9.0, size=64):
    yy, xx = np.mgrid[:size, :size]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius ** 2


def test_carry_follows_the_image_not_the_mask():
    moving, fixed = _disc((30, 28)), _disc((33, 32))
    image = lambda m: ndi.gaussian_filter(m * 100.0, 1.5)  # noqa: E731
    carried = carry(moving.astype(np.float32), image(moving), image(fixed), (0.0, 100.0)) > 0.5
    assert dice(carried, fixed) > 0.9 > dice(moving, fixed)  # the disc moved 5 px; the carried mask moved with it
    assert not carry(np.zeros((64, 64), np.float32), image(moving), image(fixed), (0.0, 100.0)).any()


def test_registered_fill_mixes_both_prompted_masks_by_distance():
    # a disc growing from radius 6 to 14 over 9 slices: each slice between gets the disc of its own radius
    radii = np.linspace(6, 14, 9)
    volume = np.stack([ndi.gaussian_filter(_disc((32, 32), r) * 100.0, 1.0) for r in radii])
    truth = [_disc((32, 32), r) for r in radii]
    seen = []
    masks = registered_fill(lambda i: volume[i], 0, truth[0], 8, truth[8], (0.0, 100.0), step=seen.append)
    assert sorted(masks) == list(range(1, 8))
    assert sorted(seen) == sorted(2 * list(range(1, 8)))  # one registration per slice and direction
    assert all(dice(masks[i], truth[i]) > 0.9 for i in range(1, 8))
    linear = [dice(truth[0] if i < 4 else truth[8], truth[i]) for i in range(1, 8)]  # the nearer mask, copied
    assert np.mean([dice(masks[i], truth[i]) for i in range(1, 8)]) > np.mean(linear) + 0.05


def test_between_register_decodes_only_prompted_and_outer_slices():
    truth = _tilted_tube()
    volume = ndi.gaussian_filter(truth * 100.0, (0, 1.0, 1.0))
    pred = BoxPredictor(truth, 0)
    result = VolumeSegmenter(pred, volume).propagate_slices(
        {2: _box(truth[2]), 10: _box(truth[10]), 18: _box(truth[18])},
        options=PropagationOptions(box_margin=0.0, between="register"))
    decoded = sorted({i for i, _ in pred.prompts_seen})
    assert decoded == [1, 2, 10, 18, 19]  # the prompted slices and one step past each end: none between
    between = {r.index: r for r in result.records if r.source == "between"}
    assert sorted(between) == [i for i in range(3, 18) if i != 10]
    assert all(dice(result.mask[i], truth[i]) > 0.85 for i in between)  # the disc moves 1.5 px per slice
    assert all(r.score == pytest.approx(0.9) for r in between.values())  # the prompted slices' scores, mixed
    assert result.describe().startswith("17 slices (2..18) from prompted slices 2, 10, 18")


@pytest.mark.parametrize("name, bad", [("register_iterations", 0), ("register_iterations", 2.5),
                                       ("register_smoothing", -1.0)])
def test_registration_settings_out_of_range_are_refused_by_name(name, bad):
    truth = _tilted_tube()
    with pytest.raises(ValueError, match=rf"^{name} must be .*, got {bad}$"):
        VolumeSegmenter(BoxPredictor(truth, 0), truth * 1.0).propagate_slices(
            {10: _box(truth[10])}, options=PropagationOptions(between="register", **{name: bad}))



class ShiftedPredictor(BoxPredictor):
    """The truth inside the box, moved 3 px to the right on every slice that is not prompted (a biased model)."""

    def predict(self, image, prompts, key=None, multimask="auto", value_range=None):
        pred = super().predict(image, prompts, key, multimask, value_range)
        return pred if key[2] in (2, 10, 18) else replace(pred, mask=np.roll(self.truth[key[2]], 3, axis=1))


def test_between_mix_is_half_way_between_the_model_and_the_registration():
    truth = _tilted_tube()
    volume = ndi.gaussian_filter(truth * 100.0, (0, 1.0, 1.0))
    prompted = {2: _box(truth[2]), 10: _box(truth[10]), 18: _box(truth[18])}
    runs, ticks = {}, []
    for between in ("seam", "register", "mix"):
        options = PropagationOptions(box_margin=0.1, between=between, intensity_gate=0.0)
        progress = (lambda done, total, message: ticks.append((done, total))) if between == "mix" else None
        runs[between] = VolumeSegmenter(ShiftedPredictor(truth, 0), volume).propagate_slices(
            prompted, options=options, progress=progress).mask
    between = [i for i in range(3, 18) if i != 10]
    for i in between:
        assert np.array_equal(runs["mix"][i], mean_shape(runs["seam"][i], runs["register"][i]))
    model = np.mean([dice(runs["seam"][i], truth[i]) for i in between])
    mixed = np.mean([dice(runs["mix"][i], truth[i]) for i in between])
    assert model < 0.85 and mixed > model + 0.03  # the registration follows the image, not the model's bias
    done = [d for d, _ in ticks]
    assert done == sorted(done) and ticks[-1][0] == ticks[-1][1]  # progress counts both fills once each
