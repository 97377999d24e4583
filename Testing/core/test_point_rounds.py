"""Several points decoded in rounds (ModelSpec.points_in_rounds): one point per round, each later round fed the
previous round's low-res logits as the mask prompt, scored as the user's prompts; or all points at once."""
import numpy as np
import pytest
import torch

from synthfm.models import load_model
from synthfm.models.registry import MODEL_REGISTRY
from synthfm.models.sam import DecoderOutput, LOW_RES
from synthfm.segment import Prompts, SlicePredictor

IMAGE = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
POINTS = Prompts.make([[20, 20], [40, 30]], [[5, 60]], box=[2, 2, 50, 50])


@pytest.fixture()
def recorded():
    """tiny-test whose decoder records each call and answers logits of value 10 x the number of points (+ a tenth
    of the mask prompt's maximum), on rows that move with the number of points."""
    model = load_model("tiny-test")
    predictor = SlicePredictor(model)
    calls = []

    def decode(emb, coords, labels, boxes, masks, multimask=False, **kw):
        calls.append({"labels": labels[0].tolist(), "coords": coords[0].clone(), "masks": masks, "multi": multimask})
        logits = torch.full((1, 3 if multimask else 1, LOW_RES, LOW_RES), -5.0)
        n = len(labels[0])
        logits[..., 10 * n:10 * n + 40, 10:60] = 10.0 * n + (0.0 if masks is None else float(masks.max()) / 10)
        return DecoderOutput(logits, torch.full((1, logits.shape[1]), 0.5))

    model.decode = decode
    kinds = []
    predictor.consistency = False
    predictor.calibrator = lambda signals, kind: kinds.append(kind) or signals["iou_head"].copy()
    return model, predictor, calls, kinds


def test_rounds_add_one_point_each_and_feed_back_the_previous_logits(recorded):
    model, predictor, calls, kinds = recorded
    model.points_in_rounds = True
    pred = predictor.predict(IMAGE, POINTS)
    assert [c["labels"] for c in calls] == [[1], [1, 1], [1, 1, 0]]  # the points in their order, one more per round
    assert calls[0]["masks"] is None
    assert not calls[1]["multi"] and not calls[2]["multi"]  # several points: one mask, as in training's rounds
    for k, before in ((1, 10.0), (2, 21.0)):  # each round is fed what the round before returned
        assert calls[k]["masks"].shape == (1, 1, LOW_RES, LOW_RES) and calls[k]["masks"].max() == pytest.approx(before)
    assert kinds == ["box"] * 3  # scored as the user's prompts (a box), never as a propagated mask
    assert pred.mask.any() and pred.logits.max() == pytest.approx(32.1)  # the last round's answer


def test_all_points_at_once_without_rounds(recorded):
    model, predictor, calls, kinds = recorded
    model.points_in_rounds = False
    pred = predictor.predict(IMAGE, POINTS)
    assert [c["labels"] for c in calls] == [[1, 1, 0]] and calls[0]["masks"] is None
    assert pred.logits.max() == pytest.approx(30.0) and kinds == ["box"]


def test_given_mask_logits_or_one_point_are_one_call(recorded):
    model, predictor, calls, kinds = recorded
    model.points_in_rounds = True
    with_mask = Prompts(POINTS.points, POINTS.labels, None, np.zeros((LOW_RES, LOW_RES), np.float32))
    predictor.predict(IMAGE, with_mask)  # a propagated slice: the mask prompt is already there
    predictor.predict(IMAGE, Prompts.make([[20, 20]]))
    assert [c["labels"] for c in calls] == [[1, 1, 0], [1]] and kinds[0] == "mask"


def test_the_order_decides_not_what_came_before(recorded):
    model, predictor, calls, _ = recorded
    model.points_in_rounds = True
    first = predictor.predict(IMAGE, POINTS)
    predictor.predict(IMAGE, Prompts.make([[30, 30]]))  # something else in between
    again = predictor.predict(IMAGE, POINTS)
    np.testing.assert_array_equal(first.mask, again.mask)


def test_synthfm_decoders_take_points_in_rounds_and_published_ones_at_once():
    assert MODEL_REGISTRY["synthfm-lite"].points_in_rounds is True and MODEL_REGISTRY["synthfm-vit-b"].points_in_rounds
    assert not MODEL_REGISTRY["medsam-lite"].points_in_rounds and not MODEL_REGISTRY["sam-vit-b"].points_in_rounds
    assert MODEL_REGISTRY["synthfm-lite"].box_first and not MODEL_REGISTRY["medsam-lite"].box_first
    assert load_model("tiny-test").box_first is False  # the loader copies the spec's setting


@pytest.fixture()
def left_half():
    """tiny-test whose decoder records each call and always answers the left half of the 64 x 64 image (low-res
    columns 0..127 of 256: the image is scaled x2 to the 128 input, the low-res logits x0.5 from it)."""
    model = load_model("tiny-test")
    predictor = SlicePredictor(model)
    predictor.consistency = False
    calls = []

    def decode(emb, coords, labels, boxes, masks, multimask=False, **kw):
        calls.append({"labels": [] if labels is None else labels[0].tolist(), "masks": masks})  # a box alone: none
        logits = torch.full((1, 3 if multimask else 1, LOW_RES, LOW_RES), -5.0)
        logits[..., :, :128] = 5.0
        return DecoderOutput(logits, torch.full((1, logits.shape[1]), 0.5))

    model.decode = decode
    model.points_in_rounds = "corrections"
    return predictor, calls


def test_corrections_points_the_mask_honours_go_at_once_without_a_mask_prompt(left_half):
    predictor, calls = left_half
    pred = predictor.predict(IMAGE, Prompts.make([[10, 20], [20, 30]], [[50, 10]]))  # all inside / outside as given
    assert pred.mask[:, :32].all() and not pred.mask[:, 32:].any()
    assert [c["labels"] for c in calls] == [[1], [1, 1, 0]]  # the first point, then all at once ...
    assert calls[1]["masks"] is None  # ... as training's first rounds (several points, far negatives)


def test_corrections_a_point_the_mask_gets_wrong_opens_a_round_with_the_points_before_it(left_half):
    predictor, calls = left_half
    predictor.predict(IMAGE, Prompts.make([[10, 20], [20, 30], [50, 30]]))  # the third lies outside the mask
    assert [c["labels"] for c in calls] == [[1], [1, 1, 1]]  # one round for the honoured and the wrong point
    assert calls[1]["masks"] is not None and calls[1]["masks"].max() == pytest.approx(5.0)
    calls.clear()
    predictor.predict(IMAGE, Prompts.make([[10, 20], [50, 30], [20, 30]]))  # wrong, then honoured after the round
    assert [c["labels"] for c in calls] == [[1], [1, 1], [1, 1, 1]]
    assert all(c["masks"] is not None for c in calls[1:])  # the last honoured point joins with the logits
    calls.clear()
    predictor.predict(IMAGE, Prompts.make([[10, 20]], [[20, 30]]))  # a negative inside the mask is a correction
    assert [c["labels"] for c in calls] == [[1], [1, 0]] and calls[1]["masks"] is not None


def test_honours_reads_the_mask_at_the_point():
    from synthfm.segment.predictor import honours

    mask = np.zeros((10, 20), bool)
    mask[2:5, 3:8] = True
    assert honours(mask, np.array([4.0, 3.0]), 1) and not honours(mask, np.array([4.0, 3.0]), 0)
    assert honours(mask, np.array([12.0, 3.0]), 0) and not honours(mask, np.array([12.0, 3.0]), 1)
    assert honours(mask, np.array([-3.0, 40.0]), 0)  # off the slice: outside


def test_box_first_a_click_after_a_box_is_a_round_fed_the_box_masks_logits(left_half):
    predictor, calls = left_half
    predictor.model.points_in_rounds, predictor.model.box_first = True, True
    box = [2, 2, 60, 60]
    predictor.predict(IMAGE, Prompts.make([[50, 30]], box=box))  # a click on what the box's mask missed
    assert [c["labels"] for c in calls] == [[], [1]]  # the box alone, then the click as a correction round
    assert calls[0]["masks"] is None and calls[1]["masks"] is not None and calls[1]["masks"].max() == pytest.approx(5.0)
    calls.clear()
    predictor.predict(IMAGE, Prompts.make([[50, 30]], [[10, 20]], box=box))  # then a negative inside the mask
    assert [c["labels"] for c in calls] == [[], [1], [1, 0]] and all(c["masks"] is not None for c in calls[1:])
    predictor.model.mask_choice = {"box": "box-fit", "point": "calibrated"}  # synthfm-lite's
    assert predictor.offers_choice(Prompts.make([[50, 30]], box=box))  # the box's candidates, as for a box alone


def test_box_first_a_box_with_a_point_its_mask_holds_is_decoded_as_before(left_half):
    predictor, calls = left_half
    predictor.model.points_in_rounds, predictor.model.box_first = True, True
    prompts = Prompts.make([[10, 20]], box=[2, 2, 60, 60])  # the point lies in the box's mask
    first = predictor.predict(IMAGE, prompts)
    assert [c["labels"] for c in calls] == [[], [1]] and calls[1]["masks"] is None  # box and point at once
    calls.clear()
    predictor.model.box_first = False
    assert np.array_equal(predictor.predict(IMAGE, prompts).mask, first.mask)
    assert [c["labels"] for c in calls] == [[1]]  # without box_first: one call, the same answer
    calls.clear()
    predictor.predict(IMAGE, Prompts.make([[50, 30]], box=[2, 2, 60, 60]))
    assert [c["labels"] for c in calls] == [[1]] and calls[0]["masks"] is None  # a click decoded with the box at once
