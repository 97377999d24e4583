"""The fused oneDNN path of the TinyViT encoder gives the plain path's embeddings and falls back safely."""
import logging

import pytest
import torch
import torch.nn.functional as F

from synthfm.models import fused_cpu, load_model
from synthfm.models import tiny_vit
from synthfm.models.tiny_vit import TinyViT, fuse_conv_bn


@pytest.fixture(scope="module")
def encoder():
    return load_model("medsam-lite").image_encoder  # real LiteMedSAM weights, batch norms folded


@pytest.fixture
def image():
    torch.manual_seed(0)
    return torch.rand(1, 3, 256, 256)


def _encode(encoder, image, fused: bool, bf16: bool) -> torch.Tensor:
    previous = fused_cpu.set_enabled(fused)
    try:
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            return encoder(image).float()
    finally:
        fused_cpu.set_enabled(previous)


class _Counting:
    """Stands in for ``torch.ops.mkldnn``: counts calls, then runs the real operator (or raises)."""

    def __init__(self, fail: bool = False) -> None:
        self.calls, self.fail = 0, fail

    def _wrap(self, real):
        def call(*args):
            self.calls += 1
            if self.fail:
                raise RuntimeError("oneDNN fused kernel missing in this build")
            return real(*args)
        return call

    def __getattr__(self, name):
        real = getattr(torch.ops.mkldnn, name)
        op = self._wrap(real)
        op.binary = self._wrap(real.binary)
        return op


def test_fused_equals_plain_in_fp32(encoder, image):
    plain, fused = _encode(encoder, image, False, False), _encode(encoder, image, True, False)
    assert (fused - plain).abs().max() < 1e-4 * plain.abs().max()


def test_fused_matches_plain_in_bf16(encoder, image):
    plain, fused = _encode(encoder, image, False, True), _encode(encoder, image, True, True)
    assert F.cosine_similarity(fused.flatten(), plain.flatten(), 0) > 0.999


def test_fused_kernels_are_really_used(encoder, image, monkeypatch):
    counter = _Counting()
    monkeypatch.setattr(fused_cpu, "_OPS", counter)
    monkeypatch.setattr(tiny_vit, "BAND_ROWS", 10**6)  # one call per layer (no row bands)
    _encode(encoder, image, True, False)
    # convolutions: patch embed 2 + MBConv 2x3 + 3 merges x 3 + 10 local convs; linear: 10 blocks x 4
    assert counter.calls == 2 + 6 + 9 + 10 + 40
    counter.calls = 0
    _encode(encoder, image, True, True)
    # bf16 only where oneDNN computes it (an AVX2 CPU refuses it: plain layers there, fp32 keeps its kernels)
    assert counter.calls == (2 + 6 + 9 + 10 + 40 if fused_cpu.bf16_kernels() else 0)
    assert fused_cpu._state["enabled"]


def test_missing_kernels_fall_back_with_one_warning(encoder, image, monkeypatch, caplog):
    reference = _encode(encoder, image, False, False)
    monkeypatch.setattr(fused_cpu, "_OPS", _Counting(fail=True))
    monkeypatch.setitem(fused_cpu._state, "warned", False)
    with caplog.at_level(logging.WARNING, logger="synthfm.models.fused_cpu"):
        out = _encode(encoder, image, True, False)
    assert torch.allclose(out, reference, atol=1e-5)
    assert sum("fused CPU kernels unavailable" in r.message for r in caplog.records) == 1
    monkeypatch.setitem(fused_cpu._state, "enabled", True)  # set_enabled restored it; undo the fallback's switch-off


def test_autograd_and_unfolded_batch_norms_take_the_plain_path(monkeypatch):
    counter = _Counting()
    monkeypatch.setattr(fused_cpu, "_OPS", counter)
    torch.manual_seed(0)
    net = TinyViT(img_size=64).eval()  # ConvBN modules: not folded yet
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    net(x).sum().backward()
    assert x.grad is not None and counter.calls == 0
    with torch.inference_mode():
        unfolded = net(x.detach())
    assert counter.calls == 40  # only the linear layers can fuse before the batch norms are folded
    fuse_conv_bn(net)
    with torch.inference_mode():
        folded = net(x.detach())
    assert torch.allclose(folded, unfolded, atol=1e-4)


def test_cast_weights_are_refreshed_when_the_weights_change():
    torch.manual_seed(0)
    net = fuse_conv_bn(TinyViT(img_size=64).eval())
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        before = net(x).float()
        with torch.no_grad():
            net.layers[1].blocks[0].mlp.fc1.weight.mul_(0.5)  # in place: same storage, new version
        after = net(x).float()
        previous = fused_cpu.set_enabled(False)
        plain = net(x).float()
        fused_cpu.set_enabled(previous)
    assert not torch.allclose(before, after, atol=1e-3)
    assert F.cosine_similarity(after.flatten(), plain.flatten(), 0) > 0.999


def test_row_bands_give_exactly_the_unbanded_result(encoder, image, monkeypatch):
    monkeypatch.setattr(tiny_vit, "BAND_ROWS", 10**6)
    whole = _encode(encoder, image, True, False)
    for rows in (7, 32):  # odd bands: margins and strides must line up everywhere
        monkeypatch.setattr(tiny_vit, "BAND_ROWS", rows)
        assert torch.equal(_encode(encoder, image, True, False), whole)
