"""Every knob of the synthetic generator, with modality-like presets and validation."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Tuple

Range = Tuple[float, float]
SHAPE_KINDS = ("blob", "lobulated", "tube", "rim", "holes", "multipart")
MODALITIES = ("ct", "mr", "us")
GENERATOR_VERSION = 2  # bump when the same seed would give different images (2: float32 outlines, Box-Muller noise)


@dataclass
class GeneratorConfig:
    """Parameters of the analytical image generator (ranges are sampled uniformly per image)."""

    size: int = 256  # 2D image side / 3D in-plane side (pixels)
    depth: int = 64  # 3D slices
    modality_weights: Dict[str, float] = field(default_factory=lambda: {"ct": 1.0, "mr": 1.0, "us": 1.0})
    shape_weights: Dict[str, float] = field(default_factory=lambda: {k: 1.0 for k in SHAPE_KINDS})
    target_area: Range = (0.003, 0.45)  # fraction of the image covered by the target (log-uniform)
    neighbours: Tuple[int, int] = (2, 6)  # number of other structures
    touch_prob: float = 0.6  # probability that a neighbour touches or nearly touches the target
    gap_px: Range = (0.0, 3.0)  # gap between the target and a touching neighbour
    crossing_prob: float = 0.2  # probability of a tube crossing over the target
    shared_intensity_prob: float = 0.3  # a neighbour with (almost) the target's intensity
    low_contrast_prob: float = 0.4  # target/surroundings contrast drawn from low_contrast instead of contrast
    contrast: Range = (0.08, 0.5)
    low_contrast: Range = (0.02, 0.08)
    edge_blur_px: Range = (0.0, 3.0)  # partial volume: Gaussian sigma of the edges
    texture: Range = (0.0, 0.12)  # amplitude of multi-scale smooth texture per structure
    clutter: Range = (0.0, 0.15)  # amplitude of background clutter
    bias: Range = (0.0, 0.4)  # amplitude of the low-frequency multiplicative bias field
    gamma: Range = (0.7, 1.5)
    blur_px: Range = (0.0, 1.2)  # global resolution loss
    noise: Range = (0.01, 0.08)  # additive / Rician noise std (relative to the [0, 1] range)
    speckle: Range = (0.25, 0.6)  # ultrasound multiplicative speckle strength
    streak_prob: float = 0.15  # CT streak artefacts
    fan_prob: float = 0.8  # ultrasound fan-shaped field of view
    shadow_prob: float = 0.4  # ultrasound acoustic shadow behind a bright structure
    attenuation: Range = (0.0, 1.5)  # ultrasound depth attenuation (per image height)
    spacing_xy: Range = (0.5, 1.5)  # 3D in-plane spacing (mm)
    spacing_z: Range = (1.0, 5.0)  # 3D slice spacing (mm): anisotropic
    preset: str = "custom"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad parameter and what is allowed."""
        if self.size < 32:
            raise ValueError(f"size must be at least 32 pixels, got {self.size}")
        if self.depth < 4:
            raise ValueError(f"depth must be at least 4 slices, got {self.depth}")
        for name, value in dataclasses.asdict(self).items():
            if isinstance(value, (tuple, list)) and len(value) == 2 and not isinstance(value[0], str):
                lo, hi = value
                if lo < 0 or hi < lo:
                    raise ValueError(f"{name} must be a range 0 <= low <= high, got {tuple(value)}")
            elif name.endswith("_prob") and not 0 <= value <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
        if not 0 < self.target_area[0] <= self.target_area[1] < 0.9:
            raise ValueError(f"target_area must lie in (0, 0.9), got {self.target_area}")
        for name, weights, allowed in (("modality_weights", self.modality_weights, MODALITIES),
                                       ("shape_weights", self.shape_weights, SHAPE_KINDS)):
            unknown = set(weights) - set(allowed)
            if unknown:
                raise ValueError(f"{name} has unknown keys {sorted(unknown)}; allowed: {', '.join(allowed)}")
            if sum(weights.values()) <= 0 or min(weights.values()) < 0:
                raise ValueError(f"{name} must be non-negative with a positive sum, got {weights}")

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> "GeneratorConfig":
        """A modality-like family: ``ct``, ``mr``, ``us`` or ``mixed``; ``overrides`` set any knob."""
        if preset not in PRESETS:
            raise ValueError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown generator parameter(s) {sorted(unknown)}")
        return cls(**{**PRESETS[preset], "preset": preset, **overrides})

    def to_dict(self) -> Dict[str, Any]:
        return {**dataclasses.asdict(self), "generator_version": GENERATOR_VERSION}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "GeneratorConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known})


PRESETS: Dict[str, Dict[str, Any]] = {
    "ct": {"modality_weights": {"ct": 1.0}},
    "mr": {"modality_weights": {"mr": 1.0}},
    "us": {"modality_weights": {"us": 1.0}, "edge_blur_px": (0.5, 3.0)},
    "mixed": {},
}
