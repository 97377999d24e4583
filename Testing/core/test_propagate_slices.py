"""Several prompted slices: the slices between are filled by two fronts, reconciled; beyond them, propagation."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from synthfm.segment import Prediction, PropagationOptions, Prompts, SlicePredictor, VolumeSegmenter
from synthfm.segment.preprocess import SliceTransform
from synthfm.segment.propagate import embedding_change
from synthfm.utils.masks import tight_box
from synthfm.utils.progress import CancelToken, Cancelled

from test_segment import TruthPredictor, _tiny


def _tilted_tube(depth=21, size=48):
    """A disc whose centre moves 1.5 px per slice in x, present on slices 2..18."""
    zz, yy, xx = np.mgrid[:depth, :size, :size]
    return ((xx - 8 - 1.5 * zz) ** 2 + (yy - 24) ** 2 < 36) & (zz >= 2) & (zz <= 18)


def _box(mask):
    return Prompts.make(box=tight_box(mask))


class BoxPredictor(TruthPredictor):
    """The truth inside the prompted box (with the mask of slices where the structure is absent empty)."""

    def predict(self, image, prompts, key=None, multimask="auto", value_range=None):
        prompts.validate(*image.shape)
        self.prompts_seen.append((key[2], prompts))
        x0, y0, x1, y1 = np.round(prompts.box).astype(int)
        inside = np.zeros(image.shape, bool)
        inside[y0:y1 + 1, x0:x1 + 1] = True
        mask = np.take(self.truth, key[2], axis=self.axis_) & inside
        return Prediction(mask, 0.9, np.zeros((256, 256), np.float32), np.array([0.9]))


class Sticky(TruthPredictor):
    """The truth's slice 5 on every slice, past the structure's ends too (score 0.9)."""

    def predict(self, image, prompts, key=None, multimask="auto", value_range=None):
        return Prediction(self.truth[5], 0.9, np.zeros((256, 256), np.float32), np.array([0.9]))


def test_slices_between_prompted_slices_follow_interpolated_boxes():
    truth = _tilted_tube()
    pred = BoxPredictor(truth, 0)
    seg = VolumeSegmenter(pred, truth * 1.0)
    result = seg.propagate_slices({2: _box(truth[2]), 10: _box(truth[10]), 18: _box(truth[18])},
                                  options=PropagationOptions(box_margin=0.0))
    assert np.array_equal(result.mask, truth)  # the disc is followed although it moves 1.5 px per slice
    sources = {r.index: r.source for r in result.records if r.stop is None}
    assert [i for i in sources if sources[i] == "prompt"] == [2, 10, 18]
    assert sorted(i for i in sources if sources[i] == "between") == [i for i in range(3, 18) if i != 10]
    assert {r.index: r.stop for r in result.records if r.stop} == {1: "empty", 19: "empty"}  # beyond: the stop rule
    boxes = {i: p.box for i, p in pred.prompts_seen if i == 6}  # halfway between 2 and 10: the boxes' average
    expected = (tight_box(truth[2]) + tight_box(truth[10])) / 2
    assert np.allclose(boxes[6], expected + [-2, -2, 2, 2])  # plus the 2-pixel margin
    assert result.describe().startswith("17 slices (2..18) from prompted slices 2, 10, 18, stopped before slice 1")
    pred.prompts_seen.clear()  # between_margin grows the interpolated boxes only: by 0.25 x their size (+ 2 px)
    seg.propagate_slices({2: _box(truth[2]), 10: _box(truth[10])}, options=PropagationOptions(box_margin=0.0,
                                                                                             between_margin=0.25))
    grown = [p.box for i, p in pred.prompts_seen if i == 6]
    size = expected[2:] - expected[:2] + 1
    assert grown and all(np.allclose(g, np.concatenate([expected[:2] - 0.25 * size - 2, expected[2:] + 0.25 * size + 2]))
                         for g in grown)


def test_between_points_and_mask_prompt_off_prompt_the_slices_between_with_less():
    truth = _tilted_tube()
    pred = BoxPredictor(truth, 0)
    seg = VolumeSegmenter(pred, truth * 1.0)
    prompted = {2: _box(truth[2]), 10: _box(truth[10])}
    seg.propagate_slices(prompted, options=PropagationOptions(box_margin=0.0))
    with_points = {i: len(p.points) for i, p in pred.prompts_seen if i not in prompted}
    assert set(with_points.values()) == {1}  # the default: the previous mask's most interior point everywhere
    pred.prompts_seen.clear()
    result = seg.propagate_slices(prompted, options=PropagationOptions(box_margin=0.0, between_points=False))
    points = {i: len(p.points) for i, p in pred.prompts_seen if i not in prompted}
    assert all(points[i] == 0 for i in range(3, 10)) and all(points[i] == 1 for i in range(11, 19))  # beyond: kept
    assert all(p.box is not None and p.mask_logits is not None for i, p in pred.prompts_seen if i not in prompted)
    assert np.array_equal(result.mask, truth)
    pred.prompts_seen.clear()  # between_mask_prompt=False: the interpolated box alone between them
    seg.propagate_slices(prompted, options=PropagationOptions(box_margin=0.0, between_points=False,
                                                              between_mask_prompt=False))
    between = [p for i, p in pred.prompts_seen if 2 < i < 10]
    beyond = [p for i, p in pred.prompts_seen if i > 10]
    assert between and all(p.mask_logits is None and len(p.points) == 0 and p.box is not None for p in between)
    assert beyond and all(p.mask_logits is not None for p in beyond)


class Drifting(TruthPredictor):
    """Right for a few slices from where a front started, then a wrong blob; the start rides in the logits.

    The front from slice 0 holds for 7 slices, the one from slice 10 for only 2 (its side is harder)."""

    hold = {0: 7, 10: 2}

    def predict(self, image, prompts, key=None, multimask="auto", value_range=None):
        i = key[2]
        start = i if prompts.mask_logits is None else int(prompts.mask_logits[0, 0])
        right = abs(i - start) <= self.hold.get(start, 99)
        wrong = np.zeros_like(self.truth[i])
        wrong[:3, :3] = True
        score = 0.8 if right else 0.9  # the wrong blob is the decoder's confident mistake
        return Prediction(self.truth[i] if right else wrong, score, np.full((256, 256), start, np.float32),
                          np.array([score]))


@pytest.mark.parametrize("between, wrong_slices", [("seam", []), ("nearest", [6, 7]), ("score", list(range(1, 10)))])
def test_fronts_meet_where_they_agree(between, wrong_slices):
    truth = np.zeros((11, 20, 20), bool)
    truth[:, 6:14, 6:14] = True
    seg = VolumeSegmenter(Drifting(truth, 0), truth * 1.0)
    result = seg.propagate_slices({0: _box(truth[0]), 10: _box(truth[10])}, direction="up",
                                  options=PropagationOptions(min_score=0.0, between=between))
    wrong = [i for i in range(11) if not np.array_equal(result.mask[i], truth[i])]
    assert wrong == wrong_slices


class Fronts(TruthPredictor):
    """Each front's own mask on every slice between two prompted slices 0 and 10 of a 32 x 16 volume: columns
    0..9 from the front of slice 0, columns 6..15 from the front of slice 10, held as low-res logits +-10 (the
    front's start rides in the logits' padding column, which no slice pixel reads)."""

    def predict(self, image, prompts, key=None, multimask="auto", value_range=None):
        i = key[2]
        start = i if prompts.mask_logits is None else int(prompts.mask_logits[0, -1])
        mask = np.zeros(image.shape, bool)
        if start == 0:
            mask[:, :10] = True
        else:
            mask[:, 6:] = True
        transform = SliceTransform(*image.shape, self.model.image_size)
        logits = 20 * transform.mask_to_lowres(mask).numpy() - 10
        logits[:, -1] = start
        return Prediction(mask, 0.8 if start == 0 else 0.6, logits.astype(np.float32), np.array([0.9]))


def test_fronts_blended_by_distance():
    truth = np.ones((11, 32, 16), bool)
    seg = VolumeSegmenter(Fronts(truth, 0), truth * 1.0)
    result = seg.propagate_slices({0: _box(truth[0]), 10: _box(truth[10])}, direction="up",
                                  options=PropagationOptions(min_score=0.0, between="blend"))
    columns = {i: np.nonzero(result.mask[i].all(axis=0))[0] for i in range(1, 10)}
    assert not any(result.mask[i][:, ~np.isin(np.arange(16), columns[i])].any() for i in range(1, 10))
    for i in range(1, 5):  # nearer slice 0: its front's columns 0..9
        assert list(columns[i]) == list(range(10)), i
    assert {6, 7, 8, 9} <= set(columns[5]) <= {5, 6, 7, 8, 9, 10}  # the middle: where both agree (+- a pixel's blur)
    for i in range(6, 10):
        assert list(columns[i]) == list(range(6, 16)), i
    scores = {r.index: r.score for r in result.records if r.source == "between"}
    assert scores[1] == pytest.approx(0.78) and scores[5] == pytest.approx(0.7) and scores[9] == pytest.approx(0.62)


def test_prompted_slices_that_disagree_or_come_out_empty():
    truth = _tilted_tube()
    seg = VolumeSegmenter(BoxPredictor(truth, 0), truth * 1.0)
    with pytest.raises(ValueError, match="empty mask on slice 20; move or add prompts there first"):
        seg.propagate_slices({10: _box(truth[10]), 20: _box(truth[10])})  # nothing of the structure on 20
    far = truth[10].copy()
    far[:] = False
    far[30:40, 30:40] = True  # a box on 4 that is not where the structure is on 10
    moved = truth.copy()
    moved[4] = far
    seg = VolumeSegmenter(BoxPredictor(moved, 0), moved * 1.0)
    result = seg.propagate_slices({4: _box(far), 10: _box(moved[10])}, direction="up")
    assert "do not overlap" in result.notes[0] and "4 and 10" in result.notes[0]
    with pytest.raises(ValueError, match="no prompted slice"):
        seg.propagate_slices({})
    with pytest.raises(ValueError, match="between must be one of"):
        seg.propagate_slices({10: _box(truth[10])}, options=PropagationOptions(between="middle"))


@pytest.mark.parametrize("axis", [1, 2])
def test_several_prompted_slices_along_any_axis(axis):
    truth = np.moveaxis(_tilted_tube(), 0, axis)  # the tube now runs along ``axis``
    seg = VolumeSegmenter(BoxPredictor(truth, axis), truth * 1.0, axis=axis)
    prompts = {i: _box(np.take(truth, i, axis=axis)) for i in (3, 12, 17)}
    result = seg.propagate_slices(prompts, options=PropagationOptions(box_margin=0.0))
    assert result.mask.shape == truth.shape and np.array_equal(result.mask, truth)


def test_progress_covers_all_slices_and_cancel_stops():
    truth = _tilted_tube()
    seg = VolumeSegmenter(BoxPredictor(truth, 0), truth * 1.0)
    seen = []
    prompts = {4: _box(truth[4]), 12: _box(truth[12])}
    seg.propagate_slices(prompts, progress=lambda d, t, m: seen.append((d, t)))
    assert seen[-1] == (20 - 12 + 4 + 7, 20 - 12 + 4 + 7) and all(d <= t for d, t in seen)
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(Cancelled):
        seg.propagate_slices(prompts, cancel=cancel)


def test_single_slice_volumes():
    one = np.zeros((1, 20, 20), np.float32)
    one[0, 5:12, 5:12] = 1
    seg = VolumeSegmenter(TruthPredictor(one > 0, 0), one)  # along its only slice: that slice alone
    assert seg.propagate(0, Prompts.make(box=(5, 5, 11, 11))).slices == [0]
    with pytest.raises(ValueError, match="single slice along axis 0: slices along axis 1 would be 1 pixel thick"):
        VolumeSegmenter(SlicePredictor(_tiny()), one, axis=1)


def test_contrast_loss_stops_a_mask_on_flat_background():
    truth = np.zeros((11, 30, 30), bool)
    truth[3:8, 10:20, 10:20] = True
    volume = np.where(truth, 160.0, 100.0) + np.random.default_rng(0).normal(0, 2, truth.shape)
    seg = VolumeSegmenter(Sticky(truth, 0), volume)
    prompt = Prompts.make(positive=[(15, 15)])
    assert seg.propagate(5, prompt).slices == list(range(11))
    result = seg.propagate(5, prompt, options=PropagationOptions(min_contrast_ratio=0.5))
    assert result.slices == list(range(3, 8)) and {r.stop for r in result.records if r.stop} == {"contrast lost"}


def test_growth_past_the_outermost_prompted_slice_stops_there():
    """Past a prompted end slice a structure tapers; a mask that grows there is a neighbour (max_end_growth)."""
    sides = {z: 12 - abs(z - 8) for z in range(3, 14)}  # a double pyramid on slices 3..13, sides 7..12..7

    class Swelling(TruthPredictor):  # right where the structure is, a growing neighbour beyond its ends
        def predict(self, image, prompts, key=None, multimask="auto", value_range=None):
            i = key[2]
            side = sides.get(i, 7 + min(abs(i - 3), abs(i - 13)))
            mask = np.zeros(image.shape, bool)
            mask[20 - side // 2:20 - side // 2 + side, 20 - side // 2:20 - side // 2 + side] = True
            return Prediction(mask, 0.9, np.zeros((256, 256), np.float32), np.array([0.9]))

    truth = np.zeros((17, 40, 40), bool)
    for z, side in sides.items():
        truth[z, 20 - side // 2:20 - side // 2 + side, 20 - side // 2:20 - side // 2 + side] = True
    seg = VolumeSegmenter(Swelling(truth, 0), truth * 1.0)
    prompts = {z: _box(truth[z]) for z in (3, 8, 13)}
    assert seg.propagate_slices(prompts).slices == list(range(17))  # without the rule: the neighbour is kept
    result = seg.propagate_slices(prompts, options=PropagationOptions(max_end_growth=1.0))
    assert result.slices == list(range(3, 14)) and np.array_equal(result.mask, truth)
    stops = {r.index: r.stop for r in result.records if r.stop}
    assert stops == {2: "growing past the end", 14: "growing past the end"}
    # one prompted slice says nothing about where the ends are: the rule does not apply; nor past a prompted slice
    # whose mask is the larger of the outermost two (the structure's largest slice, not its end)
    assert seg.propagate(8, prompts[8], options=PropagationOptions(max_end_growth=1.0)).slices == list(range(17))
    two = seg.propagate_slices({8: prompts[8], 13: prompts[13]}, options=PropagationOptions(max_end_growth=1.0))
    assert two.slices == list(range(14)) and {r.stop for r in two.records if r.stop} == {"growing past the end"}


def test_propagation_past_a_prompted_end_is_capped_by_the_span_of_the_prompted_slices():
    """Past a prompted end (its mask smaller than the next prompted one), at most ceil(max_end_extension x span)
    slices are kept: the user prompted near the structure's end."""
    truth = np.zeros((40, 30, 30), bool)
    for z in range(40):  # tapers from side 12 on slice 20 to 5; a neighbour of side 5 runs on through the volume
        side = max(5, 12 - abs(z - 20) // 3)
        truth[z, 15 - side // 2:15 - side // 2 + side, 15 - side // 2:15 - side // 2 + side] = True
    seg = VolumeSegmenter(TruthPredictor(truth, 0), truth * 1.0)
    prompts = {z: _box(truth[z]) for z in (10, 20, 30)}
    assert seg.propagate_slices(prompts).slices == list(range(40))  # off by default: to the volume's ends
    options = PropagationOptions(max_end_extension=0.25)
    result = seg.propagate_slices(prompts, options=options)
    assert result.slices == list(range(5, 36))  # span 20: 5 slices past each end
    assert {r.index: r.stop for r in result.records if r.stop} == {4: "past the prompted span",
                                                                   36: "past the prompted span"}
    assert "stopped before slice 4 (past the prompted span)" in result.describe()
    # one prompted slice says nothing about the ends; past the larger of two prompted slices (the structure's
    # largest slice, not its end) the structure goes on: no cap there
    assert seg.propagate(20, prompts[20], options=options).slices == list(range(40))
    assert seg.propagate_slices({20: prompts[20], 30: prompts[30]}, options=options).slices == list(range(34))
    with pytest.raises(ValueError, match="max_end_extension"):
        seg.propagate_slices(prompts, options=PropagationOptions(max_end_extension=-1.0))


def test_max_extent_stops_past_a_multiple_of_the_prompted_masks_width_in_millimetres():
    """max_extent: past the outermost prompted slice, at most max_extent x the equivalent diameter of its mask
    (2 sqrt(area / pi)) away, both in mm, so thick slices reach fewer slices; off by default."""
    truth = np.zeros((40, 30, 30), bool)
    truth[:, 10:20, 10:20] = True  # a square of side 10 px on every slice: equivalent diameter 11.28 px
    prompts = {20: _box(truth[20])}
    diameter = 2 * np.sqrt(100 / np.pi)
    seg = VolumeSegmenter(TruthPredictor(truth, 0), truth * 1.0)
    assert seg.propagate_slices(prompts).slices == list(range(40))  # off: to the volume's ends
    result = seg.propagate_slices(prompts, options=PropagationOptions(max_extent=1.0))  # no spacing: voxels
    reach = int(np.floor(diameter))  # 11 slices each way
    assert result.slices == list(range(20 - reach, 20 + reach + 1))
    assert {r.index: r.stop for r in result.records if r.stop} == {20 - reach - 1: "farther than its width",
                                                                   20 + reach + 1: "farther than its width"}
    # 0.5 mm pixels, 2 mm slices: the width is 5.64 mm, so 2 slices each way reach 4 mm, 3 would reach 6 mm
    thick = VolumeSegmenter(TruthPredictor(truth, 0), truth * 1.0, spacing=(0.5, 0.5, 2.0))
    assert thick.propagate_slices(prompts, options=PropagationOptions(max_extent=1.0)).slices == list(range(18, 23))
    # along another axis the slice distance is that axis's spacing (x here) and the pixel area the other two's
    side = VolumeSegmenter(TruthPredictor(truth, 2), truth * 1.0, axis=2, spacing=(2.0, 1.0, 1.0))
    column = {15: _box(truth[:, :, 15])}  # 40 x 10 px of 1 mm: 22.6 mm wide; 2.8 slices of 2 mm
    assert side.propagate_slices(column, options=PropagationOptions(max_extent=0.25)).slices == list(range(13, 18))
    with pytest.raises(ValueError, match="max_extent"):
        seg.propagate_slices(prompts, options=PropagationOptions(max_extent=-1.0))


def test_outer_ends_caps_both_ends_of_three_prompted_slices_whatever_their_masks():
    """A decoder that over-segments a thin end slice (its mask larger than the middle one's) hides that end from
    the area test; with outer_ends, three or more prompted slices mark both ends, so the cap applies on both sides."""
    truth = np.zeros((40, 30, 30), bool)
    truth[:, 10:20, 10:20] = True  # one size everywhere: no prompted mask is smaller than the next one inward
    truth[10, 5:25, 5:25] = True  # the first prompted slice: its mask the largest
    seg = VolumeSegmenter(TruthPredictor(truth, 0), truth * 1.0)
    prompts = {z: _box(truth[z]) for z in (10, 20, 30)}
    capped = PropagationOptions(max_end_extension=0.25)
    assert seg.propagate_slices(prompts, options=capped).slices == list(range(40))  # no end is tapering
    both = seg.propagate_slices(prompts, options=replace(capped, outer_ends=True))
    assert both.slices == list(range(5, 36))
    assert {r.stop for r in both.records if r.stop} == {"past the prompted span"}
    two = {20: prompts[20], 30: prompts[30]}  # two prompted slices: one may be the structure's largest, not an end
    assert (seg.propagate_slices(two, options=replace(capped, outer_ends=True)).slices
            == seg.propagate_slices(two, options=capped).slices == list(range(11, 40)))  # (11: the wide slice 10)


def test_learned_stop_reads_each_slices_evidence_and_replays_exactly():
    """A keep rule over the slice's evidence stops where the mask's intensity leaves the structure's; the evidence
    recorded with every stop off replays the same stop (benchmarks/fit_stop.py relies on it)."""
    from synthfm.segment.propagate import EVIDENCE, keep_probability, stop_reason

    truth = np.zeros((11, 30, 30), bool)
    truth[2:9, 10:20, 10:20] = True
    volume = np.where(truth, 160.0, 100.0) + np.random.default_rng(0).normal(0, 2, truth.shape)
    seg = VolumeSegmenter(Sticky(truth, 0), volume)
    prompt = Prompts.make(positive=[(15, 15)])
    loose = seg.propagate(5, prompt)
    assert loose.slices == list(range(11))
    for r in loose.records:
        if r.source == "propagated":
            assert set(r.evidence) == set(EVIDENCE)
            inside = 2 <= r.index <= 8
            assert (r.evidence["drift"] < 0.1) == inside  # off the structure the mean falls by its whole contrast
            assert (r.evidence["toward"] > 0.5) == (not inside)  # ... towards the surroundings' intensity
    rule = (("bias", 4.0), ("drift", -8.0))  # keep probability 0.5 at a drift of half the spread
    options = PropagationOptions(keep_rule=rule, min_keep=0.5)
    result = seg.propagate(5, prompt, options=options)
    assert result.slices == list(range(2, 9))
    assert {r.index: r.stop for r in result.records if r.stop} == {1: "unlike the structure", 9: "unlike the structure"}
    keep = keep_probability(rule)
    replayed = [r.index for r in loose.records if r.source == "propagated"
                and stop_reason(options, r.evidence, r.area, r.area, keep=keep)]
    assert sorted(replayed) == [0, 1, 9, 10]  # the slices past both ends: the live run stopped at the first of each
    assert seg.propagate(5, prompt, options=PropagationOptions(keep_rule=rule)).slices == list(range(11))  # min_keep 0
    with pytest.raises(ValueError, match="keep_rule names"):
        seg.propagate(5, prompt, options=PropagationOptions(keep_rule=(("width", 1.0),), min_keep=0.5))
    with pytest.raises(ValueError, match="turn the learned stop off with min_keep=0"):
        PropagationOptions.parse_overrides(["keep_rule=1"])
    assert PropagationOptions.parse_overrides(["min_keep=0"]) == {"min_keep": 0.0}


def test_drift_window_follows_a_slow_intensity_trend_that_the_drift_from_the_prompted_slice_stops():
    """A structure whose intensity rises slowly along z (a bias field, 8 per slice against a contrast of 60): the
    drift from the prompted slice passes half the spread 4 slices away; measured from 3 kept slices back it never
    does. A window longer than the chain is the drift from the prompted slice."""
    truth = np.zeros((11, 30, 30), bool)
    truth[:, 10:20, 10:20] = True
    ramp = 8.0 * np.abs(np.arange(11) - 5)[:, None, None]
    volume = np.where(truth, 160.0, 100.0) + ramp + np.random.default_rng(0).normal(0, 1, truth.shape)
    seg = VolumeSegmenter(Sticky(truth, 0), volume)
    prompt = Prompts.make(positive=[(15, 15)])
    options = PropagationOptions(max_intensity_drift=0.5, intensity_scale="spread")
    assert seg.propagate(5, prompt, options=options).slices == list(range(2, 9))
    assert seg.propagate(5, prompt, options=replace(options, drift_window=3)).slices == list(range(11))
    assert seg.propagate(5, prompt, options=replace(options, drift_window=20)).slices == list(range(2, 9))
    with pytest.raises(ValueError, match="drift_window"):
        seg.propagate(5, prompt, options=replace(options, drift_window=-1))


class Leaky(TruthPredictor):
    """The truth on the prompted slices (``clean``); elsewhere the truth joined to a touching neighbour (a leak)."""

    def __init__(self, truth, neighbour, clean=(5,)):
        super().__init__(truth, 0)
        self.neighbour, self.clean = neighbour, clean

    def predict(self, image, prompts, key=None, multimask="auto", value_range=None):
        i = key[2]
        mask = self.truth[i] | (self.neighbour[i] if i not in self.clean else False)
        return Prediction(mask, 0.9, np.zeros((256, 256), np.float32), np.array([0.9]))


def _leak_volume():
    truth = np.zeros((11, 40, 50), bool)
    truth[:, 10:20, 10:20] = True
    neighbour = np.zeros_like(truth)
    neighbour[:, 10:20, 20:45] = True  # touches the structure and runs 25 px away from it
    volume = np.where(truth, 160.0, np.where(neighbour, 240.0, 100.0))
    return truth, neighbour, volume + np.random.default_rng(0).normal(0, 2, truth.shape)


def test_intensity_gate_cuts_a_leak_into_a_neighbour_of_another_intensity():
    truth, neighbour, volume = _leak_volume()
    seg = VolumeSegmenter(Leaky(truth, neighbour), volume)
    prompt = Prompts.make(positive=[(15, 15)])
    leaked = seg.propagate(5, prompt, options=PropagationOptions(max_growth=10.0))
    assert leaked.mask[6].sum() == truth[6].sum() + neighbour[6].sum()
    gated = seg.propagate(5, prompt, options=PropagationOptions(max_growth=10.0, intensity_gate=2.0))
    # every propagated slice: the neighbour (240 vs 160 +- 2) cut, to within the smoothing's 2 px
    assert gated.mask[truth].all() and not (gated.mask & ~truth)[:, :, 22:].any()
    assert gated.slices == list(range(11))
    seg = VolumeSegmenter(Leaky(truth, neighbour, clean=(2, 8)), volume)  # between prompted slices too
    gated = seg.propagate_slices({2: prompt, 8: prompt}, options=PropagationOptions(max_growth=10.0,
                                                                                   intensity_gate=2.0))
    assert gated.mask[truth].all() and not (gated.mask & ~truth)[:, :, 22:].any()


def test_max_step_keeps_a_propagated_mask_near_the_previous_one():
    """Per slice the mask may reach at most max(2 px, max_step x equivalent radius) past the previous mask."""
    truth, neighbour, volume = _leak_volume()
    seg = VolumeSegmenter(Leaky(truth, neighbour), volume)
    result = seg.propagate(5, Prompts.make(positive=[(15, 15)]),
                           options=PropagationOptions(max_growth=10.0, max_step=0.3))
    for i in (4, 6):  # next to the prompted slice: the truth (10 x 10, radius 5.6 -> 2 px) plus 2 columns
        assert result.mask[i].sum() == 120 and not (result.mask[i] & ~truth[i])[:, 22:].any()
    widths = [int(result.mask[i].any(axis=0).sum()) for i in range(6, 11)]
    assert widths == sorted(widths) and widths[-1] < 10 + 25  # the leak creeps, slowly, and never all the way


def test_restrict_cuts_the_mask_and_the_logits_the_next_slice_is_prompted_with():
    truth, neighbour, _ = _leak_volume()
    predictor = TruthPredictor(truth, 0)
    pred = Prediction(truth[0] | neighbour[0], 0.9, np.zeros((256, 256), np.float32), np.array([0.9]))
    cut = predictor.restrict(pred, truth[0])
    assert np.array_equal(cut.mask, truth[0]) and cut.score == pred.score
    # the slice (40 x 50) fills rows 0..204 and every column of the low-res frame; the neighbour's columns 20..44
    assert (cut.logits[60:90, 110:220] <= -20).all() and (cut.logits[60:90, :95] == 0).all()
    assert (cut.logits[:40] == 0).all() and (cut.logits[110:] == 0).all()  # rows outside the neighbour's 10..19
    assert predictor.restrict(pred, pred.mask) is pred  # nothing cut: the same prediction


def test_the_stop_rule_reads_the_decoders_mask_not_the_gated_one():
    """A gate that cuts a leak keeps the mask's intensity the structure's; the drift stop still sees the leak the
    decoder made (mean 217 against 160, 2 spreads) and stops, so a gated chain is never longer than an ungated one."""
    truth, neighbour, volume = _leak_volume()
    seg = VolumeSegmenter(Leaky(truth, neighbour), volume)
    options = PropagationOptions(max_growth=10.0, max_intensity_drift=0.5, intensity_scale="spread")
    prompt = Prompts.make(positive=[(15, 15)])
    assert seg.propagate(5, prompt, options=options).slices == [5]
    gated = seg.propagate(5, prompt, options=replace(options, intensity_gate=2.0))
    assert gated.slices == [5] and {r.stop for r in gated.records if r.stop} == {"intensity drift"}
    record = next(r for r in gated.records if r.index == 6)
    assert record.area < 150 and record.evidence["drift"] > 1.5  # the kept (cut) area; the decoder's mask's drift


def test_stop_on_cut_reads_the_gated_mask_and_max_cut_stops_where_the_gate_cuts_much():
    """``stop_on_cut``: the drift stop reads the gated mask (the structure's intensity): the chain runs on. The
    neighbour is 250 of the decoder's 350 px, so each slice's "cut" evidence is ~0.7: ``max_cut=0.5`` stops there,
    ``max_cut=0.8`` does not."""
    truth, neighbour, volume = _leak_volume()
    seg = VolumeSegmenter(Leaky(truth, neighbour), volume)
    options = PropagationOptions(max_growth=10.0, max_intensity_drift=0.5, intensity_scale="spread",
                                 intensity_gate=2.0, stop_on_cut=True)
    prompt = Prompts.make(positive=[(15, 15)])
    on_cut = seg.propagate(5, prompt, options=options)
    assert on_cut.slices == list(range(11)) and on_cut.mask[truth].all() and not (on_cut.mask & ~truth)[:, :, 22:].any()
    cut = next(r for r in on_cut.records if r.index == 6).evidence["cut"]
    assert 0.6 < cut < 0.75
    stopped = seg.propagate(5, prompt, options=replace(options, max_cut=0.5))
    assert stopped.slices == [5] and {r.stop for r in stopped.records if r.stop} == {"cut off"}
    assert seg.propagate(5, prompt, options=replace(options, max_cut=0.8)).slices == list(range(11))


def test_a_mask_growing_past_max_size_times_the_prompted_one_stops():
    """A slow leak (each slice only a little larger than the last, never an area jump) stops where the mask is
    larger than max_size x the prompted mask; off (0), it runs to the volume's ends."""
    class Creeping(TruthPredictor):  # a square of side 10 on the prompted slice 10, one pixel wider per slice away
        def predict(self, image, prompts, key=None, multimask="auto", value_range=None):
            side = 10 + abs(key[2] - 10)
            mask = np.zeros(image.shape, bool)
            mask[2:2 + side, 2:2 + side] = True
            return Prediction(mask, 0.9, np.zeros((256, 256), np.float32), np.array([0.9]))

    truth = np.zeros((21, 40, 40), bool)
    truth[:, 2:12, 2:12] = True
    seg = VolumeSegmenter(Creeping(truth, 0), truth * 1.0)
    prompt = _box(truth[10])
    assert seg.propagate(10, prompt, options=PropagationOptions(max_size=0.0)).slices == list(range(21))
    result = seg.propagate(10, prompt, options=PropagationOptions(max_size=3.0))
    assert result.slices == list(range(3, 18))  # side 17 (289 px) is kept, side 18 (324 px > 3 x 100) is not
    assert {r.index: r.stop for r in result.records if r.stop} == {2: "larger than the prompt",
                                                                   18: "larger than the prompt"}
    assert PropagationOptions.for_model(type("M", (), {"name": "synthfm-lite"})()).max_size == 3.0
    with pytest.raises(ValueError, match="max_size"):
        seg.propagate(10, prompt, options=PropagationOptions(max_size=-1.0))


@pytest.mark.parametrize("every, encoded", [(2, [0, 2, 4, 6, 8, 10]), (3, [0, 3, 6, 9, 10])])
def test_encode_every_decodes_the_slices_between_on_interpolated_embeddings(every, encoded):
    volume = np.random.default_rng(3).normal(size=(11, 24, 24)).astype(np.float32)
    pred = SlicePredictor(_tiny())
    seg = VolumeSegmenter(pred, volume)
    options = PropagationOptions(encode_every=every, min_area_px=0, min_score=0.0)
    result = seg.propagate_slices({0: _box(np.ones((24, 24), bool)), 10: _box(np.ones((24, 24), bool))},
                                  options=options)
    assert sorted(r.index for r in result.records) == list(range(11))  # every slice filled between 0 and 10
    assert pred.encoder_calls == len(encoded)  # only the grid (and the slice after its last multiple) is encoded
    assert [i for i in range(11) if pred.is_cached(seg.key(i))] == encoded
    below, above = pred._cache[seg.key(0)][0], pred._cache[seg.key(every)][0]
    between = pred._cache[(seg.key(1), "interpolated", every)][0]  # linear between the encoded slices
    assert torch.allclose(between, (1 - 1 / every) * below + (1 / every) * above)


def test_a_slice_between_neighbours_that_differ_too_much_is_encoded_after_all():
    """max_embedding_change: a slice is decoded on the mix of its encoded neighbours only where their embeddings
    differ by at most that much; above it, the slice is encoded itself."""
    volume = np.random.default_rng(4).normal(size=(11, 24, 24)).astype(np.float32)
    volume[6:] += 3.0  # a jump between slices 5 and 6: only slice 5 lies between neighbours (4, 6) across it
    prompts = {0: _box(np.ones((24, 24), bool)), 10: _box(np.ones((24, 24), bool))}

    def run(max_change):
        pred = SlicePredictor(_tiny())
        seg = VolumeSegmenter(pred, volume)
        options = PropagationOptions(encode_every=2, max_embedding_change=max_change, min_area_px=0, min_score=0.0)
        seg.propagate_slices(prompts, options=options)
        embedded = {i: pred._cache[seg.key(i)][0] for i in range(0, 11, 2)}
        changes = {i: embedding_change(embedded[i - 1], embedded[i + 1]) for i in range(1, 10, 2)}
        return [i for i in range(11) if pred.is_cached(seg.key(i))], changes

    grid, changes = run(0.0)  # off: the grid only
    assert grid == [0, 2, 4, 6, 8, 10]
    assert max(changes, key=changes.get) == 5  # the jump is where the embeddings differ most
    threshold = (changes[5] + max(v for i, v in changes.items() if i != 5)) / 2
    assert run(threshold)[0] == [0, 2, 4, 5, 6, 8, 10]  # only the slice across the jump is encoded
    assert run(min(changes.values()) / 2)[0] == list(range(11))  # below every change: every slice encoded
    pred = SlicePredictor(_tiny())  # mixes cached by a run without the limit do not bypass it in the next run
    seg = VolumeSegmenter(pred, volume)
    for limit in (0.0, threshold):
        seg.propagate_slices(prompts, options=PropagationOptions(encode_every=2, max_embedding_change=limit,
                                                                 min_area_px=0, min_score=0.0))
    assert pred.is_cached(seg.key(5)) and not pred.is_cached(seg.key(3))
    assert embedding_change(torch.ones(3), torch.ones(3)) == 0.0
    assert embedding_change(torch.ones(3), -torch.ones(3)) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="max_embedding_change must be 0"):
        VolumeSegmenter(SlicePredictor(_tiny()), volume).propagate_slices(
            prompts, options=PropagationOptions(encode_every=2, max_embedding_change=-0.1))


def test_encode_every_must_be_a_whole_number_of_slices():
    seg = VolumeSegmenter(SlicePredictor(_tiny()), np.zeros((3, 8, 8), np.float32))
    for bad in (0, 2.5):
        with pytest.raises(ValueError, match="encode_every must be a whole number of slices"):
            seg.propagate_slices({1: _box(np.ones((8, 8), bool))}, options=PropagationOptions(encode_every=bad))
    with pytest.raises(ValueError, match="not a valid value for encode_every"):
        PropagationOptions.parse_overrides(["encode_every=2.5"])


def test_uncut_reference_compares_with_the_prompted_mask_before_the_point_cut():
    """The point cut kept only the structure on the prompted slice, but the decoder's own mask there held the
    neighbour as on every slice. The stop rule reads the propagated slices' decoder masks: against the cut mask
    their intensity drifted (stop at once); with ``uncut_reference`` against the prompted slice's decoder mask it did
    not, and the intensity gate, still centred on the cut mask's intensity, keeps the neighbour out."""
    class CutAtPrompt(Leaky):  # the prompted slice's mask as the point cut leaves it, with the decoder's before it
        def predict(self, image, prompts, key=None, multimask="auto", value_range=None):
            i = key[2]
            decoded = self.truth[i] | self.neighbour[i]
            cut = i in self.clean and prompts.mask_logits is None
            return Prediction(self.truth[i] if cut else decoded, 0.9, np.zeros((256, 256), np.float32),
                              np.array([0.9]), uncut=decoded if cut else None)

    truth, neighbour, volume = _leak_volume()
    seg = VolumeSegmenter(CutAtPrompt(truth, neighbour), volume)
    options = PropagationOptions(max_growth=10.0, max_intensity_drift=0.5, intensity_scale="spread",
                                 intensity_gate=2.0)
    prompt = Prompts.make(positive=[(15, 15)])
    assert seg.propagate(5, prompt, options=options).slices == [5]
    uncut = seg.propagate(5, prompt, options=replace(options, uncut_reference=True))
    assert uncut.slices == list(range(11))
    assert uncut.mask[truth].all() and not (uncut.mask & ~truth)[:, :, 22:].any()  # the gate: the cut's intensity
    record = next(r for r in uncut.records if r.index == 6)
    assert record.evidence["drift"] < 0.1 and record.evidence["growth"] < 0.1  # against the decoder's prompted mask
    on_cut = [seg.propagate(5, prompt, options=replace(options, uncut_reference=u, stop_on_cut=True)) for u in (0, 1)]
    assert [r.evidence for r in on_cut[0].records] == [r.evidence for r in on_cut[1].records]  # cut masks: cut reference


def test_a_chosen_candidate_is_compared_as_shown():
    """Where the user chose the prompted slice's candidate, the stop rule compares with that mask as chosen and shown
    (cut), not the decoder's before the cut (``chosen_uncut_reference=True``: as for the pick); the model's pick keeps
    the uncut reference. (Same scene as above: against the cut mask the next slices' intensity drifted.)"""
    class Choosable(Leaky):
        def predict(self, image, prompts, key=None, multimask="auto", value_range=None, candidate=None):
            i = key[2]
            decoded = self.truth[i] | self.neighbour[i]
            cut = i in self.clean and prompts.mask_logits is None
            return Prediction(self.truth[i] if cut else decoded, 0.9, np.zeros((256, 256), np.float32),
                              np.array([0.9]), uncut=decoded if cut else None, choice=candidate)

    truth, neighbour, volume = _leak_volume()
    seg = VolumeSegmenter(Choosable(truth, neighbour), volume)
    options = PropagationOptions(max_growth=10.0, max_intensity_drift=0.5, intensity_scale="spread",
                                 intensity_gate=2.0, uncut_reference=True)
    prompts = {5: Prompts.make(positive=[(15, 15)])}
    assert seg.propagate_slices(prompts, options=options, candidates={5: 2}).slices == [5]  # as shown
    uncut = replace(options, chosen_uncut_reference=True)
    assert seg.propagate_slices(prompts, options=uncut, candidates={5: 2}).slices == list(range(11))
    assert seg.propagate_slices(prompts, options=options).slices == list(range(11))  # the pick: uncut as before


def test_an_empty_mask_ends_the_structure_even_with_min_area_px_0():
    """``min_area_px=0`` lets tiny masks through, never an empty one: it stops propagation (there is no box to prompt
    the next slice with), an empty slice between prompted slices prompts nothing, and an empty prompted mask is an
    error naming the slice."""
    truth = _tilted_tube()
    seg = VolumeSegmenter(BoxPredictor(truth, 0), truth * 1.0)
    options = PropagationOptions(box_margin=0.0, min_area_px=0, min_score=0.0)
    result = seg.propagate(10, _box(truth[10]), options=options)
    assert result.slices == list(range(2, 19))
    assert {r.index: r.stop for r in result.records if r.stop} == {1: "empty", 19: "empty"}
    holes = truth.copy()
    holes[6:8] = False  # two empty slices between the prompted ones
    seg = VolumeSegmenter(BoxPredictor(holes, 0), holes * 1.0)
    between = seg.propagate_slices({2: _box(truth[2]), 12: _box(truth[12])}, options=options)
    assert not between.mask[6:8].any() and between.mask[9].sum() > 0
    with pytest.raises(ValueError, match="empty mask on slice 7"):
        seg.propagate_slices({2: _box(truth[2]), 7: _box(truth[7])}, options=options)


class Chooser(TruthPredictor):
    """The truth, with the candidate each call asked for recorded (None: the model's own pick)."""

    def __init__(self, truth, axis):
        super().__init__(truth, axis)
        self.asked = []

    def predict(self, image, prompts, key=None, multimask="auto", value_range=None, candidate=None):
        self.asked.append((key[2], candidate))
        return super().predict(image, prompts, key, multimask, value_range)


def test_a_candidate_chosen_on_a_prompted_slice_is_where_propagation_starts():
    truth = _tilted_tube()
    pred = Chooser(truth, 0)
    seg = VolumeSegmenter(pred, truth * 1.0)
    options = PropagationOptions(box_margin=0.0, min_score=0.0)
    result = seg.propagate_slices({4: _box(truth[4]), 10: _box(truth[10])}, options=options, candidates={10: 2})
    assert result.slices == list(range(2, 19))
    asked = dict(pred.asked[:2])  # the prompted slices first, in order
    assert asked == {4: None, 10: 2} and all(c is None for _, c in pred.asked[2:])  # steps: the model's own
    with pytest.raises(ValueError, match=r"candidates chosen on slices \[7\] that hold no prompts"):
        seg.propagate_slices({4: _box(truth[4])}, options=options, candidates={7: 1})


@pytest.mark.parametrize("name, bad", [("drift_window", -1), ("stop_patience", 1.5), ("stop_patience", -1),
                                       ("max_end_extension", float("nan")), ("max_extent", -0.5),
                                       ("encode_every", 0), ("adapt_steps", -1), ("adapt_batch", 0),
                                       ("max_embedding_change", -0.1), ("max_size", -1.0),
                                       ("intensity_stat", "mode"), ("intensity_scale", "z"), ("between", "middle")])
def test_every_setting_out_of_range_is_refused_by_name_before_any_slice_is_segmented(name, bad):
    truth = _tilted_tube()
    predictor = BoxPredictor(truth, 0)
    calls = []
    predictor.predict = lambda *args, **kwargs: calls.append(args)  # nothing may be segmented
    with pytest.raises(ValueError, match=rf"^{name} must be .*, got '?{bad}'?$"):
        VolumeSegmenter(predictor, truth * 1.0).propagate_slices({10: _box(truth[10])},
                                                                 options=PropagationOptions(**{name: bad}))
    assert calls == []
    PropagationOptions().check()  # the defaults are in range
