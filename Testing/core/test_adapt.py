"""The decoder adapted to one volume before propagation (synthfm.segment.adapt, PropagationOptions.adapt_steps)."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from synthfm.segment import PropagationOptions, Prompts, SlicePredictor, VolumeSegmenter
from synthfm.segment.adapt import AdaptExample, adapt_decoder, crop_window, decoder_swapped
from synthfm.train.losses import dice_loss
from synthfm.utils.masks import tight_box
from synthfm.utils.progress import CancelToken, Cancelled

from test_segment import _tiny


def _ball(depth=9, size=40):
    zz, yy, xx = np.mgrid[:depth, :size, :size]
    return (xx - 20) ** 2 + (yy - 18) ** 2 + (4 * (zz - 4)) ** 2 < 110


def _example(model, image, mask):
    pred = SlicePredictor(model)
    prediction = pred.predict(image, Prompts.make(box=tight_box(mask)), key="s")
    return replace(AdaptExample.of(pred, image, "s", prediction), mask=mask)  # the mask the test chose as target


def _weights(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_the_adapted_copy_fits_the_prompted_mask_and_the_model_is_left_as_it_was():
    torch.manual_seed(0)
    model = _tiny()
    volume = _ball() * 1.0 + np.random.default_rng(0).normal(0, 0.05, (9, 40, 40))
    mask = _ball()[4]
    example = _example(model, volume[4].astype(np.float32), mask)
    own, before = model.mask_decoder, _weights(model.mask_decoder)
    adapted = adapt_decoder(model, [example], steps=25, lr=1e-3)
    assert model.mask_decoder is own and adapted is not own
    assert all(torch.equal(before[k], v) for k, v in model.mask_decoder.state_dict().items())

    def loss(decoder):
        box = torch.as_tensor(example.transform.box_to_input(tight_box(mask)), dtype=torch.float32)[None]
        with torch.no_grad(), decoder_swapped(model, decoder):
            out = model.decode(example.embedding, boxes=box, multimask=True)
        target = example.transform.mask_to_lowres(mask).gt(0.5).float()
        return float(dice_loss(out.logits[0], target).min())

    assert loss(adapted) < loss(None) - 0.1  # it learned this slice's structure; the model's own decoder did not


def test_the_crop_window_holds_every_prompted_mask_grown_by_the_margin_inside_the_grid():
    a, b = torch.zeros(256, 256), torch.zeros(256, 256)
    a[40:60, 100:121] = 1  # tokens rows 10..14, columns 25..30
    b[50:90, 8:20] = 1  # tokens rows 12..22, columns 2..4
    assert crop_window([a], 3) == (slice(7, 18), slice(22, 34))
    assert crop_window([a, b], 3) == (slice(7, 26), slice(0, 34))  # both masks; clipped at the grid's left edge
    assert crop_window([b], 100) == (slice(0, 64), slice(0, 64))
    assert crop_window([a], 3, align=4) == (slice(4, 20), slice(20, 36))  # out to multiples of 4 tokens


@pytest.mark.parametrize("with_mask", [False, True])
def test_a_window_over_the_whole_grid_decodes_as_without_one_and_a_smaller_one_gives_its_pixels(with_mask):
    model = _tiny()
    emb = torch.randn(2, 256, 64, 64, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[60.0, 70, 120, 140], [50, 50, 90, 100]])
    masks = torch.randn(2, 1, 256, 256, generator=torch.Generator().manual_seed(1)) if with_mask else None
    with torch.no_grad():
        full = model.decode(emb, boxes=boxes, mask_inputs=masks, multimask=True)
        whole = model.decode(emb, boxes=boxes, mask_inputs=masks, multimask=True, window=(slice(0, 64), slice(0, 64)))
        part = model.decode(emb, boxes=boxes, mask_inputs=masks, multimask=True, window=(slice(10, 40), slice(5, 30)))
    assert torch.equal(full.logits, whole.logits) and torch.equal(full.iou, whole.iou)
    assert part.logits.shape == (2, 3, 120, 100)
    assert not torch.allclose(part.logits, full.logits[..., 40:160, 20:120])  # attention sees fewer tokens


def test_a_window_with_every_outside_token_as_context_decodes_as_the_whole_embedding():
    model = _tiny()
    coarse = torch.randn(2, 256, 8, 8, generator=torch.Generator().manual_seed(0))  # smooth, as real embeddings
    emb = torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bilinear", align_corners=False)
    boxes = torch.tensor([[60.0, 70, 120, 140], [50, 50, 90, 100]])
    masks = torch.randn(2, 1, 256, 256, generator=torch.Generator().manual_seed(1))
    window = (slice(8, 40), slice(12, 36))
    with torch.no_grad():
        full = model.decode(emb, boxes=boxes, mask_inputs=masks, multimask=True)
        alone = model.decode(emb, boxes=boxes, mask_inputs=masks, multimask=True, window=window)
        single = model.decode(emb, boxes=boxes, mask_inputs=masks, multimask=True, window=window, context_pool=1)
        pooled = model.decode(emb, boxes=boxes, mask_inputs=masks, multimask=True, window=window, context_pool=4)
    inside = full.logits[..., 32:160, 48:144]
    assert torch.allclose(single.logits, inside, atol=1e-4) and torch.allclose(single.iou, full.iou, atol=1e-5)
    assert pooled.logits.shape == alone.logits.shape == inside.shape
    assert (pooled.logits - inside).abs().mean() < (alone.logits - inside).abs().mean()  # context brings it closer
    with pytest.raises(ValueError, match="needs the fast decoder"):
        model.decode(emb, boxes=boxes, multimask=True, window=window, context_pool=4, fast=False)
    with pytest.raises(ValueError, match="multiples of 8 tokens"):
        model.decode(emb, boxes=boxes, multimask=True, window=window, context_pool=8)


def test_the_copy_adapted_on_a_crop_fits_the_prompted_mask_and_a_whole_grid_crop_changes_nothing(monkeypatch):
    torch.manual_seed(0)
    model = _tiny()
    volume = _ball() * 1.0 + np.random.default_rng(0).normal(0, 0.05, (9, 40, 40))
    mask = _ball()[4]
    example = _example(model, volume[4].astype(np.float32), mask)
    windows = []
    original = model.decode

    def decode(*args, **kwargs):
        windows.append(kwargs.get("window"))
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "decode", decode)  # the tiny model is shared by the tests: restored after each
    cropped = adapt_decoder(model, [example], steps=25, lr=1e-3, crop=2)
    grown = crop_window([example.transform.mask_to_lowres(mask).gt(0.5).float()], 2)
    assert windows == [grown] * 25 and grown[0].stop - grown[0].start < 64  # every step decodes the window alone
    assert all(torch.equal(x, y) for x, y in zip(adapt_decoder(model, [example], steps=3, crop=64).parameters(),
                                                 adapt_decoder(model, [example], steps=3).parameters()))

    def loss(decoder):
        box = torch.as_tensor(example.transform.box_to_input(tight_box(mask)), dtype=torch.float32)[None]
        with torch.no_grad(), decoder_swapped(model, decoder):
            out = original(example.embedding, boxes=box, multimask=True)  # the whole embedding, as propagation
        target = example.transform.mask_to_lowres(mask).gt(0.5).float()
        return float(dice_loss(out.logits[0], target).min())

    assert loss(cropped) < loss(None) - 0.1  # what it learned on the crop holds on the whole slice


def test_propagation_decodes_propagated_slices_with_the_adapted_copy_and_restores_the_model(monkeypatch):
    model = _tiny()
    volume = _ball() * 1.0
    seen = []
    original = model.decode

    def decode(*args, **kwargs):
        seen.append((torch.is_grad_enabled(), model.mask_decoder))
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "decode", decode)  # the tiny model is shared by the tests: restored after each
    seg = VolumeSegmenter(SlicePredictor(model), volume)
    prompts = {4: Prompts.make(box=tight_box(_ball()[4]))}
    plain = seg.propagate_slices(prompts, options=PropagationOptions(min_score=0.0))
    own = model.mask_decoder
    seen.clear()
    messages = []
    adapted = seg.propagate_slices(prompts, options=PropagationOptions(min_score=0.0, adapt_steps=3),
                                   progress=lambda done, total, message: messages.append((done, total, message)))
    assert [m for m in messages if "adapting" in m[2]] == [(k, 3, "adapting the decoder to this volume")
                                                           for k in (1, 2, 3)]
    assert model.mask_decoder is own
    training = [d for grad, d in seen if grad]
    decoding = [d for grad, d in seen if not grad]
    assert len(training) == 3 and all(d is training[0] and d is not own for d in training)  # 3 steps on a copy
    assert decoding[0] is own  # the prompted slice: the model's own decoder (the same mask as without adapting)
    assert len(decoding) > 1 and all(d is training[0] for d in decoding[1:])  # every propagated slice: the copy
    assert np.array_equal(plain.mask[4], adapted.mask[4])


def test_a_cancelled_adaptation_leaves_the_model_whole(monkeypatch):
    model = _tiny()
    seg = VolumeSegmenter(SlicePredictor(model), _ball() * 1.0)
    own, before = model.mask_decoder, _weights(model.mask_decoder)
    cancel = CancelToken()
    original = model.decode

    def decode(*args, **kwargs):
        if torch.is_grad_enabled():  # the first fine-tuning step
            cancel.cancel()
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "decode", decode)  # the tiny model is shared by the tests: restored after each
    with pytest.raises(Cancelled):
        seg.propagate_slices({4: Prompts.make(box=tight_box(_ball()[4]))}, cancel=cancel,
                             options=PropagationOptions(adapt_steps=5))
    assert model.mask_decoder is own
    assert all(torch.equal(before[k], v) for k, v in model.mask_decoder.state_dict().items())


def test_each_adaptation_step_decodes_adapt_batch_prompted_samples(monkeypatch):
    model = _tiny()
    batches = []
    original = model.decode

    def decode(embeddings, *args, **kwargs):
        if torch.is_grad_enabled():
            batches.append(embeddings.shape[0])
        return original(embeddings, *args, **kwargs)

    monkeypatch.setattr(model, "decode", decode)  # the tiny model is shared by the tests: restored after each
    seg = VolumeSegmenter(SlicePredictor(model), _ball() * 1.0)
    seg.propagate_slices({4: Prompts.make(box=tight_box(_ball()[4]))},
                         options=PropagationOptions(min_score=0.0, adapt_steps=2, adapt_batch=3))
    assert batches == [3, 3]


@pytest.mark.parametrize("batch", [0, 1.5])
def test_adapt_batch_must_be_a_whole_number_of_samples(batch):
    seg = VolumeSegmenter(SlicePredictor(_tiny()), _ball() * 1.0)
    with pytest.raises(ValueError, match="adapt_batch must be a whole number"):
        seg.propagate_slices({4: Prompts.make(box=(10, 10, 30, 30))},
                             options=PropagationOptions(adapt_steps=2, adapt_batch=batch))


@pytest.mark.parametrize("value", [-1, 2.5])
def test_adapt_crop_must_be_a_whole_number_of_tokens(value):
    seg = VolumeSegmenter(SlicePredictor(_tiny()), _ball() * 1.0)
    with pytest.raises(ValueError, match="adapt_crop must be 0"):
        seg.propagate_slices({4: Prompts.make(box=(10, 10, 30, 30))},
                             options=PropagationOptions(adapt_steps=2, adapt_crop=value))


@pytest.mark.parametrize("name", ["adapt_context", "decode_context"])
@pytest.mark.parametrize("value", [-1, 2.5, 3, 64])
def test_a_context_cell_must_tile_the_token_grid(name, value):
    seg = VolumeSegmenter(SlicePredictor(_tiny()), _ball() * 1.0)
    with pytest.raises(ValueError, match=f"{name} must be one of 0, 1, 2, 4, 8, 16, 32 .*got {value}"):
        seg.propagate_slices({4: Prompts.make(box=(10, 10, 30, 30))},
                             options=PropagationOptions(adapt_steps=2, adapt_crop=4, decode_crop=4, **{name: value}))


def test_without_the_fast_decoder_the_adaptation_with_context_decodes_the_whole_embedding(monkeypatch):
    from synthfm.models import fast_decoder

    model = _tiny()
    example = _example(model, (_ball()[4] * 1.0).astype(np.float32), _ball()[4])
    windows = []
    original = model.decode

    def decode(*args, **kwargs):
        windows.append((kwargs.get("window"), kwargs.get("context_pool")))
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "decode", decode)  # the tiny model is shared by the tests: restored after each
    adapt_decoder(model, [example], steps=2, crop=4, context=4)
    assert windows[0][0] is not None and windows[0][1] == 4
    windows.clear()
    previous = fast_decoder.set_enabled(False)
    try:
        adapt_decoder(model, [example], steps=2, crop=4, context=4)
    finally:
        fast_decoder.set_enabled(previous)
    assert windows == [(None, 0), (None, 0)]


@pytest.mark.parametrize("steps", [-1, 2.5])
def test_adapt_steps_must_be_a_whole_number(steps):
    seg = VolumeSegmenter(SlicePredictor(_tiny()), _ball() * 1.0)
    with pytest.raises(ValueError, match="adapt_steps must be 0"):
        seg.propagate_slices({4: Prompts.make(box=(10, 10, 30, 30))}, options=PropagationOptions(adapt_steps=steps))


def test_adapting_to_nothing_is_refused():
    model = _tiny()
    with pytest.raises(ValueError, match="at least one prompted slice"):
        adapt_decoder(model, [], steps=3)
    example = _example(model, np.zeros((40, 40), np.float32), _ball()[4])
    empty = AdaptExample(example.embedding, example.transform, np.zeros((40, 40), bool), example.logits)
    with pytest.raises(ValueError, match="empty mask"):
        adapt_decoder(model, [empty], steps=3)
