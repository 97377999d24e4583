"""Tissue intensities from physics: CT Hounsfield units, MR relaxation times, ultrasound echogenicity.

Sources (full references in ``docs/generate.md``): HU of air, fat, water, soft tissue and bone as in
standard CT texts and Lamba et al. (AJR 2014) for unenhanced abdominal organs; contrast-enhanced
organ values from portal-venous-phase ranges; MR T1/T2 at 1.5 T from de Bazelaire et al. (Radiology
2004) and Stanisz et al. (MRM 2005), combined with the spin-echo signal equation
``S = PD (1 - exp(-TR/T1)) exp(-TE/T2)``; ultrasound echogenicity ordering (fluid anechoic, fat and
muscle hypoechoic, liver/spleen mid-grey, skin/bone/gas surfaces bright) from standard sonography texts.
Each image draws its own protocol (CT window and enhancement, MR sequence and TR/TE), so intensities
vary the way they do between scanners and protocols while their order stays physical.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np


@dataclass(frozen=True)
class Tissue:
    hu: Tuple[float, float]  # unenhanced CT: mean, between-subject std (HU)
    hu_enhanced: Tuple[float, float]  # portal-venous contrast phase
    pd: float  # MR proton density (relative)
    t1: float  # ms at 1.5 T
    t2: float  # ms at 1.5 T
    echo: Tuple[float, float]  # ultrasound echogenicity (0 anechoic .. 1 bright), mean and spread
    texture: float  # relative amplitude of internal texture
    shadow: bool = False  # ultrasound: strong reflector, acoustic shadow behind it
    enhance: bool = False  # ultrasound: fluid, posterior acoustic enhancement behind it


TISSUES: Dict[str, Tissue] = {
    "air": Tissue((-1000, 5), (-1000, 5), 0.0, 1000, 1, (1.0, 0.0), 0.0, shadow=True),
    "lung": Tissue((-850, 40), (-830, 40), 0.1, 1200, 30, (1.0, 0.0), 0.3, shadow=True),
    "fat": Tissue((-100, 15), (-100, 15), 0.9, 260, 85, (0.3, 0.08), 0.2),
    "skin": Tissue((30, 15), (40, 15), 0.7, 700, 40, (0.85, 0.08), 0.2),
    "muscle": Tissue((50, 6), (60, 8), 0.75, 1008, 44, (0.3, 0.08), 0.4),
    "liver": Tissue((60, 6), (110, 12), 0.7, 576, 46, (0.5, 0.08), 0.3),
    "spleen": Tissue((50, 5), (115, 12), 0.8, 1057, 79, (0.45, 0.08), 0.3),
    "kidney": Tissue((33, 6), (170, 25), 0.85, 966, 87, (0.35, 0.08), 0.3),
    "bowel": Tissue((40, 12), (80, 20), 0.8, 900, 60, (0.5, 0.15), 0.6),
    "soft": Tissue((45, 12), (80, 25), 0.8, 900, 60, (0.45, 0.12), 0.4),
    "vessel": Tissue((40, 5), (180, 50), 0.9, 1440, 290, (0.03, 0.02), 0.05, enhance=True),
    "fluid": Tissue((8, 5), (10, 5), 1.0, 3500, 1500, (0.02, 0.02), 0.02, enhance=True),
    "bone": Tissue((1000, 250), (1000, 250), 0.05, 1000, 1, (0.95, 0.04), 0.2, shadow=True),
    "marrow": Tissue((250, 80), (260, 80), 0.85, 550, 50, (0.5, 0.1), 0.6),
    "wm": Tissue((28, 3), (30, 3), 0.69, 650, 80, (0.5, 0.1), 0.1),
    "gm": Tissue((38, 3), (40, 3), 0.8, 1050, 100, (0.45, 0.1), 0.15),
    "csf": Tissue((8, 4), (8, 4), 1.0, 4000, 2000, (0.02, 0.02), 0.02, enhance=True),
}
TISSUE_NAMES = tuple(TISSUES)

# CT display windows (level, width), HU; weights of how often each is used
CT_WINDOWS = (((40, 400), 0.45), ((60, 350), 0.15), ((-600, 1500), 0.15), ((400, 1800), 0.1), ((0, 2000), 0.15))
# MR spin-echo sequences: TR and TE ranges (ms)
MR_SEQUENCES = {"t1": ((400, 700), (8, 20)), "t2": ((2500, 5000), (80, 120)), "pd": ((2000, 3000), (10, 30))}


@dataclass
class Protocol:
    """One image's acquisition: CT window + enhancement, MR sequence timing, or ultrasound gain."""

    modality: str
    window: Tuple[float, float] = (40.0, 400.0)
    enhanced: bool = False
    tr: float = 500.0
    te: float = 15.0
    sequence: str = "t1"

    def describe(self) -> str:
        if self.modality == "ct":
            return f"W{self.window[1]:.0f}/L{self.window[0]:.0f}" + (" +C" if self.enhanced else "")
        if self.modality == "mr":
            return f"{self.sequence.upper()} TR{self.tr:.0f}/TE{self.te:.0f}"
        return "B-mode"


def draw_protocol(rng: np.random.Generator, modality: str) -> Protocol:
    if modality == "ct":
        k = int(rng.choice(len(CT_WINDOWS), p=[w for _, w in CT_WINDOWS]))
        (level, width) = CT_WINDOWS[k][0]
        return Protocol("ct", (level + rng.normal(0, 0.05 * width), width * rng.uniform(0.8, 1.25)),
                        bool(rng.random() < 0.5))
    if modality == "mr":
        seq = str(rng.choice(list(MR_SEQUENCES)))
        (tr0, tr1), (te0, te1) = MR_SEQUENCES[seq]
        return Protocol("mr", sequence=seq, tr=float(rng.uniform(tr0, tr1)), te=float(rng.uniform(te0, te1)))
    return Protocol("us")


def tissue_value(rng: np.random.Generator, name: str, protocol: Protocol) -> float:
    """Mean intensity in [0, 1] of tissue ``name`` in one image of ``protocol`` (with subject variation)."""
    t = TISSUES[name]
    if protocol.modality == "ct":
        mean, sd = t.hu_enhanced if protocol.enhanced else t.hu
        hu = rng.normal(mean, sd)
        level, width = protocol.window
        return float(np.clip((hu - (level - width / 2)) / width, 0.0, 1.0))
    if protocol.modality == "mr":
        t1 = t.t1 * rng.uniform(0.85, 1.15)
        t2 = t.t2 * rng.uniform(0.85, 1.15)
        signal = t.pd * (1 - np.exp(-protocol.tr / t1)) * np.exp(-protocol.te / t2)
        return float(signal)  # relative; scaled to the image's brightest tissue by the caller
    mean, spread = t.echo
    return float(np.clip(rng.normal(mean, spread), 0.0, 1.0))
