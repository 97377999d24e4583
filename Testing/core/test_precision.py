"""Precision follows the machine: bf16 only where the CPU computes it natively (AVX2 CPUs emulate it ~10x slower)."""
import logging

import pytest
import torch

from synthfm.models import fused_cpu, load_model
from synthfm.segment import SlicePredictor
from synthfm.segment import predictor as predictor_module
from synthfm.segment.predictor import cpu_has_fast_bf16, default_bf16
from synthfm.train import TrainConfig, Trainer, train
from synthfm.cli import build_parser
from synthfm.train.cli import config_from_args


@pytest.fixture
def cpu(monkeypatch):
    """Pretend the CPU has (True) or lacks (False) native bf16, via the probes torch offers."""
    def set_native(native: bool) -> None:
        monkeypatch.delenv("SYNTHFM_BF16", raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    return set_native


def test_bf16_only_on_a_cpu_that_computes_it(cpu, monkeypatch):
    cpu(False)
    assert not cpu_has_fast_bf16() and not default_bf16(torch.device("cpu"))
    cpu(True)
    assert cpu_has_fast_bf16() and default_bf16(torch.device("cpu"))
    assert not default_bf16(torch.device("cuda"))  # GPUs infer in fp32 as before
    monkeypatch.setenv("SYNTHFM_BF16", "0")
    assert not cpu_has_fast_bf16()
    cpu(False)
    monkeypatch.setenv("SYNTHFM_BF16", "1")
    assert cpu_has_fast_bf16()
    monkeypatch.setenv("SYNTHFM_BF16", "maybe")
    with pytest.raises(ValueError, match="SYNTHFM_BF16='maybe'.*1 .*0"):
        cpu_has_fast_bf16()


def test_predictor_and_training_pick_the_machines_precision(cpu, tmp_path):
    model = load_model("tiny-test")
    for native in (False, True):
        cpu(native)
        assert SlicePredictor(model).bf16 is native
        assert SlicePredictor(model, bf16=not native).bf16 is (not native)  # an explicit choice wins
        assert TrainConfig(out=str(tmp_path)).bf16 is native
        assert TrainConfig(out=str(tmp_path), device="cuda").bf16 is True
    parser = build_parser()
    cpu(False)
    base = ["train", "--device", "cpu", "--out", str(tmp_path)]
    assert config_from_args(parser.parse_args(base)).bf16 is False
    assert config_from_args(parser.parse_args(base + ["--bf16"])).bf16 is True
    cpu(True)
    assert config_from_args(parser.parse_args(base)).bf16 is True
    assert config_from_args(parser.parse_args(base + ["--no-bf16"])).bf16 is False
    with pytest.raises(SystemExit):
        parser.parse_args(base + ["--bf16", "--no-bf16"])


def test_a_run_resumes_on_a_machine_of_the_other_precision(tmp_path, caplog):
    cfg = dict(model="tiny-test", samples=8, val_samples=4, batch_size=4, val_every=2, ckpt_every=2, warmup=1,
               generator={"size": 64}, out=str(tmp_path / "run"), cache=str(tmp_path / "cache"))
    train(TrainConfig(**cfg, steps=2, bf16=False))
    again = Trainer(TrainConfig(**cfg, steps=4, bf16=True))  # resuming reads the state only: nothing runs in bf16
    with caplog.at_level(logging.WARNING, logger="synthfm.train.trainer"):
        assert again.resume()
    assert again.step == 2
    assert "in bf16; it was trained so far in fp32" in caplog.text
    with pytest.raises(ValueError, match="settings differ.*lr"):  # other settings are still refused
        Trainer(TrainConfig(**cfg, steps=4, bf16=False, lr=1e-2)).resume()


def test_fused_kernels_keep_fp32_where_onednn_refuses_bf16(monkeypatch):
    x = torch.zeros(1, 2, 8, 8)
    monkeypatch.setitem(fused_cpu._state, "enabled", True)
    monkeypatch.setitem(fused_cpu._state, "bf16", False)  # what an AVX2 CPU reports (fused_cpu.bf16_kernels)
    with torch.no_grad():
        assert fused_cpu.available(x) == (fused_cpu._OPS is not None and torch.backends.mkldnn.is_available())
        with torch.autocast("cpu", torch.bfloat16):
            assert not fused_cpu.available(x)
    assert fused_cpu._state["enabled"]  # not switched off for fp32 work
    assert predictor_module.default_bf16 is default_bf16
