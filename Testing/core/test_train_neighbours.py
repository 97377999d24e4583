"""Neighbouring-slice training pairs: right slices, prompts from the neighbour, empty targets past the end."""
import numpy as np
import torch
from scipy import ndimage as ndi

from synthfm.generate import GeneratorConfig, SyntheticGenerator
from synthfm.segment.preprocess import SliceTransform
from synthfm.train import TrainConfig, Trainer
from synthfm.train.losses import hard_iou
from synthfm.train.neighbour_data import (PER_VOLUME, NeighbourItems, carried_logits, make_neighbour_batch, pair,
                                          split_labels)

CONFIG = GeneratorConfig.from_preset("mixed", size=64, depth=16)


def test_items_pair_each_slice_with_its_neighbour_and_cover_the_ends():
    items = NeighbourItems(CONFIG, seed=0)
    sample = SyntheticGenerator(CONFIG, 0).sample_3d(0)
    z0, z1 = sample.meta["target_slices"]
    out = items(np.arange(PER_VOLUME))
    for role, (image, labels, target) in enumerate(out):
        cur, prev = pair(sample, role, np.random.default_rng([0, 0, role]))
        assert abs(cur - prev) == 1 and sample.mask[prev].any()
        current, previous = split_labels(labels)
        assert np.array_equal(current, sample.labels[cur]) and np.array_equal(previous, sample.mask[prev])
        assert target == sample.target_label and image.shape == (64, 64) and 0 <= image.min() <= image.max() <= 1
    if z1 + 1 < CONFIG.depth:  # a slice past the top end: nothing to find there
        _, labels, target = out[0]
        assert not (split_labels(labels)[0] == target).any()


def test_batches_prompt_from_the_neighbour_and_allow_empty_targets():
    items = NeighbourItems(CONFIG, seed=0)(np.arange(PER_VOLUME))
    labels = np.stack([it[1] for it in items])
    targets = np.array([it[2] for it in items])
    transform = SliceTransform(64, 64, 128)
    batch = make_neighbour_batch(np.random.default_rng(0), labels, targets, np.arange(PER_VOLUME), transform,
                                 "box_point")
    for k, prompt in enumerate(batch.prompts):
        previous = split_labels(labels[k])[1]
        x, y = prompt.points[0].astype(int)
        assert previous[y, x]  # the point lies in the neighbour's mask, not necessarily in this slice's
        assert np.array_equal(batch.masks[k], split_labels(labels[k])[0] == targets[k])
    assert batch.boxes.shape == (PER_VOLUME, 4) and batch.targets.shape == (PER_VOLUME, 1, 256, 256)  # low-res decoder frame


def test_carried_logits_look_like_the_previous_answer_of_propagation():
    mask = np.zeros((64, 64), bool)
    mask[20:40, 15:35] = True
    for seed in range(6):
        logits = carried_logits(np.random.default_rng(seed), mask)
        assert logits.shape == mask.shape and logits.dtype == np.float32
        assert logits[30, 25] > 0 and logits[2, 2] == -20.0  # inside positive; far outside clipped like the box
        edge = logits > 0
        assert (edge ^ mask).sum() <= 0.45 * mask.sum()  # the mask grown or shrunk by at most 2 px
        assert logits.max() <= 8.0 and logits.min() >= -20.0
    assert (carried_logits(np.random.default_rng(0), np.zeros((8, 8), bool)) == -20.0).all()  # past the end


def test_batches_with_the_carried_mask_give_it_as_the_first_rounds_prompt():
    items = NeighbourItems(CONFIG, seed=0)(np.arange(PER_VOLUME))
    labels = np.stack([it[1] for it in items])
    targets = np.array([it[2] for it in items])
    transform = SliceTransform(64, 64, 128)
    plain = make_neighbour_batch(np.random.default_rng(0), labels, targets, np.arange(PER_VOLUME), transform, "box")
    batch = make_neighbour_batch(np.random.default_rng(0), labels, targets, np.arange(PER_VOLUME), transform, "box",
                                 with_mask=True)
    assert plain.mask_inputs is None and batch.mask_inputs.shape == (PER_VOLUME, 1, 256, 256)
    assert not plain.multimask and batch.multimask  # propagation's steps pick among three candidates
    for k in range(PER_VOLUME):
        previous = split_labels(labels[k])[1]
        near = transform.mask_to_lowres(ndi.binary_dilation(previous, iterations=3)) > 0.01
        positive = batch.mask_inputs[k, 0] > 0
        assert positive.any() and not (positive & ~near).any()  # the neighbour's mask (grown <= 2 px), nothing else
        assert batch.mask_inputs[k, 0, -1, -1] == -20.0  # the padding of the low-res frame is outside


def test_iou_target_is_one_for_a_correctly_empty_answer():
    empty = torch.zeros(1, 1, 8, 8)
    assert hard_iou(-torch.ones(1, 1, 8, 8), empty).item() == 1.0  # nothing predicted, nothing there
    assert hard_iou(torch.ones(1, 1, 8, 8), empty).item() == 0.0


def test_trainer_mixes_neighbour_steps_and_keeps_plain_runs_unchanged(tmp_path):
    base = dict(model="tiny-test", samples=8, val_samples=4, steps=2, batch_size=4, val_every=2, ckpt_every=2,
                generator={"size": 64, "depth": 16}, out=str(tmp_path / "run"), cache=str(tmp_path / "cache"),
                warmup=1)
    trainer = Trainer(TrainConfig(**base, neighbour_volumes=2, neighbour_prob=1.0, neighbour_mask_prob=1.0))
    trainer.prepare_data()
    assert len(trainer.neighbour_source) == 2 * PER_VOLUME and trainer.neighbour_source.complete
    seen = []
    original = make_neighbour_batch

    import synthfm.train.trainer as trainer_module

    def spy(*args):
        seen.append(args[1])
        batch = original(*args)
        given.append(batch.mask_inputs)
        return batch

    given = []
    decoded = []
    decode = trainer.model.decode

    def decode_spy(emb, coords, labels, boxes, masks, *rest, **kw):
        decoded.append(masks)
        return decode(emb, coords, labels, boxes, masks, *rest, **kw)

    trainer.model.decode = decode_spy

    trainer_module.make_neighbour_batch = spy
    try:
        metrics = trainer.train_step()
    finally:
        trainer_module.make_neighbour_batch = original
    assert len(seen) == 1 and np.isfinite(metrics["loss"])
    assert ((seen[0] & (1 << 14)) != 0).any()  # label maps carried the neighbour's mask
    assert given[0] is not None and decoded[0] is given[0]  # ... and the first round decoded with it as mask prompt
    plain = Trainer(TrainConfig(**{**base, "out": str(tmp_path / "plain")}))
    plain.prepare_data()
    assert plain.neighbour_source is None


def test_model_card_states_the_neighbour_training():
    from synthfm.train.model_card import model_card

    cfg = TrainConfig(init="synthfm-lite", neighbour_volumes=150, neighbour_prob=0.4, neighbour_mask_prob=0.7).to_dict()
    card = model_card("synthfm-lite", {"model": "synthfm-lite", "step": 10, "train_config": cfg}, "tinyvit")
    assert "--init synthfm-lite --neighbour-volumes 150 --neighbour-prob 0.4 --neighbour-mask-prob 0.7" in card
    assert "neighbouring-slice pairs of 150 synthetic 3D volumes (0.4 of the steps)" in card


def test_carried_mask_steps_can_leave_out_the_slices_past_the_ends(tmp_path, monkeypatch):
    import synthfm.train.trainer as trainer_module

    base = dict(model="tiny-test", samples=8, val_samples=4, steps=3, batch_size=6, val_every=3, ckpt_every=3,
                generator={"size": 64, "depth": 16}, out=str(tmp_path / "run"), cache=str(tmp_path / "cache"),
                warmup=1, neighbour_volumes=2, neighbour_prob=1.0, neighbour_mask_prob=1.0)
    drawn = []
    original = make_neighbour_batch

    def spy(rng, labels, targets, idx, *rest):
        drawn.append((np.array(idx), np.array([(split_labels(lab)[0] == t).any() for lab, t in zip(labels, targets)])))
        return original(rng, labels, targets, idx, *rest)

    monkeypatch.setattr(trainer_module, "make_neighbour_batch", spy)
    for past_end in (True, False):
        trainer = Trainer(TrainConfig(**{**base, "out": str(tmp_path / f"run{past_end}")},
                                      neighbour_mask_past_end=past_end))
        trainer.prepare_data()
        drawn.clear()
        for _ in range(3):
            trainer.train_step()
        roles = np.concatenate([idx for idx, _ in drawn]) % PER_VOLUME
        present = np.concatenate([p for _, p in drawn])
        if past_end:
            assert (roles < 2).any() and not present.all()  # slices past the ends, with empty targets, are drawn
        else:
            assert (roles >= 2).all() and present.all()  # only slices where the structure is


def test_carried_mask_steps_can_leave_the_iou_head_alone(tmp_path):
    base = dict(model="tiny-test", samples=8, val_samples=4, steps=2, batch_size=4, val_every=2, ckpt_every=2,
                generator={"size": 64, "depth": 16}, cache=str(tmp_path / "cache"), warmup=1, neighbour_volumes=2,
                neighbour_prob=1.0, neighbour_mask_prob=1.0, correction_prob=0.0)
    grads = {}
    for train_iou in (True, False):
        trainer = Trainer(TrainConfig(**base, out=str(tmp_path / f"run{train_iou}"), neighbour_mask_iou=train_iou))
        trainer.prepare_data()
        head = list(trainer.model.mask_decoder.iou_prediction_head.parameters())

        def record(optimizer, args, kwargs, head=head, key=train_iou):
            grads[key] = max(float(p.grad.abs().max()) for p in head if p.grad is not None)

        trainer.optimizer.register_step_pre_hook(record)
        trainer.train_step()
    assert grads[True] > 0 and grads[False] == 0.0  # the head learns nothing from such a step
