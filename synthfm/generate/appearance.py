"""Appearance: per-structure intensity and texture, clutter, bias, gamma, blur, and modality noise.

Works on 2D images and 3D volumes alike (``spacing`` scales blur per axis).  The noise families
follow the physics loosely: CT has additive Gaussian noise and optional streaks, MR is Rician with a
strong bias field, ultrasound has multiplicative speckle, depth attenuation, acoustic shadows and a
fan-shaped field of view.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage as ndi

from synthfm.generate.config import GeneratorConfig
from synthfm.generate.fields import multiscale_field, smooth_field
from synthfm.generate.scene import BODY, Scene


def assign_intensities(rng: np.random.Generator, cfg: GeneratorConfig, scene: Scene, n_labels: int
                       ) -> Tuple[np.ndarray, np.ndarray, Dict[str, float]]:
    """Mean intensity and texture amplitude per label; the target's contrast to its surroundings is controlled."""
    values = rng.uniform(0.05, 0.95, n_labels).astype(np.float32)
    values[0] = rng.uniform(0.0, 0.06) if scene.modality != "us" else 0.0
    values[BODY] = rng.uniform(0.2, 0.7)
    texture = rng.uniform(*cfg.texture, n_labels).astype(np.float32)
    texture[0] = 0.0
    touching = scene.by_role("touching")
    reference = values[touching[0].label] if touching else values[BODY]
    low = rng.random() < cfg.low_contrast_prob
    contrast = float(rng.uniform(*(cfg.low_contrast if low else cfg.contrast)))
    sign = rng.choice([-1.0, 1.0])
    if not 0.02 <= reference + sign * contrast <= 0.98:
        sign = -sign
    t = scene.target_label
    values[t] = np.clip(reference + sign * contrast, 0.0, 1.0)
    shared = bool(touching) and rng.random() < cfg.shared_intensity_prob
    if shared:  # a neighbour that looks like the target: only the shape tells them apart
        values[touching[-1].label] = values[t] + rng.normal(0, 0.01)
    return values, texture, {"contrast": abs(float(values[t] - reference)), "low_contrast": bool(low),
                             "shared_intensity": shared}


def _gaussian(image: np.ndarray, sigma_px: float, spacing: Sequence[float]) -> np.ndarray:
    if sigma_px <= 0.05:
        return image
    sig = [sigma_px * spacing[-1] / s for s in spacing]  # physical blur, in voxels of each axis
    return ndi.gaussian_filter(image, sig, truncate=3.0)


@dataclass
class Probe:
    """Ultrasound acquisition geometry on the image plane: field of view, depth and beam angle per pixel."""

    fov: np.ndarray  # bool: inside the imaged sector
    depth: np.ndarray  # 0 at the probe surface .. 1 at the deepest imaged point
    beam: np.ndarray  # beam direction (angle for a fan, x position for a linear probe)


def draw_probe(rng: np.random.Generator, cfg: GeneratorConfig, shape: Tuple[int, int]) -> Probe:
    """A curvilinear (fan-shaped) probe with probability ``fan_prob``, else a linear probe."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() >= cfg.fan_prob:
        return Probe(np.ones(shape, bool), yy / (h - 1), xx)
    apex_y = -rng.uniform(0.05, 0.3) * h
    half = rng.uniform(0.45, 0.75)
    r = np.hypot(xx - w / 2, yy - apex_y)
    theta = np.arctan2(xx - w / 2, yy - apex_y)
    r0 = -apex_y + rng.uniform(0.0, 0.05) * h
    r1 = r0 + h * rng.uniform(0.85, 1.0)
    fov = (np.abs(theta) < half) & (r > r0) & (r < r1)
    return Probe(fov, np.clip((r - r0) / (r1 - r0), 0, 1), theta)


def shadow_mask(probe: Probe, structure: np.ndarray) -> np.ndarray:
    """Pixels behind ``structure`` as seen from the probe: same beams, greater depth."""
    if not structure.any():
        return np.zeros(structure.shape, bool)
    beams = probe.beam[structure]
    return (probe.beam >= beams.min()) & (probe.beam <= beams.max()) & (probe.depth > probe.depth[structure].max())


def render_image(rng: np.random.Generator, cfg: GeneratorConfig, scene: Scene, labels: np.ndarray,
                 spacing: Sequence[float] = (1.0, 1.0), probe: Optional[Probe] = None) -> Tuple[np.ndarray, Dict[str, object]]:
    """Intensity image (float32 in [0, 1]) for a painted label map, and what was drawn."""
    n_labels = int(labels.max()) + 1
    n_all = max([n_labels] + [s.label + 1 for s in scene.structures])
    values, texture, meta = assign_intensities(rng, cfg, scene, n_all)
    shape = labels.shape
    f1, f2 = multiscale_field(rng, shape), multiscale_field(rng, shape, scales=(6, 16, 40))
    mix = rng.uniform(-1, 1, len(values)).astype(np.float32)
    image = values[labels] + texture[labels] * (f1 + mix[labels] * f2)
    clutter = float(rng.uniform(*cfg.clutter))
    if clutter > 0:
        image += clutter * np.where(labels == BODY, multiscale_field(rng, shape, scales=(10, 30)), 0)
    edge = float(rng.uniform(*cfg.edge_blur_px))
    blur = float(rng.uniform(*cfg.blur_px))
    image = _gaussian(image, float(np.hypot(edge, blur)), spacing)

    modality = scene.modality
    bias = float(rng.uniform(*cfg.bias)) * {"ct": 0.1, "mr": 1.0, "us": 0.4}[modality]
    if bias > 0:
        image *= np.exp(bias * smooth_field(rng, shape, 3))
    image = np.clip(image, 0, None)
    gamma = float(rng.uniform(*cfg.gamma))
    image = np.clip(image, 0, 1) ** gamma
    sigma = float(rng.uniform(*cfg.noise))
    noise_meta: Dict[str, object] = {"noise": sigma}
    if modality == "ct":
        image = image + sigma * rng.standard_normal(shape, dtype=np.float32)
        if rng.random() < cfg.streak_prob:
            image = image + _streaks(rng, shape[-2:]) * rng.uniform(0.03, 0.12)
            noise_meta["streaks"] = True
    elif modality == "mr":
        n1 = sigma * rng.standard_normal(shape, dtype=np.float32)
        n2 = sigma * rng.standard_normal(shape, dtype=np.float32)
        image = np.sqrt((image + n1) ** 2 + n2 ** 2)
    else:
        speckle = float(rng.uniform(*cfg.speckle))
        image = image * (1 + speckle * _speckle(rng, shape))
        image = image + 0.3 * sigma * rng.standard_normal(shape, dtype=np.float32)
        noise_meta["speckle"] = speckle
        if probe is not None:
            att = float(rng.uniform(*cfg.attenuation))
            image = image * np.exp(-att * probe.depth)
            noise_meta["attenuation"] = att
            others = [s.label for s in scene.structures if s.role in ("free", "touching")]
            if others and labels.ndim == 2 and rng.random() < cfg.shadow_prob:  # a strong reflector casts an acoustic shadow
                caster = labels == others[int(rng.integers(len(others)))]
                image = np.where(shadow_mask(probe, caster), image * rng.uniform(0.1, 0.4), image)
                noise_meta["shadow"] = True
    if probe is not None:
        image = np.where(probe.fov, image, 0.0)
    meta.update(noise_meta, gamma=gamma, edge_blur=edge, bias=bias)
    return np.clip(image, 0, 1).astype(np.float32), meta


def _speckle(rng: np.random.Generator, shape: Tuple[int, ...]) -> np.ndarray:
    """Zero-mean, unit-variance speckle: magnitude of blurred complex noise (Rayleigh), elongated laterally."""
    sig = [0.0] * (len(shape) - 2) + [0.7, 1.4]
    re = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sig)
    im = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sig)
    mag = np.sqrt(re * re + im * im)
    return (mag - mag.mean()) / mag.std()


def _streaks(rng: np.random.Generator, shape2d: Tuple[int, int]) -> np.ndarray:
    """Bright/dark lines radiating from a dense object (CT beam-hardening / metal streaks)."""
    h, w = shape2d
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    x0, y0 = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    out = np.zeros((h, w), np.float32)
    for angle in rng.uniform(0, np.pi, int(rng.integers(3, 8))):
        d = np.abs((xx - x0) * np.sin(angle) - (yy - y0) * np.cos(angle))
        out += rng.choice([-1.0, 1.0]) * np.exp(-0.5 * (d / rng.uniform(0.5, 2.0)) ** 2)
    return out
