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

Damage is found when a cache is opened, before any training on it: a manifest that is missing or not
JSON, data files whose sizes differ from what the manifest describes, values that cannot be encoder
output (NaN, all zeros) in a sample of the items marked as encoded, or other settings (encoder,
generator, count) than the run's.  The files are allocated in full when the cache is created (so a
full disk shows up then, as an error, not as a crash while the memory map is written), after a check
of the free space; a write that still finds the disk full stops with a message, and the items already
encoded are kept for the next run to continue from.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Callable, List, Optional, Protocol, Sequence, Tuple

import numpy as np
import torch

from synthfm.generate import GeneratorConfig, SyntheticGenerator
from synthfm.io.atomic import PathLike, atomic_write_text
from synthfm.io.checks import InputError, check_disk_space, format_bytes, free_disk_bytes, is_disk_full
from synthfm.models.encoding import encode
from synthfm.models.sam import EMBED_DIM, EMBED_SIZE, PromptableModel
from synthfm.segment.predictor import default_bf16
from synthfm.segment.preprocess import intensity_range, normalize, to_model_input
from synthfm.utils.progress import CancelToken, ProgressCallback, check_cancel, report


class DataSource(Protocol):
    """What the trainer draws from: ``len`` items, each an embedding + label map + target label."""

    def __len__(self) -> int: ...

    def get(self, idx: np.ndarray, device: str = "cpu") -> Tuple[torch.Tensor, np.ndarray, np.ndarray]: ...


Item = Tuple[np.ndarray, np.ndarray, int]  # image in [0, 1] (S, S), label map (S, S) int16, target label
ItemSource = Callable[[np.ndarray], List[Item]]


def encode_images(model: PromptableModel, images01: Sequence[np.ndarray], bf16: Optional[bool] = None) -> torch.Tensor:
    """Encode ``[0, 1]`` images ``(S, S)`` (resized + padded like user slices) -> ``(B, 256, 64, 64)``; ``bf16``
    None: the inference default for the model's device (:func:`synthfm.segment.predictor.default_bf16`)."""
    bf16 = default_bf16(model.device) if bf16 is None else bf16
    images = torch.stack([to_model_input(im, model.image_size)[0] for im in images01])
    return encode(model, images, bf16)


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


CACHE_FORMAT = "synthfm-embeddings"
SAMPLE_CHECKS = 8  # items marked as encoded whose values are checked when a cache is opened


def cache_layout(count: int, size: int) -> List[Tuple[str, np.dtype, Tuple[int, ...]]]:
    """(file name, element type, shape) of each data file of a cache of ``count`` items of ``size`` px."""
    return [("embeddings.f16", np.dtype(np.float16), (count, EMBED_DIM, EMBED_SIZE, EMBED_SIZE)),
            ("labels.i16", np.dtype(np.int16), (count, size, size)), ("targets.i16", np.dtype(np.int16), (count,)),
            ("filled.u8", np.dtype(np.uint8), (count,))]


def bytes_per_item(size: int) -> int:
    """Disk bytes of one cached item (float16 embedding, int16 label map, target, flag)."""
    return sum(dtype.itemsize * math.prod(shape) for _, dtype, shape in cache_layout(1, size))


def synthetic_manifest(encoder: str, image_size: int, config: GeneratorConfig, seed: int, first: int,
                       count: int) -> dict:
    """What a cache of the synthetic images ``first .. first+count-1`` records about itself."""
    return {"format": CACHE_FORMAT, "encoder": encoder, "image_size": image_size, "generator": config.to_dict(),
            "seed": seed, "first": first, "count": count, "size": config.size}


def fingerprint_folder(root: PathLike, prefix: str, wanted: dict) -> Path:
    """``root/<prefix>-<hash of wanted>``: data with other settings get another folder."""
    key = hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:16]
    return Path(root) / f"{prefix}-{key}"


def _damaged(folder: Path, what: str) -> InputError:
    return InputError(f"embedding cache {folder} is damaged: {what}; delete the folder {folder} and train again to "
                      "rebuild it (it holds only image embeddings computed from the settings, nothing trained)")


def _read_manifest(folder: Path) -> dict:
    """The manifest of the cache in ``folder``, checked for the fields every cache has."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _damaged(folder, f"its manifest.json cannot be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        raise _damaged(folder, f"its manifest.json is not a SynthFM embedding-cache manifest (no \"format\": "
                               f"\"{CACHE_FORMAT}\")")
    for key in ("count", "size"):
        value = manifest.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise _damaged(folder, f"its manifest.json has \"{key}\": {json.dumps(value)}, not a positive whole number")
    return manifest


def _check_file_sizes(folder: Path, manifest: dict) -> None:
    """Each data file exactly as long as the manifest's count and size make it (cut off: damaged)."""
    n, size = manifest["count"], manifest["size"]
    for name, dtype, shape in cache_layout(n, size):
        path, expected = folder / name, dtype.itemsize * math.prod(shape)
        if not path.is_file():
            raise _damaged(folder, f"{name} is missing")
        have = path.stat().st_size
        if have != expected:
            raise _damaged(folder, f"{name} holds {have} bytes, but the manifest describes {expected} ({n} images of "
                                   f"{size}x{size} px; cut off while writing or copying?)")


def _check_without_manifest(folder: Path) -> None:
    """Cache files without a manifest are what a run stopped while creating the cache leaves (nothing
    encoded: created afresh); encoded items without one cannot be identified, so they are refused."""
    filled = folder / "filled.u8"
    if filled.is_file() and np.fromfile(filled, np.uint8).any():
        raise _damaged(folder, "it holds encoded images but no manifest.json, so what they are cannot be checked")


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 40 else text[:37] + "..."


def _differences(have: dict, want: dict) -> List[str]:
    """``key old (now new)`` for the first settings that differ (inside the generator settings too)."""
    out = []
    for key in sorted(set(have) | set(want)):
        a, b = have.get(key), want.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{k} {_short(a.get(k))} (now {_short(b.get(k))})"
                    for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            out.append(f"{key} {_short(a)} (now {_short(b)})")
    return out


def bytes_to_allocate(cache: "EmbeddingCache") -> int:
    """Disk bytes an incomplete cache still has to take: the holes of sparse files (caches of older versions
    or of file systems that cannot allocate ahead), at most the size of the items not yet encoded."""
    todo = len(cache) - int(np.count_nonzero(cache.filled))
    if not todo:
        return 0
    holes = 0
    for name, _, _ in cache_layout(0, 1):
        stat = (cache.folder / name).stat()
        holes += max(0, stat.st_size - 512 * getattr(stat, "st_blocks", stat.st_size // 512))
    return min(holes, todo * bytes_per_item(cache.manifest["size"]))


def _check_settings(folder: Path, wanted: dict) -> None:
    """Refuse a cache built with other settings than ``wanted`` (naming the first differences)."""
    have, want = _read_manifest(folder), json.loads(json.dumps(wanted))
    if have != want:
        shown = "; ".join(_differences(have, want)[:3])
        raise InputError(f"embedding cache {folder} was built with different settings ({shown}); use the settings it "
                         f"was built with, another --cache folder, or delete {folder} to rebuild it")


def inspect_cache(folder: PathLike, wanted: dict) -> int:
    """Check the cache in ``folder`` (if any) before it is used: an :class:`InputError` when it is damaged or
    was built with other settings than ``wanted``; returns the disk bytes it still needs."""
    folder = Path(folder)
    if not (folder / "manifest.json").exists():
        _check_without_manifest(folder)
        return bytes_per_item(wanted["size"]) * wanted["count"]  # absent, or a creation that was cut short
    _check_settings(folder, wanted)
    return bytes_to_allocate(EmbeddingCache(folder, "r"))  # checks file sizes and a sample of the values


def _allocate(path: Path, nbytes: int) -> None:
    """Create ``path`` with ``nbytes`` zero bytes taken on disk now (a sparse file where the file system
    cannot allocate ahead; the free space was checked before)."""
    with open(path, "wb") as handle:
        if nbytes and hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(handle.fileno(), 0, nbytes)
                return
            except OSError as exc:
                if is_disk_full(exc):
                    raise
        handle.truncate(nbytes)


class EmbeddingCache:
    """Memory-mapped embeddings + label maps of ``count`` items (see the module docstring); opening one checks
    that it is intact."""

    def __init__(self, folder: PathLike, mode: str = "r+") -> None:
        self.folder = Path(folder)
        if not (self.folder / "manifest.json").is_file():
            raise FileNotFoundError(f"{self.folder} is not an embedding cache (no manifest.json)")
        self.manifest = _read_manifest(self.folder)
        _check_file_sizes(self.folder, self.manifest)
        maps = [np.memmap(self.folder / name, dtype, mode, shape=shape)
                for name, dtype, shape in cache_layout(self.manifest["count"], self.manifest["size"])]
        self.embeddings, self.labels, self.targets, self.filled = maps
        self._check_values()

    def _check_values(self) -> None:
        """Refuse a cache whose flags or sampled items cannot be what the encoder and generator wrote."""
        flags = np.asarray(self.filled)
        if (flags > 1).any():
            raise _damaged(self.folder, "filled.u8 holds values other than 0 and 1")
        done = np.flatnonzero(flags)
        for i in done[np.unique(np.linspace(0, len(done) - 1, min(SAMPLE_CHECKS, len(done))).astype(int))]:
            emb = np.asarray(self.embeddings[i])
            problem = ("its embedding holds NaN or infinite values" if not np.isfinite(emb).all() else
                       "its embedding is all zeros" if not emb.any() else
                       "its label map is empty" if not np.asarray(self.labels[i]).any() else
                       f"its target label is {int(self.targets[i])}" if self.targets[i] <= 0 else "")
            if problem:
                raise _damaged(self.folder, f"image {i} is marked as encoded, but {problem}")

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
        return cls.open_matching(folder, synthetic_manifest(model.encoder_name, model.image_size, config, seed,
                                                            first, count))

    @classmethod
    def open_matching(cls, folder: PathLike, wanted: dict) -> "EmbeddingCache":
        """Open the cache in ``folder`` if its manifest equals ``wanted`` (which has ``count`` and ``size``),
        or create an empty one; a damaged cache or one built with other settings is an :class:`InputError`."""
        folder = Path(folder)
        if not (folder / "manifest.json").exists():
            _check_without_manifest(folder)
            return cls._create(folder, wanted)  # new, or a creation that was cut short (nothing encoded)
        _check_settings(folder, wanted)
        cache = cls(folder)
        needed = bytes_to_allocate(cache)
        if needed:  # an older, sparse cache: the rest of its files must fit on the disk
            check_disk_space(folder, needed, f"the rest of embedding cache {folder}", _FREE_SPACE)
        return cache

    @classmethod
    def _create(cls, folder: Path, wanted: dict) -> "EmbeddingCache":
        """An empty cache whose files take their full size on disk now (refused up front when it cannot)."""
        n, size = wanted["count"], wanted["size"]
        check_disk_space(folder, n * bytes_per_item(size), f"the embedding cache {folder} ({n} images x "
                         f"{format_bytes(bytes_per_item(size))})", _FREE_SPACE)
        existed = folder.is_dir()
        folder.mkdir(parents=True, exist_ok=True)
        made: List[Path] = []
        try:
            for name, dtype, shape in cache_layout(n, size):
                made.append(folder / name)
                _allocate(folder / name, dtype.itemsize * math.prod(shape))
            atomic_write_text(folder / "manifest.json", json.dumps(wanted, indent=1))
        except OSError as exc:
            for path in made:  # nothing was encoded into them: give the space back
                path.unlink(missing_ok=True)
            if not existed and not any(folder.iterdir()):
                folder.rmdir()
            if is_disk_full(exc):
                raise disk_full_error(folder, n, size, 0) from exc
            raise
        return cls(folder)

    @classmethod
    def fingerprinted(cls, root: PathLike, prefix: str, wanted: dict, model: PromptableModel, items: ItemSource,
                      what: str, bf16: bool = True, progress: Optional[ProgressCallback] = None,
                      cancel: Optional[CancelToken] = None) -> "EmbeddingCache":
        """The cache of ``items`` in ``root/<prefix>-<hash of wanted>`` (other settings: another folder),
        filled where it is not yet (resumable)."""
        cache = cls.open_matching(fingerprint_folder(root, prefix, wanted), wanted)
        if not cache.complete:
            cache.fill(model, bf16=bf16, progress=progress, cancel=cancel, items=items, what=what)
        return cache

    def fill(self, model: PromptableModel, batch_size: int = 2, bf16: bool = True,
             progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None,
             items: Optional[ItemSource] = None, what: str = "synthetic images") -> None:
        """Encode every item not yet filled (resumes where a previous fill stopped), ``batch_size`` at a time (on a
        CPU two side by side: :func:`synthfm.models.encoding.encode`); ``items`` defaults to the synthetic images
        described by the manifest.  A full disk stops it with an :class:`InputError`
        saying how much space the cache needs; the items written so far stay marked for the next run."""
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
            try:
                self._write(idx, emb.cpu().numpy().astype(np.float16), batch)
            except OSError as exc:
                if is_disk_full(exc):
                    raise disk_full_error(self.folder, len(self), m["size"], done) from exc
                raise
            done += len(idx)
            report(progress, done, len(self), f"encoding {what}")

    def _write(self, idx: np.ndarray, embeddings: np.ndarray, batch: List[Item]) -> None:
        """Store items ``idx``; each is marked as encoded only once its data are flushed to the files."""
        self.embeddings[idx] = embeddings
        self.labels[idx], self.targets[idx] = stack_items(batch)
        for arr in (self.embeddings, self.labels, self.targets):
            arr.flush()
        self.filled[idx] = 1
        self.filled.flush()


_FREE_SPACE = "free space there, give --cache a folder on a larger disk, or use fewer --samples"


def disk_full_error(folder: Path, count: int, size: int, done: int) -> InputError:
    """The message for a cache write that found the disk full: what the cache needs, where, and what is kept."""
    per, free = bytes_per_item(size), free_disk_bytes(folder)
    now = f", {format_bytes(free)} free now" if free is not None else ""
    return InputError(f"disk full while writing the embedding cache {folder}: it needs {count} images x "
                      f"{format_bytes(per)} = {format_bytes(count * per)} on that disk{now}; the {done} images encoded "
                      f"so far are kept; {_FREE_SPACE}, then run the same command again to continue")
