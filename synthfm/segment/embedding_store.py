"""Slice embeddings kept on disk between runs, so that judging another decoder (or another propagation setting) on
the same images decodes without encoding again.

An embedding is stored under the hash of what the encoder saw (the prepared ``(3, S, S)`` input: window, resize,
padding and mirror image included) in a folder named after the encoder (its weights, input size, normalisation and
precision). A decoder checkpoint trained on a frozen encoder therefore finds the embeddings that an earlier run of any
decoder on that encoder wrote. Values are kept exactly: bf16 encoder outputs (CPUs with native bf16, GPUs) as their
bf16 bits (2 MB per TinyViT slice), fp32 ones as float32 (4 MB), so a run that reads them gives the same masks and
numbers as one that encodes. Files are written atomically; an unreadable one is encoded again and replaced, with a
warning. Deleting the folder is always safe.
"""
from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from synthfm.io.atomic import atomic_write_bytes
from synthfm.io.checks import check_writable_folder

log = logging.getLogger(__name__)

#: bump when what a stored file holds changes (names the per-encoder folder)
FORMAT = 2


def encoder_fingerprint(model, bf16: bool) -> str:
    """A short hash of everything that decides a slice's embedding besides the slice: the encoder's weights, its
    input size and normalisation, and the precision it runs in."""
    h = hashlib.sha256(f"synthfm-embeddings-v{FORMAT}|{model.encoder_name}|{model.image_size}|bf16={bool(bf16)}"
                       .encode())
    for t in (model.pixel_mean, model.pixel_std):
        h.update(t.detach().float().cpu().numpy().tobytes())
    for name, tensor in sorted(model.image_encoder.state_dict().items()):
        h.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        h.update(tensor.detach().cpu().flatten().clone().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:20]


class EmbeddingStore:
    """A folder of slice embeddings for one encoder (``model``'s, run with or without ``bf16``)."""

    def __init__(self, folder: Union[str, Path], model, bf16: bool, option: str = "--embedding-cache") -> None:
        root = check_writable_folder(folder, option)
        self.folder = Path(root) / f"{model.encoder_name}-{encoder_fingerprint(model, bf16)}"
        self.hits = self.misses = 0
        self.write_error: Optional[str] = None  # set when a write failed (e.g. a full disk): later ones are skipped

    def _path(self, encoder_input: torch.Tensor) -> Path:
        x = encoder_input.detach().to("cpu", torch.float32).contiguous()
        key = hashlib.sha256(str(tuple(x.shape)).encode() + x.numpy().tobytes()).hexdigest()
        return self.folder / key[:2] / f"{key}.npy"

    def load(self, encoder_input: torch.Tensor) -> Optional[torch.Tensor]:
        """The stored embedding of ``encoder_input`` (float32), or None (not stored yet, or unreadable)."""
        path = self._path(encoder_input)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            array = np.load(path, allow_pickle=False)
            if array.ndim != 3 or array.dtype not in (np.uint16, np.float32):
                raise ValueError(f"holds a {array.dtype} array of shape {array.shape}, not a stored embedding")
        except (OSError, ValueError) as exc:
            log.warning("embedding cache: %s is unreadable (%s); encoding that slice again", path, exc)
            self.misses += 1
            return None
        self.hits += 1
        if array.dtype == np.uint16:  # bf16 bits
            return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16).float()
        return torch.from_numpy(array)

    def save(self, encoder_input: torch.Tensor, embedding: torch.Tensor) -> None:
        """Store ``embedding`` ``(C, h, w)`` of ``encoder_input`` exactly (bf16 bits when its values are bf16 numbers,
        else float32). A write that fails (a full disk) is reported once and the run goes on without storing."""
        if self.write_error is not None:
            return
        value = embedding.detach().float().cpu().contiguous()
        as_bf16 = value.to(torch.bfloat16)
        if torch.equal(as_bf16.float(), value):
            stored = as_bf16.view(torch.int16).numpy().view(np.uint16)
        else:
            stored = value.numpy()
        buffer = io.BytesIO()
        np.save(buffer, stored, allow_pickle=False)
        path = self._path(encoder_input)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, buffer.getvalue())
        except OSError as exc:
            self.write_error = exc.strerror or str(exc)
            log.warning("embedding cache: cannot write %s (%s); going on without storing embeddings (free some space "
                        "or choose another --embedding-cache)", path, self.write_error)

    def describe(self) -> str:
        """One line for people: where the store is and how often it was used."""
        stored = "encoded and stored" if self.write_error is None else f"encoded (storing stopped: {self.write_error})"
        return f"embedding cache {self.folder}: {self.hits} slice(s) read, {self.misses} {stored}"
