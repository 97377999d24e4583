"""Boundary-aware scene layout: a body, free neighbours, the target, touching neighbours and crossings.

The layout is drawn once per sample and painted on a pixel grid in a fixed order, so a touching
neighbour keeps an exact gap (0 = touching) to the target and a crossing tube passes over it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

import numpy as np
from scipy import ndimage as ndi

from synthfm.generate.config import SHAPE_KINDS, GeneratorConfig
from synthfm.generate.shapes import Shape, draw_shape, render_levels, render_window

BODY = 1  # label of the background tissue inside the body / field of view


@dataclass
class Structure:
    """A labelled shape and its role in the scene."""

    label: int
    shape: Shape
    role: str  # "body", "free", "target", "touching", "crossing" or (anatomy) "tissue"
    gap: float = 0.0  # touching: distance kept from the target (pixels)
    tissue: str = ""  # anatomy scenes: tissue class of synthfm.generate.tissues (sets the intensity)
    layers: List[Tuple[float, int, str]] = field(default_factory=list)  # (radius fraction, label, tissue), outer first
    extent: str = "local"  # 3D: "local" appears and vanishes through the slices, "long" runs through the volume
    targetable: bool = True  # anatomy scenes: may be the target
    host: int = 0  # a lesion's host structure label (its intensity is the host's plus a contrast)
    part_of: int = 0  # version 4: label of the structure this one is a part of (a vertebra's arch), else 0
    inside: int = 0  # painted only where this label is (a vessel within its organ), else 0


@dataclass
class Scene:
    structures: List[Structure]
    target_label: int
    modality: str
    meta: Dict[str, object] = field(default_factory=dict)

    def by_role(self, role: str) -> List[Structure]:
        return [s for s in self.structures if s.role == role]


def _choice(rng: np.random.Generator, weights: Dict[str, float]) -> str:
    keys = [k for k, w in weights.items() if w > 0]
    p = np.array([weights[k] for k in keys], float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


@lru_cache(maxsize=8)
def grid(size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinate grids ``(xx, yy)`` of a ``size x size`` image (cached, read-only)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    xx.flags.writeable = yy.flags.writeable = False
    return xx, yy


def draw_scene(rng: np.random.Generator, cfg: GeneratorConfig, size: int, modality: Optional[str] = None) -> Scene:
    """Draw the layout of one sample (2D, or the middle slice of a 3D volume); ``modality`` drawn if not given."""
    modality = modality or _choice(rng, cfg.modality_weights)
    xx, yy = grid(size)
    c = size / 2
    structures: List[Structure] = []
    if modality != "us":
        body = draw_shape(rng, "blob", (c + rng.normal(0, size * 0.03), c + rng.normal(0, size * 0.03)),
                          np.pi * (size * rng.uniform(0.42, 0.55)) ** 2)
        body.harmonics[:, 0] *= 0.3
        structures.append(Structure(BODY, body, "body"))
    label = BODY + 1

    n_neighbours = int(rng.integers(cfg.neighbours[0], cfg.neighbours[1] + 1))
    n_touching = sum(rng.random() < cfg.touch_prob for _ in range(min(n_neighbours, 2))) if n_neighbours else 0
    for _ in range(n_neighbours - n_touching):
        centre = (float(rng.uniform(0.15, 0.85) * size), float(rng.uniform(0.15, 0.85) * size))
        area = _log_uniform(rng, 0.002, 0.08) * size * size
        structures.append(Structure(label, draw_shape(rng, _choice(rng, {k: 1.0 for k in SHAPE_KINDS}), centre, area),
                                    "free"))
        label += 1

    area = _log_uniform(rng, *cfg.target_area) * size * size
    kind = _choice(rng, cfg.shape_weights)
    spread = 0.25 if area < 0.1 * size * size else 0.1
    centre = (float(c + rng.uniform(-spread, spread) * size), float(c + rng.uniform(-spread, spread) * size))
    target = Structure(label, draw_shape(rng, kind, centre, area), "target")
    structures.append(target)
    target_label = label
    label += 1

    drawn = render_window(target.shape, xx, yy)
    if drawn is not None and drawn[1].any():
        window, target_mask = drawn
        ys, xs = np.nonzero(target_mask)
        xs, ys = xs + window[1].start, ys + window[0].start
        for _ in range(n_touching):
            phi = rng.uniform(0, 2 * np.pi)
            direction = np.array([np.cos(phi), np.sin(phi)])
            reach = float(((np.stack([xs, ys], 1) - centre) @ direction).max())
            gap = float(rng.uniform(*cfg.gap_px))
            n_area = _log_uniform(rng, 0.004, 0.12) * size * size
            n_radius = np.sqrt(n_area / np.pi)
            pos = np.array(centre) + direction * (reach + gap + 0.7 * n_radius)
            shape = draw_shape(rng, _choice(rng, {"blob": 2.0, "lobulated": 1.0, "tube": 1.0}), tuple(pos), n_area)
            structures.append(Structure(label, shape, "touching", gap))
            label += 1

    if rng.random() < cfg.crossing_prob:
        width = float(rng.uniform(0.01, 0.035) * size)
        tube = draw_shape(rng, "tube", (centre[0] + rng.normal(0, 0.05 * size), centre[1] + rng.normal(0, 0.05 * size)),
                          4 * width * size * 0.4)
        tube.radius = width
        tube.half_length = size * rng.uniform(0.3, 0.6)
        structures.append(Structure(label, tube, "crossing"))
        label += 1
    touching = [st.label for st in structures if st.role == "touching"]
    return Scene(structures, target_label, modality, {"modality": modality, "target_kind": kind,
                                                      "touching_labels": touching})


def bounding_box(mask: np.ndarray, pad: int = 0) -> Optional[Tuple[slice, ...]]:
    """Slices of the smallest box holding ``mask``'s True pixels, grown by ``pad`` (None if empty)."""
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hits.size == 0:
            return None
        box.append(slice(max(0, int(hits[0]) - pad), min(mask.shape[axis], int(hits[-1]) + pad + 1)))
    return tuple(box)


def paint(scene: Scene, xx: np.ndarray, yy: np.ndarray, scales: Optional[Dict[int, float]] = None,
          shifts: Optional[Dict[int, Tuple[float, float]]] = None, perturb: Optional[Dict[int, np.ndarray]] = None,
          split: float = 1.0) -> np.ndarray:
    """Paint the scene into an ``int16`` label map (0 = outside the body / field of view).

    Each structure is drawn and painted on its own bounding window only; the distance to the target
    (for the gap of touching neighbours) is computed on the target's box grown by the largest gap,
    which gives the same answer as on the whole grid for every distance that can matter.
    """
    scales, shifts, perturb = scales or {}, shifts or {}, perturb or {}
    labels = np.zeros(xx.shape, np.int16)
    if not scene.by_role("body"):
        labels[:] = BODY
    target_mask = None
    dist_to_target = None
    max_gap = max([s.gap for s in scene.structures if s.role == "touching"], default=0.0)
    for s in scene.structures:
        if s.layers:
            _paint_layers(labels, s, xx, yy, scales.get(s.label, 1.0), shifts.get(s.label, (0.0, 0.0)),
                          perturb.get(s.label))
            continue
        drawn = render_window(s.shape, xx, yy, scales.get(s.label, 1.0), shifts.get(s.label, (0.0, 0.0)),
                              perturb.get(s.label), split if s.role == "target" else 1.0)
        if drawn is None:
            if s.role == "target":
                target_mask = np.zeros(xx.shape, bool)
            continue
        window, mask = drawn
        painted = labels[window]  # a view: painting it paints the label map
        if s.role != "body":
            mask &= painted > 0  # structures live inside the body
        if s.inside:
            mask &= painted == s.inside
        if s.role == "touching" and target_mask is not None:
            if dist_to_target is None:
                dist_to_target = np.full(xx.shape, np.inf)
                box = bounding_box(target_mask, int(np.floor(max_gap)) + 2)
                if box is not None:
                    dist_to_target[box] = ndi.distance_transform_edt(~target_mask[box])
            mask &= dist_to_target[window] > s.gap
        painted[mask] = s.label
        if s.role == "target":
            target_mask = np.zeros(xx.shape, bool)
            target_mask[window] = mask
    return labels


def _paint_layers(labels: np.ndarray, s: Structure, xx, yy, scale: float, shift, perturb) -> None:
    """Paint a layered structure (body with skin/fat/muscle, bone with marrow): outline, then inner layers."""
    drawn = render_levels(s.shape, xx, yy, [f for f, _, _ in s.layers], scale, shift, perturb)
    if drawn is None:
        return
    window, mask, inner = drawn
    painted = labels[window]
    if s.role != "body":
        mask &= painted > 0
    painted[mask] = s.label
    for (_, label, _), m in zip(s.layers, inner):
        painted[m & mask] = label


def whole_structures(scene: Scene) -> Dict[int, int]:
    """``label -> owner label`` for the inner layers and parts of every structure but the body (version 4):
    a kidney with its sinus, a bone with its marrow, a vertebra with its arch are each one structure."""
    owner: Dict[int, int] = {}
    for s in scene.structures:
        if s.role == "body":
            continue
        top = s.part_of or s.label
        if s.part_of:
            owner[s.label] = top
        for _, label, _ in s.layers:
            owner[label] = top
    return owner


def merge_labels(labels: np.ndarray, owner: Dict[int, int]) -> np.ndarray:
    """``labels`` with each label in ``owner`` replaced by its owner (in place; returns ``labels``)."""
    if owner:
        lut = np.arange(max(int(labels.max()), max(owner)) + 1, dtype=labels.dtype)
        for label, top in owner.items():
            lut[label] = top
        labels[...] = lut[labels]
    return labels


def simplify_shapes(scene: Scene) -> None:
    """Shape-aware ablation: every structure but the body becomes a plain ellipse of about the same size."""
    for s in scene.structures:
        if s.role == "body":
            continue
        shape = s.shape
        if shape.kind == "tube":
            shape.radius = float(np.sqrt(max(4 * shape.radius * shape.half_length, 1.0) / np.pi))
        shape.kind, shape.parts, shape.holes, shape.inner, shape.wobble = "blob", [], [], 0.0, 0.0
        shape.harmonics = np.zeros((0, 2))
        s.layers = []


def ring_weights(labels: np.ndarray, target: int, width: int = 3) -> np.ndarray:
    """Share of each label in a ring ``width`` px around the target (2D): what the target is seen against."""
    mask = labels == target
    box = bounding_box(mask, width + 1)
    if box is None:
        return np.zeros(int(labels.max()) + 1)
    sub = mask[box]
    ring = ndi.binary_dilation(sub, iterations=width) & ~sub
    counts = np.bincount(labels[box][ring].ravel(), minlength=int(labels.max()) + 1).astype(float)
    return counts / max(counts.sum(), 1.0)
