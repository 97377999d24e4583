"""Training data sources: a memory-mapped embedding cache (CPU) and on-the-fly generation (GPU).

The cache encodes each synthetic image once with the frozen encoder, so decoder epochs cost only
decoder time.  Both sources answer ``get(idx) -> (embeddings, label maps, target labels)``.

Layout of a cache folder (filled in any order, resumable, reusable across runs)::

    manifest.json     generator config + seed + first index, encoder, count, shapes
    embeddings.f16    float16 memmap (N, 256, 64, 64)
    labels.i16        int16 memmap (N, S, S): full label maps
    targets.i16       int16 (N,): the generator's target label per image
    filled.u8         uint8 (N,): 1 once an item is completely written (flushed before it is set)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Protocol, Sequence, Tuple

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


def encode_samples(model: PromptableModel, samples: Sequence, bf16: bool = True) -> torch.Tensor:
    """Encode synthetic ``Sample2D`` images (percentile-normalised like user slices) -> ``(B, 256, 64, 64)``."""
    images = torch.stack([to_model_input(normalize(s.image, *intensity_range(s.image, "percentile")),
                                         model.image_size)[0] for s in samples]).to(model.device)
    with torch.inference_mode(), torch.autocast(model.device.type, torch.bfloat16, enabled=bf16):
        return model.encode(images).float()


class OnTheFlySource:
    """Generate and encode items ``first .. first+count-1`` at every draw (no disk; for GPU training)."""

    def __init__(self, model: PromptableModel, config: GeneratorConfig, seed: int, first: int, count: int,
                 bf16: bool = True) -> None:
        self.model, self.first, self.count, self.bf16 = model, first, count, bf16
        self.generator = SyntheticGenerator(config, seed)

    def __len__(self) -> int:
        return self.count

    def get(self, idx: np.ndarray, device: str = "cpu") -> Tuple[torch.Tensor, np.ndarray, np.ndarray]:
        samples = [self.generator.sample_2d(self.first + int(i)) for i in idx]
        emb = encode_samples(self.model, samples, self.bf16).to(device)
        return emb, np.stack([s.labels for s in samples]), np.array([s.target_label for s in samples], np.int16)


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
        """Open a matching cache in ``folder`` or create an empty one; a mismatching one is an error."""
        folder = Path(folder)
        wanted = {"format": "synthfm-embeddings", "encoder": model.encoder_name, "image_size": model.image_size,
                  "generator": config.to_dict(), "seed": seed, "first": first, "count": count, "size": config.size}
        manifest = folder / "manifest.json"
        if manifest.is_file():
            have = json.loads(manifest.read_text())
            if have != json.loads(json.dumps(wanted)):
                diff = sorted(k for k in wanted if have.get(k) != json.loads(json.dumps(wanted[k])))
                raise ValueError(f"embedding cache {folder} was built with different settings ({', '.join(diff)}); "
                                 "use another cache folder or delete this one")
            return cls(folder)
        folder.mkdir(parents=True, exist_ok=True)
        n, s = count, config.size
        for name, dtype, shape in (("embeddings.f16", np.float16, (n, EMBED_DIM, EMBED_SIZE, EMBED_SIZE)),
                                   ("labels.i16", np.int16, (n, s, s)), ("targets.i16", np.int16, (n,)),
                                   ("filled.u8", np.uint8, (n,))):
            np.memmap(folder / name, dtype, "w+", shape=shape).flush()
        atomic_write_text(manifest, json.dumps(wanted, indent=1))
        return cls(folder)

    def fill(self, model: PromptableModel, batch_size: int = 1, bf16: bool = True,
             progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None) -> None:
        """Generate and encode every item not yet filled (resumes where a previous fill stopped)."""
        m = self.manifest
        gen = SyntheticGenerator(GeneratorConfig.from_dict(m["generator"]), m["seed"])
        todo = np.nonzero(self.filled == 0)[0]
        done = len(self) - len(todo)
        for start in range(0, len(todo), batch_size):
            check_cancel(cancel)
            idx = todo[start:start + batch_size]
            samples = [gen.sample_2d(m["first"] + int(i)) for i in idx]
            emb = encode_samples(model, samples, bf16)
            self.embeddings[idx] = emb.cpu().numpy().astype(np.float16)
            self.labels[idx] = np.stack([s.labels for s in samples])
            self.targets[idx] = [s.target_label for s in samples]
            for arr in (self.embeddings, self.labels, self.targets):
                arr.flush()
            self.filled[idx] = 1
            self.filled.flush()
            done += len(idx)
            report(progress, done, len(self), "encoding synthetic images")
