"""Propagated slices decoded on a window around their box (PropagationOptions.decode_crop / decode_context,
SlicePredictor.cropped_decodes)."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from synthfm.models import fast_decoder
from synthfm.models.sam import token_window
from synthfm.segment import PropagationOptions, Prompts, SlicePredictor, VolumeSegmenter

from test_segment import _tiny


def _volume(depth=9, size=40):
    zz, yy, xx = np.mgrid[:depth, :size, :size]
    ball = (xx - 20) ** 2 + (yy - 18) ** 2 + (4 * (zz - 4)) ** 2 < 110
    return ball * 1.0 + np.random.default_rng(0).normal(0, 0.05, ball.shape)


def _windows(monkeypatch, model):
    """The (window, context_pool) of every decode ``model`` runs from now on (restored after the test)."""
    seen, original = [], model.decode

    def decode(*args, **kwargs):
        seen.append((kwargs.get("window"), kwargs.get("context_pool", 0)))
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "decode", decode)
    return seen


def test_the_token_window_holds_the_region_grown_by_the_margin_clipped_and_aligned():
    # a box from x 100..300, y 400..420 of a 1024 frame: 16 px per token -> columns 6..18, rows 25..26
    assert token_window((400, 420), (100, 300), 16, 0) == (slice(25, 27), slice(6, 19))
    assert token_window((400, 420), (100, 300), 16, 2) == (slice(23, 29), slice(4, 21))
    assert token_window((400, 420), (100, 300), 16, 2, align=4) == (slice(20, 32), slice(4, 24))
    assert token_window((0, 1023), (5, 1023), 16, 3, align=8) == (slice(0, 64), slice(0, 64))  # the grid's edges


def test_inside_the_block_a_box_and_mask_decode_equals_the_whole_decode_in_its_window_and_is_minus_20_outside():
    model = _tiny()
    predictor = SlicePredictor(model)
    emb, transform = predictor.embed(_volume()[4].astype(np.float32), "s")
    size = model.image_size
    boxes = torch.tensor([[0.3 * size, 0.25 * size, 0.6 * size, 0.5 * size]])
    masks = torch.randn(1, 1, 256, 256)
    with torch.no_grad():
        whole = predictor._decode(emb, None, None, boxes, masks, True)
        with predictor.cropped_decodes(2, 1):  # every outside token as its own context cell: the whole decode
            cropped = predictor._decode(emb, None, None, boxes, masks, True)
        with predictor.cropped_decodes(2, 0):  # the crop alone: close, not equal
            alone = predictor._decode(emb, None, None, boxes, masks, True)
    assert predictor.decode_crop == (0, 0)
    rows, cols = token_window((0.25 * size, 0.5 * size), (0.3 * size, 0.6 * size), size / 64, 2)
    inside = torch.zeros(256, 256, dtype=torch.bool)
    inside[4 * rows.start: 4 * rows.stop, 4 * cols.start: 4 * cols.stop] = True
    assert torch.allclose(cropped.logits[:, :, inside], whole.logits[:, :, inside], atol=1e-4)
    assert torch.allclose(cropped.iou, whole.iou, atol=1e-5)
    assert (cropped.logits[:, :, ~inside] == -20).all() and (alone.logits[:, :, ~inside] == -20).all()
    assert not torch.allclose(alone.logits[:, :, inside], whole.logits[:, :, inside], atol=1e-4)


def test_only_decodes_with_a_box_and_a_mask_are_cropped(monkeypatch):
    model = _tiny()
    predictor = SlicePredictor(model)
    image = _volume()[4].astype(np.float32)
    seen = _windows(monkeypatch, model)
    with predictor.cropped_decodes(4, 4):
        first = predictor.predict(image, Prompts.make(box=(10, 8, 30, 28)), key="s")  # a prompted slice: no mask
        predictor.predict(image, replace(Prompts.make(positive=[(20, 18)]), mask_logits=first.logits), key="s")
        predictor.predict(image, replace(Prompts.make(box=(10, 8, 30, 28)), mask_logits=first.logits), key="s")
    assert [w is not None for w, _ in seen] == [False, False, True] and seen[-1][1] == 4


def test_propagation_crops_the_propagated_slices_only_and_the_result_stays_near_the_whole_decode(monkeypatch):
    volume = _volume()
    model = _tiny()
    seg = VolumeSegmenter(SlicePredictor(model), volume)
    prompts = {4: Prompts.make(box=(9, 7, 31, 29))}
    whole = seg.propagate_slices(prompts, options=PropagationOptions(min_score=0.0, max_slices=3))
    seen = _windows(monkeypatch, model)
    cropped = seg.propagate_slices(prompts, options=PropagationOptions(min_score=0.0, max_slices=3, decode_crop=64,
                                                                       decode_context=4))
    assert seg.predictor.decode_crop == (0, 0)  # restored after each slice
    assert seen[0] == (None, 0) and len(seen) > 1  # the prompted slice decodes the whole embedding
    assert all(w == (slice(0, 64), slice(0, 64)) and pool == 4 for w, pool in seen[1:])  # a margin past the grid
    assert np.array_equal(cropped.mask, whole.mask)  # a window that is the whole grid decodes as without one


def test_without_the_fast_decoder_a_crop_with_context_decodes_the_whole_embedding(monkeypatch):
    model = _tiny()
    predictor = SlicePredictor(model)
    image = _volume()[4].astype(np.float32)
    first = predictor.predict(image, Prompts.make(box=(10, 8, 30, 28)), key="s")
    seen = _windows(monkeypatch, model)
    previous = fast_decoder.set_enabled(False)
    try:
        with predictor.cropped_decodes(4, 4):
            predictor.predict(image, replace(Prompts.make(box=(10, 8, 30, 28)), mask_logits=first.logits), key="s")
        with predictor.cropped_decodes(4, 0):  # the crop alone needs no fast decoder
            predictor.predict(image, replace(Prompts.make(box=(10, 8, 30, 28)), mask_logits=first.logits), key="s")
    finally:
        fast_decoder.set_enabled(previous)
    assert seen[0] == (None, 0) and seen[1][0] is not None and seen[1][1] == 0


@pytest.mark.parametrize("value", [-1, 2.5])
def test_decode_crop_must_be_a_whole_number_of_tokens(value):
    seg = VolumeSegmenter(SlicePredictor(_tiny()), _volume())
    with pytest.raises(ValueError, match="decode_crop must be 0"):
        seg.propagate_slices({4: Prompts.make(box=(10, 10, 30, 30))}, options=PropagationOptions(decode_crop=value))


def test_a_crop_asked_for_in_one_thread_leaves_another_threads_decodes_whole(monkeypatch):
    """The worker serves a user's prompts while a propagation runs on the same predictor: only the thread inside
    ``cropped_decodes`` (the propagation's) decodes on windows."""
    import threading

    model = _tiny()
    predictor = SlicePredictor(model)
    image = _volume()[4].astype(np.float32)
    first = predictor.predict(image, Prompts.make(box=(10, 8, 30, 28)), key="s")
    prompts = replace(Prompts.make(box=(10, 8, 30, 28)), mask_logits=first.logits)
    seen = _windows(monkeypatch, model)
    other = threading.Thread(target=lambda: predictor.predict(image, prompts, key="s"))
    with predictor.cropped_decodes(4, 4):
        other.start()
        other.join()
        assert predictor.decode_crop == (4, 4)
        predictor.predict(image, prompts, key="s")
    assert seen[0] == (None, 0) and seen[1][0] is not None and predictor.decode_crop == (0, 0)
