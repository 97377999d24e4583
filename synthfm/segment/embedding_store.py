"""Slice embeddings kept on disk between runs, so that judging another decoder (or another propagation setting) on
the same images decodes without encoding again.

An embedding is stored under the hash of what the encoder saw (the prepared ``(3, S, S)`` input: window, resize,
padding and mirror image included) in a folder named after the encoder (its weights, input size, normalisation and
precision). A decoder checkpoint trained on a frozen encoder therefore finds the embeddings that an earlier run of any
decoder on that encoder wrote. Values are kept exactly: bf16 encoder outputs (CPUs with native bf16, GPUs) as their
bf16 bits (2 MB per TinyViT slice), fp32 ones as float32 (4 MB), so a run that reads them gives the same masks and
numbers as one that encodes. Files are written atomically; an unreadable one is encoded again and replaced, with a
warning. Deleting the folder is always safe.

With a size cap (``max_bytes``, the interactive worker's ``--embedding-cache-gb``) the encoder folder is kept under it
by deleting the least recently used embeddings: a file's modification time is its last use (written, or read: a read
touches it), so several processes sharing the folder agree on the order. The folder is scanned once, lazily; after
that a running total and an in-memory order are kept, and the folder is scanned again when the total passes the cap or
this store has written :data:`LOW_WATER`'s complement (10%) of the cap since the last scan (other processes may have
written, read or deleted files meanwhile: each may add up to that much before its next scan). Eviction goes down to
:data:`LOW_WATER` of the cap, so scans stay rare (every ~95 TinyViT slices under a 2 GB cap). Only embedding files
(``xx/<64 hex>.npy``) of the store's own encoder folder are ever deleted, and a file that another process deleted
first is skipped.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from synthfm.io.atomic import atomic_write_bytes
from synthfm.io.checks import check_writable_folder
from synthfm.io.embedding_files import FINGERPRINT_CHARS, embedding_files, encoder_folder

log = logging.getLogger(__name__)

#: bump when what a stored file holds changes (names the per-encoder folder)
FORMAT = 2
#: with a size cap, eviction goes down to this share of it (the next scan of the folder waits for 10% of new files)
LOW_WATER = 0.9


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
    return h.hexdigest()[:FINGERPRINT_CHARS]


class EmbeddingStore:
    """A folder of slice embeddings for one encoder (``model``'s, run with or without ``bf16``)."""

    def __init__(self, folder: Union[str, Path], model, bf16: bool, option: str = "--embedding-cache",
                 max_bytes: Optional[int] = None) -> None:
        root = check_writable_folder(folder, option)
        if max_bytes is not None and not max_bytes > 0:
            raise ValueError(f"an embedding cache's size cap must be above 0 bytes, got {max_bytes}")
        self.folder = encoder_folder(root, model.encoder_name, encoder_fingerprint(model, bf16))
        self.hits = self.misses = 0
        self.write_error: Optional[str] = None  # set when a write failed (e.g. a full disk): later ones are skipped
        #: the encoder folder is kept under this many bytes (None: no cap, nothing is ever deleted)
        self.max_bytes = max_bytes
        self.evicted = self.evicted_bytes = self.scans = 0
        self._index: "Optional[OrderedDict[Path, int]]" = None  # path -> size, least recently used first
        self._total = 0  # bytes in ``_index``
        self._written = 0  # bytes this store wrote since its last scan
        self._last_ns = 0  # the last modification time this store set (kept increasing: a strict order)
        self._lock = threading.Lock()

    def _path(self, encoder_input: torch.Tensor) -> Path:
        x = encoder_input.detach().to("cpu", torch.float32).contiguous()
        key = hashlib.sha256(str(tuple(x.shape)).encode() + x.numpy().tobytes()).hexdigest()
        return self.folder / key[:2] / f"{key}.npy"

    def load(self, encoder_input: torch.Tensor) -> Optional[torch.Tensor]:
        """The stored embedding of ``encoder_input`` (float32), or None (not stored yet, or unreadable)."""
        path = self._path(encoder_input)
        try:
            array = np.load(path, allow_pickle=False)
            if array.ndim != 3 or array.dtype not in (np.uint16, np.float32):
                raise ValueError(f"holds a {array.dtype} array of shape {array.shape}, not a stored embedding")
        except FileNotFoundError:  # not stored yet, or evicted (by this process or another one)
            self.misses += 1
            return None
        except (OSError, ValueError) as exc:
            log.warning("embedding cache: %s is unreadable (%s); encoding that slice again", path, exc)
            self.misses += 1
            return None
        self.hits += 1
        self._used(path)
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
            return
        self._used(path, len(buffer.getvalue()))
        if self.max_bytes is not None:
            self._written += len(buffer.getvalue())
            if self._total > self.max_bytes or self._written > self.max_bytes * (1 - LOW_WATER):
                self._evict()

    # ---- the size cap ------------------------------------------------------------------------------------------
    def _used(self, path: Path, size: Optional[int] = None) -> None:
        """``path`` was just written (``size`` bytes) or read: it becomes the most recently used file, on disk (its
        modification time, for other processes and later runs, also without a cap) and in the in-memory order."""
        with self._lock:
            self._last_ns = max(time.time_ns(), self._last_ns + 1)
            try:
                os.utime(path, ns=(self._last_ns, self._last_ns))
                if self.max_bytes is None:
                    return
                if size is None:
                    size = path.stat().st_size
            except OSError:  # evicted by another process meanwhile, or a read-only share: nothing to order
                return
            if self._index is None:
                self._scan()
            self._total += size - self._index.pop(path, 0)
            self._index[path] = size

    def _scan(self) -> None:
        """Read the encoder folder's embedding files into the in-memory order (oldest modification time first).
        Only its embedding files count (:func:`synthfm.io.embedding_files.embedding_files`): nothing else is ever
        deleted."""
        found = sorted(embedding_files(self.folder))
        self._index = OrderedDict((path, size) for _, path, size in found)
        self._total, self._written = sum(self._index.values()), 0
        self.scans += 1

    def _evict(self) -> None:
        """Scan the folder afresh (other processes share it); past the cap, delete the least recently used files until
        it holds at most :data:`LOW_WATER` of the cap. Files deleted meanwhile by someone else are skipped."""
        with self._lock:
            self._scan()
            if self._total <= self.max_bytes:
                return
            goal = int(self.max_bytes * LOW_WATER)
            while self._total > goal and self._index:
                path, size = self._index.popitem(last=False)
                self._total -= size
                try:
                    path.unlink()
                except FileNotFoundError:  # another process evicted it first
                    continue
                except OSError as exc:
                    log.warning("embedding cache: cannot delete %s (%s)", path, exc.strerror or exc)
                    continue
                self.evicted += 1
                self.evicted_bytes += size

    def describe(self) -> str:
        """One line for people: where the store is and how often it was used."""
        stored = "encoded and stored" if self.write_error is None else f"encoded (storing stopped: {self.write_error})"
        text = f"embedding cache {self.folder}: {self.hits} slice(s) read, {self.misses} {stored}"
        if self.max_bytes is not None:
            text += (f", {self.evicted} least recently used evicted ({self.evicted_bytes / 1e6:.0f} MB) to stay under "
                     f"{self.max_bytes / 1e9:g} GB")
        return text
