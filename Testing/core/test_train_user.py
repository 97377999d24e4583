"""Fine-tuning on the user's labelled volumes: slices encoded once into the shared cache format, drawn at the
configured share, a short fine-tune fits them, exact resume, starting from a trained decoder, clear errors, CLI."""
import json

import numpy as np
import pytest
import torch

from synthfm.cli import build_parser
from synthfm.io import Volume, write_volume
from synthfm.models import load_model
from synthfm.train import TrainConfig, Trainer, UserCase, train
from synthfm.train.batches import make_batch
from synthfm.train.cli import config_from_args
from synthfm.train.losses import mask_loss
from synthfm.train.trainer import _decode
from synthfm.train.user_data import UserSlices
from synthfm.utils.progress import CancelToken, Cancelled


def _volume(seed=0, value=3):
    """6 slices of 48 x 80 (not square): a bright rectangle labelled ``value`` on slices 1-4, noise elsewhere."""
    rng = np.random.default_rng(seed)
    image = rng.normal(100.0, 10.0, (6, 48, 80)).astype(np.float32)
    label = np.zeros(image.shape, np.uint8)
    for z in range(1, 5):
        y, x = 10 + 2 * z, 20 + 4 * z
        label[z, y:y + 18, x:x + 26] = value
    image[label > 0] += 120.0
    return image, label


def _config(tmp_path, **kw):
    image, label = _volume()
    base = dict(model="tiny-test", samples=8, val_samples=4, steps=4, batch_size=4, val_every=2, ckpt_every=2,
                warmup=1, generator={"size": 64}, out=str(tmp_path / "run"), cache=str(tmp_path / "cache"),
                user_data=[UserCase(image, label, name="phantom")], user_fraction=0.5)
    return TrainConfig(**{**base, **kw})


def _count_encodes(model):
    calls = []
    original = model.encode
    model.encode = lambda images: calls.append(len(images)) or original(images)
    return calls


def test_user_slices_are_encoded_once_and_drawn_at_the_configured_share(tmp_path):
    trainer = Trainer(_config(tmp_path))
    calls = _count_encodes(trainer.model)
    trainer.prepare_data()
    assert sum(calls) == 4 + 8 + 4  # validation + synthetic + the 4 labelled slices (0 and 5 are empty)
    user = trainer.user_source
    assert len(user) == 4 and user.complete and user.manifest["kind"] == "user"
    assert user.manifest["cases"][0]["name"] == "phantom" and len(user.manifest["cases"][0]["sha256"]) == 64
    emb, labels, targets = user.get(np.arange(4))
    assert emb.shape == (4, 256, 64, 64) and labels.shape == (4, 64, 64)
    assert set(np.unique(labels)) == {0, 1, 2} and (targets == 2).all()  # padding, background, the structure
    assert (labels[:, 39:] == 0).all() and (labels[:, :38] > 0).all()  # 48 x 80 -> 38 x 64, padded at the bottom

    again = Trainer(_config(tmp_path))
    calls = _count_encodes(again.model)
    again.prepare_data()
    assert sum(calls) == 0 and again.user_source.folder == user.folder  # cache reused, nothing re-encoded

    for share in (0.5, 0.25):
        trainer.config.user_fraction = share
        draws = [trainer._draw_user([0, s, 1])[0] for s in range(300)]
        assert abs(np.mean(draws) / 4 - share) < 0.06, (share, np.mean(draws))
    assert np.array_equal(trainer._draw_user([0, 9, 1])[1], trainer._draw_user([0, 9, 1])[1])
    trainer.config.user_fraction = 1.0
    assert trainer._draw_user([0, 3, 1])[0] == 4
    metrics = trainer.train_step()  # a batch made only of user slices
    assert np.isfinite(metrics["loss"])


def _user_fit(trainer):
    """Mean loss (box prompts, fixed draw) and hard Dice of the model on all user slices."""
    emb, labels, targets = trainer.user_source.get(np.arange(len(trainer.user_source)))
    batch = make_batch(np.random.default_rng(5), labels, targets, np.arange(len(labels)), trainer.transform, "box")
    trainer.model.eval()
    with torch.no_grad():
        out = _decode(trainer.model, emb, batch, False)
        loss = mask_loss(out.logits, out.iou, batch.targets)[0].item()
    return loss, trainer.validate()["val_user_box"]


def test_fine_tuning_fits_the_user_volume(tmp_path):
    # lr 1e-3 x 40 steps: 0.94-0.95 Dice on 5 of 5 seeds with either decoder path (lr 3e-3 x 25 steps reached it
    # on 1-3 of 5, also in float32: a chaotic setting, once mistaken for a fault of the fast path)
    trainer = Trainer(_config(tmp_path, steps=40, lr=1e-3, correction_prob=0.0, user_fraction=0.75,
                              val_every=1000, ckpt_every=1000))
    trainer.prepare_data()
    loss0, dice0 = _user_fit(trainer)
    trainer.run()
    loss1, dice1 = _user_fit(trainer)
    print(f"user data: loss {loss0:.3f} -> {loss1:.3f}, box Dice {dice0:.3f} -> {dice1:.3f}")
    assert loss1 < 0.7 * loss0 and dice1 > dice0 + 0.2, (loss0, loss1, dice0, dice1)
    meta = load_model(trainer.checkpoint_path).checkpoint_meta
    assert meta["train_config"]["user_data"][0]["name"] == "phantom"
    assert "val_user_point" in json.loads((tmp_path / "run" / "history.json").read_text())


def test_resume_with_user_data_reproduces_uninterrupted_run(tmp_path):
    path_full = train(_config(tmp_path / "a", steps=5))
    interrupted = _config(tmp_path / "b", steps=5)
    cancel = CancelToken()
    with pytest.raises(Cancelled):
        train(interrupted, cancel=cancel, on_metrics=lambda step, m: cancel.cancel() if step == 2 else None)
    path_resumed = train(_config(tmp_path / "b", steps=5))  # new arrays, same data
    a, b = load_model(path_full).decoder_state_dict(), load_model(path_resumed).decoder_state_dict()
    for k, v in a.items():
        assert torch.equal(v, b[k]), k
    image, label = _volume(seed=1)
    with pytest.raises(ValueError, match="settings differ.*user_data"):
        train(_config(tmp_path / "b", steps=6, user_data=[UserCase(image, label, name="phantom")]))


def test_fine_tune_starts_from_a_trained_decoder(tmp_path):
    start = train(_config(tmp_path / "a", steps=2, user_data=[]))
    trainer = Trainer(_config(tmp_path / "b", init=str(start)))
    trained = load_model(start).decoder_state_dict()
    for k, v in trainer.model.decoder_state_dict().items():
        assert torch.equal(v, trained[k]), k
    assert trainer.config.to_dict()["init"] == str(start)


def test_bad_user_data_is_named(tmp_path):
    image, label = _volume()
    with pytest.raises(ValueError, match=r"'phantom': no slice contains label\(s\) \[5\].*has \[0, 3\]"):
        UserSlices([UserCase(image, label, labels=[5], name="phantom")], 64)
    tiny = np.zeros_like(label)
    tiny[2, 5:7, 5:7] = 1  # 4 pixels: too small to be a target
    with pytest.raises(ValueError, match="no slice contains"):
        Trainer(_config(tmp_path, user_data=[UserCase(image, tiny)])).prepare_data()
    with pytest.raises(ValueError, match="same size"):
        UserCase(image, label[:, :10])
    with pytest.raises(ValueError, match="integers"):
        UserCase(image, label * 0.3)
    with pytest.raises(ValueError, match="non-zero"):
        UserCase(image, label, labels=[0])
    with pytest.raises(ValueError, match="user_fraction"):
        Trainer(_config(tmp_path, user_fraction=1.5))
    with pytest.raises(ValueError, match="no user cases"):
        UserSlices([], 64)


def test_cli_reads_user_cases_from_csv(tmp_path):
    image, label = _volume()
    write_volume(tmp_path / "img.nii.gz", Volume(image, spacing=(0.8, 0.8, 2.0)))
    write_volume(tmp_path / "lab.nii.gz", Volume(label, spacing=(0.8, 0.8, 2.0)))
    (tmp_path / "cases.csv").write_text("image,label,label_value\nimg.nii.gz,lab.nii.gz,3\n")
    args = build_parser().parse_args(["train", "--model", "tiny-test", "--user-data", str(tmp_path / "cases.csv"),
                                      "--user-fraction", "0.3", "--device", "cpu", "--out", str(tmp_path / "o")])
    config = config_from_args(args)
    case = config.user_data[0]
    assert config.user_fraction == 0.3 and case.name == "img" and case.labels == [3]
    assert np.array_equal(case.label, label) and np.allclose(case.image, image)
    (tmp_path / "bad.csv").write_text("image,label,label_value\nimg.nii.gz,lab.nii.gz,4\n")
    args.user_data = str(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="label 4 is not in"):
        config_from_args(args)
