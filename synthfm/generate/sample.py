"""The generator: seeded, index-addressable 2D images and 3D volumes with their label maps."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np
from scipy import ndimage as ndi

import dataclasses

from synthfm.generate.anatomy import draw_anatomy
from synthfm.generate.appearance import Probe, draw_probe, render_image, render_image_v3
from synthfm.generate.config import GeneratorConfig
from synthfm.generate.scene import (BODY, Scene, _choice, bounding_box, draw_scene, grid, merge_labels, paint,
                                   simplify_shapes, whole_structures)
from synthfm.generate.shapes import contour_perturbation

MIN_TARGET_PIXELS = 12


@dataclass
class Sample2D:
    """One synthetic image: ``image`` float32 (H, W) in [0, 1], target ``mask``, full ``labels`` map."""

    image: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    target_label: int
    meta: Dict[str, object] = field(default_factory=dict)


@dataclass
class Sample3D:
    """One synthetic volume, arrays indexed (z, y, x); ``spacing`` in (x, y, z) millimetres."""

    image: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    target_label: int
    spacing: Tuple[float, float, float]
    meta: Dict[str, object] = field(default_factory=dict)

    def to_volume(self, array: Optional[np.ndarray] = None):
        """The image (or another array of the same shape) as a :class:`synthfm.io.Volume`."""
        from synthfm.io import Volume

        return Volume(self.image if array is None else array, self.spacing)


def _target_mask(labels: np.ndarray, target: int, owner: Dict[int, int]) -> np.ndarray:
    """The target's pixels: its label and those of its layers and parts (``owner``)."""
    parts = [target] + [label for label, top in owner.items() if top == target]
    return labels == target if len(parts) == 1 else np.isin(labels, parts)


def touches(labels: np.ndarray, target_label: int) -> bool:
    """True when another structure (not the body) is within one pixel of the target."""
    target = labels == target_label
    box = bounding_box(target, 1)  # the dilation cannot reach further
    if box is None:
        return False
    near = ndi.binary_dilation(target[box], np.ones((3,) * labels.ndim, bool))
    other = labels[box][near]
    return bool(((other != target_label) & (other > BODY)).any())


class SyntheticGenerator:
    """Draw sample ``index`` of a seeded stream; any worker or rank can draw any index independently."""

    def __init__(self, config: Optional[GeneratorConfig] = None, seed: int = 0) -> None:
        self.config = config or GeneratorConfig()
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        self.seed = int(seed)
        self.effective = effective_config(self.config)

    def _rng(self, index: int, dim: int) -> np.random.Generator:
        if index < 0:
            raise ValueError(f"sample index must be non-negative, got {index}")
        return np.random.default_rng([self.seed, int(index), dim])

    def _layout(self, rng: np.random.Generator, size: int) -> Tuple[Scene, Dict[int, np.ndarray]]:
        cfg = self.effective
        if cfg.version == 2:
            scene = draw_scene(rng, cfg, size)
        else:
            modality = _choice(rng, cfg.modality_weights)
            if rng.random() < cfg.anatomy_prob:
                scene = draw_anatomy(rng, cfg, size, modality)
            else:
                scene = draw_scene(rng, cfg, size, modality)
                scene.meta["scene"] = "primitives"
        if not cfg.shape_aware:
            simplify_shapes(scene)
        if not cfg.boundary_aware and cfg.version >= 3:
            keep_apart(scene)
        perturb = {s.label: contour_perturbation(rng, (size, size)) for s in scene.structures}
        return scene, perturb

    def _owners(self, scene: Scene) -> Dict[int, int]:
        """The labels merged into their structure once the image is drawn: version 4's layers and parts, before it
        the parts only (an organ's vessels with ``organ_vessels_prob``; none otherwise)."""
        if self.effective.version >= 4:
            return whole_structures(scene)
        return {s.label: s.part_of for s in scene.structures if s.part_of}

    def _render(self, rng, scene, labels, spacing=(1.0, 1.0), probe=None):
        draw = render_image if self.effective.version == 2 else render_image_v3
        return draw(rng, self.effective, scene, labels, spacing=spacing, probe=probe)

    def sample_2d(self, index: int) -> Sample2D:
        cfg, size = self.effective, self.config.size
        rng = self._rng(index, 2)
        xx, yy = grid(size)
        for attempt in range(50):
            scene, perturb = self._layout(rng, size)
            labels = paint(scene, xx, yy, perturb=perturb)
            probe: Optional[Probe] = draw_probe(rng, cfg, (size, size)) if scene.modality == "us" else None
            if probe is not None:
                labels[~probe.fov] = 0
            owner = self._owners(scene)
            mask = _target_mask(labels, scene.target_label, owner)
            if mask.sum() >= MIN_TARGET_PIXELS:
                break
        else:  # pragma: no cover - would mean the configuration cannot place a target
            raise RuntimeError(f"could not place a visible target in 50 attempts with {cfg}")
        image, meta = self._render(rng, scene, labels, probe=probe)
        merge_labels(labels, owner)
        meta.update(scene.meta, index=index, attempts=attempt + 1, touching=touches(labels, scene.target_label),
                    target_fraction=float(mask.mean()), preset=cfg.preset)
        return Sample2D(image, mask, labels, scene.target_label, meta)

    def sample_3d(self, index: int) -> Sample3D:
        cfg, size, depth = self.effective, self.config.size, self.config.depth
        rng = self._rng(index, 3)
        xx, yy = grid(size)
        sx = float(rng.uniform(*cfg.spacing_xy))
        sz = float(rng.uniform(*cfg.spacing_z))
        for attempt in range(50):
            scene, perturb = self._layout(rng, size)
            profiles = {s.label: _z_profile(rng, "body" if s.extent == "long" and s.role == "body" else s.role,
                                            s.shape.radius, depth, sx / sz, s.extent) for s in scene.structures}
            labels = np.stack([
                paint(scene, xx, yy,
                      scales={k: p.scale(z) for k, p in profiles.items()},
                      shifts={k: p.shift(z) for k, p in profiles.items()},
                      perturb=perturb, split=profiles[scene.target_label].split(z))
                for z in range(depth)
            ])
            probe = draw_probe(rng, cfg, (size, size)) if scene.modality == "us" else None
            if probe is not None:
                labels[:, ~probe.fov] = 0
            owner = self._owners(scene)
            mask = _target_mask(labels, scene.target_label, owner)
            mid = mask[depth // 2]
            if mid.sum() >= MIN_TARGET_PIXELS:
                break
        else:  # pragma: no cover
            raise RuntimeError("could not place a target on the middle slice in 50 attempts")
        image, meta = self._render(rng, scene, labels, spacing=(sz, sx, sx), probe=probe)
        merge_labels(labels, owner)
        present = np.nonzero(mask.any(axis=(1, 2)))[0]
        meta.update(scene.meta, index=index, attempts=attempt + 1, target_slices=(int(present[0]), int(present[-1])),
                    preset=cfg.preset)
        return Sample3D(image, mask, labels, scene.target_label, (sx, sx, sz), meta)


@dataclass
class _ZProfile:
    """How a structure's outline changes with the slice index: it appears, grows, shrinks and vanishes."""

    centre: float
    half_extent: float
    power: float
    drift: Tuple[float, float]
    splits: bool

    def _t(self, z: int) -> float:
        return (z - self.centre) / self.half_extent

    def scale(self, z: int) -> float:
        t = self._t(z)
        return float(max(0.0, 1 - t * t) ** self.power) if abs(t) < 1 else 0.0

    def shift(self, z: int) -> Tuple[float, float]:
        dz = z - self.centre
        return (self.drift[0] * dz, self.drift[1] * dz)

    def split(self, z: int) -> float:
        return 1.0 + (0.8 * abs(self._t(z)) if self.splits else 0.0)


def _z_profile(rng: np.random.Generator, role: str, radius_px: float, depth: int, xy_over_z: float,
               extent: str = "local") -> _ZProfile:
    if role == "body":
        return _ZProfile(depth / 2, depth * 4.0, 0.5, (0.0, 0.0), False)
    if extent == "long":  # runs through the volume (a vessel, the spine, a lung), drifting slowly
        drift = (float(rng.normal(0, 0.15)), float(rng.normal(0, 0.15)))
        return _ZProfile(depth / 2 + rng.uniform(-0.1, 0.1) * depth, depth * rng.uniform(1.5, 4.0), 0.3, drift, False)
    extent = float(np.clip(radius_px * xy_over_z * rng.uniform(1.0, 3.0), 3.0, depth * 0.45))
    centre = depth / 2 + (rng.uniform(-0.15, 0.15) * depth if role == "target" else rng.uniform(-0.4, 0.4) * depth)
    if role == "target":  # keep the middle slice inside the structure
        extent = max(extent, abs(centre - depth / 2) + 3.0)
    drift = (float(rng.normal(0, 0.3)), float(rng.normal(0, 0.3)))
    return _ZProfile(float(centre), extent, float(rng.uniform(0.3, 0.8)), drift, bool(rng.random() < 0.3))


def effective_config(cfg: GeneratorConfig) -> GeneratorConfig:
    """``cfg`` with the paper's ablation switches applied (the knobs each one turns off).

    ``shape_aware=False``: only ellipses (no shape variety, no anatomy scenes).  ``boundary_aware=False``:
    no touching neighbours, crossings, look-alike neighbours, blurred edges or low-contrast targets (and no
    anatomy scenes, whose packed organs touch by construction).
    """
    changes: Dict[str, object] = {}
    if not cfg.shape_aware:
        changes.update(shape_weights={"blob": 1.0}, anatomy_prob=0.0)
    if not cfg.boundary_aware:
        changes.update(touch_prob=0.0, crossing_prob=0.0, shared_intensity_prob=0.0, edge_blur_px=(0.0, 0.0),
                       low_contrast_prob=0.0, anatomy_prob=0.0)
    return dataclasses.replace(cfg, **changes) if changes else cfg


def keep_apart(scene: Scene, gap: float = 2.0) -> None:
    """Boundary-aware ablation: the target is painted first and every other structure keeps ``gap`` px from it."""
    body = [s for s in scene.structures if s.role == "body"]
    target = [s for s in scene.structures if s.role == "target"]
    others = [s for s in scene.structures if s.role not in ("body", "target")]
    for s in others:
        s.role, s.gap = "touching", gap
    scene.structures[:] = body + target + others
