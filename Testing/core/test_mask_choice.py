"""Which mask a prediction returns (ModelSpec.mask_choice): the box-fit choice for box prompts, the single-mask
output for one point, and the explicit multimask settings that keep SAM's behaviour."""
import numpy as np
import pytest
import torch

from synthfm.models import load_model
from synthfm.models.registry import MODEL_REGISTRY
from synthfm.models.sam import DecoderOutput, LOW_RES
from synthfm.segment import Prompts, SlicePredictor
from synthfm.utils.masks import box_fit, box_region, iou

IMAGE = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
BOX = np.array([8.0, 12.0, 39.0, 27.0])  # 32 x 16 pixels


@pytest.fixture()
def scripted():
    """tiny-test whose decoder answers, for the box it is given: single output = a small square in the box; three
    candidates = that square (the IoU head's favourite), the whole box, the box's left half."""
    model = load_model("tiny-test")
    predictor = SlicePredictor(model)
    factor = LOW_RES / predictor.embed(IMAGE)[1].size

    def decode(emb, coords, labels, boxes, masks, multimask=False, **kw):
        x0, y0, x1, y1 = (boxes[0] * factor).tolist() if boxes is not None else (40, 40, 120, 100)
        region = lambda *b: torch.where(torch.as_tensor(box_region((LOW_RES, LOW_RES), b)), 5.0, -5.0)  # noqa: E731
        small = region(x0, y0, x0 + 6, y0 + 6)
        if multimask:
            return DecoderOutput(torch.stack([small, region(x0, y0, x1, y1), region(x0, y0, (x0 + x1) / 2, y1)])[None],
                                 torch.tensor([[0.9, 0.1, 0.5]]))
        return DecoderOutput(small[None, None], torch.tensor([[0.7]]))

    model.decode = decode
    return model, predictor


def test_box_fit_is_the_iou_of_bounding_boxes():
    masks = np.zeros((3, 10, 10), bool)
    masks[0, 2:6, 1:5] = True  # exactly the box
    masks[1, 2:4, 1:3] = True  # a quarter of it, in a corner
    masks[1, 5, 4] = True  # ... and one far pixel: the bounding box is the box again
    np.testing.assert_allclose(box_fit(masks, [1, 2, 4, 5]), [1.0, 1.0, 0.0])
    masks[0, :, :] = False
    masks[0, 0:4, 0:4] = True  # 16 pixels, overlapping the 16-pixel box on 3 x 4
    np.testing.assert_allclose(box_fit(masks[:1], [1, 2, 4, 5]), [6 / 26])


def test_box_fit_choice_returns_the_candidate_that_fills_the_box(scripted):
    model, predictor = scripted
    model.mask_choice = {"box": "box-fit", "point": "multi"}
    pred = predictor.predict(IMAGE, Prompts.make(box=BOX))
    assert pred.index == 1 and iou(pred.mask, box_region(IMAGE.shape, BOX)) > 0.9  # up to the resampled edge
    assert pred.candidates.shape == (3, 64, 64) and pred.score == pred.all_scores[1]
    with_point = predictor.predict(IMAGE, Prompts.make([[20, 20]], box=BOX))
    assert with_point.index == 1  # a box with points is still a box
    # asked explicitly: SAM's rules (the IoU head picks among three; False: the single-mask output)
    assert predictor.predict(IMAGE, Prompts.make(box=BOX), multimask=True).index == 0
    single = predictor.predict(IMAGE, Prompts.make(box=BOX), multimask=False)
    assert single.candidates is None and single.mask.sum() < pred.mask.sum() / 4
    model.mask_choice = {"box": "single", "point": "multi"}
    assert predictor.predict(IMAGE, Prompts.make(box=BOX)).candidates is None


def test_one_point_gives_the_single_mask_output_or_three_candidates(scripted):
    model, predictor = scripted
    point = Prompts.make([[20, 20]])
    model.mask_choice = {"box": "box-fit", "point": "single"}
    single = predictor.predict(IMAGE, point)
    assert single.candidates is None and len(single.all_scores) == 1
    model.mask_choice = {"box": "box-fit", "point": "multi"}
    multi = predictor.predict(IMAGE, point)
    assert multi.candidates.shape[0] == 3 and multi.index == 0  # the IoU head's favourite
    assert predictor.predict(IMAGE, Prompts.make([[20, 20], [30, 20]])).candidates is None  # not ambiguous


def test_one_point_calibrated_choice_takes_the_best_quality_score(scripted):
    model, predictor = scripted
    model.mask_choice = {"box": "box-fit", "point": "calibrated"}
    point = Prompts.make([[20, 20]])
    assert predictor.predict(IMAGE, point).index == 0  # no calibration: the IoU head's pick
    predictor.consistency = False
    predictor.calibrator = lambda signals, kind: np.array([0.2, 0.3, 0.8])  # rates the box's left half best
    pred = predictor.predict(IMAGE, point)
    assert pred.index == 2 and pred.score == pytest.approx(0.8) and pred.candidates.shape[0] == 3
    assert predictor.predict(IMAGE, Prompts.make(box=BOX)).index == 1  # a box keeps its own rule (box fit)
    assert predictor.predict(IMAGE, point, multimask=True).index == 0  # asked explicitly: SAM's rule


def test_box_tiles_join_each_tiles_own_choice(scripted):
    model, predictor = scripted
    model.mask_choice = {"box": "box-fit", "point": "single"}
    long_box = np.array([2.0, 30.0, 61.0, 37.0])  # 60 x 8: cut into 4 tiles at most 2x as long as wide
    pred = predictor.predict(IMAGE, Prompts.make(box=long_box), split_box=2.0)
    assert pred.candidates is None and iou(pred.mask, box_region(IMAGE.shape, long_box)) > 0.75  # each tile filled (thin: resampled edges)
    every = predictor.predict(IMAGE, Prompts.make(box=long_box), split_box=2.0, multimask=True)
    assert every.candidates.shape == (3, 64, 64) and every.index == 0 and every.mask.sum() < pred.mask.sum() / 2


def test_registry_choices_are_known_values():
    for spec in MODEL_REGISTRY.values():
        choice = dict(spec.mask_choice)
        assert choice["box"] in ("single", "box-fit") and choice["point"] in ("single", "multi", "calibrated"), spec.name
    assert dict(MODEL_REGISTRY["medsam-lite"].mask_choice)["box"] == "single"  # the baseline stays as published


def test_a_calibration_picker_chooses_and_its_score_model_scores(scripted):
    from synthfm.segment.quality import LogisticQuality, QualityCalibrator

    model, predictor = scripted
    model.mask_choice = {"box": "box-fit", "point": "calibrated"}
    predictor.consistency = False
    area = LogisticQuality(["area"], [1.0], 0.0, [0.0], [1.0], [0.0])  # larger masks score higher
    head = LogisticQuality(["iou_head"], [1.0], 0.0, [0.0], [1.0], [0.0])  # the IoU head's order
    point = Prompts.make([[20, 20]])
    predictor.calibrator = QualityCalibrator({"points": head})
    assert predictor.predict(IMAGE, point).index == 0  # no picker: the score model picks (the small square)
    predictor.calibrator = QualityCalibrator({"points": head}, pickers={"points": area})
    pred = predictor.predict(IMAGE, point)
    assert pred.index == 1  # the picker prefers the largest candidate ...
    assert pred.score == pytest.approx(1 / (1 + np.exp(-0.1)))  # ... and the score model scores it (IoU head 0.1)


@pytest.mark.parametrize("mirror", [False, True])
def test_a_chosen_candidate_replaces_the_pick_in_every_view(scripted, mirror):
    """``candidate=k`` returns the k-th of the candidates the model would pick among (one point; a box with box-fit),
    in both views when the mirror image is averaged; its score is that candidate's."""
    model, predictor = scripted
    predictor.mirror = mirror
    model.mask_choice = {"box": "box-fit", "point": "multi"}
    point = Prompts.make([[20, 20]])
    picked = predictor.predict(IMAGE, point)
    assert picked.index == 0  # the IoU head's favourite
    for k in (1, 2):
        chosen = predictor.predict(IMAGE, point, candidate=k)
        assert chosen.index == k and chosen.score == chosen.all_scores[k] and chosen.choice == k
        assert np.array_equal(chosen.mask, picked.candidates[k])  # the same candidate, whichever view
    assert picked.choice == 0
    boxed = predictor.predict(IMAGE, Prompts.make(box=BOX), candidate=0)
    assert boxed.index == 0 and boxed.mask.sum() < predictor.predict(IMAGE, Prompts.make(box=BOX)).mask.sum() / 4


def test_a_chosen_candidate_opens_the_first_round_of_several_points(scripted):
    model, predictor = scripted
    model.mask_choice, model.points_in_rounds = {"box": "box-fit", "point": "multi"}, True
    seen = []
    decode = model.decode
    model.decode = lambda emb, coords, labels, boxes, masks, multimask=False, **kw: seen.append(masks) or decode(
        emb, coords, labels, boxes, masks, multimask)
    points = Prompts.make([[20, 20], [30, 20]])
    auto = predictor.predict(IMAGE, points)
    auto_prompt = seen[-1]
    chosen = predictor.predict(IMAGE, points, candidate=1)
    assert auto.candidates is None and (auto.choice, chosen.choice) == (0, 1)  # one mask, from the first round's
    assert not torch.equal(seen[-1], auto_prompt)  # the second round was fed candidate 1's logits, not the pick's
    assert float(seen[-1].max()) > 0 and int((seen[-1] > 0).sum()) > int((auto_prompt > 0).sum())  # the whole box


def test_a_candidate_where_there_is_none_is_a_clear_error(scripted):
    model, predictor = scripted
    model.mask_choice = {"box": "single", "point": "single"}
    with pytest.raises(ValueError, match="single mask, there are no candidates"):
        predictor.predict(IMAGE, Prompts.make([[20, 20]]), candidate=1)
    assert predictor.predict(IMAGE, Prompts.make([[20, 20]])).choice is None  # nothing to choose: said so
    model.mask_choice = {"box": "box-fit", "point": "multi"}
    assert predictor.predict(IMAGE, Prompts.make([[20, 20]]), multimask=True).choice is None  # SAM's rule asked for
    model.mask_choice = {"box": "box-fit", "point": "multi"}
    with pytest.raises(ValueError, match="no candidates to choose from"):
        predictor.predict(IMAGE, Prompts.make([[20, 20], [30, 20]]), candidate=1)  # several points at once
    for bad, multimask in ((3, "auto"), (-1, "auto"), (1, True)):
        with pytest.raises(ValueError, match="candidate must be 0, 1 or 2"):
            predictor.predict(IMAGE, Prompts.make([[20, 20]]), multimask=multimask, candidate=bad)
