"""Training data sources: a memory-mapped embedding cache (CPU) and on-the-fly generation (GPU).

The cache encodes each image once with the frozen encoder, so decoder epochs cost only decoder
time.  Both sources answer ``get(idx) -> (embeddings, label maps, target labels)``.  A cache is
filled from an *item source* (``items(idx) -> [(image01 (S, S), label map (S, S), target label)]``):
:class:`SyntheticItems` for generated images, ``synthfm.train.user_data.UserSlices`` for slices of
the user's own labelled volumes; both end up in the same :class:`EmbeddingCache` format.

Layout of a cache folder (filled in any order, resumable, reusable across runs)::

    manifest.json     what the items are (generator config + seed + first index, or the user
                      cases' fingerprints), encoder, count, size
    embeddings.f16    float16 memmap (N, 256, 64, 64)
    labels.i16        int16 memmap (N, S, S): full label maps
    targets.i16       int16 (N,): the generator's target label per image
    filled.u8         uint8 (N,): 1 once an item is completely written (flushed before it is set)
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, List, Optional, Protocol, Sequence, Tuple

import numpy as np
import torch

from synthfm.generate import GeneratorConfig, SyntheticGenerator
from synthfm.io.atomic import PathLike, atomic_write_text
from synthfm.models.sam import EMBED_DIM, EMBED_SIZE, PromptableModel
from synthfm.segment.preprocess import intensity_range, normalize, to_model_input
from synthfm.utils.progress import CancelToken, ProgressCallback, check_cancel, report


class DataSource(Protocol):
    """What the trainer draws from: ``len`` items, each an embedding + label map + target label."""

    def __len__(self) -> int: ...

    def get(self, idx: np.ndarray, device: str = "cpu") -> Tuple[torch.Tensor, np.ndarray, np.ndarray]: ...


Item = Tuple[np.ndarray, np.ndarray, int]  # image in [0, 1] (S, S), label map (S, S) int16, target label
ItemSource = Callable[[np.ndarray], List[Item]]


def encode_images(model: PromptableModel, images01: Sequence[np.ndarray], bf16: bool = True) -> torch.Tensor:
    """Encode ``[0, 1]`` images ``(S, S)`` (resized + padded like user slices) -> ``(B, 256, 64, 64)``."""
    images = torch.stack([to_model_input(im, model.image_size)[0] for im in images01]).to(model.device)
    with torch.inference_mode(), torch.autocast(model.device.type, torch.bfloat16, enabled=bf16):
        return model.encode(images).float()


class SyntheticItems:
    """Items ``first + i`` of a generator: percentile-normalised image, label map, the generator's target."""

    def __init__(self, config: GeneratorConfig, seed: int, first: int = 0) -> None:
        self.generator, self.first = SyntheticGenerator(config, seed), first

    def __call__(self, idx: np.ndarray) -> List[Item]:
        samples = [self.generator.sample_2d(self.first + int(i)) for i in idx]
        return [(normalize(s.image, *intensity_range(s.image, "percentile")), s.labels, s.target_label)
                for s in samples]


def stack_items(items: List[Item]) -> Tuple[np.ndarray, np.ndarray]:
    """Label maps ``(N, S, S)`` and target labels ``(N,)`` of ``items``."""
    return np.stack([it[1] for it in items]), np.array([it[2] for it in items], np.int16)


class OnTheFlySource:
    """Generate and encode items ``first .. first+count-1`` at every draw (no disk; for GPU training)."""

    def __init__(self, model: PromptableModel, config: GeneratorConfig, seed: int, first: int, count: int,
                 bf16: bool = True) -> None:
        self.model, self.count, self.bf16 = model, count, bf16
        self.items = SyntheticItems(config, seed, first)

    def __len__(self) -> int:
        return self.count

    def get(self, idx: np.ndarray, device: str = "cpu") -> Tuple[torch.Tensor, np.ndarray, np.ndarray]:
        items = self.items(idx)
        emb = encode_images(self.model, [it[0] for it in items], self.bf16).to(device)
        return (emb, *stack_items(items))


class EmbeddingCache:
    """Memory-mapped embeddings + label maps of ``count`` synthetic images ``first .. first+count-1``."""

    def __init__(self, folder: PathLike, mode: str = "r+") -> None:
        self.folder = Path(folder)
        manifest = self.folder / "manifest.json"
        if not manifest.is_file():
            raise FileNotFoundError(f"{self.folder} is not an embedding cache (no manifest.json)")
        self.manifest = json.loads(manifest.read_text())
        n, size = self.manifest["count"], self.manifest["size"]
        self.embeddings = np.memmap(self.folder / "embeddings.f16", np.float16, mode, shape=(n, EMBED_DIM, EMBED_SIZE, EMBED_SIZE))
        self.labels = np.memmap(self.folder / "labels.i16", np.int16, mode, shape=(n, size, size))
        self.targets = np.memmap(self.folder / "targets.i16", np.int16, mode, shape=(n,))
        self.filled = np.memmap(self.folder / "filled.u8", np.uint8, mode, shape=(n,))

    def __len__(self) -> int:
        return int(self.manifest["count"])

    def get(self, idx: np.ndarray, device: str = "cpu") -> Tuple[torch.Tensor, np.ndarray, np.ndarray]:
        emb = torch.from_numpy(self.embeddings[idx].astype(np.float32)).to(device)
        return emb, self.labels[idx], self.targets[idx]

    @property
    def complete(self) -> bool:
        return bool(self.filled.all())

    @classmethod
    def create_or_open(cls, folder: PathLike, model: PromptableModel, config: GeneratorConfig, seed: int,
                       first: int, count: int) -> "EmbeddingCache":
        """Open a matching cache of synthetic images in ``folder`` or create an empty one."""
        return cls.open_matching(folder, {"format": "synthfm-embeddings", "encoder": model.encoder_name,
                                          "image_size": model.image_size, "generator": config.to_dict(), "seed": seed,
                                          "first": first, "count": count, "size": config.size})

    @classmethod
    def open_matching(cls, folder: PathLike, wanted: dict) -> "EmbeddingCache":
        """Open the cache in ``folder`` if its manifest equals ``wanted`` (which has ``count`` and ``size``),
        or create an empty one; a cache built with other settings is an error."""
        folder = Path(folder)
        manifest = folder / "manifest.json"
        if manifest.is_file():
            have = json.loads(manifest.read_text())
            if have != json.loads(json.dumps(wanted)):
                diff = sorted(k for k in wanted if have.get(k) != json.loads(json.dumps(wanted[k])))
                raise ValueError(f"embedding cache {folder} was built with different settings ({', '.join(diff)}); "
                                 "use another cache folder or delete this one")
            return cls(folder)
        folder.mkdir(parents=True, exist_ok=True)
        n, s = wanted["count"], wanted["size"]
        for name, dtype, shape in (("embeddings.f16", np.float16, (n, EMBED_DIM, EMBED_SIZE, EMBED_SIZE)),
                                   ("labels.i16", np.int16, (n, s, s)), ("targets.i16", np.int16, (n,)),
                                   ("filled.u8", np.uint8, (n,))):
            np.memmap(folder / name, dtype, "w+", shape=shape).flush()
        atomic_write_text(manifest, json.dumps(wanted, indent=1))
        return cls(folder)

    @classmethod
    def fingerprinted(cls, root: PathLike, prefix: str, wanted: dict, model: PromptableModel, items: ItemSource,
                      what: str, bf16: bool = True, progress: Optional[ProgressCallback] = None,
                      cancel: Optional[CancelToken] = None) -> "EmbeddingCache":
        """The cache of ``items`` in ``root/<prefix>-<hash of wanted>`` (other settings: another folder),
        filled where it is not yet (resumable)."""
        key = hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:16]
        cache = cls.open_matching(Path(root) / f"{prefix}-{key}", wanted)
        if not cache.complete:
            cache.fill(model, bf16=bf16, progress=progress, cancel=cancel, items=items, what=what)
        return cache

    def fill(self, model: PromptableModel, batch_size: int = 1, bf16: bool = True,
             progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None,
             items: Optional[ItemSource] = None, what: str = "synthetic images") -> None:
        """Encode every item not yet filled (resumes where a previous fill stopped); ``items`` defaults to
        the synthetic images described by the manifest."""
        m = self.manifest
        if items is None:
            items = SyntheticItems(GeneratorConfig.from_dict(m["generator"]), m["seed"], m["first"])
        todo = np.nonzero(self.filled == 0)[0]
        done = len(self) - len(todo)
        for start in range(0, len(todo), batch_size):
            check_cancel(cancel)
            idx = todo[start:start + batch_size]
            batch = items(idx)
            emb = encode_images(model, [it[0] for it in batch], bf16)
            self.embeddings[idx] = emb.cpu().numpy().astype(np.float16)
            self.labels[idx], self.targets[idx] = stack_items(batch)
            for arr in (self.embeddings, self.labels, self.targets):
                arr.flush()
            self.filled[idx] = 1
            self.filled.flush()
            done += len(idx)
            report(progress, done, len(self), f"encoding {what}")
