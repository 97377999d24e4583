"""The fast mask-decoder forward (synthfm.models.fast_decoder) against segment-anything's own code:
same masks, IoU predictions and gradients (float32: tight; bf16: gradient directions)."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from segment_anything.modeling import MaskDecoder, TwoWayTransformer

from synthfm.models import fast_decoder
from synthfm.models.sam import PromptableModel, build_mask_decoder

B = 2


@pytest.fixture(scope="module")
def model() -> PromptableModel:
    torch.manual_seed(0)
    m = PromptableModel(nn.Identity(), 256, "test")
    with torch.no_grad():  # away from the initialisation's zero biases and unit norms, so every path matters
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def _inputs(shared: bool, mask_input: bool, points: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(1 if shared else B, 256, 64, 64, generator=g)
    coords = torch.rand(B, points, 2, generator=g) * 256
    labels = torch.randint(0, 2, (B, points), generator=g)
    labels[:, -1] = -1  # padding, as prompt_tensors writes it
    boxes = torch.tensor([[40.0, 50.0, 180.0, 200.0]]).repeat(B, 1) + torch.rand(B, 4, generator=g) * 10
    masks = torch.randn(B, 1, 256, 256, generator=g) if mask_input else None
    return emb, coords, labels, boxes, masks


def _reference(model: PromptableModel, emb, coords, labels, boxes, masks, multimask: bool):
    """segment-anything's MaskDecoder code, one prompt set (and its image) at a time."""
    sparse, dense = model.prompt_encoder(points=(coords, labels), boxes=boxes, masks=masks)
    pe = model.prompt_encoder.get_dense_pe()
    pick = slice(1, None) if multimask else slice(0, 1)
    out = [MaskDecoder.predict_masks(model.mask_decoder, emb[i if len(emb) > 1 else 0][None], pe, sparse[i:i + 1],
                                     dense[i:i + 1]) for i in range(B)]
    return torch.cat([o[0] for o in out])[:, pick], torch.cat([o[1] for o in out])[:, pick]


def _loss(logits: torch.Tensor, iou: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    w = torch.randn(logits.shape[1:], generator=g)
    return (logits.float() * w).mean() * 100 + (iou.float() * torch.randn(iou.shape[1:], generator=g)).sum()


def _grads(model: PromptableModel, run) -> tuple:
    model.zero_grad(set_to_none=True)
    logits, iou = run()
    _loss(logits, iou).backward()
    grads = {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in model.named_parameters()}
    return logits.detach().float(), iou.detach().float(), grads


def _decode(model, emb, coords, labels, boxes, masks, multimask, **kw):
    out = model.decode(emb, coords, labels, boxes, masks, multimask, **kw)
    return out.logits, out.iou


@pytest.mark.parametrize("shared, mask_input, multimask", [
    (False, False, False), (False, True, True), (True, True, False), (True, False, True)],
    ids=["batched-single", "batched-mask-multimask", "shared-mask-single", "shared-multimask"])
def test_fast_matches_segment_anything_fp32(model, shared, mask_input, multimask):
    args = _inputs(shared, mask_input)
    ref_logits, ref_iou, ref_grads = _grads(model, lambda: _reference(model, *args, multimask))
    logits, iou, grads = _grads(model, lambda: _decode(model, *args, multimask, fast=True))
    assert logits.shape == ref_logits.shape == (B, 3 if multimask else 1, 256, 256)
    assert torch.allclose(logits, ref_logits, atol=2e-5 * ref_logits.abs().max(), rtol=0)
    assert torch.allclose(iou, ref_iou, atol=1e-5, rtol=1e-4)
    _assert_grads_close(grads, ref_grads)


def _assert_grads_close(grads: dict, ref: dict, rel: float = 2e-4) -> None:
    """Every parameter's gradient within ``rel`` of the largest gradient entry anywhere, and within ``rel`` of its
    own largest entry where that is not negligible (some gradients are zero in exact arithmetic: the key biases
    of softmax attention, whose logits they shift by a constant)."""
    assert grads.keys() == ref.keys()
    scale = max(g.abs().max() for g in ref.values())
    assert scale > 0
    for name, g in ref.items():
        err = (grads[name] - g).abs().max()
        assert err <= rel * scale, (name, float(err), float(scale))
        if g.abs().max() > 1e-2 * scale:
            assert err <= 10 * rel * g.abs().max(), (name, float(err), float(g.abs().max()))


def test_many_prompt_tokens_use_the_plain_attention_and_still_match(model):
    """With more tokens than the folding pays for (here 5 + 19 points), attention runs as SAM's module does."""
    args = _inputs(False, False, points=19)
    attn = model.mask_decoder.transformer.layers[0].cross_attn_token_to_image
    assert not fast_decoder._folds(attn, 5 + 19)
    ref_logits, ref_iou, ref_grads = _grads(model, lambda: _reference(model, *args, True))
    logits, iou, grads = _grads(model, lambda: _decode(model, *args, True, fast=True))
    assert torch.allclose(logits, ref_logits, atol=2e-5 * ref_logits.abs().max(), rtol=0)
    assert torch.allclose(iou, ref_iou, atol=1e-5, rtol=1e-4)
    _assert_grads_close(grads, ref_grads)


def _cosine(a: dict, b: dict) -> float:
    x = torch.cat([v.flatten().double() for v in a.values()])
    y = torch.cat([b[k].flatten().double() for k in a])
    return float(x @ y / (x.norm() * y.norm()))


@pytest.mark.parametrize("mask_input, multimask", [(False, False), (True, True)], ids=["single", "mask-multimask"])
def test_fast_bf16_follows_fp32_as_closely_as_the_plain_bf16_path(model, mask_input, multimask):
    """Training's bf16 cast of the mask decoder: the fast path's gradients (decoder weights and prompt
    embeddings) point where segment-anything's float32 ones do, about as closely as its own forward run in bf16
    (same prompt embeddings for all three; with these weights both reach a cosine of 0.994-0.998)."""
    emb, coords, labels, boxes, masks = _inputs(False, mask_input)
    with torch.no_grad():
        sparse, dense = model.prompt_encoder(points=(coords, labels), boxes=boxes, masks=masks)
        pe = model.prompt_encoder.get_dense_pe()

    def run(**kw):
        leaves = [sparse.detach().clone().requires_grad_(), dense.detach().clone().requires_grad_()]
        model.zero_grad(set_to_none=True)
        out = model.run_mask_decoder(emb, pe, *leaves, multimask, **kw)
        _loss(out.logits, out.iou).backward()
        grads = {n: p.grad.clone() for n, p in model.mask_decoder.named_parameters()}
        grads.update(sparse=leaves[0].grad, dense=leaves[1].grad)
        return out.logits.detach().float(), grads

    ref_logits, ref = run(fast=False)
    results = {fast: run(compute_dtype=torch.bfloat16, fast=fast) for fast in (False, True)}
    cos = {fast: _cosine(r[1], ref) for fast, r in results.items()}
    assert cos[True] > 0.99, cos
    assert 1 - cos[True] < 2 * (1 - cos[False]), cos
    for logits, _ in results.values():
        assert (logits - ref_logits).abs().mean() < 0.02 * ref_logits.abs().mean()


def test_fast_bf16_keeps_every_gradient_whole(model):
    """A loss that pushes every pixel the same way (as a Dice loss early in training does): each parameter's
    bf16 gradient keeps its size.  The fused bf16 ``layer_norm`` backward once summed the upscaling LayerNorm's
    weight gradient over all pixels in bf16 and lost most of it (a user fine-tune then diverged); the overall
    cosine above does not see a small tensor like that."""
    emb, coords, labels, boxes, masks = _inputs(False, True)

    def grads(**kw):
        model.zero_grad(set_to_none=True)
        out = model.decode(emb, coords, labels, boxes, masks, False, **kw)
        out.logits.float().mean().backward()
        return {n: p.grad.clone() for n, p in model.mask_decoder.named_parameters() if p.grad is not None}

    ref, fast = grads(fast=False), grads(compute_dtype=torch.bfloat16, fast=True)
    scale = max(g.norm() for g in ref.values())
    for name, g in ref.items():
        if g.norm() > 1e-3 * scale:
            ratio = float(fast[name].float().norm() / g.norm())
            assert 0.8 < ratio < 1.25, (name, ratio)


def test_decode_bf16_fast_and_plain_agree(model):
    """Through PromptableModel.decode (prompt encoder under autocast, decoder on a bf16 weight cast)."""
    args = _inputs(True, True)
    runs = [_grads(model, lambda: _decode(model, *args, True, compute_dtype=torch.bfloat16, fast=fast))
            for fast in (False, True)]
    assert runs[1][0].shape == (B, 3, 256, 256)
    assert _cosine(runs[0][2], runs[1][2]) > 0.99
    assert (runs[0][0] - runs[1][0]).abs().mean() < 0.02 * runs[0][0].abs().mean()


def test_switches(model, monkeypatch):
    """fast=False (or set_enabled(False), or SYNTHFM_FAST_DECODER=0 at import) runs segment-anything's forward."""
    class Called(Exception):
        pass

    def forward(*args, **kwargs):
        raise Called

    monkeypatch.setattr(fast_decoder, "forward", forward)
    args = _inputs(False, False)
    _decode(model, *args, False, fast=False)
    previous = fast_decoder.set_enabled(False)
    try:
        _decode(model, *args, False)
    finally:
        fast_decoder.set_enabled(previous)
    with pytest.raises(Called):
        _decode(model, *args, False, fast=True)


def test_same_modules_and_checkpoint_keys():
    """The fast path adds no parameters: a decoder's state dict is segment-anything's MaskDecoder's."""
    sam = MaskDecoder(num_multimask_outputs=3, transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
                      transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8))
    ours = build_mask_decoder()
    assert fast_decoder.supports(ours)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in sam.state_dict().items()}
    ours.output_upscaling[2] = nn.ReLU()
    assert not fast_decoder.supports(ours)
