"""A faster, exact forward of segment-anything's mask decoder (same modules, weights and math).

SAM's decoder spends most of its time on the 64 x 64 = 4096 image tokens, not on the ~10 prompt tokens.
This forward rewrites the image-token work with the same parameters, reassociating linear maps only
(so results agree up to float rounding; Testing/core/test_fast_decoder.py checks values and gradients):

* **Attention with few tokens, folded into the projections.**  For token -> image attention, head ``h``'s
  logits ``(q W_q + b_q)_h (k W_k + b_k)_h^T`` equal ``((q W_q + b_q)_h W_{k,h}) k^T + (q W_q + b_q)_h b_{k,h}``,
  where the last term is constant along the softmax's row and is dropped, and
  ``softmax(.) (v W_v + b_v)_h = (softmax(.) v) W_{v,h}^T + b_{v,h}`` (softmax rows sum to 1).  So the
  4096 image tokens are never projected: two thin products of ``heads x tokens`` (~60) rows with the
  256-wide image tokens replace SAM's 128-wide key and value projections and the head reshuffles.  Image ->
  token attention folds the same way: the image tokens meet ``W_{q,h}^T k_h`` (a 256 x heads*tokens
  matrix) and the attention weights meet ``v_h W_{o,h}^T`` (the output projection, its bias spread over
  the heads), and the residual add is the accumulator of that product.  With more than
  ``internal_dim / heads`` prompt tokens (rare), the attention runs as SAM's module does.
* **Upscaling channels-last.**  A 2x2 stride-2 transposed convolution is a per-pixel linear layer to
  ``4 x C_out`` channels; the image tokens are already ``(B, HW, C)``, so both transposed convolutions, the
  channel LayerNorm2d (= ``F.layer_norm`` over the last dim: one fused op with a fused backward) and the
  GELUs run on ``(pixels, channels)`` matrices with the sub-pixel offsets left as extra pixel rows.  Only
  the final ``(B, M, 256, 256)`` logits are put back in image order (one permute of ``M`` channels
  instead of 32).
* **Only the masks returned are computed** from the upscaled embedding (1 of 4 without multimask); every
  hypernetwork MLP still runs, so every parameter gets a gradient (zero for unused outputs, as in SAM).

On by default; ``SYNTHFM_FAST_DECODER=0`` or :func:`set_enabled` switches it off.  A decoder whose layout differs
from SAM's (other upscaling layers) runs the plain path.
"""
from __future__ import annotations

import math
import os
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.mask_decoder import MaskDecoder
from segment_anything.modeling.transformer import Attention, TwoWayAttentionBlock, TwoWayTransformer

# On unless SYNTHFM_FAST_DECODER=0.  (It was off for a while: a user fine-tune test diverged with it; the test's
# lr 3e-3 x 25 steps turned out chaotic in every path, float32 included, and the fused bf16 layer_norm backward
# lost LayerNorm gradients, which sam.LayerNormOutsideAffine and the upscaling norm below now avoid.)
_state = {"enabled": os.environ.get("SYNTHFM_FAST_DECODER", "1") != "0"}


def set_enabled(enabled: bool) -> bool:
    """Switch the fast forward on or off for this process; returns the previous setting."""
    previous, _state["enabled"] = _state["enabled"], bool(enabled)
    return previous


def enabled() -> bool:
    return _state["enabled"]


def supports(decoder: nn.Module) -> bool:
    """Whether ``decoder`` has SAM's layout (the one this forward reproduces)."""
    up = getattr(decoder, "output_upscaling", None)
    if not (isinstance(decoder, MaskDecoder) and isinstance(decoder.transformer, TwoWayTransformer)
            and isinstance(up, nn.Sequential) and len(up) == 5):
        return False
    deconvs_ok = all(isinstance(m, nn.ConvTranspose2d) and m.kernel_size == (2, 2) and m.stride == (2, 2)
                     and m.padding == (0, 0) and m.output_padding == (0, 0) and m.groups == 1
                     and m.dilation == (1, 1) and m.bias is not None for m in (up[0], up[3]))
    return deconvs_ok and type(up[1]) is LayerNorm2d and all(type(m) is nn.GELU for m in (up[2], up[4]))


def forward(decoder: MaskDecoder, image_embeddings: Tensor, image_pe: Tensor, sparse: Tensor, dense: Tensor,
            multimask_output: bool, context: Optional[tuple] = None) -> Tuple[Tensor, Tensor]:
    """``MaskDecoder.forward`` (one image embedding per prompt set, or one shared by all): ``(masks, iou)``.

    Computes in the dtype of the decoder's weights (a bf16 cast of them gives a bf16 decoder); the inputs may
    come in another dtype (the image embedding is cast while being transposed to channels-last, and the "no
    mask" dense embedding before it is expanded to every pixel).
    """
    dtype = decoder.iou_token.weight.dtype
    n = sparse.shape[0]
    if image_embeddings.shape[0] not in (1, n):
        raise ValueError(f"decode got {image_embeddings.shape[0]} image embeddings for {n} prompt sets; give one "
                         "embedding per prompt set or a single one shared by all")
    keys = _channels_last(image_embeddings, dtype) + _channels_last(dense, dtype, constant_ok=True)
    if keys.shape[0] != n:
        keys = keys.expand(n, -1, -1).contiguous()
    kpe = _channels_last(image_pe, dtype)  # (1, L, C)
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat((output_tokens.unsqueeze(0).expand(n, -1, -1), sparse.to(dtype)), dim=1)
    h, w = image_embeddings.shape[-2:]
    bias = None
    if context is not None:  # pooled tokens outside a window: more keys, each counted for the tokens it stands for
        far_emb, far_pe, far_dense, weight = context
        far = (far_emb.to(dtype) + far_dense.to(dtype)).expand(n, -1, -1)
        keys, kpe = torch.cat([keys, far], 1), torch.cat([kpe, far_pe.to(dtype)], 1)
        bias = torch.zeros(1, keys.shape[1], 1, dtype=dtype, device=keys.device)
        bias[:, h * w:] = math.log(weight)
    hs, keys = _transformer(decoder.transformer, keys, kpe, tokens, bias)
    keys = keys[:, : h * w]
    pick = slice(1, None) if multimask_output else slice(0, 1)
    mask_tokens = hs[:, 1: 1 + decoder.num_mask_tokens]
    hyper = torch.stack([mlp(mask_tokens[:, i]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], 1)
    masks = _upscaled_masks(decoder.output_upscaling, keys, hyper[:, pick], h, w)
    return masks, decoder.iou_prediction_head(hs[:, 0])[:, pick]


def _channels_last(x: Tensor, dtype: torch.dtype, constant_ok: bool = False) -> Tensor:
    """``(B, C, H, W)`` -> ``(B, H*W, C)`` in ``dtype`` (at most one copy; none for the prompt encoder's positional
    encoding, which is channels-last underneath); with ``constant_ok`` a map of one value per channel (the "no
    mask" embedding, ``(B, C, 1, 1)``, or expanded to every pixel) becomes ``(B, 1, C)`` instead."""
    b, c, h, w = x.shape
    if constant_ok and (h * w == 1 or (x.stride(-1) == 0 and x.stride(-2) == 0)):
        return x[:, :, 0, 0].unsqueeze(1).to(dtype)
    y = x.flatten(2).transpose(1, 2)
    if y.is_contiguous():
        return y.to(dtype)
    return torch.empty((b, h * w, c), dtype=dtype, device=x.device).copy_(y)


def _transformer(tr: TwoWayTransformer, keys: Tensor, kpe: Tensor, tokens: Tensor,
                 bias: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    queries = tokens
    for layer in tr.layers:
        queries, keys = _block(layer, queries, keys, tokens, kpe, bias)
    attn = _tokens_to_image(tr.final_attn_token_to_image, queries + tokens, keys + kpe, keys, bias)
    return tr.norm_final_attn(queries + attn), keys


def _block(layer: TwoWayAttentionBlock, queries: Tensor, keys: Tensor, qpe: Tensor, kpe: Tensor,
           bias: Optional[Tensor] = None):
    """``TwoWayAttentionBlock.forward`` with the image-token attention folded (see the module docstring)."""
    if layer.skip_first_layer_pe:
        queries = layer.self_attn(q=queries, k=queries, v=queries)
    else:
        q = queries + qpe
        queries = queries + layer.self_attn(q=q, k=q, v=queries)
    queries = layer.norm1(queries)
    k = keys + kpe  # SAM computes this sum twice; keys do not change in between
    queries = layer.norm2(queries + _tokens_to_image(layer.cross_attn_token_to_image, queries + qpe, k, keys, bias))
    queries = layer.norm3(queries + layer.mlp(queries))
    keys = _image_to_tokens(layer.cross_attn_image_to_token, k, queries + qpe, queries, residual=keys)
    return queries, layer.norm4(keys)


def _folds(attn: Attention, tokens: int) -> bool:
    """Folding pays while heads x tokens stays below the attention's internal width."""
    return attn.num_heads * tokens <= attn.internal_dim


def _heads(attn: Attention, x: Tensor) -> Tensor:
    """``(B, N, H*d)`` -> ``(B, H, N, d)`` (a view)."""
    b, n, _ = x.shape
    return x.view(b, n, attn.num_heads, -1).transpose(1, 2)


def _head_weights(linear: nn.Linear, heads: int) -> Tensor:
    """A projection's weight ``(H*d, C)`` as ``(H, d, C)``."""
    return linear.weight.view(heads, -1, linear.weight.shape[1])


def _tokens_to_image(attn: Attention, q: Tensor, k: Tensor, v: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``attn(q=q, k=k, v=v)`` for few query tokens ``q`` ``(B, N, C)`` and many image tokens ``k``, ``v``
    ``(B, L, C)``, without projecting the image tokens; ``bias`` ``(1, L, 1)``: added to each image token's
    attention logits."""
    b, n, c = q.shape
    if not _folds(attn, n):
        if bias is not None:
            raise ValueError(f"pooled context needs at most {attn.internal_dim // attn.num_heads} prompt tokens")
        return attn(q=q, k=k, v=v)
    heads = attn.num_heads
    qh = _heads(attn, attn.q_proj(q) * (attn.internal_dim // heads) ** -0.5)  # (B, H, N, d)
    q_img = qh @ _head_weights(attn.k_proj, heads)  # (B, H, N, C): the query seen from the image tokens
    # (B, L, H*N): the image tokens stay the left factor, so their gradients come out contiguous.  The key bias
    # would add q_h . b_k,h to a whole softmax row: no effect, and a zero gradient in exact arithmetic, but in
    # floats its gradient is the rounding noise of a 4096-term sum that cancels, and through q_h that noise would
    # reach everything upstream; so it is left out (and given its exact zero gradient below).
    logits = k @ q_img.reshape(b, heads * n, c).transpose(1, 2)
    if bias is not None:
        logits = logits + bias
    # softmax along the last dim (a copy): PyTorch's softmax along another dim sums 4096 terms less accurately,
    # and its float32 gradients drifted by 1e-2 from SAM's on a peaked attention
    weights = torch.softmax(logits.transpose(1, 2).contiguous(), dim=-1)  # (B, H*N, L)
    mixed = weights @ v  # (B, H*N, C): attention-weighted image tokens
    out = mixed.view(b, heads, n, c) @ _head_weights(attn.v_proj, heads).transpose(1, 2)  # (B, H, N, d)
    out = out + attn.v_proj.bias.view(heads, 1, -1)
    out = attn.out_proj(out.transpose(1, 2).reshape(b, n, attn.internal_dim))
    return out + 0 * attn.k_proj.bias.sum()  # the optimiser sees a (zero) gradient, as with SAM's forward


def _image_to_tokens(attn: Attention, q: Tensor, k: Tensor, v: Tensor, residual: Tensor) -> Tensor:
    """``residual + attn(q=q, k=k, v=v)`` for many image tokens ``q`` ``(B, L, C)`` attending to few tokens
    ``k``, ``v`` ``(B, N, C)``, without projecting the image tokens."""
    b, n, c = k.shape
    if not _folds(attn, n):
        return residual + attn(q=q, k=k, v=v)
    heads = attn.num_heads
    kh = _heads(attn, attn.k_proj(k) * (attn.internal_dim // heads) ** -0.5)  # (B, H, N, d)
    k_img = kh @ _head_weights(attn.q_proj, heads)  # (B, H, N, C)
    k_bias = kh @ attn.q_proj.bias.view(heads, -1, 1)  # (B, H, N, 1)
    logits = torch.baddbmm(k_bias.reshape(b, 1, heads * n), q, k_img.reshape(b, heads * n, c).transpose(1, 2))
    # softmax over each head's N tokens, on a (B, H, N, L) copy: a softmax along a last dim of ~8 is slow on CPUs
    logits = logits.transpose(1, 2).contiguous().view(b, heads, n, -1)
    weights = torch.softmax(logits, dim=2).view(b, heads * n, -1).transpose(1, 2)  # (B, L, H*N)
    w_out = attn.out_proj.weight.view(c, heads, -1).permute(1, 2, 0)  # (H, d, C)
    v_out = _heads(attn, attn.v_proj(v)) @ w_out + attn.out_proj.bias / heads  # (B, H, N, C); rows sum to H
    return torch.baddbmm(residual, weights, v_out.reshape(b, heads * n, c))


def layer_norm_outside_affine(x: Tensor, shape: Tuple[int, ...], weight: Optional[Tensor], bias: Optional[Tensor],
                              eps: float) -> Tensor:
    """``F.layer_norm`` with the affine part outside the fused kernel, whose CPU backward sums the weight and bias
    gradients over every row in the input's dtype (in bf16 training it kept 5-66% of them); a broadcast ``addcmul``
    sums them in float32."""
    y = F.layer_norm(x, shape, eps=eps)
    return y if weight is None else torch.addcmul(bias, y, weight)


def _upscaled_masks(up: nn.Sequential, keys: Tensor, hyper: Tensor, h: int, w: int) -> Tensor:
    """SAM's output upscaling + hypernetwork product on channels-last image tokens ``(B, h*w, C)``:
    ``(B, M, 4h, 4w)`` mask logits for the ``M`` hypernetwork outputs ``hyper`` ``(B, M, C/8)``."""
    deconv1, norm, act1, deconv2, act2 = up
    b, m = hyper.shape[:2]
    x = F.linear(keys, *_deconv_as_linear(deconv1)).view(b, -1, deconv1.out_channels)  # (B, h*w*4, C/4)
    x = act1(layer_norm_outside_affine(x, (x.shape[-1],), norm.weight, norm.bias, norm.eps))
    x = act2(F.linear(x, *_deconv_as_linear(deconv2)).view(b, -1, deconv2.out_channels))  # (B, h*w*16, C/8)
    masks = x @ hyper.transpose(1, 2)  # (B, pixels, M) with pixel = (i, j, di1, dj1, di2, dj2)
    masks = masks.view(b, h, w, 2, 2, 2, 2, m).permute(0, 7, 1, 3, 5, 2, 4, 6)  # row 4i+2di1+di2, col 4j+2dj1+dj2
    return masks.reshape(b, m, 4 * h, 4 * w)


def _deconv_as_linear(deconv: nn.ConvTranspose2d) -> Tuple[Tensor, Tensor]:
    """A 2x2 stride-2 transposed convolution as a per-pixel linear layer: weight ``(4*C_out, C_in)`` and bias
    whose outputs are ordered (di, dj, c_out) for the output pixel (2i+di, 2j+dj)."""
    weight = deconv.weight.permute(2, 3, 1, 0).reshape(-1, deconv.in_channels)
    return weight, deconv.bias.repeat(4)
