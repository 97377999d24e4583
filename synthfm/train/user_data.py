"""The user's own labelled volumes as training data (fine-tuning mixed with synthetic images).

Each case is an image volume ``(Z, Y, X)`` and an integer label volume on the same grid, plus the
label values to learn (default: every non-zero value).  The axial slices (axis 0) where a chosen
structure covers at least ``MIN_TARGET_PIXELS`` after resizing become training items:

- intensities are windowed once per volume like user volumes at inference (``window="auto"``: a CT
  soft-tissue window for Hounsfield data, robust percentiles otherwise);
- the slice is resized so its longest side equals the generator's image size and padded
  bottom/right, exactly as :func:`synthfm.segment.preprocess.to_model_input` prepares slices;
- the label map follows the synthetic convention: 0 = padding (outside), 1 = background, the chosen
  structures 2, 3, ... (other labels become background), so prompt simulation and "any visible
  structure can be the target" work unchanged; the item's default target is its largest structure.

Every slice is encoded once into an :class:`~synthfm.train.embed_cache.EmbeddingCache` under
``<cache>/user-<fingerprint>`` (the fingerprint hashes the arrays and settings, so other data get
another folder and the same data are never encoded twice).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from synthfm.io.atomic import PathLike
from synthfm.models.sam import PromptableModel
from synthfm.segment.preprocess import SliceTransform, intensity_range, normalize, to_model_input
from synthfm.train.batches import MIN_TARGET_PIXELS
from synthfm.train.embed_cache import EmbeddingCache, Item
from synthfm.utils.progress import CancelToken, ProgressCallback


@dataclass(eq=False)
class UserCase:
    """One labelled volume: ``image`` ``(Z, Y, X)`` (or one ``(Y, X)`` slice), ``label`` integer on the same
    grid, ``labels`` the values to learn (None: every non-zero value), ``name`` for messages."""

    image: np.ndarray
    label: np.ndarray
    labels: Optional[Sequence[int]] = None
    name: str = "case"
    _digest: Optional[str] = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.image = np.asarray(self.image, np.float32)
        label = np.asarray(self.label)
        if label.dtype == bool or (label.dtype.kind == "f" and np.array_equal(label, np.round(label))):
            label = label.astype(np.int32)  # masks and labelmaps stored as floating point
        if not np.issubdtype(label.dtype, np.integer):
            raise ValueError(f"user case '{self.name}': the label volume must hold integers, got {label.dtype}; "
                             "pass a labelmap (0 = background), not probabilities")
        self.label = label
        if self.image.ndim == 2:
            self.image, self.label = self.image[None], self.label[None]
        if self.image.ndim != 3 or self.image.shape != self.label.shape:
            raise ValueError(f"user case '{self.name}': image {self.image.shape} and label {self.label.shape} must "
                             "be (Z, Y, X) volumes of the same size; resample the label onto the image grid")
        if not np.isfinite(self.image).all():
            raise ValueError(f"user case '{self.name}': the image has NaN or infinite values; fill them first")
        if self.labels is not None:
            self.labels = sorted({int(v) for v in self.labels})
            if not self.labels or 0 in self.labels:
                raise ValueError(f"user case '{self.name}': labels {self.labels} must be non-zero label values")

    def values(self) -> List[int]:
        """The label values learned from this case."""
        return list(self.labels) if self.labels is not None else [int(v) for v in np.unique(self.label) if v != 0]

    def describe(self) -> Dict[str, object]:
        """JSON-able identity (name, shape, labels, SHA-256 of the arrays) kept in configs and manifests."""
        if self._digest is None:
            h = hashlib.sha256()
            for a in (self.image, self.label):
                h.update(f"{a.dtype.str}{a.shape}".encode())
                h.update(np.ascontiguousarray(a).data)
            self._digest = h.hexdigest()
        return {"name": self.name, "shape": list(self.image.shape), "labels": self.labels, "sha256": self._digest}


def _letterbox_labels(labels: np.ndarray, size: int) -> np.ndarray:
    """A label slice resized (nearest) and padded like :func:`to_model_input` resizes and pads images."""
    rh, rw = SliceTransform(labels.shape[0], labels.shape[1], size).resized
    x = F.interpolate(torch.from_numpy(labels.astype(np.float32))[None, None], size=(rh, rw), mode="nearest")
    return F.pad(x, (0, size - rw, 0, size - rh), value=-1)[0, 0].numpy().astype(np.int16)


class UserSlices:
    """Item source over the usable slices of ``cases`` at ``size x size`` (see the module docstring)."""

    def __init__(self, cases: Sequence[UserCase], size: int) -> None:
        if not cases:
            raise ValueError("no user cases given; pass at least one (image, label) pair")
        self.cases, self.size = list(cases), size
        self.ranges = [intensity_range(c.image, "auto") for c in self.cases]
        self.values = [c.values() for c in self.cases]
        self.slices: List[tuple] = []  # (case index, z)
        for ci, case in enumerate(self.cases):
            values = self.values[ci]
            drawn = np.isin(case.label, values).any(axis=(1, 2))
            found = [(ci, z) for z in np.nonzero(drawn)[0].tolist() if self._remap(ci, z)[1] is not None]
            if not found:
                raise ValueError(
                    f"user case '{case.name}': no slice contains label(s) {values} with at least {MIN_TARGET_PIXELS} "
                    f"pixels at image size {size} (the label volume has {np.unique(case.label).tolist()}); choose labels "
                    "that are drawn in the volume")
            self.slices += found

    def _remap(self, ci: int, z: int):
        """(label map in the synthetic convention, target label or None when no structure is big enough)."""
        case = self.cases[ci]
        small = _letterbox_labels(case.label[z], self.size)
        out = np.where(small < 0, 0, 1).astype(np.int16)
        best, target = MIN_TARGET_PIXELS - 1, None
        for k, value in enumerate(self.values[ci]):
            where = small == value
            out[where] = k + 2
            if where.sum() > best:
                best, target = int(where.sum()), k + 2
        return out, target

    def __len__(self) -> int:
        return len(self.slices)

    def __call__(self, idx: np.ndarray) -> List[Item]:
        items = []
        for i in idx:
            ci, z = self.slices[int(i)]
            image = to_model_input(normalize(self.cases[ci].image[z], *self.ranges[ci]), self.size)[0][0].numpy()
            labels, target = self._remap(ci, z)
            items.append((image, labels, target))
        return items


def user_cache(root: PathLike, model: PromptableModel, cases: Sequence[UserCase], size: int, bf16: bool = True,
               progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None) -> EmbeddingCache:
    """Encode the usable slices of ``cases`` once into ``root/user-<fingerprint>`` (resumable) and open it."""
    slices = UserSlices(cases, size)
    wanted = {"format": "synthfm-embeddings", "kind": "user", "encoder": model.encoder_name,
              "image_size": model.image_size, "size": size, "cases": [c.describe() for c in cases],
              "count": len(slices)}
    return EmbeddingCache.fingerprinted(root, "user", wanted, model, slices, "your labelled slices", bf16, progress,
                                        cancel)


def cases_from_csv(path: PathLike) -> List[UserCase]:
    """User cases from an ``image,label[,label_value][,name]`` CSV (the evaluate stage's format and checks)."""
    from synthfm.evaluate.cases import load_case, read_cases_csv

    cases = []
    for case in read_cases_csv(Path(path)):
        loaded = load_case(case)
        cases.append(UserCase(loaded.image.array, loaded.label.array, loaded.values, case.name))
    return cases
