"""Neighbouring-slice pairs from synthetic 3D volumes: teach the decoder to follow a structure, and to stop.

Propagation prompts slice ``k + s`` with what was found on slice ``k``.  A decoder trained only on single
2D images never sees that situation, least of all past the structure's end, where the right answer is an
empty mask.  Each item here is slice ``k + s`` of a generated volume (image, label map, target label) plus
the target's mask on slice ``k`` (the prompt source), stored in bit :data:`PREVIOUS_BIT` of the label map
so the items fit the ordinary :class:`~synthfm.train.embed_cache.EmbeddingCache`.  Per volume the items
are: one slice past each end of the target (empty target), each end slice prompted from its inner
neighbour, and interior pairs.  Images are windowed with the whole volume's percentiles, as
:class:`~synthfm.segment.VolumeSegmenter` windows them at inference.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
from scipy import ndimage as ndi

from synthfm.generate import GeneratorConfig, SyntheticGenerator
from synthfm.generate.sample import Sample3D
from synthfm.models.sam import PromptableModel
from synthfm.segment.preprocess import intensity_range, normalize
from synthfm.train.batches import Batch, assemble
from synthfm.train.embed_cache import EmbeddingCache, Item
from synthfm.train.prompt_sim import simulate
from synthfm.utils.masks import box_region, tight_box
from synthfm.utils.progress import CancelToken, ProgressCallback

PREVIOUS_BIT = 1 << 14  # label-map bit: the target's mask on the neighbouring (prompting) slice
PER_VOLUME = 6  # past top end, past bottom end, top end, bottom end, two interior pairs
PAST_END_ROLES = 2  # roles below this are the slices past the ends (interior pairs where an end is missing)
MODES = ("box", "box_point")  # what propagation gives the next slice


def split_labels(labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(label map of the slice, the target's mask on the prompting neighbour) of stored item label maps."""
    labels = np.asarray(labels)
    return labels & ~PREVIOUS_BIT, (labels & PREVIOUS_BIT) != 0


def pair(sample: Sample3D, role: int, rng: np.random.Generator) -> Tuple[int, int]:
    """(slice, prompting slice) of item ``role`` for ``sample``'s target; interior pairs when an end is missing."""
    z0, z1 = sample.meta["target_slices"]
    depth = sample.mask.shape[0]
    ends = {0: (z1 + 1, z1), 1: (z0 - 1, z0), 2: (z1, z1 - 1), 3: (z0, z0 + 1)}
    cur, prev = ends.get(role, (-1, -1))
    if 0 <= cur < depth and z0 <= prev <= z1 and sample.mask[prev].any():
        return cur, prev
    present = np.nonzero(sample.mask.any(axis=(1, 2)))[0]
    prev = int(rng.choice(present))
    cur = prev + (1 if rng.random() < 0.5 else -1)
    return (cur, prev) if 0 <= cur < depth else (prev - (cur - prev), prev)


class NeighbourItems:
    """Items ``i`` = role ``i % PER_VOLUME`` of 3D volume ``first + i // PER_VOLUME`` of a generator."""

    def __init__(self, config: GeneratorConfig, seed: int, first: int = 0) -> None:
        self.generator, self.seed, self.first = SyntheticGenerator(config, seed), seed, first
        self._last: Optional[Tuple[int, Sample3D, Tuple[float, float]]] = None

    def _volume(self, v: int) -> Tuple[Sample3D, Tuple[float, float]]:
        if self._last is None or self._last[0] != v:
            sample = self.generator.sample_3d(self.first + v)
            self._last = (v, sample, intensity_range(sample.image, "percentile"))
        return self._last[1], self._last[2]

    def __call__(self, idx: np.ndarray) -> List[Item]:
        items = []
        for i in idx:
            v, role = divmod(int(i), PER_VOLUME)
            sample, (lo, hi) = self._volume(v)
            cur, prev = pair(sample, role, np.random.default_rng([self.seed, self.first + v, role]))
            labels = sample.labels[cur].astype(np.int16) | np.where(sample.mask[prev], PREVIOUS_BIT, 0).astype(np.int16)
            items.append((normalize(sample.image[cur], lo, hi), labels, sample.target_label))
        return items


def neighbour_manifest(encoder: str, image_size: int, config: GeneratorConfig, seed: int, volumes: int,
                       first: int = 0) -> dict:
    """What the cache of ``volumes`` volumes' neighbour items records about itself (its folder's fingerprint)."""
    return {"format": "synthfm-embeddings", "kind": "neighbours", "encoder": encoder, "image_size": image_size,
            "generator": config.to_dict(), "seed": seed, "first": first, "per_volume": PER_VOLUME,
            "count": volumes * PER_VOLUME, "size": config.size}


def neighbour_cache(root: Path, model: PromptableModel, config: GeneratorConfig, seed: int, volumes: int,
                    bf16: bool = True, progress: Optional[ProgressCallback] = None,
                    cancel: Optional[CancelToken] = None, first: int = 0) -> EmbeddingCache:
    """Encode ``volumes x PER_VOLUME`` neighbour items once into ``root/neighbours-<fingerprint>`` and open it."""
    wanted = neighbour_manifest(model.encoder_name, model.image_size, config, seed, volumes, first)
    return EmbeddingCache.fingerprinted(root, "neighbours", wanted, model, NeighbourItems(config, seed, first),
                                        "neighbouring slices of synthetic volumes", bf16, progress, cancel)


def carried_logits(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """Logits like those propagation carries from the previous slice as the next one's mask prompt, for the
    structure's ``mask`` there (pixel frame): the mask grown or shrunk by up to 2 px (the previous answer's own
    error), rising with the distance inside its edge to a plateau and falling outside it as the decoder's do
    (measured on the shipped decoder's box answers: about +2 at 1 px inside, +5 from 4 px on, -4 at 1 px outside),
    and -20 outside the box it was clipped to (the previous prompt box: the mask's box grown by 5-15 % + 2 px)."""
    mask = np.asarray(mask, bool)
    grow = int(rng.integers(-2, 3))
    if grow and mask.any():
        moved = (ndi.binary_dilation(mask, iterations=grow) if grow > 0 else ndi.binary_erosion(mask, iterations=-grow))
        mask = moved if moved.any() else mask
    if not mask.any():
        return np.full(mask.shape, -20.0, np.float32)
    inside, outside = ndi.distance_transform_edt(mask), ndi.distance_transform_edt(~mask)
    slope_in, plateau, slope_out = rng.uniform(1.0, 3.0), rng.uniform(3.0, 8.0), rng.uniform(2.0, 6.0)
    logits = np.where(mask, np.minimum(slope_in * (inside - 0.5), plateau),
                      np.maximum(-slope_out * (outside - 0.5), -20.0))
    x0, y0, x1, y1 = tight_box(mask)
    mx, my = rng.uniform(0.05, 0.15) * np.array([x1 - x0 + 1, y1 - y0 + 1]) + 2
    clip = box_region(mask.shape, (x0 - mx, y0 - my, np.floor(x1 + mx), np.floor(y1 + my)))  # whole pixels inside
    return np.where(clip, logits, -20.0).astype(np.float32)


def make_neighbour_batch(rng: np.random.Generator, labels: np.ndarray, targets: np.ndarray, index: np.ndarray,
                         transform, mode: str, with_mask: bool = False) -> Batch:
    """Targets: the structure on each slice (empty past its end); prompts: from its mask on the neighbour (with
    ``with_mask`` also that mask as simulated logits, the first round's mask prompt: :func:`carried_logits`, and
    three candidate masks trained min-over-masks: propagation's steps choose among the three, ``pick_closest``)."""
    current, previous = split_labels(labels)
    masks = [current[k] == int(targets[k]) for k in range(len(index))]
    prompts = [simulate(rng, previous[k], current[k], mode) for k in range(len(index))]
    batch = assemble(index, masks, prompts, transform, multimask=with_mask)
    if with_mask:
        batch.mask_inputs = torch.stack([lowres_logits(transform, carried_logits(rng, previous[k]))
                                         for k in range(len(index))])[:, None]
    return batch


def lowres_logits(transform, logits: np.ndarray) -> torch.Tensor:
    """Pixel-frame logits -> the decoder's low-res frame (resized as masks are, the padding at -20: outside)."""
    lowres = transform.mask_to_lowres(logits + 20.0)
    return lowres - 20.0
