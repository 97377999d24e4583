"""Every knob of the synthetic generator, with modality-like presets and validation."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Tuple

Range = Tuple[float, float]
SHAPE_KINDS = ("blob", "lobulated", "tube", "rim", "holes", "multipart")
MODALITIES = ("ct", "mr", "us")
# Bump when the same seed would give different images.  2: float32 outlines, Box-Muller noise.
# 3: anatomy-like scenes with tissue intensities from physics, a visible-target difficulty mix, ultrasound
#    speckle/resolution by depth, the ablation switches.  Version 2 stays selectable (``version=2``).
# 4 (selectable, ``version=4``; same knobs as 3): folded cortex (grey-matter ribbon on folded white matter, CSF in
#    the sulci), crescent lateral ventricles, whole-vertebra and whole-organ targets (inner layers and parts such as
#    marrow or the vertebral arch belong to the structure's mask).  The default stays 3 until a decoder trained on
#    version 4 is judged better on real images.
GENERATOR_VERSION = 3
VERSIONS = (2, 3, 4)
SCENE_KINDS = ("trunk", "head", "organs")  # anatomy-like scenes (version 3)


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
    low_contrast_prob: float = 0.1  # target/surroundings contrast drawn from low_contrast instead of contrast
    contrast: Range = (0.08, 0.5)
    low_contrast: Range = (0.04, 0.1)
    edge_blur_px: Range = (0.0, 3.0)  # partial volume: Gaussian sigma of the edges
    texture: Range = (0.0, 0.12)  # amplitude of multi-scale smooth texture per structure
    clutter: Range = (0.0, 0.15)  # amplitude of background clutter
    bias: Range = (0.0, 0.4)  # amplitude of the low-frequency multiplicative bias field
    gamma: Range = (0.7, 1.5)
    blur_px: Range = (0.0, 1.2)  # global resolution loss
    noise: Range = (0.01, 0.06)  # additive / Rician noise std (relative to the [0, 1] range)
    speckle: Range = (0.25, 0.6)  # ultrasound multiplicative speckle strength
    streak_prob: float = 0.15  # CT streak artefacts
    fan_prob: float = 0.8  # ultrasound fan-shaped field of view
    shadow_prob: float = 0.4  # ultrasound acoustic shadow behind a bright structure
    attenuation: Range = (0.0, 1.5)  # ultrasound depth attenuation (per image height)
    spacing_xy: Range = (0.5, 1.5)  # 3D in-plane spacing (mm)
    spacing_z: Range = (1.0, 5.0)  # 3D slice spacing (mm): anisotropic
    preset: str = "custom"
    # --- version 3 (ignored by version 2, which must keep them at their V2_VALUES) -----------------
    version: int = GENERATOR_VERSION
    anatomy_prob: float = 0.6  # share of samples drawn as anatomy-like scenes (else shape primitives)
    scene_weights: Dict[str, float] = field(default_factory=lambda: {k: 1.0 for k in SCENE_KINDS})
    min_cnr: float = 1.0  # target contrast is at least this many times the noise std (no invisible targets)
    shape_aware: bool = True  # paper ablation: shape variety (off: plain ellipses, no anatomy scenes)
    boundary_aware: bool = True  # paper ablation: touching neighbours, weak and blurred edges (off: none)
    #: anatomy scenes: chance that a liver, spleen or kidney holds small vessels that belong to its mask, as real
    #: organ labels include the vessels inside them (0: none, and no key in ``to_dict``, so caches keep their keys)
    organ_vessels_prob: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad parameter and what is allowed."""
        if self.version not in VERSIONS:
            raise ValueError(f"version must be one of {', '.join(map(str, VERSIONS))}, got {self.version}")
        if self.version == 2:
            active = [k for k in V3_ONLY if getattr(self, k) != V2_VALUES[k] and k not in ABLATION]
            if active:
                raise ValueError(f"generator version 2 has no {', '.join(active)}; use "
                                 "GeneratorConfig.from_preset(preset, version=2) or version 3")
        for name in ABLATION:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.min_cnr < 0:
            raise ValueError(f"min_cnr must be >= 0, got {self.min_cnr}")
        if self.size < 32:
            raise ValueError(f"size must be at least 32 pixels, got {self.size}")
        if self.depth < 4:
            raise ValueError(f"depth must be at least 4 slices, got {self.depth}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("Range", "Tuple[int, int]") and not (
                    isinstance(value, (tuple, list)) and len(value) == 2
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
                raise ValueError(f"{f.name} must be a (low, high) pair of numbers, got {value!r}")
            if f.type == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"{f.name} must be a number, got {value!r}")
        for name, value in dataclasses.asdict(self).items():
            if isinstance(value, (tuple, list)) and len(value) == 2 and not isinstance(value[0], str):
                lo, hi = value
                if lo < 0 or hi < lo:
                    raise ValueError(f"{name} must be a range 0 <= low <= high, got {tuple(value)}")
            elif isinstance(value, (tuple, list)):
                raise ValueError(f"{name} must be a (low, high) range, got {value!r}")
            elif name.endswith("_prob") and not 0 <= value <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
        if not 0 < self.target_area[0] <= self.target_area[1] < 0.9:
            raise ValueError(f"target_area must lie in (0, 0.9), got {self.target_area}")
        for name, weights, allowed in (("modality_weights", self.modality_weights, MODALITIES),
                                       ("shape_weights", self.shape_weights, SHAPE_KINDS),
                                       ("scene_weights", self.scene_weights, SCENE_KINDS)):
            unknown = set(weights) - set(allowed)
            if unknown:
                raise ValueError(f"{name} has unknown keys {sorted(unknown)}; allowed: {', '.join(allowed)}")
            if sum(weights.values()) <= 0 or min(weights.values()) < 0:
                raise ValueError(f"{name} must be non-negative with a positive sum, got {weights}")

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> "GeneratorConfig":
        """A modality-like family: ``ct``, ``mr``, ``us`` or ``mixed``; ``overrides`` set any knob.

        ``version=2`` gives the previous generator with its own defaults (old presets reproduce exactly).
        """
        if preset not in PRESETS:
            raise ValueError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = set(overrides) - set(names)
        if unknown:
            raise ValueError(f"unknown generator parameter(s) {sorted(unknown)}; known: {', '.join(names)}")
        version = overrides.get("version", GENERATOR_VERSION)
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {', '.join(map(str, VERSIONS))}, got {version!r}")
        return cls(**{**version_defaults(version), **PRESETS[preset], "preset": preset, **overrides})

    def to_dict(self) -> Dict[str, Any]:
        """JSON-able settings with ``generator_version``; a version-2 config gives exactly the version-2
        dict (embedding caches and manifests key on it), plus any ablation switch that was turned off."""
        data = dataclasses.asdict(self)
        if not data["organ_vessels_prob"]:  # a knob added later: its default leaves every earlier key as it was
            data.pop("organ_vessels_prob")
        if self.version == 2:
            data = {k: v for k, v in data.items() if k not in V3_ONLY or v != V2_VALUES[k]}
            data.pop("version", None)
        return {**data, "generator_version": self.version}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "GeneratorConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        version = int(data.get("version", data.get("generator_version", 2)))  # dicts before version 3 had no field
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        return cls(**{**version_defaults(version), **values, "version": version})


V3_ONLY = ("version", "anatomy_prob", "scene_weights", "min_cnr", "shape_aware", "boundary_aware", "organ_vessels_prob")
ABLATION = ("shape_aware", "boundary_aware")
# Version 2's values of every knob whose default changed in version 3 (and of the knobs it does not have).
V2_VALUES: Dict[str, Any] = {
    "version": 2, "anatomy_prob": 0.0, "scene_weights": {k: 1.0 for k in SCENE_KINDS}, "min_cnr": 0.0,
    "shape_aware": True, "boundary_aware": True, "organ_vessels_prob": 0.0,
    "low_contrast_prob": 0.4, "low_contrast": (0.02, 0.08), "noise": (0.01, 0.08),
}


def version_defaults(version: int) -> Dict[str, Any]:
    """Defaults that differ from the dataclass's (version 3) for ``version``."""
    return dict(V2_VALUES) if version == 2 else {}


PRESETS: Dict[str, Dict[str, Any]] = {
    "ct": {"modality_weights": {"ct": 1.0}},
    "mr": {"modality_weights": {"mr": 1.0}},
    "us": {"modality_weights": {"us": 1.0}, "edge_blur_px": (0.5, 3.0)},
    "mixed": {},
}
