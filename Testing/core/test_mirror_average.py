"""The slice and its left-right mirror image averaged (ModelSpec.mirror_average, SlicePredictor.mirror): prompts and
low-res logits mirrored exactly (also on non-square slices, whose logits cover part of the 256 columns), the result
mirror-equivariant, the mirror image encoded once, and propagated slices taking one view unless asked."""
import numpy as np
import pytest
import torch

from synthfm.models import load_model
from synthfm.models.registry import MODEL_REGISTRY
from synthfm.models.sam import LOW_RES, DecoderOutput
from synthfm.segment import Prompts, SlicePredictor, VolumeSegmenter
from synthfm.segment.predictor import _mirror_lowres, _mirror_prompts
from synthfm.segment.preprocess import SliceTransform
from synthfm.segment.propagate import PropagationOptions

TALL = np.random.default_rng(1).normal(size=(56, 40)).astype(np.float32)  # non-square: padded on the right


@pytest.fixture(scope="module")
def predictor():
    p = SlicePredictor(load_model("tiny-test"))
    p.calibrator, p.consistency = None, False
    return p


def test_prompts_and_logits_mirror_exactly_and_twice_is_the_identity():
    transform = SliceTransform(56, 40, 128)  # tiny-test's 128 input: 40 columns -> 91 input -> 182 low-res columns
    logits = np.random.default_rng(2).normal(size=(LOW_RES, LOW_RES)).astype(np.float32)
    prompts = Prompts(np.array([[3.0, 7.0], [39.0, 0.0]]), np.array([1, 0]), np.array([2.0, 5.0, 30.0, 50.0]), logits)
    m = _mirror_prompts(prompts, transform)
    np.testing.assert_array_equal(m.points, [[36.0, 7.0], [0.0, 0.0]])
    np.testing.assert_array_equal(m.box, [9.0, 5.0, 37.0, 50.0])  # still x0 <= x1
    np.testing.assert_array_equal(m.mask_logits[:, :182], logits[:, 181::-1])  # the slice's columns reversed
    np.testing.assert_array_equal(m.mask_logits[:, 182:], logits[:, 182:])  # the padding's stay
    back = _mirror_prompts(m, transform)
    np.testing.assert_array_equal(back.points, prompts.points)
    np.testing.assert_array_equal(back.box, prompts.box)
    np.testing.assert_array_equal(back.mask_logits, logits)
    np.testing.assert_array_equal(m.labels, prompts.labels)


@pytest.mark.parametrize("prompts", [Prompts.make([[12, 20]]), Prompts.make([[12, 20], [20, 30]], [[35, 5]]),
                                     Prompts.make(box=[4, 10, 25, 40])])
def test_the_average_is_mirror_equivariant(predictor, prompts):
    """Averaging the two views makes the answer on the mirrored slice with mirrored prompts the mirror of the
    answer: it fails if prompts, logits or candidates were mirrored wrongly."""
    transform = SliceTransform(*TALL.shape, predictor.model.image_size)
    a = predictor.predict(TALL, prompts, mirror=True, multimask=True)
    b = predictor.predict(np.ascontiguousarray(TALL[:, ::-1]), _mirror_prompts(prompts, transform), mirror=True,
                          multimask=True)
    for mine, theirs in ((a.logits, b.logits), (a.candidate_logits, b.candidate_logits)):
        theirs = _mirror_lowres(theirs, transform)
        # a box's low-res clip (<= -20 outside it) rounds its edges to whole low-res pixels, not symmetrically
        kept = (mine > -20) & (theirs > -20) if prompts.box is not None else np.ones(mine.shape, bool)
        assert kept.mean() > 0.1
        np.testing.assert_allclose(theirs[kept], mine[kept], atol=1e-5)
    np.testing.assert_array_equal(b.mask[:, ::-1], a.mask)
    np.testing.assert_allclose(b.all_scores, a.all_scores, atol=1e-6)
    one = predictor.predict(TALL, prompts, mirror=False, multimask=True)
    assert not np.allclose(one.logits, a.logits)  # a real second view, not the first one twice


def test_the_average_is_the_mean_of_the_two_views(predictor):
    transform = SliceTransform(*TALL.shape, predictor.model.image_size)
    prompts = Prompts.make([[12, 20]])
    seen = predictor.predict(TALL, prompts, mirror=False)
    mirrored = predictor.predict(np.ascontiguousarray(TALL[:, ::-1]), _mirror_prompts(prompts, transform), mirror=False)
    both = predictor.predict(TALL, prompts, mirror=True)
    np.testing.assert_allclose(both.logits, (seen.logits + _mirror_lowres(mirrored.logits, transform)) / 2, atol=1e-5)
    assert both.score == pytest.approx((seen.score + mirrored.score) / 2)
    assert both.mask.shape == TALL.shape


def test_a_box_keeps_the_averaged_mask_inside_it(predictor):
    box = [4, 10, 25, 40]
    pred = predictor.predict(TALL, Prompts.make(box=box), mirror=True)
    outside = np.ones(TALL.shape, bool)
    outside[10:41, 4:26] = False
    assert not pred.mask[outside].any()


def test_the_mirror_image_is_encoded_once_per_slice():
    p = SlicePredictor(load_model("tiny-test"))
    p.mirror = True
    assert p.mirrors
    for point in ([12, 20], [20, 30], [5, 5]):
        p.predict(TALL, Prompts.make([point]), key="slice")
    assert p.encoder_calls == 2  # the slice and its mirror image, then only decoder calls
    p.predict(TALL, Prompts.make([[12, 20]]), key="slice", mirror=False)
    assert p.encoder_calls == 2


def test_propagated_slices_take_one_view_unless_asked():
    volume = np.random.default_rng(3).normal(size=(5, 48, 48)).astype(np.float32)
    volume[:, 15:35, 15:35] += 4.0
    opts = dict(min_score=0.0, max_growth=1e9, min_area_px=1)
    def decode(emb, coords, labels, boxes, masks, multimask=False, **kw):  # a square in the middle, every slice
        logits = torch.full((1, 3 if multimask else 1, LOW_RES, LOW_RES), -10.0)
        logits[..., 80:180, 80:180] = 10.0
        return DecoderOutput(logits, torch.full((1, logits.shape[1]), 0.9))

    for steps in (False, True):
        p = SlicePredictor(load_model("tiny-test"))
        p.model.decode, p.mirror = decode, True
        seg = VolumeSegmenter(p, volume)
        result = seg.propagate(2, Prompts.make(box=[15, 15, 34, 34]),
                               options=PropagationOptions(**opts, mirror_steps=steps))
        n = len(result.records)
        assert n == 5  # the prompted slice and all four others
        assert p.encoder_calls == (2 * n if steps else n + 1)  # only the prompted slice's mirror image, or all


def test_synthfm_decoders_average_the_mirror_and_published_ones_do_not():
    assert MODEL_REGISTRY["synthfm-lite"].mirror_average
    assert not MODEL_REGISTRY["medsam-lite"].mirror_average  # the baseline as published
    assert load_model("synthfm-lite").mirror_average and not load_model("tiny-test").mirror_average


def test_pre_encoding_adds_the_mirror_image_of_the_slice_in_view_only():
    volume = np.random.default_rng(4).normal(size=(6, 32, 32)).astype(np.float32)
    p = SlicePredictor(load_model("tiny-test"))
    p.mirror = True
    seg = VolumeSegmenter(p, volume)
    seg.encode_all(order=[4, 3, 5, 2, 1, 0])
    assert p.encoder_calls == 6 + 1
    p.predict(seg.slice(4), Prompts.make([[10, 10]]), key=seg.key(4))  # both views of slice 4 ready: no encoding
    assert p.encoder_calls == 7
    p.predict(seg.slice(3), Prompts.make([[10, 10]]), key=seg.key(3))  # slice 3's mirror image: one encoding
    assert p.encoder_calls == 8

