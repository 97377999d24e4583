"""DistributedDataParallel with 2 gloo processes on CPU: ranks train on different samples, end identical."""
import torch

from synthfm.models import build_model
from synthfm.train import TrainConfig
from synthfm.train.ddp import run_local


def test_two_gloo_ranks_end_with_identical_decoder_weights(tmp_path):
    config = TrainConfig(model="tiny-test", samples=12, val_samples=4, steps=3, batch_size=2, val_every=3,
                         ckpt_every=3, warmup=1, generator={"size": 64}, out=str(tmp_path / "run"),
                         cache=str(tmp_path / "cache"))
    path = run_local(config, world_size=2, weights_dir=str(tmp_path))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    torch.manual_seed(config.seed)
    fresh = build_model("tiny-test").decoder_state_dict()
    assert r0.keys() == r1.keys() == fresh.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    assert any(not torch.equal(r0[k], fresh[k]) for k in r0 if r0[k].is_floating_point())  # it did train
    assert path.is_file() and (tmp_path / "run" / "curve.png").is_file()
