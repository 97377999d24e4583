"""TinyViT image encoder as shipped in LiteMedSAM (256 x 256 input -> 256 x 64 x 64 embedding).

An independent implementation (no timm) whose module names match the published LiteMedSAM
checkpoint, so ``load_state_dict(strict=True)`` works.  Architecture (from the checkpoint's shapes):
a 1x1-conv patch embedding at full resolution, one stage of MBConv blocks, three stages of windowed
attention blocks with learned relative-position biases and a depthwise "local" conv, patch-merging
convolutions between stages (stride 2, 2, 1), and SAM's 256-channel neck.
"""
from __future__ import annotations

import itertools
from typing import Iterator, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from segment_anything.modeling.common import LayerNorm2d

from synthfm.models import fused_cpu

BAND_ROWS = 32  # rows per band of the full-resolution stage (a 32 x 256 x 256-channel bf16 band is 4 MB)


class ConvBN(nn.Sequential):
    """Convolution without bias followed by batch norm (keys ``c`` and ``bn``)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))


@torch.no_grad()
def fuse_conv_bn(module: nn.Module) -> nn.Module:
    """Fold every frozen :class:`ConvBN` below ``module`` into one biased convolution (inference speed-up)."""
    for name, child in module.named_children():
        if isinstance(child, ConvBN):
            conv, bn = child.c, child.bn
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                              groups=conv.groups, bias=True)
            fused.weight.copy_(conv.weight * scale[:, None, None, None])
            fused.bias.copy_(bn.bias - bn.running_mean * scale)
            fused.requires_grad_(False)
            setattr(module, name, fused)
        else:
            fuse_conv_bn(child)
    return module


def _in_bands(x: torch.Tensor) -> bool:
    """Row bands pay off on large maps only, and need the fused kernels (their padding override)."""
    return x.shape[2] > 2 * BAND_ROWS and fused_cpu.available(x)


def _expand_in_bands(conv1: nn.Module, conv2: nn.Module, x: torch.Tensor, stride: int = 1
                     ) -> Iterator[Tuple[slice, torch.Tensor]]:
    """``gelu(conv2(gelu(conv1(x))))`` (pointwise, then 3x3 depthwise with padding 1 and ``stride``) band by band
    of output rows, so the expanded activations stay in the CPU caches (on 256 x 256 maps: half the time,
    benchmarks/bench_models.py).  Output row ``o`` reads input rows ``stride*o - 1 .. stride*o + 1``: each band
    takes its input rows plus that margin, with zero rows only at the map's edges; the result is exact."""
    h = x.shape[2]
    rows, out_h = max(1, BAND_ROWS // stride), (h - 1) // stride + 1
    for o0 in range(0, out_h, rows):
        o1 = min(out_h, o0 + rows)
        a, b = stride * o0 - 1, stride * (o1 - 1) + 2  # input rows [a, b) including the margins
        y = fused_cpu.conv(conv1, x[:, :, max(0, a):min(h, b)], "gelu")
        if a < 0 or b > h:  # a band at the map's edge gets its zero rows (inner bands need no copy)
            y = F.pad(y, (0, 0, int(a < 0), max(0, b - h)))
        y = y.contiguous(memory_format=torch.channels_last)
        yield slice(o0, o1), fused_cpu.conv(conv2, y, "gelu", padding=(0, 1))


class PatchEmbed(nn.Module):
    """Pointwise stem: 3 -> dim/2 -> dim channels at full resolution."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(ConvBN(in_chans, dim // 2), nn.GELU(), ConvBN(dim // 2, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_cpu.conv(self.seq[2], fused_cpu.conv(self.seq[0], x, "gelu"))


class MBConv(nn.Module):
    """Inverted residual block: expand 1x1, depthwise 3x3, project 1x1, residual, GELU."""

    def __init__(self, dim: int, expand: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * expand)
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _in_bands(x):
            return torch.cat([F.gelu(fused_cpu.conv(self.conv3, y, add=x[:, :, rows]))
                              for rows, y in _expand_in_bands(self.conv1, self.conv2, x)], 2)
        y = fused_cpu.conv(self.conv2, fused_cpu.conv(self.conv1, x, "gelu"), "gelu")
        return F.gelu(fused_cpu.conv(self.conv3, y, add=x))


class PatchMerging(nn.Module):
    """Channel change plus (optional) 2x downsampling; returns tokens ``(B, H*W, C)``."""

    def __init__(self, resolution: Tuple[int, int], dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.resolution, self.stride = resolution, stride
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride=stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:  # tokens -> feature map
            h, w = self.resolution
            x = x.transpose(1, 2).reshape(x.shape[0], -1, h, w)
        if _in_bands(x):
            bands = _expand_in_bands(self.conv1, self.conv2, x, self.stride)
            return torch.cat([fused_cpu.conv(self.conv3, y) for _, y in bands], 2).flatten(2).transpose(1, 2)
        x = fused_cpu.conv(self.conv2, fused_cpu.conv(self.conv1, x, "gelu"), "gelu")
        return fused_cpu.conv(self.conv3, x).flatten(2).transpose(1, 2)


class WindowAttention(nn.Module):
    """Multi-head attention inside a ``window x window`` patch with relative-offset biases."""

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        cells = list(itertools.product(range(window), range(window)))
        offsets: dict = {}
        index = [offsets.setdefault((abs(a[0] - b[0]), abs(a[1] - b[1])), len(offsets)) for a in cells for b in cells]
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        self.register_buffer("bias_index", torch.tensor(index).view(len(cells), len(cells)), persistent=False)

    def _bias(self, dtype: torch.dtype) -> torch.Tensor:
        """The ``(heads, n, n)`` relative-position bias (gathered once per dtype and weight version at inference)."""
        def gather() -> torch.Tensor:
            return self.attention_biases[:, self.bias_index].to(dtype)

        if torch.is_grad_enabled():
            return gather()
        return fused_cpu.cached(self, "_bias_cache", self.attention_biases, dtype, gather)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = fused_cpu.linear(self.qkv, self.norm(x)).view(b, n, self.num_heads, 3, self.head_dim)
        if fused_cpu.available(x):
            return fused_cpu.linear(self.proj, self._heads_one_by_one(qkv))
        q, k, v = qkv.permute(3, 0, 2, 1, 4)
        # explicit softmax((q * scale) k^T + bias) v: on this CPU, scaled_dot_product_attention with a float mask
        # took 23 ms against 3 ms for one stage-3 block's 25 x 5 windows of 196 tokens in bf16; scaling q and
        # adding the (heads, n, n) bias in place avoids copying it to every window (1.8x on 361 windows of 49)
        attn = torch.matmul(q * self.scale, k.transpose(-2, -1)).add_(self._bias(q.dtype)).softmax(-1)
        out = attn @ v
        return fused_cpu.linear(self.proj, out.transpose(1, 2).reshape(b, n, c))

    def _heads_one_by_one(self, qkv: torch.Tensor) -> torch.Tensor:
        """Attention from ``qkv`` ``(b, n, heads, 3, head_dim)`` head by head, into ``(b, n, heads * head_dim)``: on
        the CPU, ``baddbmm`` adds the bias and scales inside the matrix product, and each head's output is written
        straight into the token-major layout the projection reads (one stage-1 block's attention, bf16, 2 cores:
        8.4 -> 6.2 ms; no copies of q, k or v). The same arithmetic as the batched path below, in another order."""
        b, n, heads, _, d = qkv.shape
        bias = self._bias(qkv.dtype)
        out = torch.empty(b, n, heads, d, dtype=qkv.dtype, device=qkv.device)
        for h in range(heads):
            q, k, v = qkv[:, :, h].unbind(2)
            attn = torch.baddbmm(bias[h], q, k.transpose(1, 2), alpha=self.scale).softmax(-1)
            out[:, :, h] = torch.bmm(attn, v)
        return out.view(b, n, heads * d)


class Mlp(nn.Module):
    """Pre-norm two-layer MLP with GELU."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_cpu.linear(self.fc2, fused_cpu.linear(self.fc1, self.norm(x), "gelu"))


class TinyViTBlock(nn.Module):
    """Windowed attention + depthwise local conv + MLP, on tokens of a ``resolution`` grid."""

    def __init__(self, dim: int, resolution: Tuple[int, int], num_heads: int, window: int, mlp_ratio: float) -> None:
        super().__init__()
        self.resolution = resolution
        self.window = window
        self.attn = WindowAttention(dim, num_heads, window)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = ConvBN(dim, dim, 3, groups=dim)

    def _windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.resolution
        b, _, c = x.shape
        ws = self.window
        if h == ws and w == ws:
            return self.attn(x)
        pad_h, pad_w = (-h) % ws, (-w) % ws
        grid = F.pad(x.view(b, h, w, c), (0, 0, 0, pad_w, 0, pad_h))
        nh, nw = (h + pad_h) // ws, (w + pad_w) // ws
        win = grid.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
        win = self.attn(win)
        grid = win.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, nh * ws, nw * ws, c)
        return grid[:, :h, :w].reshape(b, h * w, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.resolution
        b, n, c = x.shape
        x = x + self._windowed_attention(x)
        x = fused_cpu.conv(self.local_conv, x.transpose(1, 2).reshape(b, c, h, w)).reshape(b, c, n).transpose(1, 2)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    """First stage: MBConv blocks on the feature map, then patch merging."""

    def __init__(self, dim: int, depth: int, downsample: nn.Module) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


class AttentionStage(nn.Module):
    """Attention stage on tokens, optionally followed by patch merging."""

    def __init__(self, blocks: List[TinyViTBlock], downsample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class TinyViT(nn.Module):
    """LiteMedSAM's TinyViT-5M encoder: ``(B, 3, 256, 256)`` -> ``(B, 256, 64, 64)``."""

    def __init__(
        self,
        img_size: int = 256,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        windows: Sequence[int] = (7, 7, 14, 7),
        merge_strides: Sequence[int] = (2, 2, 1),
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_embed = PatchEmbed(3, embed_dims[0])
        res = img_size
        stages: List[nn.Module] = []
        for i, dim in enumerate(embed_dims):
            last = i == len(embed_dims) - 1
            merge = None if last else PatchMerging((res, res), dim, embed_dims[i + 1], merge_strides[i])
            if i == 0:
                stages.append(ConvStage(dim, depths[0], merge))
            else:
                blocks = [TinyViTBlock(dim, (res, res), num_heads[i], windows[i], mlp_ratio) for _ in range(depths[i])]
                stages.append(AttentionStage(blocks, merge))
            if not last:
                res //= merge_strides[i]
        self.layers = nn.ModuleList(stages)
        self.out_res = res
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], 256, 1, bias=False),
            LayerNorm2d(256),
            nn.Conv2d(256, 256, 3, padding=1, bias=False),
            LayerNorm2d(256),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x.contiguous(memory_format=torch.channels_last))
        for layer in self.layers:
            x = layer(x)
        b, _, c = x.shape
        return self.neck(x.transpose(1, 2).reshape(b, c, self.out_res, self.out_res))
