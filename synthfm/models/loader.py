"""Build and load :class:`PromptableModel` instances by registry name or decoder checkpoint path."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Dict, Optional, Union

import torch
from torch import nn

from synthfm.models.checkpoint import check_encoder, check_fits, load_decoder_checkpoint
from synthfm.models.registry import MODEL_REGISTRY, ModelSpec, find_decoder, get_spec, user_models_dir
from synthfm.models.sam import PromptableModel
from synthfm.models.weights import resolve_weights

VIT_CONFIGS = {  # embed dim, depth, heads, global attention blocks (segment-anything's build_sam)
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}


class TinyEncoder(nn.Module):
    """A seeded random strided convolution to 256 x 64 x 64: only for fast tests."""

    def __init__(self, image_size: int) -> None:
        super().__init__()
        stride = image_size // 64
        generator = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 256, stride, stride)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=generator) * 0.2)
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x))


def build_encoder(spec: ModelSpec) -> nn.Module:
    """The (randomly initialised) image encoder of ``spec``."""
    if spec.encoder == "tinyvit":
        from synthfm.models.tiny_vit import TinyViT

        return TinyViT(img_size=spec.image_size)
    if spec.encoder in VIT_CONFIGS:
        from segment_anything.modeling import ImageEncoderViT

        dim, depth, heads, global_idx = VIT_CONFIGS[spec.encoder]
        return ImageEncoderViT(
            depth=depth, embed_dim=dim, img_size=spec.image_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=heads, patch_size=16, qkv_bias=True,
            use_rel_pos=True, global_attn_indexes=global_idx, window_size=14, out_chans=256,
        )
    if spec.encoder == "tiny":
        return TinyEncoder(spec.image_size)
    raise ValueError(f"unknown encoder '{spec.encoder}' in model '{spec.name}'")


def _empty_model(spec: ModelSpec) -> PromptableModel:
    """``spec``'s model with random weights; the test encoder's model always the same ones (seed 0), so that what
    it segments does not depend on what ran before it in the process."""
    seeded = spec.encoder == "tiny"
    with torch.random.fork_rng(enabled=seeded):
        if seeded:
            torch.manual_seed(0)
        return PromptableModel(build_encoder(spec), spec.image_size, spec.encoder, spec.pixel_mean, spec.pixel_std)


def _load_published(model: PromptableModel, spec: ModelSpec, weights: Path, decoder_too: bool) -> None:
    state = torch.load(weights, map_location="cpu", weights_only=True)
    state = state.get("model", state) if isinstance(state, dict) else state
    if decoder_too:
        model.load_state_dict(state, strict=True)
    else:
        enc = {k[len("image_encoder."):]: v for k, v in state.items() if k.startswith("image_encoder.")}
        model.image_encoder.load_state_dict(enc, strict=True)


def _freeze_encoder(model: PromptableModel) -> PromptableModel:
    """Frozen, inference-optimised encoder: batch norms folded into convolutions, channels-last layout."""
    model.image_encoder.eval()
    for p in model.image_encoder.parameters():
        p.requires_grad_(False)
    if model.encoder_name == "tinyvit":
        from synthfm.models.tiny_vit import fuse_conv_bn

        fuse_conv_bn(model.image_encoder)
        model.image_encoder.to(memory_format=torch.channels_last)  # ~25% faster in bf16 on CPU (bench_models)
    return model


def build_model(name: str, pretrained: bool = True, weights_dir: Optional[str] = None,
                encoder_weights: Optional[str] = None) -> PromptableModel:
    """A model for training from scratch: pretrained frozen encoder, FRESH prompt encoder + mask decoder."""
    spec = get_spec(name)
    model = _empty_model(spec)
    if pretrained and spec.encoder_weights is not None:
        _load_published(model, spec, resolve_weights(spec.encoder_weights, encoder_weights, weights_dir), False)
    return _freeze_encoder(model)


def resolve_checkpoint(name_or_path: str) -> Optional[Path]:
    """The decoder checkpoint file ``name_or_path`` names (a path, or a user model's name); None for registry names."""
    path = Path(name_or_path)
    if path.suffix in (".pt", ".pth") or path.exists():
        return path
    user = user_models_dir() / f"{name_or_path}.pt"
    return user if user.is_file() and name_or_path not in MODEL_REGISTRY else None


def load_model(name_or_path: Union[str, Path], device: Union[str, torch.device] = "cpu",
               weights_dir: Optional[str] = None, encoder_weights: Optional[str] = None) -> PromptableModel:
    """Load a ready-to-use model (eval mode, frozen encoder) by registry name or decoder checkpoint path."""
    checkpoint = resolve_checkpoint(str(name_or_path))
    if checkpoint is not None:
        state, meta = load_decoder_checkpoint(checkpoint)
        spec = get_spec(meta.get("model", ""))
        decoder_path = checkpoint
    else:
        spec = get_spec(str(name_or_path))
        decoder_path = None
        if spec.decoder == "synthfm" and spec.encoder != "tiny":
            decoder_path = find_decoder(spec.decoder_file or f"{spec.name}.pt")
            if decoder_path is None:
                raise FileNotFoundError(
                    f"model '{spec.name}' needs its decoder checkpoint {spec.decoder_file}, which is not in "
                    f"{user_models_dir()} nor in the shipped Resources/models; train it with "
                    f"`synthfm train --model {spec.name}` or copy the file there"
                )
    model = _empty_model(spec)
    if spec.encoder_weights is not None:
        weights = resolve_weights(spec.encoder_weights, encoder_weights, weights_dir)
        _load_published(model, spec, weights, decoder_too=spec.decoder == "published" and decoder_path is None)
    if decoder_path is not None:
        state, meta = load_decoder_checkpoint(decoder_path)
        check_encoder(decoder_path, meta, spec.encoder, spec.image_size)
        missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
        bad = [k for k in missing if not k.startswith("image_encoder.")] + list(unexpected)
        if bad:
            raise ValueError(f"decoder checkpoint {decoder_path} does not fit model '{spec.name}': {bad[:5]}")
        model.checkpoint_meta = meta
    from synthfm.segment.quality import load_calibration

    # the calibrated quality score fitted for this decoder (benchmarks/fit_quality.py), next to its checkpoint
    model.quality_calibrator = load_calibration(decoder_path) if decoder_path is not None else None
    model = _freeze_encoder(model).to(device)
    model.name, model.trained_points, model.mask_choice = spec.name, spec.trained_points, dict(spec.mask_choice)
    model.points_in_rounds, model.mirror_average = spec.points_in_rounds, spec.mirror_average
    model.box_first = spec.box_first
    model.point_gate = spec.point_gate
    return model.eval()


def check_init_decoder(name: str, model: str) -> Optional[Path]:
    """Check that decoder ``name`` (registry name, checkpoint path or user model) can start a fine-tune of
    ``model``: same encoder and input size, and, for a checkpoint, tensors of the right names and shapes.
    Returns the checkpoint file to read (None: a registry model's published or random decoder).  Reads
    only the decoder file, never encoder weights; raises a ``ValueError`` naming what was found."""
    target = get_spec(model)
    path = resolve_checkpoint(name)
    if path is None:
        spec = get_spec(name)
        if (spec.encoder, spec.image_size) != (target.encoder, target.image_size):
            own = [n for n, s in MODEL_REGISTRY.items() if s.decoder == "synthfm" and s.encoder == spec.encoder]
            raise ValueError(f"'{name}' is a decoder for encoder {spec.encoder} ({spec.image_size} px), but model "
                             f"'{model}' uses encoder {target.encoder} ({target.image_size} px); start from a decoder "
                             f"of the same encoder (e.g. --init {model})"
                             + (f" or train with --model {own[0]}" if own else ""))
        if spec.decoder != "synthfm" or spec.encoder == "tiny":
            return None
        path = find_decoder(spec.decoder_file or f"{spec.name}.pt")
        if path is None:
            raise FileNotFoundError(f"model '{name}' has no decoder checkpoint {spec.decoder_file} in "
                                    f"{user_models_dir()} nor in the shipped Resources/models; give a checkpoint path")
    state, meta = load_decoder_checkpoint(path)
    if (meta.get("encoder"), meta.get("image_size")) != (target.encoder, target.image_size):
        trained = f"'{meta['model']}' " if meta.get("model") else ""
        raise ValueError(f"decoder checkpoint {path} is a {trained}decoder for encoder {meta.get('encoder')} "
                         f"({meta.get('image_size')} px), but model '{model}' uses encoder {target.encoder} "
                         f"({target.image_size} px); give a decoder trained with --model {model}"
                         + (f", or train with --model {meta['model']}" if meta.get("model") in MODEL_REGISTRY else ""))
    check_fits(path, state, target.image_size, model)
    return path


def init_decoder_state(name: str, model: str) -> Dict[str, torch.Tensor]:
    """The prompt encoder + mask decoder weights (float32) of decoder ``name``, checked to fit ``model``
    (:func:`check_init_decoder`)."""
    path = check_init_decoder(name, model)
    if path is not None:
        return {k: v.float() if v.is_floating_point() else v for k, v in load_decoder_checkpoint(path)[0].items()}
    spec = get_spec(name)
    if spec.decoder == "published":
        state = torch.load(resolve_weights(spec.encoder_weights), map_location="cpu", weights_only=True)
        state = state.get("model", state) if isinstance(state, dict) else state
        return {k: v for k, v in state.items() if k.startswith(("prompt_encoder.", "mask_decoder."))}
    return _empty_model(spec).decoder_state_dict()  # tiny-test: a random decoder
