"""Quality signals of predicted masks, the calibrated quality score, and their place in predictions and evaluation."""
import functools
import json
import logging

import numpy as np
import pytest
import torch

from synthfm.evaluate.calibrate import fit_calibrator, fit_logistic, rescore, spearman
from synthfm.segment.quality import (SIGNALS, LogisticQuality, QualityCalibrator, calibration_path, file_sha256,
                                     image_signals, load_calibration, quality_signals, stability_score)


def test_stability_score_counts_the_masks_at_plus_and_minus_the_offset():
    logits = torch.tensor([[[3.0, 2.0, 0.5, -0.5],
                            [1.5, 0.9, -0.9, -3.0]]])  # > 1: 3 pixels; > -1: 7 pixels
    assert stability_score(logits).tolist() == pytest.approx([3 / 7])
    assert stability_score(torch.full((2, 4, 4), -5.0)).tolist() == [0.0, 0.0]  # empty: 0, not nan
    sharp = torch.where(torch.arange(16).reshape(1, 4, 4) < 8, 10.0, -10.0)
    assert stability_score(sharp).tolist() == [1.0]
    # segment-anything's own function gives the same value
    sam = pytest.importorskip("segment_anything.utils.amg")
    x = torch.randn(3, 32, 32) * 3
    np.testing.assert_allclose(stability_score(x).numpy(), sam.calculate_stability_score(x, 0.0, 1.0).numpy())


def test_signals_on_hand_made_logits():
    logits = torch.full((2, 10, 10), -8.0)
    logits[0, 2:6, 2:6] = 8.0  # candidate 0: a 4x4 square inside the box
    logits[1, 0:10, 0:5] = 0.5  # candidate 1: half the slice, weakly, mostly outside the box
    box = np.array([2, 2, 5, 5])  # inclusive pixels 2..5: 16 pixels
    points, labels = np.array([[3, 3], [8, 8]]), np.array([1, 0])
    s = quality_signals(logits, torch.tensor([0.9, 0.4]), box, points, labels)
    assert set(s) == set(SIGNALS) - {"contrast", "edge", "consistency", "mirror_agreement", "split_agreement", "cut"}
    assert all(v.shape == (2,) for v in s.values())
    np.testing.assert_allclose(s["iou_head"], [0.9, 0.4], rtol=1e-6)
    np.testing.assert_allclose(s["stability"], [1.0, 0.0])  # candidate 1 has no pixel above logit 1
    np.testing.assert_allclose(s["confidence"], [torch.sigmoid(torch.tensor(8.0)).item(),
                                                 torch.sigmoid(torch.tensor(0.5)).item()], rtol=1e-6)
    np.testing.assert_allclose(s["box_fill"], [1.0, 50 / 16])
    np.testing.assert_allclose(s["outside_box"], [0.0, 1 - 12 / 50])  # rows 2..5, columns 2..4 of candidate 1
    np.testing.assert_allclose(s["points_agree"], [1.0, 1.0])  # (3,3) inside both, (8,8) outside both
    np.testing.assert_allclose(s["area"], [0.16, 0.5])
    none = quality_signals(logits, torch.tensor([0.9, 0.4]))
    assert np.isnan(none["box_fill"]).all() and np.isnan(none["points_agree"]).all()


def test_image_signals_prefer_the_mask_on_the_structure():
    image = np.full((40, 40), 0.2, np.float32)
    image[10:20, 10:20] = 0.8
    image += np.random.default_rng(0).normal(0, 0.02, image.shape).astype(np.float32)
    right, shifted, empty = (np.zeros((40, 40), bool) for _ in range(3))
    right[10:20, 10:20] = True
    shifted[14:24, 14:24] = True
    s = image_signals(image, np.stack([right, shifted, empty]))
    assert s["contrast"][0] > 10 and s["contrast"][0] > 3 * s["contrast"][1]
    assert s["edge"][0] > s["edge"][1] > 0
    assert s["contrast"][2] == 0 and s["edge"][2] == 0  # an empty mask: no contrast, no edge
    assert "split_agreement" not in s  # only with a box


def test_split_agreement_matches_the_mask_against_the_brighter_or_darker_side_of_the_box():
    image = np.full((40, 40), 0.2, np.float32)
    image[10:20, 10:20] = 0.8  # a bright square
    image[25:35, 25:35] = 0.0  # a dark one
    image += np.random.default_rng(0).normal(0, 0.02, image.shape).astype(np.float32)
    right, shifted, empty, dark = (np.zeros((40, 40), bool) for _ in range(4))
    right[10:20, 10:20] = True
    shifted[13:23, 13:23] = True
    dark[25:35, 25:35] = True
    masks = np.stack([right, shifted, empty])
    s = image_signals(image, masks, box=np.array([6.0, 6.0, 23.0, 23.0]))["split_agreement"]
    assert s[0] > 0.9 and s[1] < 0.6 and s[2] == 0  # an empty mask agrees with neither side
    # a dark structure is matched by the darker side; the box's 18 x 18 = 324 pixels hold 100 of it
    d = image_signals(image, np.stack([dark]), box=np.array([21.0, 21.0, 38.0, 38.0]))["split_agreement"]
    assert d[0] > 0.9
    flat = image_signals(np.full((40, 40), 0.5, np.float32), masks, box=np.array([6.0, 6.0, 23.0, 23.0]))
    np.testing.assert_array_equal(flat["split_agreement"], 0.0)  # nothing to split


def _rows(n=300, seed=0):
    """Rows where the true IoU rises with stability and falls with the part outside the box."""
    rng = np.random.default_rng(seed)
    stab, out, head = rng.uniform(0, 1, n), rng.uniform(0, 0.5, n), rng.uniform(0.5, 0.7, n)
    true = np.clip(0.8 * stab - 0.8 * out + 0.2 + rng.normal(0, 0.05, n), 0, 1)
    return [{"protocol": "box", "kind": "box", "iou": t, "iou_head": h, "stability": s, "confidence": 0.9,
             "box_fill": 0.7, "outside_box": o, "points_agree": np.nan, "area": 0.1, "contrast": 1.0, "edge": 1.0}
            for t, h, s, o in zip(true, head, stab, out)]


def test_calibration_is_monotone_bounded_and_ranks_what_it_was_fitted_on():
    calibrator = fit_calibrator(_rows())
    assert set(calibrator.models) == {"box"}  # too few rows of the other kinds: they keep the raw head
    test = rescore(_rows(seed=1), calibrator)
    assert spearman(test, "calibrated") > 0.9 > abs(spearman(test, "iou_head"))
    assert all(0.0 <= r["calibrated"] <= 1.0 for r in test)
    model = calibrator.models["box"]
    grid = np.linspace(-5, 5, 41)  # far outside the fitted range too
    base = {k: np.full(41, 0.5) for k in SIGNALS}
    for name, sign in (("stability", 1), ("iou_head", 1), ("confidence", 1), ("outside_box", -1), ("contrast", 1),
                       ("edge", 1)):
        scores = model({**base, name: grid})
        assert np.all(sign * np.diff(scores) >= -1e-12), name
        assert np.all((scores >= 0) & (scores <= 1))
    # the fitted signs respect the declared directions even when the data pull the other way
    flipped = [{**r, "iou_head": 1.2 - r["iou"]} for r in _rows()]
    assert fit_logistic(flipped, ["iou_head", "stability"]).coef[0] == 0.0
    # a kind without a model falls back to the raw head, clipped to [0, 1]
    assert calibrator({**base, "iou_head": np.array([1.3])}, "points").tolist() == [1.0]
    with pytest.raises(ValueError, match="prompt kind"):
        calibrator(base, "scribble")


def test_calibration_file_round_trip_and_checks(tmp_path, caplog):
    decoder = tmp_path / "mine.pt"
    decoder.write_bytes(b"weights")
    calibrator = fit_calibrator(_rows(), decoder_sha256=file_sha256(decoder), info={"fitted_on": "test"})
    path = calibration_path(decoder)
    assert path.name == "mine.quality.json"
    path.write_text(calibrator.to_json())
    loaded = load_calibration(decoder)
    signals = {k: np.array([0.3, 0.8]) for k in SIGNALS}
    np.testing.assert_allclose(loaded(signals, "box"), calibrator(signals, "box"))
    assert loaded.info["fitted_on"] == "test"
    calibrator.pickers = {"points": calibrator.models["box"]}  # a picker travels with the file; files without load
    path.write_text(calibrator.to_json())
    loaded = load_calibration(decoder)
    np.testing.assert_allclose(loaded.pick(signals, "points"), calibrator(signals, "box"))
    np.testing.assert_allclose(loaded.pick(signals, "box"), loaded(signals, "box"))  # no picker: the score itself
    assert "pickers" not in json.loads(fit_calibrator(_rows()).to_json())
    decoder.write_bytes(b"retrained")  # another decoder in the same place: the calibration no longer applies
    with caplog.at_level(logging.WARNING, logger="synthfm.segment.quality"):
        assert load_calibration(decoder) is None
    assert "fitted for another decoder file" in caplog.text  # said, not silently dropped
    path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a valid quality calibration.*fit_quality"):
        load_calibration(decoder)


@functools.lru_cache(maxsize=1)
def _tiny():
    from synthfm.models import load_model

    return load_model("tiny-test")


def test_predictions_carry_signals_and_use_the_calibrated_score():
    from synthfm.segment import Prompts, SlicePredictor

    predictor = SlicePredictor(_tiny())
    assert predictor.calibrator is None
    image = np.random.default_rng(0).uniform(0, 1, (96, 80)).astype(np.float32)
    prompts = Prompts.make([(40, 50)], box=(20, 30, 60, 70))
    raw = predictor.predict(image, prompts, multimask=True)
    assert set(raw.signals) == set(SIGNALS) - {"consistency", "mirror_agreement", "cut"}  # one view, a box
    assert raw.score == pytest.approx(raw.iou_head)
    assert raw.iou_head == pytest.approx(float(np.max(raw.all_signals["iou_head"])))  # the head picks the mask
    predictor.calibrator = QualityCalibrator({"box": LogisticQuality(["stability"], [2.0], -1.0, [0.0], [1.0], [0.0])})
    cal = predictor.predict(image, prompts, multimask=True)
    assert np.array_equal(cal.mask, raw.mask)  # the same mask, only the score changes
    expected = 1 / (1 + np.exp(-(2.0 * cal.signals["stability"] - 1.0)))
    assert cal.score == pytest.approx(expected) and 0 <= cal.score <= 1
    assert cal.iou_head == pytest.approx(raw.iou_head)
    other = cal.closest_to(cal.candidates[2])  # the candidate keeps its own score and signals
    assert other.index == 2 and other.score == pytest.approx(cal.all_scores[2])
    assert other.signals["stability"] == pytest.approx(cal.all_signals["stability"][2])
    points_only = predictor.predict(image, Prompts.make([(40, 50)]))  # no "points" model: the raw head, clipped
    assert points_only.score == pytest.approx(float(np.clip(points_only.iou_head, 0, 1)))
    # consistency (one more decoder call) is computed when the calibration reads it, or when asked for
    assert not predictor.wants_consistency
    predictor.calibrator = QualityCalibrator({"box": LogisticQuality(["consistency"], [1.0], 0.0, [0.5], [1.0], [0.5])})
    with_consistency = predictor.predict(image, prompts, multimask=True)
    assert np.array_equal(with_consistency.mask, raw.mask)
    assert with_consistency.all_signals["consistency"].shape == (3,)
    assert np.all((with_consistency.all_signals["consistency"] >= 0) & (with_consistency.all_signals["consistency"] <= 1))
    predictor.consistency = False
    assert "consistency" not in predictor.predict(image, prompts).signals


def test_evaluate_rows_and_summary_carry_the_signals(tmp_path):
    from synthfm.evaluate.report import write_report
    from synthfm.evaluate.runner import Results, iou_calibration

    rng = np.random.default_rng(0)
    true = rng.uniform(0, 1, 30)
    rows = [{"case": "c", "label": 1, "slice": i, "model": "m", "protocol": "box", "dice": t, "iou": t, "nsd": t,
             "hd95": 1.0, "pred_iou": t ** 2, "score_calibrated": True, **{s: rng.uniform() for s in SIGNALS},
             "stability": t} for i, t in enumerate(true)]
    summary = iou_calibration(rows)
    assert summary["iou_spearman"] == pytest.approx(1.0) and summary["score_calibrated"] is True
    assert set(summary["signal_spearman"]) == set(SIGNALS)
    assert summary["signal_spearman"]["stability"] == pytest.approx(1.0)
    assert abs(summary["signal_spearman"]["iou_head"]) < 0.7
    out = write_report(Results(rows=rows), tmp_path / "r")
    assert out["by_model_protocol"]["m | box"]["signal_spearman"]["stability"] == pytest.approx(1.0)
    header = (tmp_path / "r" / "slices.csv").read_text().splitlines()[0].split(",")
    assert {"pred_iou", "score_calibrated", *SIGNALS} <= set(header)
    assert "stability rho" in (tmp_path / "r" / "report.html").read_text()
