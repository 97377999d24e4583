"""Neighbouring-slice training pairs: right slices, prompts from the neighbour, empty targets past the end."""
import numpy as np
import torch

from synthfm.generate import GeneratorConfig, SyntheticGenerator
from synthfm.segment.preprocess import SliceTransform
from synthfm.train import TrainConfig, Trainer
from synthfm.train.losses import hard_iou
from synthfm.train.neighbour_data import PER_VOLUME, NeighbourItems, make_neighbour_batch, pair, split_labels

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


def test_iou_target_is_one_for_a_correctly_empty_answer():
    empty = torch.zeros(1, 1, 8, 8)
    assert hard_iou(-torch.ones(1, 1, 8, 8), empty).item() == 1.0  # nothing predicted, nothing there
    assert hard_iou(torch.ones(1, 1, 8, 8), empty).item() == 0.0


def test_trainer_mixes_neighbour_steps_and_keeps_plain_runs_unchanged(tmp_path):
    base = dict(model="tiny-test", samples=8, val_samples=4, steps=2, batch_size=4, val_every=2, ckpt_every=2,
                generator={"size": 64, "depth": 16}, out=str(tmp_path / "run"), cache=str(tmp_path / "cache"),
                warmup=1)
    trainer = Trainer(TrainConfig(**base, neighbour_volumes=2, neighbour_prob=1.0))
    trainer.prepare_data()
    assert len(trainer.neighbour_source) == 2 * PER_VOLUME and trainer.neighbour_source.complete
    seen = []
    original = make_neighbour_batch

    import synthfm.train.trainer as trainer_module

    def spy(*args):
        seen.append(args[1])
        return original(*args)

    trainer_module.make_neighbour_batch = spy
    try:
        metrics = trainer.train_step()
    finally:
        trainer_module.make_neighbour_batch = original
    assert len(seen) == 1 and np.isfinite(metrics["loss"])
    assert ((seen[0] & (1 << 14)) != 0).any()  # label maps carried the neighbour's mask
    plain = Trainer(TrainConfig(**{**base, "out": str(tmp_path / "plain")}))
    plain.prepare_data()
    assert plain.neighbour_source is None


def test_model_card_states_the_neighbour_training():
    from synthfm.train.model_card import model_card

    cfg = TrainConfig(init="synthfm-lite", neighbour_volumes=150, neighbour_prob=0.4).to_dict()
    card = model_card("synthfm-lite", {"model": "synthfm-lite", "step": 10, "train_config": cfg}, "tinyvit")
    assert "--init synthfm-lite --neighbour-volumes 150 --neighbour-prob 0.4" in card
    assert "neighbouring-slice pairs of 150 synthetic 3D volumes (0.4 of the steps)" in card
