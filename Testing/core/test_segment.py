"""Slice preprocessing round trips, prompt validation, the embedding cache and propagation."""
import functools
from dataclasses import replace

import numpy as np
from scipy import ndimage as ndi
import pytest
import torch

from synthfm.models import load_model
from synthfm.segment import Prediction, PropagationOptions, Prompts, SlicePredictor, VolumeSegmenter
from synthfm.segment.preprocess import SliceTransform, intensity_range, prepare_slice
from synthfm.segment.propagate import prompts_from_mask


@pytest.mark.parametrize("h, w, size", [(256, 256, 256), (300, 200, 256), (77, 513, 1024), (512, 64, 256), (5, 7, 128)])
def test_coordinates_survive_resize_pad_round_trip(h, w, size):
    t = SliceTransform(h, w, size)
    rh, rw = t.resized
    assert max(rh, rw) == size
    pts = np.random.default_rng(0).uniform([0, 0], [w - 1, h - 1], (50, 2))
    np.testing.assert_allclose(t.to_pixel(t.to_input(pts)), pts, rtol=0, atol=1e-9)
    corner = t.to_input(np.array([[w, h]]))[0]  # the slice's far corner maps to the resized size
    np.testing.assert_allclose(corner, [rw, rh])


@pytest.mark.parametrize("h, w", [(200, 300), (256, 256), (90, 40)])
def test_masks_survive_lowres_round_trip(h, w):
    mask = np.zeros((h, w), bool)
    mask[h // 4: h // 2, w // 3: 2 * w // 3] = True
    t = SliceTransform(h, w, 256)
    back = t.logits_to_slice((t.mask_to_lowres(mask) - 0.5)[None])[0].numpy() > 0
    assert (back == mask).mean() > 0.99


@pytest.mark.parametrize("h, w, aspect", [(48, 512, 8.8), (40, 300, 4.0), (300, 40, 0.25), (100, 100, 2.0)])
def test_slices_with_non_square_pixels_reach_the_model_with_square_physical_pixels(h, w, aspect):
    """A pixel ``aspect`` (height / width) times taller than wide: the input holds the slice's physical shape."""
    t = SliceTransform(h, w, 256, aspect)
    rh, rw = t.resized
    assert max(rh, rw) == 256
    assert abs(rh / rw - h * aspect / w) < 0.02 * h * aspect / w + 1 / min(rh, rw)  # the physical proportions
    pts = np.random.default_rng(0).uniform([0, 0], [w - 1, h - 1], (50, 2))
    np.testing.assert_allclose(t.to_pixel(t.to_input(pts)), pts, rtol=0, atol=1e-9)
    np.testing.assert_allclose(t.to_input(np.array([[w, h]]))[0], [rw, rh])
    mask = np.zeros((h, w), bool)
    mask[h // 4: h // 2, w // 3: 2 * w // 3] = True
    back = t.logits_to_slice((t.mask_to_lowres(mask) - 0.5)[None])[0].numpy() > 0
    assert (back == mask).mean() > 0.98


def test_a_disc_sampled_with_tall_pixels_is_a_disc_in_the_input():
    """A disc of radius 40 mm on 0.5 mm x 4 mm pixels (a coronal slice of 4 mm axial slices) is an 8x flat ellipse
    in the slice's pixels; with its aspect the encoder input shows it round, without it flat."""
    rows, cols = np.mgrid[:40, :320]
    disc = ((rows * 4.0 - 80) ** 2 + (cols * 0.5 - 80) ** 2 < 40 ** 2).astype(np.float32)
    for aspect, round_ in ((8.0, True), (1.0, False)):
        x, _ = prepare_slice(disc, 256, "minmax", aspect=aspect)
        ys, xs = np.nonzero(x[0].numpy() > 0.5)
        ratio = (ys.max() - ys.min() + 1) / (xs.max() - xs.min() + 1)
        assert (0.9 < ratio < 1.1) if round_ else ratio < 0.2


@pytest.mark.parametrize("axis, expected", [(0, (0.7, 0.5)), (1, (5.0, 0.5)), (2, (5.0, 0.7))])
def test_slice_spacing_and_aspect_follow_the_slicing_axis(axis, expected):
    from synthfm.segment.preprocess import slice_aspect, slice_spacing

    assert slice_spacing((0.5, 0.7, 5.0), axis) == expected  # (x, y, z) spacing; (rows, columns) of the slice
    assert slice_aspect((0.5, 0.7, 5.0), axis) == pytest.approx(expected[0] / expected[1])
    with pytest.raises(ValueError, match="positive"):
        slice_aspect((0.5, 0.0, 5.0), axis)


def test_ct_window_and_percentiles():
    ct = np.full((32, 32), -1000.0)
    ct[8:24, 8:24] = 300
    assert intensity_range(ct, "auto") == (-160.0, 240.0)  # soft-tissue window W400/L40
    mr = np.random.default_rng(0).uniform(0, 500, (32, 32))
    lo, hi = intensity_range(mr, "auto")
    assert 0 < lo < 10 and 490 < hi < 500
    x, _ = prepare_slice(ct, 64)
    assert x.shape == (3, 64, 64) and float(x.max()) == 1.0
    with pytest.raises(ValueError, match="unknown window"):
        intensity_range(ct, "ct-kidney")


def test_prompt_validation_messages():
    with pytest.raises(ValueError, match="no prompts"):
        Prompts.make().validate(10, 10)
    with pytest.raises(ValueError, match=r"positive point \(12, 3\) lies outside the 10x8 slice"):
        Prompts.make(positive=[(12, 3)]).validate(8, 10)
    with pytest.raises(ValueError, match="only negative"):
        Prompts.make(negative=[(1, 1)]).validate(8, 10)
    with pytest.raises(ValueError, match="box"):
        Prompts.make(box=(5, 5, 2, 8)).validate(10, 10)


@functools.lru_cache(maxsize=1)
def _tiny():
    return load_model("tiny-test")


def test_embeddings_are_computed_once_per_slice():
    pred = SlicePredictor(_tiny())
    image = np.random.default_rng(0).normal(size=(40, 50)).astype(np.float32)
    for x in range(5):
        out = pred.predict(image, Prompts.make(positive=[(10 + x, 20)]))
        assert out.mask.shape == (40, 50) and len(out.all_scores) == 3  # one point: ambiguous -> 3 masks
        assert out.candidates.shape == (3, 40, 50) and out.candidate_logits.shape == (3, 256, 256)
        assert (out.mask == out.candidates[int(np.argmax(out.all_scores))]).all()
    pred.predict(image, Prompts.make(positive=[(10, 20)], box=(2, 2, 30, 30)))
    assert pred.encoder_calls == 1
    pred.predict(image + 1, Prompts.make(positive=[(10, 20)]))
    assert pred.encoder_calls == 2


def test_a_slice_with_tall_pixels_is_encoded_with_its_aspect_and_answers_on_its_own_grid():
    pred = SlicePredictor(_tiny())
    pred.mirror = True
    image = np.random.default_rng(0).normal(size=(24, 96)).astype(np.float32)
    prompts = Prompts.make(positive=[(40, 12)])
    square = pred.predict(image, prompts, key="s")
    tall = pred.predict(image, prompts, key="s", aspect=4.0)  # same key, other geometry: encoded again
    assert pred.encoder_calls == 4  # the slice and its mirror image, once per aspect
    assert tall.mask.shape == square.mask.shape == (24, 96) and tall.aspect == 4.0 and square.aspect == 1.0
    assert pred.embed(image, "s")[1].aspect == 4.0  # later calls without an aspect keep the slice's
    assert pred.embed(image, ("s", "mirror"))[1].aspect == 4.0
    again = pred.predict(image, prompts, key="s")
    assert pred.encoder_calls == 4 and np.array_equal(again.mask, tall.mask)
    emb_square = prepare_slice(image, 256)[0]
    emb_tall = prepare_slice(image, 256, aspect=4.0)[0]
    assert not torch.equal(emb_square, emb_tall)  # the input itself differs: 24 x 96 shown as 96 x 96
    keep = np.zeros_like(tall.mask)
    keep[:, :48] = True
    cut = pred.restrict(tall, keep)  # the cut's low-res logits follow the prediction's geometry
    assert (tall.mask & ~keep)[:, 52:].sum() > 100 and cut.aspect == 4.0
    carried = SliceTransform(24, 96, 256, 4.0).logits_to_slice(torch.as_tensor(cut.logits)[None])[0].numpy() > 0
    assert not (carried & ~keep)[:, 52:].any()  # what a mask prompt made from it carries: the cut too
    with pytest.raises(ValueError, match="positive"):
        pred.predict(image, prompts, key="t", aspect=0.0)


def test_the_remembered_pixel_aspects_stay_bounded_in_a_long_session():
    pred = SlicePredictor(_tiny(), cache_size=2)
    image = np.random.default_rng(1).normal(size=(16, 32)).astype(np.float32)
    for i in range(30):
        pred.embed(image, ("volume", 1, i), aspect=3.0)
    assert len(pred._aspects) <= 4 * 2 + 1 and pred._aspects[("volume", 1, 29)] == 3.0


def test_volumes_with_thick_slices_tell_the_predictor_the_pixel_aspect():
    class Recording(TruthPredictor):
        def predict(self, image, prompts, key=None, multimask="auto", value_range=None, aspect=None):
            self.aspects.append(aspect)
            return super().predict(image, prompts, key, multimask, value_range)

    zz, yy, xx = np.mgrid[:12, :30, :40]
    truth = ((xx - 20) / 12.0) ** 2 + ((yy - 15) / 9.0) ** 2 + ((zz - 6) / 4.0) ** 2 < 1
    for axis, spacing, expected in ((1, (0.5, 0.5, 4.0), 8.0), (2, (0.5, 0.8, 4.0), 5.0), (0, (0.5, 0.8, 4.0), 1.6)):
        fake = Recording(truth, axis)
        fake.aspects = []
        seg = VolumeSegmenter(fake, truth * 100.0, axis=axis, spacing=spacing)
        start = truth.shape[axis] // 2
        ys, xs = np.nonzero(np.take(truth, start, axis=axis))
        seg.propagate(start, Prompts.make(box=(xs.min(), ys.min(), xs.max(), ys.max())))
        assert fake.aspects and all(a == pytest.approx(expected) for a in fake.aspects)
    square = VolumeSegmenter(TruthPredictor(truth, 0), truth * 100.0, axis=0, spacing=(0.7, 0.7, 4.0))
    assert square.aspect == 1.0  # square pixels: predictors are called exactly as before (no aspect keyword)
    square.propagate(6, Prompts.make(box=(8, 6, 32, 24)))


def test_models_with_the_same_encoder_share_embeddings():
    first, second = SlicePredictor(load_model("tiny-test")), SlicePredictor(load_model("tiny-test"))
    second.model.image_encoder.load_state_dict(first.model.image_encoder.state_dict())
    assert second.share_embeddings(first)
    image = np.random.default_rng(1).normal(size=(40, 50)).astype(np.float32)
    first.predict(image, Prompts.make(positive=[(10, 20)]), key="s")
    second.predict(image, Prompts.make(positive=[(12, 20)]), key="s")
    assert (first.encoder_calls, second.encoder_calls) == (1, 0)
    other_window = SlicePredictor(second.model, window=(0.0, 1.0))
    assert not other_window.share_embeddings(first)  # another window means other encoder inputs
    other_weights = SlicePredictor(load_model("tiny-test"))
    other_weights.model.image_encoder.load_state_dict(first.model.image_encoder.state_dict())
    with torch.no_grad():
        next(other_weights.model.image_encoder.parameters()).add_(1.0)
    assert not other_weights.share_embeddings(first)


class TruthPredictor(SlicePredictor):
    """Returns the true mask of the slice (model-free), to test propagation logic alone."""

    def __init__(self, truth, axis):
        super().__init__(_tiny())
        self.truth, self.axis_ = truth, axis
        self.prompts_seen = []

    def predict(self, image, prompts, key=None, multimask="auto", value_range=None):
        prompts.validate(*image.shape)
        self.prompts_seen.append(prompts)
        mask = np.take(self.truth, key[2], axis=self.axis_)
        return Prediction(mask, 0.95, np.zeros((256, 256), np.float32), np.array([0.95]))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_propagation_fills_the_structure_and_stops_at_its_end(axis):
    zz, yy, xx = np.mgrid[:20, :30, :40]
    truth = ((xx - 20) / 12.0) ** 2 + ((yy - 15) / 9.0) ** 2 + ((zz - 10) / 6.0) ** 2 < 1
    volume = truth * 100.0
    seg = VolumeSegmenter(TruthPredictor(truth, axis), volume, axis=axis)
    start = truth.shape[axis] // 2
    ys, xs = np.nonzero(np.take(truth, start, axis=axis))
    result = seg.propagate(start, Prompts.make(box=(xs.min(), ys.min(), xs.max(), ys.max())))
    present = np.nonzero(truth.any(axis=tuple(a for a in range(3) if a != axis)))[0]
    assert result.slices == list(present)
    assert np.array_equal(result.mask, truth)
    stops = [r for r in result.records if r.stop]
    assert [r.stop for r in stops] == ["empty", "empty"] or len(stops) < 2  # ends inside the volume stop as empty
    assert all(p.box is not None for p in seg.predictor.prompts_seen[1:])  # neighbours prompted from the mask


def test_propagation_stops_on_low_score_and_area_jump():
    truth = np.zeros((10, 20, 20), bool)
    truth[:, 5:10, 5:10] = True
    truth[7:, :, :] = True  # the structure 'leaks' into everything from slice 7
    seg = VolumeSegmenter(TruthPredictor(truth, 0), truth * 1.0)
    result = seg.propagate(4, Prompts.make(positive=[(7, 7)]), direction="up")
    assert result.slices == [4, 5, 6] and result.records[-1].stop == "area jump"
    with pytest.raises(ValueError, match="direction"):
        seg.propagate(4, Prompts.make(positive=[(7, 7)]), direction="sideways")


def test_volume_errors():
    with pytest.raises(ValueError, match="3D volume"):
        VolumeSegmenter(SlicePredictor(_tiny()), np.zeros((5, 5)))
    seg = VolumeSegmenter(SlicePredictor(_tiny()), np.zeros((3, 5, 5)))
    with pytest.raises(ValueError, match="outside the volume"):
        seg.slice(3)


def test_litemedsam_propagates_a_bright_ellipsoid_with_boxes():
    zz, yy, xx = np.mgrid[:12, :64, :64]
    truth = ((xx - 32) / 16.0) ** 2 + ((yy - 30) / 12.0) ** 2 + ((zz - 6) / 4.5) ** 2 < 1
    rng = np.random.default_rng(0)
    volume = (100 + 80 * truth + rng.normal(0, 8, truth.shape)).astype(np.float32)
    seg = VolumeSegmenter(SlicePredictor(load_model("medsam-lite")), volume)
    ys, xs = np.nonzero(truth[6])
    result = seg.propagate(6, Prompts.make(box=(xs.min(), ys.min(), xs.max(), ys.max())),
                           options=PropagationOptions.for_model(seg.predictor.model))
    dice = 2 * (result.mask & truth).sum() / (result.mask.sum() + truth.sum())
    assert dice > 0.75, dice
    present = set(np.nonzero(truth.any((1, 2)))[0])
    assert set(result.slices) <= present | {min(present) - 1, max(present) + 1}  # stops near the structure's end
    # every slice it looked at is encoded once; beyond the two ends at most the one slice encoded ahead of each
    touched = {r.index for r in result.records}
    encoded = {k[2] for k in seg.predictor._cache if isinstance(k, tuple) and len(k) == 3}
    assert touched <= encoded <= touched | {min(touched) - 1, max(touched) + 1}
    assert seg.predictor.encoder_calls == len(encoded)


def test_pre_encoding_is_cancellable_and_resumes_from_cache():
    from synthfm.utils.progress import CancelToken, Cancelled

    volume = np.random.default_rng(0).normal(size=(6, 32, 32)).astype(np.float32)
    seg = VolumeSegmenter(SlicePredictor(_tiny()), volume)
    cancel = CancelToken()
    seen = []

    def progress(done, total, message):
        seen.append(done)
        if done == 2:
            cancel.cancel()

    with pytest.raises(Cancelled):
        seg.encode_all(progress, cancel)
    assert seg.predictor.encoder_calls == 2
    seg.encode_all()
    assert seg.predictor.encoder_calls == 6  # the two cached slices were not encoded again


def test_prompt_json_in_physical_coordinates(tmp_path):
    import json

    from synthfm.io import Volume
    from synthfm.segment.prompts import load_prompt_file, to_index
    from synthfm.segment.volume_prompts import slice_prompts

    vol = Volume(np.zeros((10, 20, 30)), (0.5, 0.5, 2.0), (100.0, 50.0, -30.0))
    ras = [vol.index_to_ras([12, 7, 3]).tolist()]
    (tmp_path / "p.json").write_text(json.dumps({"coords": "ras", "points": ras}))
    data = load_prompt_file(tmp_path / "p.json")
    index, prompts = slice_prompts(to_index(vol, data["points"], data["coords"]), axis=0)
    assert index == 3 and np.allclose(prompts.points, [[12, 7]])
    index, prompts = slice_prompts([[12, 7, 3]], axis=2)  # sagittal: slice i, x = j, y = k
    assert index == 12 and np.allclose(prompts.points, [[7, 3]])
    (tmp_path / "bad.json").write_text(json.dumps({"pointz": []}))
    with pytest.raises(ValueError, match="unknown keys"):
        load_prompt_file(tmp_path / "bad.json")


def test_propagation_defaults_come_from_the_model_registry(monkeypatch):
    import dataclasses

    from synthfm.models import registry

    model = _tiny()
    assert PropagationOptions.for_model(model) == PropagationOptions()
    spec = dataclasses.replace(registry.MODEL_REGISTRY["tiny-test"], propagation=(("min_score", 0.2),
                                                                                   ("min_score_ratio", 0.9)))
    monkeypatch.setitem(registry.MODEL_REGISTRY, "tiny-test", spec)
    options = PropagationOptions.for_model(model, use_box=False)
    assert (options.min_score, options.min_score_ratio, options.use_box) == (0.2, 0.9, False)


def test_relative_score_floor_stops_where_the_score_falls():
    class Fading(TruthPredictor):  # predicted IoU drops by 0.1 per slice away from slice 5
        def predict(self, image, prompts, key=None, multimask="auto", value_range=None):
            out = super().predict(image, prompts, key, multimask, value_range)
            return Prediction(out.mask, 0.95 - 0.1 * abs(key[2] - 5), out.logits, out.all_scores)

    truth = np.zeros((11, 20, 20), bool)
    truth[:, 5:12, 5:12] = True
    seg = VolumeSegmenter(Fading(truth, 0), truth * 1.0)
    prompt = Prompts.make(positive=[(8, 8)])
    whole = seg.propagate(5, prompt, options=PropagationOptions(min_score=0.0))
    assert whole.slices == list(range(11)) and whole.describe() == "11 slices (0..10), up to the volume's ends"
    result = seg.propagate(5, prompt, options=PropagationOptions(min_score=0.0, min_score_ratio=0.8))
    assert result.slices == [4, 5, 6] and {r.stop for r in result.records if r.stop} == {"low score"}  # 0.75 < 0.76
    assert result.describe() == "3 slices (4..6), stopped before slice 3 (low score) and before slice 7 (low score)"


def test_point_only_prompts_between_slices():
    mask = np.zeros((40, 50), bool)
    mask[10:20, 15:35] = True
    pred = Prediction(mask, 0.9, np.zeros((256, 256), np.float32), np.array([0.9]))
    no_box = prompts_from_mask(pred, PropagationOptions(use_box=False))
    assert no_box.box is None and no_box.labels.tolist() == [1] and mask[int(no_box.points[0][1]), int(no_box.points[0][0])]
    assert prompts_from_mask(pred, PropagationOptions(use_box=False, use_points=False)).box is not None  # never empty


class Sticky(TruthPredictor):
    """Always returns the structure's cross-section on slice 5, even where the structure has ended."""

    def predict(self, image, prompts, key=None, multimask="auto", value_range=None):
        return Prediction(self.truth[5], 0.95, np.zeros((256, 256), np.float32), np.array([0.95]))


def test_intensity_jump_stops_a_leak_past_the_structure():
    truth = np.zeros((11, 20, 20), bool)
    truth[3:8, 5:12, 5:12] = True
    volume = np.where(truth, 180.0, 100.0)
    seg = VolumeSegmenter(Sticky(truth, 0), volume)
    prompt = Prompts.make(positive=[(8, 8)])
    assert seg.propagate(5, prompt, options=PropagationOptions()).slices == list(range(11))  # leaks everywhere
    result = seg.propagate(5, prompt, options=PropagationOptions(max_intensity_shift=0.2))
    assert result.slices == [3, 4, 5, 6, 7] and {r.stop for r in result.records if r.stop} == {"intensity jump"}



@pytest.mark.parametrize("glitched, patience, kept", [
    ((), 0, range(2, 11)), ((7,), 0, range(2, 7)), ((7,), 1, range(2, 11)),
    ((7, 8), 1, range(2, 7)), ((7, 8), 2, range(2, 11))])
def test_stop_patience_waits_for_an_intensity_stop_to_hold(glitched, patience, kept):
    truth = np.zeros((13, 20, 20), bool)
    truth[2:11, 5:12, 5:12] = True
    volume = np.where(truth, 180.0, 100.0)
    volume[list(glitched), 5:12, 5:12] = 120.0  # a slice or two where the structure looks like its surroundings
    seg = VolumeSegmenter(Sticky(truth, 0), volume)  # masks leak past the structure's ends (slices 1 and 11)
    result = seg.propagate(5, Prompts.make(positive=[(8, 8)]),
                           options=PropagationOptions(max_intensity_shift=0.5, stop_patience=patience))
    assert result.slices == list(kept)
    stops = sorted((r.index, r.stop) for r in result.records if r.stop)
    assert stops == [(1, "intensity jump"), (kept[-1] + 1, "intensity jump")]  # where the stop first fired
    assert len({r.index for r in result.records}) == len(result.records)  # each slice recorded once
    assert result.mask.any(axis=(1, 2)).nonzero()[0].tolist() == list(kept)


def test_stop_patience_leaves_the_other_stops_at_once_and_rejects_bad_values():
    truth = np.zeros((10, 20, 20), bool)
    truth[:, 5:10, 5:10] = True
    truth[7:, :, :] = True  # an area jump at slice 7
    seg = VolumeSegmenter(TruthPredictor(truth, 0), truth * 1.0)
    options = PropagationOptions(stop_patience=3)
    result = seg.propagate(4, Prompts.make(positive=[(7, 7)]), direction="up", options=options)
    assert result.slices == [4, 5, 6] and result.records[-1].stop == "area jump"
    assert PropagationOptions.parse_overrides(["stop_patience=2"]) == {"stop_patience": 2}
    with pytest.raises(ValueError, match="stop_patience"):
        seg.propagate(4, Prompts.make(positive=[(7, 7)]), options=PropagationOptions(stop_patience=-1))


def test_intensity_drift_stops_a_slow_slide_that_no_single_step_reveals():
    truth = np.zeros((11, 20, 20), bool)
    truth[3:8, 5:12, 5:12] = True
    # the structure (180 against a 100 background) fades into a neighbour 20 units darker per slice past its ends
    fade = np.array([180.0 - 20 * max(0, 3 - z, z - 7) for z in range(11)])
    volume = np.where(truth[5][None], fade[:, None, None], 100.0)  # the cross-section's footprint on every slice
    seg = VolumeSegmenter(Sticky(truth, 0), volume)
    prompt = Prompts.make(positive=[(8, 8)])
    steps = PropagationOptions(max_intensity_shift=0.3)  # each step moves 0.25 x the contrast: never a jump
    assert seg.propagate(5, prompt, options=steps).slices == list(range(11))
    result = seg.propagate(5, prompt, options=PropagationOptions(max_intensity_shift=0.3, max_intensity_drift=0.6))
    # 0.25, 0.5 past each end are kept; the third slice out has drifted 0.75 x the contrast
    assert result.slices == list(range(1, 10)) and {r.stop for r in result.records if r.stop} == {"intensity drift"}


def test_intensity_in_spread_units_follows_a_textured_structure_and_still_stops_at_a_neighbour():
    rng = np.random.default_rng(0)
    truth = np.zeros((13, 40, 40), bool)
    truth[2:11, 10:30, 10:30] = True
    # a textured structure (std 20) only 5 brighter than its surroundings, whose mean wanders by 3 per slice;
    # past its ends the same footprint lies in a neighbour 60 brighter
    wander = np.array([0, 0, 6, 3, 0, -3, 0, 3, 6, 3, 0, 0, 0], float)
    volume = np.where(truth, 105.0 + wander[:, None, None] + rng.normal(0, 20, truth.shape), 100.0)
    volume[[0, 1, 11, 12], 10:30, 10:30] = 165.0
    seg = VolumeSegmenter(Sticky(truth, 0), volume)
    prompt = Prompts.make(positive=[(20, 20)])
    contrast = PropagationOptions(max_intensity_shift=0.5, max_intensity_drift=0.5)
    cut = seg.propagate(6, prompt, options=contrast).slices
    assert len(cut) < 9  # in units of the 5-unit contrast the wandering mean looks like leaving the structure
    spread = replace(contrast, intensity_scale="spread")
    result = seg.propagate(6, prompt, options=spread)
    assert result.slices == list(range(2, 11))  # in units of its texture (std 20) it is the same structure
    assert {r.stop for r in result.records if r.stop} == {"intensity jump"}  # the neighbour, 3 std brighter
    # "spread-single": spread from one prompted slice; past the outermost of several, the strict contrast unit
    single = replace(contrast, intensity_scale="spread-single")
    assert seg.propagate(6, prompt, options=single).slices == list(range(2, 11))
    several = seg.propagate_slices({4: Prompts.make(positive=[(20, 20)]), 8: prompt}, options=single).slices
    assert several == seg.propagate_slices({4: Prompts.make(positive=[(20, 20)]), 8: prompt}, options=contrast).slices
    assert len(several) < 9
    with pytest.raises(ValueError, match="intensity_scale must be one of contrast, spread"):
        seg.propagate(6, prompt, options=replace(contrast, intensity_scale="std"))


def test_intensity_jump_is_relative_to_the_contrast_and_tolerates_an_overshoot():
    class Overshoot(TruthPredictor):  # exact on the prompted slice, one pixel too wide elsewhere
        def predict(self, image, prompts, key=None, multimask="auto", value_range=None):
            mask = self.truth[key[2]]
            return Prediction(ndi.binary_dilation(mask) if key[2] != 5 and mask.any() else mask, 0.95,
                              np.zeros((256, 256), np.float32), np.array([0.95]))

    truth = np.zeros((11, 40, 40), bool)
    truth[2:9, 10:30, 10:30] = True
    soft = np.zeros(truth.shape, bool)
    soft[:, 10:30, 10:30] = True  # a neighbour on the slices where the structure is absent, 10 units darker
    volume = np.where(truth, 60.0, np.where(soft, 50.0, 30.0)) + np.random.default_rng(0).normal(0, 0.5, truth.shape)
    volume[:, 35:, 35:] = 1000.0  # bone elsewhere: the window is ~30 times wider than the structure's contrast
    options = PropagationOptions(max_intensity_shift=0.25)
    prompt = Prompts.make(positive=[(20, 20)])
    assert VolumeSegmenter(Overshoot(truth, 0), volume).propagate(5, prompt, options=options).slices == list(range(2, 9))
    result = VolumeSegmenter(Sticky(truth, 0), volume).propagate(5, prompt, options=options)
    assert result.slices == list(range(2, 9)) and {r.stop for r in result.records if r.stop} == {"intensity jump"}


class Candidates(TruthPredictor):
    """Three candidates per slice: a wrong blob (highest predicted IoU), the truth, and the whole slice."""

    def predict(self, image, prompts, key=None, multimask="auto", value_range=None):
        truth = self.truth[key[2]]
        wrong = np.zeros_like(truth)
        wrong[:4, :4] = True
        masks = np.stack([wrong, truth, np.ones_like(truth)])
        scores = np.array([0.9, 0.8, 0.7])
        logits = np.zeros((3, 256, 256), np.float32)
        if multimask is not True:  # asked for one mask: the model's own pick
            return Prediction(wrong, 0.9, logits[0], scores[:1])
        return Prediction(wrong, 0.9, logits[0], scores, masks, logits)


def test_picking_the_candidate_closest_to_the_previous_mask_follows_the_structure():
    truth = np.zeros((11, 30, 30), bool)
    truth[2:9, 10:20, 10:20] = True

    class Start(Candidates):  # the prompted slice is right; on the others the top-scored candidate is not
        def predict(self, image, prompts, key=None, multimask="auto", value_range=None):
            if key[2] == 5:
                return Prediction(truth[5], 0.9, np.zeros((256, 256), np.float32), np.array([0.9]))
            return super().predict(image, prompts, key, multimask, value_range)

    seg = VolumeSegmenter(Start(truth, 0), truth * 1.0)
    prompt = Prompts.make(positive=[(15, 15)])
    drifted = seg.propagate(5, prompt, options=PropagationOptions(min_score=0.0))
    assert (drifted.mask & truth).sum() == truth[5].sum()  # follows the wrong blob from the next slice on
    closest = seg.propagate(5, prompt, options=PropagationOptions(min_score=0.0, pick_closest=True))
    assert closest.slices == list(range(2, 9)) and (closest.mask == truth).all()
    assert {r.stop for r in closest.records if r.stop} == {"area jump"}  # past the end only "whole slice" overlaps


def test_stop_candidates_keeps_a_smaller_candidate_where_the_closest_spread_onto_a_neighbour():
    truth = np.zeros((13, 30, 30), bool)
    truth[2:11, 10:17, 10:17] = True  # a 7 x 7 structure, intensity 180 against 100
    volume = np.where(truth, 180.0, 100.0)
    volume[:, 17:19, 10:17] = 300.0  # a bright neighbour along one side, on every slice

    class Spreading(TruthPredictor):  # the prompted slice exact; elsewhere the structure + the neighbour's strip
        def predict(self, image, prompts, key=None, multimask="auto", value_range=None):  # (IoU 0.78 with the
            z = key[2]                                                        # structure), or its 5 x 5 core (0.51)
            if z == 6:
                return Prediction(truth[6], 0.9, np.zeros((256, 256), np.float32), np.array([0.9]))
            spread, core = truth[z].copy(), np.zeros_like(truth[z])
            spread[17:19, 10:17] = truth[z].any()
            core[11:16, 11:16] = truth[z][11:16, 11:16]
            masks, logits = np.stack([core, spread]), np.zeros((2, 256, 256), np.float32)
            return Prediction(spread, 0.9, logits[1], np.array([0.8, 0.9]), masks, logits, index=1)

    seg = VolumeSegmenter(Spreading(truth, 0), volume)
    options = PropagationOptions(min_score=0.0, pick_closest=True, max_intensity_shift=0.2)
    prompt = Prompts.make(positive=[(13, 13)])
    assert seg.propagate(6, prompt, options=options).slices == [6]  # the spread candidate is brighter: stop
    result = seg.propagate(6, prompt, options=replace(options, stop_candidates=True))
    assert result.slices == list(range(2, 11))  # the core passes on every slice of the structure
    assert (result.mask[7] == np.pad(np.ones((5, 5), bool), ((11, 14), (11, 14)))).all()
    assert {(r.index, r.stop) for r in result.records if r.stop} == {(1, "empty"), (11, "empty")}


def test_a_shape_jump_stops_propagation():
    class Jumping(TruthPredictor):  # past the structure's end, a same-sized square somewhere else
        def predict(self, image, prompts, key=None, multimask="auto", value_range=None):
            mask = self.truth[key[2]] if self.truth[key[2]].any() else np.roll(self.truth[5], 12, axis=1)
            return Prediction(mask, 0.95, np.zeros((256, 256), np.float32), np.array([0.95]))

    truth = np.zeros((11, 40, 40), bool)
    truth[3:8, 10:20, 10:20] = True
    seg = VolumeSegmenter(Jumping(truth, 0), truth * 1.0)
    prompt = Prompts.make(positive=[(15, 15)])
    assert seg.propagate(5, prompt, options=PropagationOptions(min_score=0.0)).slices == list(range(11))
    result = seg.propagate(5, prompt, options=PropagationOptions(min_score=0.0, min_overlap=0.3))
    assert result.slices == list(range(3, 8)) and {r.stop for r in result.records if r.stop} == {"shape jump"}


def test_propagation_overrides_from_the_command_line_are_typed_and_checked():
    parsed = PropagationOptions.parse_overrides(["min_score=0.5", "pick-closest=true", "max_slices=3", "min_area_px=10"])
    assert parsed == {"min_score": 0.5, "pick_closest": True, "max_slices": 3, "min_area_px": 10}
    assert PropagationOptions(**parsed).max_slices == 3
    with pytest.raises(ValueError, match="KEY one of .*min_score"):
        PropagationOptions.parse_overrides(["min_scor=0.5"])
    with pytest.raises(ValueError, match="'maybe' is not a valid value for use_box"):
        PropagationOptions.parse_overrides(["use_box=maybe"])
    with pytest.raises(ValueError, match="not a valid value for max_slices"):
        PropagationOptions.parse_overrides(["max_slices=2.5"])


def test_long_boxes_are_split_into_tiles_whose_masks_are_joined():
    from synthfm.segment import predictor as predictor_module

    tiles = predictor_module._box_tiles(np.array([10, 20, 109, 39]), 2.0)  # 100 x 20 -> 3 tiles <= 2:1 (33 x 20)
    assert [t[0] for t in tiles] == [0, 0, 0] and np.allclose([t[1] for t in tiles], [10, 10 + 100 / 3, 10 + 200 / 3])
    assert np.allclose(tiles[1][3], [10 + 100 / 3, 20, 10 + 200 / 3 - 1, 39])
    assert len(predictor_module._box_tiles(np.array([0, 0, 29, 19]), 2.0)) == 1  # 1.5:1 stays whole
    assert predictor_module._box_tiles(np.array([5, 0, 14, 79]), 2.0)[0][0] == 1  # tall: split along y

    class ThirdsOnly(SlicePredictor):  # a decoder of compact shapes: a square at the left end of any box
        def predict(self, image, prompts, key=None, multimask="auto", value_range=None, split_box=0.0, mirror=None):
            if split_box:
                return super().predict(image, prompts, key, multimask, value_range, split_box, mirror)
            x0, y0, x1, y1 = np.round(prompts.box).astype(int)
            mask = np.zeros(image.shape, bool)
            mask[y0:y1 + 1, x0:x0 + (y1 - y0 + 1)] = True
            return Prediction(mask, 0.9, np.zeros((256, 256), np.float32), np.array([0.9]))

    image = np.zeros((60, 120), np.float32)
    box = Prompts.make(box=(10, 20, 109, 39))
    pred = ThirdsOnly(_tiny())
    whole = pred.predict(image, box)
    split = pred.predict(image, box, split_box=1.0)  # 5 tiles of 20 x 20
    band = np.zeros(image.shape, bool)
    band[20:40, 10:110] = True
    assert whole.mask.sum() == 400 and np.array_equal(split.mask, band)  # every tile contributes its square
