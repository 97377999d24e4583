"""Point-prompt masks cut to their structure's intensity (SlicePredictor.point_gate, docs/segment.md item 10)."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from synthfm.models import load_model
from synthfm.models.registry import MODEL_REGISTRY
from synthfm.models.sam import DecoderOutput, LOW_RES
from synthfm.segment import Prompts, SlicePredictor

# a dark structure (columns 8..31) beside a bright neighbour (32..55) on a mid-grey background
IMAGE = np.full((64, 64), 0.5, np.float32)
IMAGE[8:56, 8:32], IMAGE[8:56, 32:56] = 0.1, 0.9


@pytest.fixture()
def leaking():
    """tiny-test whose decoder always answers rows and columns 8..55 of the 64 x 64 image: the structure and its
    neighbour (the low-res logits are 4 x the image: 64 -> the 128 input -> 256)."""
    model = load_model("tiny-test")
    predictor = SlicePredictor(model)
    predictor.consistency = False

    def decode(emb, coords, labels, boxes, masks, multimask=False, **kw):
        logits = torch.full((1, 3 if multimask else 1, LOW_RES, LOW_RES), -5.0)
        logits[..., 32:224, 32:224] = 5.0
        return DecoderOutput(logits, torch.full((1, logits.shape[1]), 0.5))

    model.decode = decode
    return predictor


def test_a_point_mask_is_cut_to_the_intensity_at_the_point(leaking):
    leaking.point_gate = 1.5
    pred = leaking.predict(IMAGE, Prompts.make([[20, 30]]))
    assert pred.mask[10:54, 10:30].all()  # the structure the point is on stays
    assert not pred.mask[:, 33:].any()  # its bright neighbour is cut
    assert (pred.logits[40:210, 140:220] <= -20).all() and (pred.logits[40:210, 40:110] > 0).all()  # logits carry the cut


def test_no_cut_without_the_gate_with_a_box_or_with_a_mask_prompt(leaking):
    leaking.point_gate = 0.0
    assert leaking.predict(IMAGE, Prompts.make([[20, 30]])).mask[8:56, 8:56].all()
    leaking.point_gate = 1.5
    assert leaking.predict(IMAGE, Prompts.make([[20, 30]], box=[8, 8, 55, 55])).mask[8:56, 8:56].all()
    with_mask = replace(Prompts.make([[20, 30]]), mask_logits=np.zeros((LOW_RES, LOW_RES), np.float32))
    assert leaking.predict(IMAGE, with_mask).mask[8:56, 8:56].all()  # propagation's steps carry their own cut


def test_only_the_parts_holding_a_positive_point_are_kept(leaking):
    leaking.point_gate = 1.5
    image = IMAGE.copy()
    image[30:34, 8:32] = 0.9  # a bright band cuts the dark structure in two
    pred = leaking.predict(image, Prompts.make([[20, 15]]))
    assert pred.mask[10:28, 10:30].all() and not pred.mask[36:, :].any()


def test_synthfm_lite_gates_point_masks_and_published_models_do_not():
    assert MODEL_REGISTRY["synthfm-lite"].point_gate == 1.5
    assert MODEL_REGISTRY["medsam-lite"].point_gate == 0.0 and MODEL_REGISTRY["sam-vit-b"].point_gate == 0.0


def test_evaluation_follows_each_model_or_turns_the_gate_off():
    from synthfm.cli import build_parser
    from synthfm.evaluate.runner import _ModelRunner

    assert _ModelRunner("tiny-test", "cpu").predictor.point_gate == 0.0  # None: the model's own
    assert _ModelRunner("tiny-test", "cpu", point_gate=1.5).predictor.point_gate == 1.5
    args = build_parser().parse_args(["evaluate", "--pairs", "p.csv", "--model", "m", "--prompt", "point1",
                                      "--out", "o", "--point-gate", "off"])
    assert args.point_gate == "off"


def _cut_on_the_whole_slice(image, mask, points, k):
    """The cut computed on the whole slice (what _gate_points computes within the mask's grown box)."""
    from scipy import ndimage as ndi

    from synthfm.utils.masks import cut_to_intensity, parts_touching

    smooth = ndi.gaussian_filter(np.clip(image, 0, 1).astype(np.float32), 1.0)
    seeds = np.zeros(mask.shape, bool)
    seeds[np.round(points[:, 1]).astype(int), np.round(points[:, 0]).astype(int)] = True
    near = ndi.binary_dilation(seeds, iterations=3) & mask
    ring = ndi.binary_dilation(mask, iterations=3) & ~mask
    spread = max(abs(float(smooth[mask].mean()) - float(smooth[ring].mean())), float(smooth[mask].std()))
    return parts_touching(cut_to_intensity(mask, smooth, float(smooth[near].mean()), k * spread), seeds)


@pytest.mark.parametrize("seed", range(6))
def test_the_cut_within_the_masks_box_equals_the_cut_on_the_whole_slice(leaking, seed):
    rng = np.random.default_rng(seed)
    image = np.full((256, 256), 0.5, np.float32)  # the decoder's mask: rows and columns 32..223 of this slice
    image[40:216, 40:128], image[40:216, 128:216] = 0.1, 0.9
    image = np.clip(image + rng.normal(0, 0.08, image.shape), 0, 1).astype(np.float32)
    image[rng.integers(40, 216), :] = rng.random()  # a band of another intensity across the structure
    leaking.point_gate = 0.8 + 0.25 * rng.random()  # < 0.4 / spread: the background is cut too
    points = np.array([[rng.integers(45, 125), rng.integers(45, 210)]], float)
    pred = leaking.predict(image, Prompts.make(points), value_range=(0.0, 1.0))
    decoder_mask = np.zeros(image.shape, bool)
    decoder_mask[32:224, 32:224] = True
    expected = _cut_on_the_whole_slice(image, decoder_mask, points, leaking.point_gate)
    assert 0 < expected.sum() < decoder_mask.sum()  # a cut, not all or nothing
    assert np.array_equal(pred.mask, expected & decoder_mask)
    noise = rng.random(image.shape).astype(np.float32)  # every pixel near the limit: any edge effect shows
    pred = leaking.predict(noise, Prompts.make(points), value_range=(0.0, 1.0))
    expected = _cut_on_the_whole_slice(noise, decoder_mask, points, leaking.point_gate)
    assert 0 < expected.sum() < decoder_mask.sum() and np.array_equal(pred.mask, expected & decoder_mask)


def test_the_fraction_cut_is_a_quality_signal_and_the_score_reads_it(leaking):
    from synthfm.segment.quality import LogisticQuality, QualityCalibrator

    leaking.point_gate = 1.5
    pred = leaking.predict(IMAGE, Prompts.make([[20, 30]]))
    assert pred.signals["cut"] == pytest.approx(0.5, abs=0.03)  # the neighbour's half of the 48 x 48 mask
    box = leaking.predict(IMAGE, Prompts.make([[20, 30]], box=[8, 8, 55, 55]))
    assert "cut" not in box.signals  # boxes are never cut
    # a calibration whose points model reads the cut: the more was cut, the lower the score
    leaking.calibrator = QualityCalibrator({"points": LogisticQuality(["cut"], [-1.0], 0.0, [0.0], [0.1], [0.0])})
    assert leaking.predict(IMAGE, Prompts.make([[20, 30]])).score == pytest.approx(1 / (1 + np.exp(5.0)), rel=0.3)
    leaking.point_gate = 0.0
    assert leaking.predict(IMAGE, Prompts.make([[20, 30]])).score == pytest.approx(0.5)  # nothing cut: cut = fill 0
