"""Decoder checkpoints: the prompt encoder + mask decoder weights that SynthFM trains, with metadata.

A checkpoint is small (about 8 MB in fp16) and says which encoder it was trained for, at what input
size, with which generator and training settings, so it can never be paired with the wrong encoder.
"""
from __future__ import annotations

import datetime
import io
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Tuple

import torch

from synthfm import __version__
from synthfm.io.atomic import PathLike, atomic_write_bytes

FORMAT = "synthfm-decoder"
FORMAT_VERSION = 1


def save_decoder_checkpoint(path: PathLike, model, meta: Dict[str, Any], half: bool = True,
                            overwrite: bool = True) -> Path:
    """Write ``model``'s prompt encoder + mask decoder and ``meta`` atomically to ``path``."""
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu()
             for k, v in model.decoder_state_dict().items()}
    return save_decoder_state(path, state, {
        **meta,
        "encoder": model.encoder_name,
        "image_size": model.image_size,
        "synthfm_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }, overwrite)


def save_decoder_state(path: PathLike, state: Dict[str, torch.Tensor], meta: Dict[str, Any],
                       overwrite: bool = True) -> Path:
    """Write a decoder ``state`` dict with its complete ``meta`` (as :func:`load_decoder_checkpoint` returns them)
    atomically to ``path`` in the checkpoint format."""
    return save_torch_atomic({"format": FORMAT, "format_version": FORMAT_VERSION, "meta": meta, "state_dict": state},
                             path, overwrite)


def save_torch_atomic(obj: Any, path: PathLike, overwrite: bool = True) -> Path:
    """``torch.save`` into memory, then the bytes written atomically (:func:`~synthfm.io.atomic.atomic_write_bytes`):
    a full disk raises ``OSError(ENOSPC)`` from the write (torch's own writer reports it as an opaque
    ``RuntimeError``, "unexpected pos", seen on a full tmpfs) and the target, if any, is left as it was."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue(), overwrite=overwrite)


# SAM checkpoints: the patch embedding's width names the encoder
_VIT_WIDTHS = {768: "SAM ViT-B", 1024: "SAM ViT-L", 1280: "SAM ViT-H"}


def describe_payload(payload: Any) -> str:
    """What a torch file that is not a decoder checkpoint holds, in words (for error messages)."""
    if isinstance(payload, torch.Tensor):
        return f"a single tensor of shape {tuple(payload.shape)}"
    if not isinstance(payload, dict):
        return f"a {type(payload).__name__}"
    if {"decoder", "optimizer", "step"} <= set(payload):
        return (f"a training resume state (step {payload['step']}); give the decoder checkpoint <model>.pt "
                "written beside it")
    inner = payload.get("model", payload.get("state_dict", payload))
    tensors = {str(k): v for k, v in inner.items() if isinstance(v, torch.Tensor)} if isinstance(inner, dict) else {}
    if not tensors:
        keys = sorted(str(k) for k in payload)
        return f"a dict with keys {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
    groups = sorted({k.split(".")[0] for k in tensors})
    shown = ", ".join(groups[:4]) + (" ..." if len(groups) > 4 else "")
    patch = tensors.get("image_encoder.patch_embed.proj.weight")
    if patch is not None and patch.ndim == 4:
        kind = f"a full {_VIT_WIDTHS.get(int(patch.shape[0]), 'ViT')} model"
    elif any(k.startswith("image_encoder.patch_embed.seq") for k in tensors):
        kind = "a full TinyViT (LiteMedSAM) model"
    else:
        return f"a state dict of {len(tensors)} tensors ({shown})"
    return (f"{kind} ({len(tensors)} tensors: {shown}); to start from a published model's decoder give its name "
            "(e.g. medsam-lite, sam-vit-b)")


def _read_payload(path: Path) -> Any:
    """``torch.load`` of ``path`` (tensors and plain types only) with a one-line reason when it fails."""
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if not magic.startswith((b"PK\x03\x04", b"\x80")):  # torch's zip format, or a legacy pickle
        found = f"it starts with {magic!r}" if magic else "it is empty"
        raise ValueError(f"{path} is not a readable SynthFM decoder checkpoint: it is not a PyTorch file at all "
                         f"({found})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors for files that are not checkpoints
        text = str(exc)
        if "Weights only load failed" in text:
            reason = "it holds pickled Python objects (a whole model or other data), not just tensors"
        else:
            first = (text.splitlines() or [""])[0].strip()
            reason = f"{type(exc).__name__}: {first[:120]}" if first else type(exc).__name__
        raise ValueError(f"{path} is not a readable SynthFM decoder checkpoint: it cannot be read as a PyTorch "
                         f"file ({reason})") from exc


def load_decoder_checkpoint(path: PathLike) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Read a decoder checkpoint; returns ``(state_dict, meta)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"decoder checkpoint {path} does not exist")
    payload = _read_payload(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a SynthFM decoder checkpoint (no '{FORMAT}' header): it holds "
                         f"{describe_payload(payload)}")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer SynthFM (format {payload['format_version']}); upgrade synthfm")
    if not isinstance(payload.get("state_dict"), dict) or not isinstance(payload.get("meta"), dict):
        raise ValueError(f"{path} is a damaged SynthFM decoder checkpoint (no weights or metadata); train or copy "
                         "it again")
    return payload["state_dict"], payload["meta"]


@lru_cache(maxsize=4)
def decoder_shapes(image_size: int) -> Dict[str, Tuple[int, ...]]:
    """Tensor name -> shape of a fresh prompt encoder + mask decoder for ``image_size`` (what a checkpoint
    for that input size must hold)."""
    from synthfm.models.sam import build_mask_decoder, build_prompt_encoder

    parts = {"prompt_encoder": build_prompt_encoder(image_size), "mask_decoder": build_mask_decoder()}
    return {f"{name}.{k}": tuple(v.shape) for name, part in parts.items() for k, v in part.state_dict().items()}


def check_fits(path: PathLike, state: Dict[str, torch.Tensor], image_size: int, model: str) -> None:
    """Raise a clear error when ``state``'s tensor names or shapes are not those of ``model``'s decoder."""
    want = decoder_shapes(image_size)
    have = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    problems = [f"{k} has shape {have[k]}, expected {want[k]}" for k in want if k in have and have[k] != want[k]]
    missing, extra = [k for k in want if k not in have], [k for k in have if k not in want]
    if missing:
        problems.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
    if extra:
        problems.append(f"{len(extra)} unexpected tensors (e.g. {extra[0]})")
    if problems:
        raise ValueError(f"decoder checkpoint {path} does not fit the decoder of model '{model}': "
                         f"{'; '.join(problems[:3])}; it was made for another architecture")


def check_encoder(path: PathLike, meta: Dict[str, Any], encoder: str, image_size: int) -> None:
    """Raise a clear error when a checkpoint's encoder or input size differs from the model's."""
    if meta.get("encoder") != encoder:
        raise ValueError(f"checkpoint {path} was trained for encoder {meta.get('encoder')}, not {encoder}")
    if int(meta.get("image_size", image_size)) != image_size:
        raise ValueError(f"checkpoint {path} was trained at input size {meta.get('image_size')}, not {image_size}")
