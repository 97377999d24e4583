"""Training: prompts simulated as specified, loss decreases, exact resume, frozen encoder, bad configs."""
import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from synthfm.models import load_model
from synthfm.train import TrainConfig, Trainer, train
from synthfm.utils.progress import CancelToken, Cancelled
from synthfm.train.losses import mask_loss
from synthfm.train.prompt_sim import correction_click, jittered_box, simulate


def _config(tmp_path, **kw):
    base = dict(model="tiny-test", samples=12, val_samples=4, steps=4, batch_size=4, val_every=2, ckpt_every=2,
                generator={"size": 64}, out=str(tmp_path / "run"), cache=str(tmp_path / "cache"), warmup=2)
    return TrainConfig(**{**base, **kw})


def test_simulated_prompts_are_where_they_should_be():
    rng = np.random.default_rng(0)
    mask = np.zeros((50, 60), bool)
    mask[10:30, 20:45] = True
    labels = mask.astype(np.int16) + 1
    labels[10:30, 46:55] = 5  # a neighbour right of the target
    for mode in ("point1", "points", "pos_neg", "box", "box_point"):
        for _ in range(10):
            p = simulate(rng, mask, labels, mode)
            for (x, y), lab in zip(p.points.astype(int), p.labels):
                assert mask[y, x] == bool(lab), (mode, x, y, lab)
            if mode.startswith("box"):
                x0, y0, x1, y1 = p.box
                assert x0 <= 20 + 3 + 3 and x1 >= 44 - 6 and y0 <= 10 + 5 and y1 >= 29 - 5
    box = jittered_box(np.random.default_rng(1), mask, max_jitter=0)
    assert np.allclose(box, [20, 10, 44, 29], atol=3)
    missed = mask.copy()
    missed[10:30, 35:45] = False  # prediction misses the right part -> positive click there
    p = correction_click(rng, simulate(rng, mask, labels, "point1"), missed, mask)
    assert p.labels[-1] == 1 and p.points[-1][0] >= 35
    far = ndi.distance_transform_edt(~mask)
    kinds = set()
    for _ in range(40):  # clicks a user adds without looking at the error: inside, or far outside
        p = correction_click(rng, simulate(rng, mask, labels, "point1"), missed, mask, extra_prob=1.0)
        (x, y), lab = p.points[-1].astype(int), p.labels[-1]
        assert mask[y, x] if lab == 1 else far[y, x] >= 0.3 * far.max()
        kinds.add((int(lab), bool(x >= 35)))
    assert (0, False) in kinds or (0, True) in kinds
    assert (1, False) in kinds  # a positive away from the missed part: not a correction click


def test_training_lowers_loss_on_a_fixed_batch(tmp_path):
    trainer = Trainer(_config(tmp_path, lr=3e-3, correction_prob=0.0))
    trainer.prepare_data()
    original = trainer.train_step

    def fixed_step():  # always the same random draw -> the same batch
        step = trainer.step
        trainer.step = 0
        out = original()
        trainer.step = step + 1
        return out

    losses = [fixed_step()["loss"] for _ in range(25)]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses


def test_resume_reproduces_uninterrupted_run_and_encoder_is_frozen(tmp_path):
    full = _config(tmp_path / "a", steps=6)
    ref_encoder = {k: v.clone() for k, v in load_model("tiny-test").image_encoder.state_dict().items()}
    path_full = train(full)
    interrupted = _config(tmp_path / "b", steps=6)
    cancel = CancelToken()
    with pytest.raises(Cancelled):
        train(interrupted, cancel=cancel, on_metrics=lambda step, m: cancel.cancel() if step == 3 else None)
    assert Trainer(interrupted).resume() and load_model(tmp_path / "b" / "run" / "tiny-test.pt").checkpoint_meta["step"] == 3
    path_resumed = train(interrupted)
    a, b = load_model(path_full), load_model(path_resumed)
    for k, v in a.decoder_state_dict().items():
        assert torch.equal(v, b.decoder_state_dict()[k]), k
    trainer = Trainer(full)
    trainer.resume()
    for k, v in trainer.model.image_encoder.state_dict().items():
        assert torch.equal(v, ref_encoder[k]), k
    assert (tmp_path / "a" / "run" / "curve.png").stat().st_size > 1000
    assert a.checkpoint_meta["step"] == 6 and a.checkpoint_meta["train_config"]["model"] == "tiny-test"
    # time adds up over the resumed sessions; the model card next to the checkpoint says how to reproduce it
    assert 0 < b.checkpoint_meta["train_seconds"] and b.checkpoint_meta["step"] == 6
    card = (tmp_path / "b" / "run" / "tiny-test.md").read_text()
    assert "step 6 of 6" in card and "synthfm train --model tiny-test --preset mixed --samples 12" in card
    assert "synthetic images only" in card and "tests only" in card


def test_bad_configs_are_clear(tmp_path):
    with pytest.raises(ValueError, match="batch_size must be a positive"):
        Trainer(_config(tmp_path, batch_size=0))
    with pytest.raises(ValueError, match="unknown model 'sam-vit-q'"):
        Trainer(_config(tmp_path, model="sam-vit-q"))
    with pytest.raises(ValueError, match="unknown preset"):
        Trainer(_config(tmp_path, preset="xray"))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises((PermissionError, FileExistsError, NotADirectoryError), match="file"):
        Trainer(_config(tmp_path, out=str(blocker / "sub")))


def test_resume_refuses_different_settings(tmp_path):
    train(_config(tmp_path, steps=2))
    with pytest.raises(ValueError, match="settings differ.*lr"):
        train(_config(tmp_path, steps=4, lr=1e-2))


def test_far_negatives_lie_far_outside_the_target():
    rng = np.random.default_rng(3)
    mask = np.zeros((80, 80), bool)
    mask[30:45, 30:45] = True
    labels = mask.astype(np.int16) + 1
    from scipy import ndimage as ndi
    far = ndi.distance_transform_edt(~mask)
    for _ in range(20):
        p = simulate(rng, mask, labels, "far_neg")
        assert p.labels[0] == 1 and mask[int(p.points[0][1]), int(p.points[0][0])]
        negatives = p.points[p.labels == 0].astype(int)
        assert 1 <= len(negatives) <= 3
        assert all(far[y, x] >= 0.3 * far.max() - 1 for x, y in negatives)


def test_bf16_decoder_cast_matches_autocast_and_trains_float32_weights():
    torch.manual_seed(0)
    from synthfm.models import build_model
    model = build_model("tiny-test")
    emb = torch.randn(2, 256, 64, 64)
    coords, labels = torch.rand(2, 2, 2) * model.image_size, torch.ones(2, 2, dtype=torch.long)
    with torch.autocast("cpu", torch.bfloat16):
        ref = model.decode(emb, coords, labels, multimask=True)
    out = model.decode(emb, coords, labels, multimask=True, compute_dtype=torch.bfloat16)
    assert out.logits.dtype == torch.bfloat16
    assert torch.allclose(out.logits.float(), ref.logits.float(), atol=0.15, rtol=0.05)
    target = (torch.rand(2, 1, 256, 256) > 0.5).float()

    def gradient(**kw):
        model.zero_grad()
        result = model.decode(emb, coords, labels, multimask=True, **kw)
        mask_loss(result.logits, result.iou, target)[0].backward()
        return torch.cat([p.grad.flatten() for p in model.mask_decoder.parameters() if p.grad is not None])

    exact, cast = gradient(), gradient(compute_dtype=torch.bfloat16)
    assert all(p.dtype == torch.float32 for p in model.mask_decoder.parameters())
    assert len(cast) == len(exact) and bool(cast.abs().sum() > 0)
    assert float(exact @ cast / (exact.norm() * cast.norm())) > 0.99  # same direction as float32 training


def test_several_correction_rounds_and_prompt_mix(tmp_path):
    cfg = _config(tmp_path, correction_prob=1.0, correction_rounds=3, prompt_modes=["far_neg", "box"], steps=3,
                  extra_click_prob=0.5)
    trainer = Trainer(cfg)
    trainer.prepare_data()
    for _ in range(3):
        metrics = trainer.train_step()
        assert np.isfinite(metrics["loss"])
    with pytest.raises(ValueError, match="correction_rounds"):
        _config(tmp_path, correction_rounds=0).validate()
    with pytest.raises(ValueError, match="extra_click_prob"):
        _config(tmp_path, extra_click_prob=1.5).validate()
    with pytest.raises(ValueError, match="prompt_modes"):
        _config(tmp_path, prompt_modes=["lasso"]).validate()
    with pytest.raises(ValueError, match="multimask_modes"):
        _config(tmp_path, multimask_modes=["lasso"]).validate()


def test_multimask_modes_decode_those_first_rounds_as_three_candidates(tmp_path):
    """By default only one-point first rounds give three candidates (min-over-masks loss, as SAM); with
    ``multimask_modes`` box rounds do too, and a step trains on them."""
    from synthfm.segment.preprocess import SliceTransform
    from synthfm.train.batches import make_batch

    labels = np.zeros((2, 32, 32), np.int16)
    labels[:, 8:20, 10:24] = 2
    transform, rng = SliceTransform(32, 32, 64), np.random.default_rng(0)
    assert make_batch(rng, labels, np.array([2, 2]), np.arange(2), transform, "point1").multimask
    assert not make_batch(rng, labels, np.array([2, 2]), np.arange(2), transform, "box").multimask
    assert make_batch(rng, labels, np.array([2, 2]), np.arange(2), transform, "box", ("point1", "box")).multimask
    seen = []
    trainer = Trainer(_config(tmp_path, prompt_modes=["box"], multimask_modes=["box"], correction_prob=0.0))
    trainer.prepare_data()
    decode = trainer.model.decode
    trainer.model.decode = lambda *a, **k: seen.append(a[5]) or decode(*a, **k)
    assert np.isfinite(trainer.train_step()["loss"])
    assert seen == [True]  # the box round asked for three candidates


def test_resume_from_the_light_state_continues_the_schedule(tmp_path):
    cfg = _config(tmp_path, steps=4)
    first = Trainer(cfg)
    first.prepare_data()
    first.run()
    (tmp_path / "run" / "resume.pt").unlink()  # what a committed run keeps: checkpoint + history.json
    again = Trainer(_config(tmp_path, steps=8))
    assert again.resume()
    assert again.step == 4 and again.history["step"] == first.history["step"]
    assert again.optimizer.param_groups[0]["lr"] == pytest.approx(again.scheduler.lr_lambdas[0](4) * cfg.lr)
    for k, v in first.model.decoder_state_dict().items():
        assert torch.allclose(again.model.decoder_state_dict()[k].float(), v.float(), atol=1e-2, rtol=1e-3), k
    again.prepare_data()
    again.run()
    assert again.step == 8 and len(again.history["loss"]) == 8
    with pytest.raises(ValueError, match="settings differ"):
        Trainer(_config(tmp_path, steps=8, lr=1e-3)).resume()


def test_a_version_2_run_continues_only_with_the_same_resolved_generator(tmp_path):
    old = _config(tmp_path, steps=2, generator={"size": 64, "version": 2})
    first = Trainer(old)
    first.prepare_data()
    first.run()
    meta_config = torch.load(tmp_path / "run" / "resume.pt", weights_only=False)["config"]
    meta_config["generator"] = {"size": 64}  # as a run made before version 3 recorded its overrides
    state = torch.load(tmp_path / "run" / "resume.pt", weights_only=False)
    state["config"] = meta_config
    del state["generator"]  # resume states before version 3: the checkpoint's metadata says which generator
    torch.save(state, tmp_path / "run" / "resume.pt")
    assert Trainer(_config(tmp_path, steps=4, generator={"size": 64, "version": 2})).resume()
    with pytest.raises(ValueError, match="other generator settings"):
        Trainer(_config(tmp_path, steps=4, generator={"size": 64})).resume()


def test_model_card_command_reproduces_the_run_settings(tmp_path):
    import shlex

    from synthfm.cli import build_parser
    from synthfm.train.cli import config_from_args
    from synthfm.train.model_card import command_line

    cfg = _config(tmp_path, correction_prob=0.6, correction_rounds=3, prompt_modes=["far_neg", "box"], warmup=7,
                  generator={"size": 64, "version": 2}, lr=2e-4, data="on-the-fly", extra_click_prob=0.3,
                  multimask_modes=["point1", "box"], feature_stats_aug=0.5)
    args = build_parser().parse_args(shlex.split(command_line(cfg.to_dict()))[1:] + ["--out", cfg.out, "--device", "cpu"])
    again = config_from_args(args).to_dict()
    for key in ("correction_prob", "correction_rounds", "extra_click_prob", "prompt_modes", "warmup", "generator", "lr",
                "steps", "data", "multimask_modes", "feature_stats_aug"):
        assert again[key] == cfg.to_dict()[key], key
