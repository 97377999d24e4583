"""Promptable segmentation of 2D slices with an embedding cache (one encoder call per slice).

``SlicePredictor.predict(slice, prompts)`` returns the mask on the slice's own pixel grid.  Slices
are identified by a key (e.g. ``(volume_id, axis, index)``) or by a hash of their pixels, so every
prompt on the same slice reuses its embedding.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Hashable, Optional, Tuple, Union

import numpy as np
import torch

from synthfm.models.sam import PromptableModel
from synthfm.segment.preprocess import SliceTransform, Window, prepare_slice
from synthfm.segment.prompts import Prompts
from synthfm.utils.masks import iou


@dataclass
class Prediction:
    """A predicted mask on the slice grid, its predicted IoU, and the low-res logits (for the next prompt)."""

    mask: np.ndarray
    score: float
    logits: np.ndarray  # (256, 256)
    all_scores: np.ndarray  # predicted IoU of every candidate mask
    candidates: Optional[np.ndarray] = None  # (M, H, W) every candidate mask, when several were asked for
    candidate_logits: Optional[np.ndarray] = None  # (M, 256, 256)

    def closest_to(self, reference: np.ndarray) -> "Prediction":
        """The candidate with the highest IoU against ``reference`` (e.g. the neighbouring slice's mask)."""
        if self.candidates is None or len(self.candidates) < 2:
            return self
        k = int(np.argmax([iou(c, reference) for c in self.candidates]))
        return replace(self, mask=self.candidates[k], score=float(self.all_scores[k]), logits=self.candidate_logits[k])


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an unavailable CUDA request is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("CUDA was requested but no CUDA GPU is available; use --device cpu (or auto)")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device '{device}'; use auto, cpu, cuda, cuda:N or mps") from None


class SlicePredictor:
    """Encode slices once (LRU cache of embeddings) and decode any number of prompts on them."""

    def __init__(self, model: PromptableModel, device: Union[str, torch.device] = "cpu", window: Window = "auto",
                 cache_size: int = 512, bf16: Optional[bool] = None) -> None:
        self.device = pick_device(device) if isinstance(device, str) else device
        self.model = model.to(self.device).eval()
        self.window = window
        self.cache_size = cache_size
        self.bf16 = (self.device.type == "cpu") if bf16 is None else bf16
        self._cache: "OrderedDict[Hashable, Tuple[torch.Tensor, SliceTransform]]" = OrderedDict()
        self.encoder_calls = 0

    def share_embeddings(self, other: "SlicePredictor") -> bool:
        """Use ``other``'s embedding cache when both models run the same frozen encoder on the same device with
        the same window (e.g. synthfm-lite and medsam-lite): each slice is then encoded once for both."""
        a, b = self.model, other.model
        same = (a.encoder_name == b.encoder_name and a.image_size == b.image_size and self.device == other.device
                and self.window == other.window and self.bf16 == other.bf16
                and torch.equal(a.pixel_mean, b.pixel_mean) and torch.equal(a.pixel_std, b.pixel_std))
        wa, wb = a.image_encoder.state_dict(), b.image_encoder.state_dict()
        same = same and wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
        if same:
            self._cache = other._cache
        return same

    @staticmethod
    def key_of(image: np.ndarray) -> str:
        return hashlib.sha1(np.ascontiguousarray(image).view(np.uint8)).hexdigest() + str(image.shape)

    def _autocast(self):
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16)

    def is_cached(self, key: Hashable) -> bool:
        return key in self._cache

    def embed_many(self, images, keys, value_range: Optional[Tuple[float, float]] = None) -> None:
        """Encode several slices in one batch (those not cached yet)."""
        todo = [(img, k) for img, k in zip(images, keys) if k not in self._cache]
        if not todo:
            return
        inputs, transforms = zip(*(prepare_slice(img, self.model.image_size, self.window, value_range) for img, _ in todo))
        with torch.inference_mode(), self._autocast():
            emb = self.model.encode(torch.stack(inputs).to(self.device)).float()
        self.encoder_calls += 1
        for (_, key), e, t in zip(todo, emb, transforms):
            self._cache[key] = (e[None], t)
            self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def embed(self, image: np.ndarray, key: Optional[Hashable] = None,
              value_range: Optional[Tuple[float, float]] = None) -> Tuple[torch.Tensor, SliceTransform]:
        """The slice's embedding ``(1, 256, 64, 64)`` and transform, computed once per key."""
        image = np.asarray(image)
        if image.ndim != 2:
            raise ValueError(f"a slice must be 2D (H, W); got shape {image.shape}")
        key = self.key_of(image) if key is None else key
        if key not in self._cache:
            self.embed_many([image], [key], value_range)
        self._cache.move_to_end(key)
        return self._cache[key]

    @torch.inference_mode()
    def predict(self, image: np.ndarray, prompts: Prompts, key: Optional[Hashable] = None,
                multimask: Union[str, bool] = "auto", value_range: Optional[Tuple[float, float]] = None) -> Prediction:
        """Segment ``image`` (H, W) from ``prompts``; ``multimask='auto'`` asks for 3 masks when ambiguous."""
        image = np.asarray(image)
        prompts.validate(*image.shape[-2:])
        emb, transform = self.embed(image, key, value_range)
        multi = prompts.ambiguous if multimask == "auto" else bool(multimask)
        coords = labels = boxes = masks = None
        if len(prompts.labels):
            coords = torch.as_tensor(transform.to_input(prompts.points), dtype=torch.float32, device=self.device)[None]
            labels = torch.as_tensor(prompts.labels, device=self.device)[None]
        if prompts.box is not None:
            boxes = torch.as_tensor(transform.box_to_input(prompts.box), dtype=torch.float32, device=self.device)[None]
        if prompts.mask_logits is not None:
            masks = torch.as_tensor(prompts.mask_logits, dtype=torch.float32, device=self.device)[None, None]
        with self._autocast():
            out = self.model.decode(emb, coords, labels, boxes, masks, multimask=multi)
        scores = out.iou[0].float().cpu().numpy()
        low = out.logits[0].float()
        masks = np.stack([(transform.logits_to_slice(m) > 0).cpu().numpy() for m in low])
        best = int(np.argmax(scores))
        low = low.cpu().numpy()
        return Prediction(masks[best], float(scores[best]), low[best], scores,
                          masks if multi else None, low if multi else None)
