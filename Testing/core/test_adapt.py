"""The decoder adapted to one volume before propagation (synthfm.segment.adapt, PropagationOptions.adapt_steps)."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from synthfm.segment import PropagationOptions, Prompts, SlicePredictor, VolumeSegmenter
from synthfm.segment.adapt import AdaptExample, adapt_decoder, decoder_swapped
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
