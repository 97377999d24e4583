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
from synthfm.generate.fields import gaussian_noise, multiscale_field, smooth_field
from synthfm.generate.scene import BODY, Scene


def assign_intensities(rng: np.random.Generator, cfg: GeneratorConfig, scene: Scene, n_labels: int,
                       min_contrast: float = 0.0) -> Tuple[np.ndarray, np.ndarray, Dict[str, float]]:
    """Mean intensity and texture amplitude per label; the target's contrast to its surroundings is controlled
    (and at least ``min_contrast``: version 3 keeps targets above the noise)."""
    values = rng.uniform(0.05, 0.95, n_labels).astype(np.float32)
    values[0] = rng.uniform(0.0, 0.06) if scene.modality != "us" else 0.0
    values[BODY] = rng.uniform(0.2, 0.7)
    texture = rng.uniform(*cfg.texture, n_labels).astype(np.float32)
    texture[0] = 0.0
    touching = scene.by_role("touching")
    reference = values[touching[0].label] if touching else values[BODY]
    low = rng.random() < cfg.low_contrast_prob
    contrast = max(float(rng.uniform(*(cfg.low_contrast if low else cfg.contrast))), min_contrast)
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
    x = np.arange(w, dtype=np.float32)[None, :]
    y = np.arange(h, dtype=np.float32)[:, None]
    if rng.random() >= cfg.fan_prob:
        return Probe(np.ones(shape, bool), np.broadcast_to(y / np.float32(h - 1), shape), np.broadcast_to(x, shape))
    apex_y = -rng.uniform(0.05, 0.3) * h
    half = rng.uniform(0.45, 0.75)
    dx, dy = x - np.float32(w / 2), y - np.float32(apex_y)
    r = np.hypot(dx, dy)
    theta = np.arctan2(dx, dy)
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


def textured(rng: np.random.Generator, labels: np.ndarray, values: np.ndarray, texture: np.ndarray) -> np.ndarray:
    """Per label: ``values + texture * (f1 + mix * f2)`` with two multi-scale smooth fields (versions 2 and 3)."""
    f1, f2 = multiscale_field(rng, labels.shape), multiscale_field(rng, labels.shape, scales=(6, 16, 40))
    mix = rng.uniform(-1, 1, len(values)).astype(np.float32)
    image = np.take(texture, labels)
    image *= f1
    f2 *= np.take(texture * mix, labels)
    image += f2
    image += np.take(values, labels)
    return image


def render_image(rng: np.random.Generator, cfg: GeneratorConfig, scene: Scene, labels: np.ndarray,
                 spacing: Sequence[float] = (1.0, 1.0), probe: Optional[Probe] = None) -> Tuple[np.ndarray, Dict[str, object]]:
    """Intensity image (float32 in [0, 1]) for a painted label map, and what was drawn.

    float32 throughout, updated in place where possible (each full-image pass costs about as much
    as drawing a small structure).
    """
    n_labels = int(labels.max()) + 1
    n_all = max([n_labels] + [s.label + 1 for s in scene.structures])
    values, texture, meta = assign_intensities(rng, cfg, scene, n_all)
    shape = labels.shape
    image = textured(rng, labels, values, texture)
    clutter = float(rng.uniform(*cfg.clutter))
    if clutter > 0:
        field = multiscale_field(rng, shape, scales=(10, 30))
        field *= np.float32(clutter)
        field *= labels == BODY
        image += field
    edge = float(rng.uniform(*cfg.edge_blur_px))
    blur = float(rng.uniform(*cfg.blur_px))
    image = _gaussian(image, float(np.hypot(edge, blur)), spacing)

    modality = scene.modality
    bias = float(rng.uniform(*cfg.bias)) * {"ct": 0.1, "mr": 1.0, "us": 0.4}[modality]
    if bias > 0:
        field = smooth_field(rng, shape, 3)
        field *= np.float32(bias)
        image *= np.exp(field, out=field)
    gamma = float(rng.uniform(*cfg.gamma))
    np.clip(image, 0, 1, out=image)
    np.power(image, np.float32(gamma), out=image)
    sigma = float(rng.uniform(*cfg.noise))
    noise_meta: Dict[str, object] = {"noise": sigma}
    if modality == "ct":
        _ct_noise(rng, cfg, image, sigma, noise_meta)
    elif modality == "mr":  # Rician: magnitude of a complex signal with Gaussian noise in both channels
        _rician_noise(rng, image, sigma)
    else:
        speckle = float(rng.uniform(*cfg.speckle))
        field = _speckle(rng, shape)
        field *= np.float32(speckle)
        field += np.float32(1.0)
        image *= field
        noise = gaussian_noise(rng, shape)
        noise *= np.float32(0.3 * sigma)
        image += noise
        noise_meta["speckle"] = speckle
        if probe is not None:
            att = float(rng.uniform(*cfg.attenuation))
            image *= np.exp(np.float32(-att) * probe.depth)
            noise_meta["attenuation"] = att
            others = [s.label for s in scene.structures if s.role in ("free", "touching")]
            if others and labels.ndim == 2 and rng.random() < cfg.shadow_prob:  # a strong reflector casts an acoustic shadow
                caster = labels == others[int(rng.integers(len(others)))]
                shadow = shadow_mask(probe, caster)
                image[shadow] *= np.float32(rng.uniform(0.1, 0.4))
                noise_meta["shadow"] = True
    if probe is not None:
        image *= probe.fov
    meta.update(noise_meta, gamma=gamma, edge_blur=edge, bias=bias)
    return np.clip(image, 0, 1, out=image), meta


def _ct_noise(rng: np.random.Generator, cfg: GeneratorConfig, image: np.ndarray, sigma: float,
              noise_meta: Dict[str, object]) -> None:
    """In place: Gaussian noise, and streak artefacts with ``cfg.streak_prob`` (versions 2 and 3)."""
    noise = gaussian_noise(rng, image.shape)
    noise *= np.float32(sigma)
    image += noise
    if rng.random() < cfg.streak_prob:
        image += _streaks(rng, image.shape[-2:]) * np.float32(rng.uniform(0.03, 0.12))
        noise_meta["streaks"] = True


def _rician_noise(rng: np.random.Generator, image: np.ndarray, sigma: float) -> None:
    """In place: MR magnitude of a complex signal with Gaussian noise in both channels."""
    n1, n2 = gaussian_noise(rng, image.shape), gaussian_noise(rng, image.shape)
    n1 *= np.float32(sigma)
    image += n1
    np.square(image, out=image)
    n2 *= np.float32(sigma)
    np.square(n2, out=n2)
    image += n2
    np.sqrt(image, out=image)


def _speckle(rng: np.random.Generator, shape: Tuple[int, ...]) -> np.ndarray:
    """Zero-mean, unit-variance speckle: magnitude of blurred complex noise (Rayleigh), elongated laterally."""
    sig = [0.0] * (len(shape) - 2) + [0.7, 1.4]
    re = ndi.gaussian_filter(gaussian_noise(rng, shape), sig)
    im = ndi.gaussian_filter(gaussian_noise(rng, shape), sig)
    np.square(re, out=re)
    re += np.square(im, out=im)
    mag = np.sqrt(re, out=re)
    mag -= mag.mean()
    mag /= mag.std()
    return mag


def _streaks(rng: np.random.Generator, shape2d: Tuple[int, int]) -> np.ndarray:
    """Bright/dark lines radiating from a dense object (CT beam-hardening / metal streaks)."""
    h, w = shape2d
    x0, y0 = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    x = np.arange(w, dtype=np.float32)[None, :] - np.float32(x0)
    y = np.arange(h, dtype=np.float32)[:, None] - np.float32(y0)
    out = np.zeros((h, w), np.float32)
    for angle in rng.uniform(0, np.pi, int(rng.integers(3, 8))):
        sign = rng.choice([-1.0, 1.0])
        d = x * np.float32(np.sin(angle)) - y * np.float32(np.cos(angle))  # signed distance to the line
        d *= np.float32(1.0 / rng.uniform(0.5, 2.0))
        np.square(d, out=d)
        d *= np.float32(-0.5)
        np.exp(d, out=d)
        if sign < 0:
            out -= d
        else:
            out += d
    return out


# ------------------------------------------------------------------------------------------------ version 3
def _tissue_labels(scene: Scene) -> Dict[int, Tuple[str, int]]:
    """``label -> (tissue, host label)`` of an anatomy scene, layers included."""
    out = {}
    for s in scene.structures:
        out[s.label] = (s.tissue, s.host)
        for _, label, tissue in s.layers:
            out[label] = (tissue, 0)
    return out


def _lesion_reference(scene: Scene) -> int:
    """Label a lesion without a host sits in: the body's innermost layer (or the body)."""
    body = scene.structures[0]
    return body.layers[-1][1] if body.layers else body.label


def _noise_scale(rng: np.random.Generator, cfg: GeneratorConfig, modality: str, window_width: float) -> float:
    """Noise std relative to [0, 1]: CT 4-25 HU through the window, MR/US from ``cfg.noise``."""
    if modality == "ct":
        return float(rng.uniform(4.0, 25.0) / window_width)
    return float(rng.uniform(*cfg.noise))


def anatomy_intensities(rng: np.random.Generator, cfg: GeneratorConfig, scene: Scene, n_labels: int,
                        ring: np.ndarray) -> Tuple[np.ndarray, np.ndarray, Dict[str, object]]:
    """Tissue values from a drawn protocol (CT window, MR sequence, US echogenicity), lesions at a drawn contrast,
    the target kept at least ``min_cnr`` noise std from what surrounds it (``ring``: label shares around it)."""
    from synthfm.generate.tissues import TISSUES, draw_protocol, tissue_value

    tissues = _tissue_labels(scene)
    t = scene.target_label
    for attempt in range(4):
        protocol = draw_protocol(rng, scene.modality)
        values = np.zeros(n_labels, np.float32)
        if scene.modality == "ct":
            values[0] = tissue_value(rng, "air", protocol)
        for label, (tissue, _) in tissues.items():
            if tissue != "lesion":
                values[label] = tissue_value(rng, tissue, protocol)
        if scene.modality == "mr":
            values *= np.float32(rng.uniform(0.75, 0.95) / max(float(values.max()), 1e-6))
        sigma = _noise_scale(rng, cfg, scene.modality, protocol.window[1])
        speckle = float(rng.uniform(*cfg.speckle)) if scene.modality == "us" else 0.0
        low = bool(rng.random() < cfg.low_contrast_prob)
        for label, (tissue, host) in tissues.items():
            if tissue == "lesion":
                ref = float(values[host or _lesion_reference(scene)])
                noise = sigma if scene.modality != "us" else 0.5 * speckle * max(ref, 0.1)
                c = max(float(rng.uniform(*(cfg.low_contrast if low and label == t else cfg.contrast))),
                        cfg.min_cnr * noise)
                sign = rng.choice([-1.0, 1.0])
                if not 0.02 <= ref + sign * c <= 0.98:
                    sign = -sign
                values[label] = np.clip(ref + sign * c, 0, 1)
        around = float(np.dot(ring[:n_labels], values[:len(ring)])) if ring.sum() > 0 else float(values[0])
        noise = sigma if scene.modality != "us" else 0.5 * speckle * max(around, 0.1)
        contrast = abs(float(values[t]) - around)
        if contrast >= cfg.min_cnr * noise:
            break
    else:  # still under the noise: lift the target just above it (the outline must be visible)
        need = cfg.min_cnr * noise
        values[t] = np.clip(around + (need if values[t] >= around else -need), 0, 1)
        contrast = abs(float(values[t]) - around)
    texture = np.zeros(n_labels, np.float32)
    amp = float(rng.uniform(*cfg.texture))
    for label, (tissue, _) in tissues.items():
        texture[label] = amp * (TISSUES[tissue].texture if tissue in TISSUES else rng.uniform(0.2, 1.0))
    return values, texture, {"contrast": contrast, "low_contrast": low, "protocol": protocol.describe(),
                             "noise": sigma, "speckle": speckle, "protocol_attempts": attempt + 1}


def _behind(probe: Probe, structure: np.ndarray) -> np.ndarray:
    """Shadow-like region behind ``structure`` (2D or each slice of 3D)."""
    if structure.ndim == 2:
        return shadow_mask(probe, structure)
    return np.stack([shadow_mask(probe, s) for s in structure])


def render_image_v3(rng: np.random.Generator, cfg: GeneratorConfig, scene: Scene, labels: np.ndarray,
                    spacing: Sequence[float] = (1.0, 1.0), probe: Optional[Probe] = None
                    ) -> Tuple[np.ndarray, Dict[str, object]]:
    """Version 3 rendering: tissue intensities for anatomy scenes (primitive scenes as version 2, with the
    target kept above the noise), the same texture/blur/bias/noise families, and ultrasound physics:
    shadows behind bone and gas, posterior enhancement behind fluid, lateral resolution falling with depth."""
    from synthfm.generate.scene import ring_weights
    from synthfm.generate.tissues import TISSUES

    modality = scene.modality
    n_all = max([int(labels.max()) + 1] + [s.label + 1 for s in scene.structures]
                + [lab + 1 for s in scene.structures for _, lab, _ in s.layers])
    mid = labels if labels.ndim == 2 else labels[labels.shape[0] // 2]
    anatomy = any(s.tissue for s in scene.structures)
    if anatomy:
        values, texture, meta = anatomy_intensities(rng, cfg, scene, n_all, ring_weights(mid, scene.target_label))
        sigma = float(meta["noise"])
    else:
        sigma = float(rng.uniform(*cfg.noise))
        speckle = float(rng.uniform(*cfg.speckle)) if modality == "us" else 0.0
        floor = cfg.min_cnr * (sigma if modality != "us" else 0.25 * speckle)
        values, texture, meta = assign_intensities(rng, cfg, scene, n_all, floor)
        meta.update(noise=sigma, speckle=speckle)
    shape = labels.shape
    image = textured(rng, labels, values, texture)
    clutter = float(rng.uniform(*cfg.clutter)) if not anatomy else 0.0
    if clutter > 0:
        field = multiscale_field(rng, shape, scales=(10, 30))
        field *= np.float32(clutter)
        field *= labels == BODY
        image += field
    if modality == "us" and probe is not None:  # reflectors shadow what lies behind them, fluid enhances it
        tissues = _tissue_labels(scene) if anatomy else {}
        for label, (tissue, _) in tissues.items():
            t = TISSUES.get(tissue)
            if t is not None and (t.shadow or t.enhance) and (labels == label).sum() > 20:
                region = _behind(probe, labels == label) & (labels != label)
                image[region] *= np.float32(rng.uniform(0.05, 0.3) if t.shadow else rng.uniform(1.15, 1.6))
    edge = float(rng.uniform(*cfg.edge_blur_px))
    blur = float(rng.uniform(*cfg.blur_px))
    image = _gaussian(image, float(np.hypot(edge, blur)), spacing)
    bias = float(rng.uniform(*cfg.bias)) * {"ct": 0.1, "mr": 1.0, "us": 0.4}[modality]
    if bias > 0:
        field = smooth_field(rng, shape, 3)
        field *= np.float32(bias)
        image *= np.exp(field, out=field)
    gamma = float(rng.uniform(*cfg.gamma)) if modality != "ct" else 1.0  # CT is linear in HU
    np.clip(image, 0, 1, out=image)
    if gamma != 1.0:
        np.power(image, np.float32(gamma), out=image)
    noise_meta: Dict[str, object] = {}
    if modality == "ct":
        _ct_noise(rng, cfg, image, sigma, noise_meta)
    elif modality == "mr":
        _rician_noise(rng, image, sigma)
    else:
        field = _speckle(rng, shape)
        field *= np.float32(meta["speckle"])
        field += np.float32(1.0)
        image *= field
        if probe is not None:  # lateral resolution falls with depth: blend towards a laterally blurred copy
            far = ndi.gaussian_filter1d(image, float(rng.uniform(1.0, 3.0)), axis=-1)
            depth = probe.depth.astype(np.float32)
            far -= image
            far *= depth
            image += far
            att = float(rng.uniform(*cfg.attenuation))
            image *= np.exp(np.float32(-att) * depth)
            noise_meta["attenuation"] = att
        noise = gaussian_noise(rng, shape)
        noise *= np.float32(0.3 * sigma)
        image += noise
    if probe is not None:
        image *= probe.fov
    meta.update(noise_meta, gamma=gamma, edge_blur=edge, bias=bias)
    return np.clip(image, 0, 1, out=image), meta
