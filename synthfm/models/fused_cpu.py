"""Fused oneDNN kernels for the frozen TinyViT encoder on CPU (convolution or linear layer + GELU / + add).

The light encoder's first stage works on 256 x 256 x 256 activations, so on a CPU it is bound by memory
traffic, not arithmetic: an unfused ``gelu(conv(x))`` writes and re-reads every activation once more.
PyTorch's oneDNN backend fuses these element-wise tails into the convolution (the kernels torch.compile's
CPU backend emits, ``torch.ops.mkldnn._convolution_pointwise`` / ``_linear_pointwise``).  They are private
operators, so every call here falls back to the plain modules when they are missing or refuse the inputs
(another PyTorch build, a GPU tensor, autograd on), and ``SYNTHFM_FUSED_CPU=0`` switches them off.
The full-resolution stage also runs in bands of rows (``tiny_vit.BAND_ROWS``) so its activations stay in the
CPU caches.  benchmarks/bench_models.py measures both paths (bf16, 2 cores: 276 -> 180 ms per 256 x 256 slice);
Testing/core/test_fused_cpu.py checks they agree.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Optional, Tuple, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)
T = TypeVar("T")

_OPS = getattr(torch.ops, "mkldnn", None)
_state = {"enabled": os.environ.get("SYNTHFM_FUSED_CPU", "1") != "0", "warned": False}


def set_enabled(enabled: bool) -> bool:
    """Switch the fused kernels on or off for this process; returns the previous setting."""
    previous, _state["enabled"] = _state["enabled"], bool(enabled)
    return previous


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast would compute in on ``x``'s device (the private operators bypass autocast)."""
    try:
        on = torch.is_autocast_enabled(x.device.type)
        return torch.get_autocast_dtype(x.device.type) if on else x.dtype
    except (TypeError, AttributeError):  # PyTorch < 2.4
        return torch.get_autocast_cpu_dtype() if x.device.type == "cpu" and torch.is_autocast_cpu_enabled() else x.dtype


def bf16_kernels() -> bool:
    """Whether oneDNN has bf16 kernels on this CPU (AVX512 BW/VL/DQ or AVX-NE-CONVERT); it refuses bf16 elsewhere."""
    if "bf16" in _state:
        return _state["bf16"]
    probe = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    try:
        _state["bf16"] = bool(probe()) if probe is not None else True  # unknown: try; the first refusal falls back
    except RuntimeError:
        _state["bf16"] = True
    return _state["bf16"]


def available(x: torch.Tensor) -> bool:
    """Whether the fused kernels will be tried on ``x`` (CPU, no autograd, switched on, present, and for bf16
    work a CPU that oneDNN computes bf16 on: an AVX2 CPU keeps its fp32 fused kernels while bf16 runs plain)."""
    return (_state["enabled"] and _OPS is not None and x.device.type == "cpu" and not torch.is_grad_enabled()
            and torch.backends.mkldnn.is_available()
            and (compute_dtype(x) != torch.bfloat16 or bf16_kernels()))


def _fallback(error: Exception) -> None:
    if not _state["warned"]:
        log.warning("fused CPU kernels unavailable (%s); using the plain layers", error)
    _state.update(enabled=False, warned=True)


def cached(module: nn.Module, slot: str, source: torch.Tensor, dtype: torch.dtype, make: Callable[[], T]) -> T:
    """``make()``, kept on ``module`` under ``slot`` until ``dtype`` or the ``source`` parameter changes
    (in place or replaced): frozen weights are cast or gathered once, not at every call."""
    key = (dtype, source.data_ptr(), source._version)
    hit = module.__dict__.get(slot)
    if hit is None or hit[0] != key:
        hit = module.__dict__[slot] = (key, make())
    return hit[1]


def _params(module: nn.Module, dtype: torch.dtype):
    """The module's weight and bias in ``dtype``, cast once and kept until the weight changes."""
    return cached(module, "_fused_params", module.weight, dtype, lambda: (
        module.weight.to(dtype), module.bias.to(dtype) if module.bias is not None else None))


def conv(module: nn.Conv2d, x: torch.Tensor, act: Optional[str] = None, add: Optional[torch.Tensor] = None,
         padding: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """``conv(x)``, then ``+ add`` or ``gelu`` (not both); fused into one oneDNN call where possible.
    ``padding`` overrides the module's (row bands that bring their own neighbouring rows)."""
    if available(x) and isinstance(module, nn.Conv2d):  # a ConvBN not folded yet runs the plain way
        dtype = compute_dtype(x)
        try:
            w, b = _params(module, dtype)
            geometry = (list(padding or module.padding), list(module.stride), list(module.dilation), module.groups)
            x = x.to(dtype)
            if add is not None:
                return _OPS._convolution_pointwise.binary(x, add.to(dtype), w, b, *geometry, "add", None, None, [],
                                                          None)
            return _OPS._convolution_pointwise(x, w, b, *geometry, act or "none", [], "none")
        except (RuntimeError, AttributeError, NotImplementedError) as error:
            _fallback(error)
    y = module(x) if padding is None else _conv_padded(module, x, padding)
    if add is not None:
        return y + add
    return F.gelu(y) if act == "gelu" else y


def _conv_padded(module: nn.Module, x: torch.Tensor, padding: Tuple[int, int]) -> torch.Tensor:
    """A convolution (or a convolution + batch norm pair ``c``/``bn``) with another padding."""
    c = module if isinstance(module, nn.Conv2d) else module.c
    y = F.conv2d(x, c.weight, c.bias, c.stride, padding, c.dilation, c.groups)
    return y if c is module else module.bn(y)


def linear(module: nn.Linear, x: torch.Tensor, act: Optional[str] = None) -> torch.Tensor:
    """``linear(x)``, then ``gelu`` if asked; one oneDNN call with weights cast once, where possible."""
    if available(x):
        dtype = compute_dtype(x)
        try:
            w, b = _params(module, dtype)
            return _OPS._linear_pointwise(x.to(dtype), w, b, act or "none", [], "none")
        except (RuntimeError, AttributeError, NotImplementedError) as error:
            _fallback(error)
    y = module(x)
    return F.gelu(y) if act == "gelu" else y
