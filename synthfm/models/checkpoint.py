"""Decoder checkpoints: the prompt encoder + mask decoder weights that SynthFM trains, with metadata.

A checkpoint is small (about 8 MB in fp16) and says which encoder it was trained for, at what input
size, with which generator and training settings, so it can never be paired with the wrong encoder.
"""
from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any, Dict, Tuple

import torch

from synthfm import __version__
from synthfm.io.atomic import PathLike, atomic_path

FORMAT = "synthfm-decoder"
FORMAT_VERSION = 1


def save_decoder_checkpoint(path: PathLike, model, meta: Dict[str, Any], half: bool = True,
                            overwrite: bool = True) -> Path:
    """Write ``model``'s prompt encoder + mask decoder and ``meta`` atomically to ``path``."""
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu()
             for k, v in model.decoder_state_dict().items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "meta": {
            **meta,
            "encoder": model.encoder_name,
            "image_size": model.image_size,
            "synthfm_version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
        "state_dict": state,
    }
    with atomic_path(path, overwrite=overwrite) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_decoder_checkpoint(path: PathLike) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Read a decoder checkpoint; returns ``(state_dict, meta)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"decoder checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors for files that are not checkpoints
        raise ValueError(f"{path} is not a readable SynthFM decoder checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a SynthFM decoder checkpoint (no '{FORMAT}' header)")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer SynthFM (format {payload['format_version']}); upgrade synthfm")
    return payload["state_dict"], payload["meta"]


def check_encoder(path: PathLike, meta: Dict[str, Any], encoder: str, image_size: int) -> None:
    """Raise a clear error when a checkpoint's encoder or input size differs from the model's."""
    if meta.get("encoder") != encoder:
        raise ValueError(f"checkpoint {path} was trained for encoder {meta.get('encoder')}, not {encoder}")
    if int(meta.get("image_size", image_size)) != image_size:
        raise ValueError(f"checkpoint {path} was trained at input size {meta.get('image_size')}, not {image_size}")
