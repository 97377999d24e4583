"""Embedding statistics perturbed in training (synthfm.train.feature_aug, TrainConfig.feature_stats_aug)."""
import numpy as np
import pytest
import torch

from synthfm.train import Trainer
from synthfm.train.feature_aug import perturb_feature_stats

from test_train import _config


def _emb(b=6, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, 8, 8, generator=g) * torch.rand(b, c, 1, 1, generator=g) + torch.randn(b, c, 1, 1,
                                                                                                     generator=g)


def test_off_and_single_samples_are_left_alone():
    x = _emb()
    assert perturb_feature_stats(x, 0.0) is x
    assert torch.equal(perturb_feature_stats(x[:1], 1.0), x[:1])
    with pytest.raises(ValueError, match="between 0 and 1"):
        perturb_feature_stats(x, 1.5)


def test_each_channel_keeps_its_pattern_and_gets_new_statistics():
    x = _emb()
    y = perturb_feature_stats(x, 1.0, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.dtype == x.dtype
    # every (sample, channel) is an affine function of the input: the spatial pattern is kept
    xs, ys = x.flatten(2), y.flatten(2)
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            a = np.stack([xs[b, c].numpy(), np.ones(xs.shape[-1])], 1)
            coef, res, *_ = np.linalg.lstsq(a, ys[b, c].numpy(), rcond=None)
            assert np.allclose(a @ coef, ys[b, c].numpy(), atol=1e-4)
    # ... but its mean moved, by about the spread of the channel's means across the batch
    moved = (y.mean(dim=(2, 3)) - x.mean(dim=(2, 3))).abs()
    spread = x.mean(dim=(2, 3)).std(dim=0)
    assert (moved > 1e-3).all() and moved.mean() < 4 * spread.mean()


def test_the_chance_and_the_generator_decide_which_samples_change():
    x = _emb(b=400, c=3)
    y = perturb_feature_stats(x, 0.3, torch.Generator().manual_seed(2))
    changed = (y != x).flatten(1).any(1).float().mean().item()
    assert 0.22 < changed < 0.38
    assert torch.equal(y, perturb_feature_stats(x, 0.3, torch.Generator().manual_seed(2)))
    assert not torch.equal(y, perturb_feature_stats(x, 0.3, torch.Generator().manual_seed(3)))
    assert torch.equal(perturb_feature_stats(x.bfloat16(), 0.3, torch.Generator().manual_seed(2)).float(),
                       perturb_feature_stats(x.bfloat16(), 0.3, torch.Generator().manual_seed(2)).float())


def test_training_with_it_runs_reproducibly_and_changes_the_steps(tmp_path):
    with pytest.raises(ValueError, match="feature_stats_aug"):
        _config(tmp_path, feature_stats_aug=-0.1).validate()
    losses = {}
    for name, p in (("off", 0.0), ("on", 1.0), ("on again", 1.0)):
        trainer = Trainer(_config(tmp_path / name, feature_stats_aug=p, steps=2, cache=str(tmp_path / "cache")))
        trainer.prepare_data()
        losses[name] = [trainer.train_step()["loss"] for _ in range(2)]
    assert losses["on"] == losses["on again"] and losses["on"] != losses["off"]
    assert all(np.isfinite(losses["on"]))
