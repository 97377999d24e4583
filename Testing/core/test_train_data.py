"""Training data paths: the on-the-fly source equals the cache; decoders compared with identical prompts."""
import json

import numpy as np
import pytest
import torch

from synthfm.train import TrainConfig, Trainer, train
from synthfm.train.compare import compare_on_validation
from synthfm.train.embed_cache import EmbeddingCache, OnTheFlySource


def _config(tmp_path, **kw):
    base = dict(model="tiny-test", samples=8, val_samples=4, steps=2, batch_size=4, val_every=2, ckpt_every=2,
                warmup=1, generator={"size": 64}, out=str(tmp_path / "run"), cache=str(tmp_path / "cache"))
    return TrainConfig(**{**base, **kw})


def test_on_the_fly_source_matches_cache_and_trains(tmp_path):
    trainer = Trainer(_config(tmp_path))
    trainer.prepare_data()
    cfg = trainer.config
    live = OnTheFlySource(trainer.model, cfg.generator_config(), cfg.seed, 0, cfg.samples, cfg.bf16)
    idx = np.array([1, 5, 6])
    (e1, l1, t1), (e2, l2, t2) = trainer.train_source.get(idx), live.get(idx)
    assert np.array_equal(l1, l2) and np.array_equal(t1, t2)
    assert torch.allclose(e1, e2, atol=1e-2 * float(e2.abs().max()))
    assert (l1 == t1[:, None, None]).any(axis=(1, 2)).all()  # each target label is present in its map
    path = train(_config(tmp_path / "fly", data="on-the-fly"))
    assert path.is_file() and not (tmp_path / "fly" / "cache" / "train").exists()
    with pytest.raises(ValueError, match="data must be one of"):
        Trainer(_config(tmp_path, data="disk"))


def test_cache_refuses_other_settings(tmp_path):
    trainer = Trainer(_config(tmp_path))
    trainer.prepare_data()
    with pytest.raises(ValueError, match="different settings.*generator"):
        EmbeddingCache.create_or_open(tmp_path / "cache" / "train", trainer.model,
                                      _config(tmp_path, preset="us").generator_config(), 0, 0, 8)


def test_compare_gives_same_prompts_to_every_model(tmp_path):
    path = train(_config(tmp_path))
    results = compare_on_validation([str(path)], tmp_path / "cache" / "val")
    again = compare_on_validation([str(path)], tmp_path / "cache" / "val")
    assert again == results
    r = results[str(path)]
    assert 0.0 <= r["val_point"] <= 1.0 and 0.0 <= r["val_box"] <= 1.0


def test_worker_processes_draw_the_same_batches_as_the_training_process(tmp_path):
    """On-the-fly batches drawn ahead by 2 spawned workers train exactly the decoder the serial path trains
    (batch 3, correction rounds on every step, several prompt kinds)."""
    kw = dict(data="on-the-fly", steps=3, batch_size=3, correction_prob=1.0, correction_rounds=2, val_every=3,
              ckpt_every=3)
    serial = train(_config(tmp_path / "serial", **kw))
    ahead = train(_config(tmp_path / "ahead", workers=2, **kw))
    a, b = torch.load(serial, weights_only=True), torch.load(ahead, weights_only=True)
    assert a["meta"]["step"] == b["meta"]["step"] == 3
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert b["meta"]["train_config"]["workers"] == 2
    with pytest.raises(ValueError, match="workers draw on-the-fly synthetic batches only"):
        Trainer(_config(tmp_path, workers=2))  # cached data: nothing to draw ahead
    with pytest.raises(ValueError, match="workers must be 0 or more"):
        Trainer(_config(tmp_path, data="on-the-fly", workers=-1))
    with pytest.raises(ValueError, match=r"samples \(4\) must be at least batch_size \(6\)"):
        Trainer(_config(tmp_path, data="on-the-fly", samples=4, batch_size=6))


def test_batch_moves_its_tensors_to_the_embeddings_device():
    """On a GPU the prompts and targets must follow the embeddings (they are built on the CPU)."""
    from synthfm.segment.preprocess import SliceTransform
    from synthfm.train.batches import make_batch

    labels = np.ones((2, 32, 32), np.int16)
    labels[:, 8:20, 10:24] = 2
    batch = make_batch(np.random.default_rng(0), labels, np.array([2, 2]), np.arange(2), SliceTransform(32, 32, 64),
                       "box_point")
    moved = batch.to("meta")
    for name in ("targets", "point_coords", "point_labels", "boxes"):
        assert getattr(moved, name).device.type == "meta" and getattr(batch, name).device.type == "cpu", name
    assert moved.prompts is batch.prompts and moved.multimask == batch.multimask


def test_time_budget_stops_after_a_step_with_the_checkpoint_validated(tmp_path):
    """A budget that runs out stops at the end of a step; the checkpoint's validation Dice is of its own weights."""
    path = train(_config(tmp_path, data="on-the-fly", steps=50, val_every=10, ckpt_every=10, time_budget_min=1e-6))
    meta = torch.load(path, weights_only=True)["meta"]
    history = json.loads((path.parent / "history.json").read_text())
    assert meta["step"] == 1 and history["step"] == [1] and history["val_step"] == [1]
    assert set(meta["val"]) == {"val_point", "val_box"}
