"""Masks kept inside the box prompt (SlicePredictor.clip_to_box) and the embedding-cache items the box-clip
benchmark and the quality fit read (synthfm.evaluate.calibrate.cache_items)."""
import numpy as np
import pytest
import torch

from synthfm.cli import main
from synthfm.evaluate.calibrate import cache_items
from synthfm.models import load_model
from synthfm.models.sam import DecoderOutput, LOW_RES
from synthfm.segment import Prompts, SlicePredictor
from synthfm.utils.masks import box_region


@pytest.fixture(scope="module")
def leaky():
    """tiny-test whose decoder says "structure" everywhere: every pixel outside a box is a leak."""
    model = load_model("tiny-test")

    def decode(emb, coords, labels, boxes, masks, multimask=False, **kw):
        m = 3 if multimask else 1
        return DecoderOutput(logits=torch.full((1, m, LOW_RES, LOW_RES), 5.0), iou=torch.full((1, m), 0.5))

    model.decode = decode
    return model


def test_box_prompted_masks_and_logits_stay_inside_the_box(leaky):
    image = np.random.default_rng(0).normal(size=(48, 80)).astype(np.float32)  # not square: padded input
    prompts = Prompts.make(box=[10, 5, 39, 20])
    inside = box_region(image.shape, prompts.box)
    assert inside.sum() == 30 * 16
    pred = SlicePredictor(leaky)
    clipped = pred.predict(image, prompts)
    assert np.array_equal(clipped.mask, inside)
    # the low-res logits agree: negative outside the box's footprint, untouched inside it
    transform = pred.embed(image)[1]
    low_box = box_region(clipped.logits.shape, transform.box_to_input(prompts.box) * (LOW_RES / transform.size))
    assert (clipped.logits[~low_box] <= -20).all() and (clipped.logits[low_box] == 5.0).all()
    raw = SlicePredictor(leaky, clip_to_box=False).predict(image, prompts)
    assert raw.mask.all() and (raw.logits == 5.0).all()
    points_only = pred.predict(image, Prompts.make(positive=[[20, 10]]))
    assert points_only.mask.all()  # no box, nothing to keep inside


def test_box_region_covers_fractional_and_clipped_boxes():
    region = box_region((6, 8), [1.5, 2.2, 3.0, 9.7])  # x 1..3, y 2..(9.7 -> past the last row)
    assert region.sum() == 3 * 4 and region[2:, 1:4].all()


def test_cache_items_give_the_cached_embeddings_and_fresh_images(tmp_path):
    assert main(["train", "--model", "tiny-test", "--samples", "4", "--val-samples", "2", "--steps", "1",
                 "--batch-size", "2", "--val-every", "100", "--ckpt-every", "100", "--generator", '{"size": 64}',
                 "--device", "cpu", "--threads", "1", "--no-bf16", "--out", str(tmp_path / "run")]) == 0
    predictor = SlicePredictor(load_model("tiny-test"))
    folder = tmp_path / "run" / "cache" / "train"
    items = list(cache_items(predictor, folder, 2, start=1))
    assert [i for i, *_ in items] == [1, 2]
    for i, image, truth, key in items:
        assert image.shape == truth.shape == (64, 64) and truth.any() and predictor.is_cached(key)
        assert 0.0 <= image.min() and image.max() <= 1.0
    assert len(list(cache_items(predictor, folder, 10, start=3))) == 1  # only the filled items that exist
