"""Anatomy-like scenes (generator version 3): layered bodies, lungs with vessels, vertebrae, packed organs.

Each builder returns a :class:`synthfm.generate.scene.Scene` whose structures carry a tissue class
(:mod:`synthfm.generate.tissues`), are painted in order (later ones cover earlier ones, so organs
drawn into each other touch along a shared boundary) and may be layered (a body with skin, fat and
muscle; a bone with a cortical rim and marrow).  Sizes follow adult proportions relative to the
field of view (e.g. a vertebral body about 1/9 of the trunk width).  The same scene is painted on
every slice of a volume, with each structure's outline evolving along z (``Structure.extent``).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from synthfm.generate.config import GeneratorConfig
from synthfm.generate.scene import BODY, Scene, Structure, _choice, _log_uniform
from synthfm.generate.shapes import PROFILE_SAMPLES, Shape, draw_shape

ORGANS = ("liver", "spleen", "kidney", "soft", "muscle", "bowel")


class _Builder:
    """Collects structures with consecutive labels."""

    def __init__(self, rng: np.random.Generator, size: int, version: int = 3) -> None:
        self.rng, self.size, self.version = rng, size, version
        self.structures: List[Structure] = []
        self.label = BODY

    def add(self, shape: Shape, tissue: str, role: str = "tissue", layers: Tuple[Tuple[float, str], ...] = (),
            extent: str = "local", targetable: bool = True, host: int = 0, part_of: int = 0,
            inside: int = 0) -> Structure:
        s = Structure(self.label, shape, role, tissue=tissue, extent=extent, targetable=targetable and not part_of,
                      host=host, part_of=part_of, inside=inside)
        self.label += 1
        for fraction, tissue_name in layers:
            s.layers.append((float(fraction), self.label, tissue_name))
            self.label += 1
        self.structures.append(s)
        return s

    def ellipse(self, centre: Tuple[float, float], a: float, b: float, angle: float = 0.0, lumpy: float = 0.05,
                kind: str = "blob") -> Shape:
        """A smooth outline with semi-axes ``a`` (along ``angle``) and ``b``, ``lumpy`` harmonic amplitude."""
        rng = self.rng
        n = int(rng.integers(2, 6))
        harmonics = np.stack([rng.uniform(0, lumpy, n) / np.arange(1, n + 1) ** 0.5, rng.uniform(0, 2 * np.pi, n)], 1)
        return Shape(kind, (float(centre[0]), float(centre[1])), float(max(a, 0.8)), float(angle),
                     float(np.clip(b / max(a, 1e-6), 0.15, 3.0)), harmonics, wobble=float(rng.uniform(0.0, 0.06)))

    def tube(self, centre: Tuple[float, float], width: float, half_length: float, angle: float,
             bend: float = 0.5, curve: Optional[float] = None) -> Shape:
        """A bent tube; ``curve`` fixes the quadratic bend (a crescent), else it is drawn within ``bend``."""
        rng = self.rng
        b0 = float(rng.uniform(-bend, bend)) if curve is None else float(curve)
        return Shape("tube", (float(centre[0]), float(centre[1])), float(max(width, 0.8)), float(angle),
                     harmonics=np.zeros((0, 2)), half_length=float(half_length),
                     bend=(b0, float(rng.uniform(-bend, bend) * 0.6)), wobble=float(rng.uniform(0.0, 0.08)))

    def organ_vessels(self, organ: Structure) -> None:
        """3-15 small vessels inside ``organ`` that belong to it (round sections and short bent runs, 0.7-4 px
        across), painted only within it and merged into its mask, as real organ labels include their vessels."""
        rng, shape = self.rng, organ.shape
        a, b = shape.radius, shape.radius * shape.aspect
        cos, sin = np.cos(shape.angle), np.sin(shape.angle)
        for _ in range(int(rng.integers(3, 16))):
            rho, phi = np.sqrt(rng.uniform(0, 0.8)), rng.uniform(0, 2 * np.pi)
            u, v = rho * a * np.cos(phi), rho * b * np.sin(phi)
            centre = (shape.center[0] + u * cos - v * sin, shape.center[1] + u * sin + v * cos)
            r = _log_uniform(rng, 0.7, 4.0)
            if rng.random() < 0.5:
                vessel = self.ellipse(centre, r, r * rng.uniform(0.6, 1.0), rng.uniform(0, np.pi), 0.05)
            else:
                vessel = self.tube(centre, r, rng.uniform(3.0, 15.0), rng.uniform(0, np.pi))
            self.add(vessel, "vessel", part_of=organ.label, inside=organ.label)

    def lesions(self, host: Structure, a: float, b: float, count: int) -> None:
        """``count`` small lesions (or cysts) inside ``host`` whose semi-axes are ``a``, ``b``."""
        rng, (cx, cy) = self.rng, host.shape.center
        for _ in range(count):
            hi = max(0.25 * a * b, 16.0)
            r = float(np.sqrt(_log_uniform(rng, min(12.0, 0.5 * hi), hi) / np.pi))
            rho, phi = rng.uniform(0, 0.55), rng.uniform(0, 2 * np.pi)
            centre = (cx + rho * a * np.cos(phi), cy + rho * b * np.sin(phi))
            tissue = "fluid" if rng.random() < 0.25 else "lesion"
            self.add(self.ellipse(centre, r, r * rng.uniform(0.6, 1.0), rng.uniform(0, np.pi), 0.15), tissue,
                     host=host.label)


def _body(bld: _Builder, inner_tissue: str) -> Tuple[Structure, Tuple[float, float], float, float]:
    """A trunk-like body with skin, subcutaneous fat, muscle and an inner cavity: (body, centre, inner a, inner b)."""
    rng, size = bld.rng, bld.size
    a = size * rng.uniform(0.40, 0.47)
    b = a * rng.uniform(0.6, 0.85)
    centre = (size / 2 + rng.normal(0, 0.02 * size), size / 2 + rng.normal(0, 0.02 * size))
    skin = rng.uniform(1.2, 2.5)
    fat = rng.uniform(0.03, 0.14) * a
    muscle = rng.uniform(0.04, 0.1) * a
    shape = bld.ellipse(centre, a, b, rng.normal(0, 0.04), 0.04)
    shape.wobble = 0.02
    body = bld.add(shape, "skin", "body", layers=((1 - skin / a, "fat"), (1 - (skin + fat) / a, "muscle"),
                                                  (1 - (skin + fat + muscle) / a, inner_tissue)),
                   extent="long", targetable=False)
    body.label = BODY
    inner = a - skin - fat - muscle
    return body, centre, inner, inner * b / a


def _vertebra(bld: _Builder, x: float, y: float, r: float, with_ribs_from: Optional[Tuple] = None) -> Structure:
    """Vertebral body (cortical rim + marrow), spinal canal, spinous and transverse processes.

    Version 4: the arch (pedicles and laminae round the canal, with marrow) and the processes are parts of the
    vertebra, whose target mask is then the whole bone (as real vertebra labels are).
    """
    rng = bld.rng
    vb = bld.add(bld.ellipse((x, y), r, r * rng.uniform(0.75, 0.95), rng.normal(0, 0.05), 0.04), "bone",
                 layers=((rng.uniform(0.7, 0.85), "marrow"),), extent="long")
    canal_r = r * rng.uniform(0.4, 0.55)
    cy = y + r * 0.95 + canal_r
    part = vb.label if bld.version >= 4 else 0
    if part:  # the arch: a ring of bone round the canal, thick enough to hold marrow
        ring = bld.ellipse((x, cy), canal_r * rng.uniform(1.5, 1.8), canal_r * rng.uniform(1.3, 1.6), 0, 0.05)
        bld.add(ring, "bone", layers=((rng.uniform(0.75, 0.9), "marrow"),), extent="long", part_of=part)
    bld.add(bld.tube((x, cy + canal_r * 1.2), r * 0.18, r * 0.7, np.pi / 2, 0.2), "bone", extent="long",
            part_of=part)
    for side in (-1, 1):
        bld.add(bld.tube((x + side * r * 0.95, cy - canal_r * 0.2), r * 0.16, r * 0.6,
                         side * rng.uniform(0.1, 0.4), 0.2), "bone", extent="long", part_of=part)
    bld.add(bld.ellipse((x, cy), canal_r, canal_r * 0.85, 0, 0.05), "soft", extent="long")
    return vb


def _ribs(bld: _Builder, centre, a: float, b: float, count: int) -> None:
    rng = bld.rng
    for theta in rng.uniform(0.15 * np.pi, 2.0 * np.pi, count):
        x, y = centre[0] + a * np.cos(theta), centre[1] + b * np.sin(theta)
        r = bld.size * rng.uniform(0.01, 0.02)
        bld.add(bld.ellipse((x, y), r * rng.uniform(1.0, 1.8), r, theta + np.pi / 2, 0.05), "bone",
                layers=((rng.uniform(0.5, 0.75), "marrow"),))


def trunk(bld: _Builder) -> str:
    """Thorax (lungs with vessels, heart, ribs) or abdomen (liver, spleen, kidneys, stomach, bowel, vessels)."""
    rng, size = bld.rng, bld.size
    thorax = rng.random() < 0.4
    body, (cx, cy), ai, bi = _body(bld, "fat" if rng.random() < 0.6 else "soft")
    vr = size * rng.uniform(0.045, 0.06)
    vx, vy = cx + rng.normal(0, 0.01 * size), cy + bi - 2.6 * vr
    if thorax:
        for side in (-1, 1):
            lx, ly = cx + side * ai * rng.uniform(0.45, 0.52), cy - bi * rng.uniform(0.0, 0.1)
            la, lb = ai * rng.uniform(0.3, 0.38), bi * rng.uniform(0.62, 0.78)
            lung = bld.add(bld.ellipse((lx, ly), la, lb, np.pi / 2 + side * rng.uniform(0, 0.3) - np.pi / 2, 0.12),
                           "lung", extent="long")
            for _ in range(int(rng.integers(3, 9))):
                px, py = lx + rng.uniform(-0.6, 0.6) * la, ly + rng.uniform(-0.6, 0.6) * lb
                if rng.random() < 0.6:
                    r = rng.uniform(0.8, 3.5)
                    bld.add(bld.ellipse((px, py), r, r, 0, 0.05), "vessel", extent="long")
                else:
                    bld.add(bld.tube((px, py), rng.uniform(0.8, 2.5), rng.uniform(0.2, 0.3) * la, rng.uniform(0, np.pi)),
                            "vessel")
            if rng.random() < 0.4:
                bld.lesions(lung, la, lb, 1)
        heart = bld.add(bld.ellipse((cx + 0.1 * ai, cy - 0.05 * bi), ai * rng.uniform(0.22, 0.3),
                                    bi * rng.uniform(0.35, 0.45), rng.uniform(-0.5, 0.5), 0.1),
                        "muscle" if rng.random() < 0.5 else "vessel", extent="long")
        _ribs(bld, (cx, cy), ai + 0.3 * (bld.size * 0.04), bi + 0.3 * (bld.size * 0.04), int(rng.integers(4, 10)))
        del heart
    else:
        liver = bld.add(bld.ellipse((cx - 0.35 * ai, cy - 0.12 * bi), ai * rng.uniform(0.4, 0.55),
                                    bi * rng.uniform(0.5, 0.7), rng.uniform(-0.4, 0.4), 0.18, "lobulated"),
                        "liver", extent="long")
        spleen = bld.add(bld.ellipse((cx + 0.58 * ai, cy + 0.1 * bi), ai * rng.uniform(0.12, 0.2),
                                     bi * rng.uniform(0.25, 0.35), rng.uniform(-0.8, 0.8), 0.15), "spleen")
        stomach = bld.add(bld.ellipse((cx + 0.25 * ai, cy - 0.35 * bi), ai * rng.uniform(0.18, 0.3),
                                      bi * rng.uniform(0.2, 0.35), rng.uniform(0, np.pi), 0.2, "lobulated"), "bowel")
        if rng.random() < 0.6:  # a gas bubble at the top of the stomach
            sx, sy = stomach.shape.center
            g = stomach.shape.radius * rng.uniform(0.2, 0.4)
            bld.add(bld.ellipse((sx, sy - 0.5 * stomach.shape.radius * stomach.shape.aspect), g, g * 0.6, 0, 0.05),
                    "air", targetable=False)
        for _ in range(int(rng.integers(1, 5))):  # bowel loops and mesenteric vessels crossing the others
            bld.add(bld.tube((cx + rng.uniform(-0.5, 0.5) * ai, cy + rng.uniform(-0.6, 0.1) * bi),
                             size * rng.uniform(0.008, 0.035), size * rng.uniform(0.05, 0.18), rng.uniform(0, np.pi), 1.0),
                    "bowel" if rng.random() < 0.5 else "vessel")
        kidneys = []
        for side in (-1, 1):
            kr = size * rng.uniform(0.045, 0.065)
            kidneys.append(bld.add(bld.ellipse((vx + side * rng.uniform(2.2, 3.2) * vr, vy - 0.3 * vr), kr,
                                               kr * rng.uniform(0.5, 0.7), side * rng.uniform(0.6, 1.2), 0.08),
                                   "kidney", layers=((rng.uniform(0.35, 0.6), "fat"),)))
        bld.add(bld.ellipse((vx + 0.9 * vr, vy - 1.8 * vr), vr * 0.5, vr * 0.5, 0, 0.03), "vessel", extent="long")  # aorta
        bld.add(bld.ellipse((vx - 1.1 * vr, vy - 1.7 * vr), vr * 0.6, vr * 0.4, 0.2, 0.05), "vessel", extent="long")  # IVC
        for organ, (a, b) in ((liver, (0.45 * ai, 0.6 * bi)), (spleen, (0.15 * ai, 0.3 * bi)),
                              (kidneys[0], (0.05 * size, 0.03 * size))):
            if rng.random() < 0.4:
                bld.lesions(organ, a, b, int(rng.integers(1, 3)))
    _vertebra(bld, vx, vy, vr)
    return "thorax" if thorax else "abdomen"


def head(bld: _Builder) -> str:
    """Scalp, skull, cerebrospinal fluid, grey and white matter, ventricles, deep nuclei, lesions.

    Version 4 folds the cortex (``_folded_brain``: a 2-5 px grey-matter ribbon on white matter with 28-48 gyral
    fingers, CSF in the clefts between gyri), draws crescent lateral ventricles kept apart by the septum, and
    strips the skull from a quarter of the heads.
    """
    rng, size = bld.rng, bld.size
    a = size * rng.uniform(0.34, 0.42)
    b = a * rng.uniform(1.1, 1.3)
    centre = (size / 2 + rng.normal(0, 0.02 * size), size / 2 + rng.normal(0, 0.02 * size))
    t = np.cumsum([rng.uniform(1.0, 2.0), rng.uniform(1.5, 4.0), rng.uniform(3.0, 6.0), rng.uniform(0.8, 2.5)])
    shape = bld.ellipse(centre, a, b, rng.normal(0, 0.05), 0.03)
    shape.wobble = 0.02
    folded = bld.version >= 4
    layers = ((1 - t[0] / a, "fat"), (1 - t[1] / a, "bone"), (1 - t[2] / a, "csf"))
    if folded and rng.random() < 0.25:  # a brain-extracted (skull-stripped) image: the brain and a rim of CSF
        ia = a - t[3]
        shape = bld.ellipse(centre, ia, ia * b / a, shape.angle, 0.03)
        shape.wobble = 0.02
        body = bld.add(shape, "csf", "body", extent="long", targetable=False)
    else:
        body = bld.add(shape, "skin", "body", layers=layers if folded else layers + ((1 - t[3] / a, "gm"),),
                       extent="long", targetable=False)
    body.label = BODY
    ia = a - t[3]
    if folded:
        wm = _folded_brain(bld, centre, ia, b / a)
    else:
        wm = bld.add(bld.ellipse(centre, ia * rng.uniform(0.7, 0.82), ia * b / a * rng.uniform(0.7, 0.82), 0, 0.3,
                                 "lobulated"), "wm", extent="long")
    bow = (1 if rng.random() < 0.7 else -1) if folded else 0  # ventricles bowing towards (1) or away from the midline
    for side in (-1, 1):  # lateral ventricles, deep grey nuclei
        vx = centre[0] + side * ia * rng.uniform(0.05, 0.15)
        if folded:  # a crescent, mostly bowing towards the midline (the caudate nucleus in its lateral concavity)
            width = ia * rng.uniform(0.02, 0.1)
            tube = bld.tube((vx, centre[1] - ia * 0.05), width, ia * rng.uniform(0.2, 0.4),
                            np.pi / 2 + side * rng.uniform(0, 0.2), 0.2, curve=-side * bow * rng.uniform(0.4, 1.2))
            _keep_lateral(tube, side, centre[0], 1.5 * width + ia * rng.uniform(0.01, 0.08))  # the septum between
            vx = tube.center[0]
            bld.add(tube, "csf")
        else:
            bld.add(bld.tube((vx, centre[1] - ia * 0.05), ia * rng.uniform(0.02, 0.07), ia * rng.uniform(0.2, 0.35),
                             np.pi / 2 + side * rng.uniform(0, 0.3), 0.8), "csf")
        for _ in range(int(rng.integers(1, 3))):
            r = ia * rng.uniform(0.06, 0.12)
            bld.add(bld.ellipse((vx + side * ia * rng.uniform(0.15, 0.3), centre[1] + ia * rng.uniform(-0.15, 0.2)),
                                r, r * rng.uniform(0.5, 0.9), rng.uniform(0, np.pi), 0.1), "gm")
    if rng.random() < 0.6:
        bld.lesions(wm, 0.6 * ia, 0.6 * ia * b / a, int(rng.integers(1, 3)))
    return "head"


def _keep_lateral(tube: Shape, side: int, midline: float, clearance: float) -> None:
    """Move ``tube`` sideways (``side`` -1: left, 1: right) until its centre line stays ``clearance`` px off the
    midline everywhere (a lateral ventricle never crosses the septum)."""
    t = np.linspace(-1, 1, 41)
    u = tube.half_length * t
    v = tube.half_length * t * t * (0.5 * tube.bend[0] + 0.3 * tube.bend[1] * t)
    x = tube.center[0] + np.cos(tube.angle) * u - np.sin(tube.angle) * v
    deficit = clearance - float(np.min(side * (x - midline)))
    if deficit > 0:
        tube.center = (tube.center[0] + side * deficit, tube.center[1])


def _folded_brain(bld: _Builder, centre: Tuple[float, float], ia: float, aspect: float) -> Structure:
    """Grey matter and white matter of a folded cortex; returns the white matter.

    The white matter is a core with 28-48 tapering fingers reaching into the gyri (sulci 25-50 % of its radius
    deep between them), notched by 30-60 shallow secondary sulci, each at a jittered angle with its own height and
    width, and cut by the interhemispheric fissure front and back.  The grey matter fills the brain's surface down
    to the white matter except for a CSF cleft along each sulcus (0.5-5 px wide), and covers every finger with
    at least the cortical thickness (the white matter's outline grown by a disc), so the ribbon follows the folds.
    """
    rng = bld.rng
    ribbon = rng.uniform(2.0, 5.0)  # cortical thickness (px)
    outer = ia * rng.uniform(0.9, 0.97)  # the brain's surface, inside the subarachnoid CSF
    inner = outer - ribbon
    theta = np.linspace(-np.pi, np.pi, PROFILE_SAMPLES, endpoint=False)

    def around(angles: np.ndarray) -> np.ndarray:  # (samples, len(angles)) signed angle from each
        return np.angle(np.exp(1j * (theta[:, None] - np.asarray(angles)[None, :])))

    count, depth = int(rng.integers(28, 49)), rng.uniform(0.25, 0.5)
    spacing = 2 * np.pi / count
    fingers = np.sort((rng.uniform(0, 2 * np.pi) + spacing * (np.arange(count) + rng.uniform(-0.35, 0.35, count)))
                      % (2 * np.pi))
    finger_height = depth * rng.uniform(0.4, 1.0, count)
    finger_width = spacing * rng.uniform(0.15, 0.3, count)
    gyri = finger_height * np.exp(-np.abs(around(fingers)) / finger_width)
    dip = depth - gyri.max(1)
    notches = int(rng.integers(30, 61))
    spots = rng.uniform(0, 2 * np.pi, notches)
    notch_depth = rng.uniform(0.02, 0.08) * rng.uniform(0.4, 1.0, notches)
    notch_width = 2 * np.pi / notches * rng.uniform(0.1, 0.2, notches)
    dip = np.maximum(dip, (notch_depth * np.exp(-np.square(around(spots) / notch_width))).max(1))
    poles = np.array([-np.pi / 2, np.pi / 2])  # the interhemispheric fissure, front and back
    fissure = rng.uniform(0.25, 0.6, 2) * np.exp(-np.square(around(poles) / rng.uniform(0.03, 0.06, 2)))
    dip = np.minimum(np.maximum(dip, fissure.max(1)), 0.7)
    radius = inner * (1 - dip)
    wm = bld.ellipse(centre, inner, inner * aspect, 0.0, 0.06)
    wm.wobble, wm.profile = 0.01, (-dip).astype(np.float32)

    step = 2 * np.pi / PROFILE_SAMPLES  # the white matter grown by a disc of the ribbon's radius
    grown = radius + ribbon
    for k in range(1, int(ribbon / (radius.min() * step)) + 1):
        for shifted in (np.roll(radius, k), np.roll(radius, -k)):
            across = k * step * shifted  # arc length to the neighbouring angle
            cap = np.sqrt(np.clip(ribbon ** 2 - across ** 2, 0, None))
            grown = np.maximum(grown, np.where(across < ribbon, shifted + cap, 0))
    wrap = np.where(np.arange(count) == count - 1, 2 * np.pi, 0)  # the last finger's neighbour is the first
    sulci = np.concatenate([(fingers + np.roll(fingers, -1) + wrap) / 2, poles])  # midway between fingers; fissure
    floor = np.interp(sulci, theta, radius, period=2 * np.pi)  # the white matter's radius at each sulcus
    half_width = np.exp(rng.uniform(np.log(0.5), np.log(5.0), len(sulci))) / outer  # radians at the surface
    clefts = ((outer - floor) * np.exp(-np.square(around(sulci) / half_width))).max(1)
    surface = np.maximum(grown, outer - clefts)
    gm = bld.ellipse(centre, outer, outer * aspect, 0.0, 0.0)
    gm.harmonics, gm.wobble, gm.profile = wm.harmonics, wm.wobble, (surface / outer - 1).astype(np.float32)
    bld.add(gm, "gm", extent="long")
    return bld.add(wm, "wm", extent="long")


def organs(bld: _Builder) -> str:
    """Several soft organs packed into a body, touching along weak boundaries, with tubes crossing and lesions."""
    rng, size = bld.rng, bld.size
    _, (cx, cy), ai, bi = _body(bld, "fat" if rng.random() < 0.5 else "soft")
    placed = []
    for _ in range(int(rng.integers(4, 9))):
        r = float(np.sqrt(_log_uniform(rng, 0.012, 0.07) / np.pi)) * size
        rho, phi = np.sqrt(rng.uniform(0, 0.6)), rng.uniform(0, 2 * np.pi)
        x, y = cx + rho * ai * np.cos(phi), cy + rho * bi * np.sin(phi)
        kind = "lobulated" if rng.random() < 0.5 else "blob"
        organ = bld.add(bld.ellipse((x, y), r, r * rng.uniform(0.5, 1.0), rng.uniform(0, np.pi), 0.2, kind),
                        str(rng.choice(ORGANS)), extent="local")
        placed.append((organ, r))
    for _ in range(int(rng.integers(0, 4))):
        bld.add(bld.tube((cx + rng.uniform(-0.5, 0.5) * ai, cy + rng.uniform(-0.5, 0.5) * bi),
                         size * rng.uniform(0.006, 0.03), size * rng.uniform(0.08, 0.3), rng.uniform(0, np.pi), 1.0),
                "vessel" if rng.random() < 0.6 else "bowel")
    for organ, r in placed:
        if rng.random() < 0.3:
            bld.lesions(organ, 0.8 * r, 0.6 * r, 1)
    return "organs"


def ultrasound(bld: _Builder) -> str:
    """Skin, fat and muscle bands under the probe, an organ with vessels, cysts, a kidney, bone or gas."""
    rng, size = bld.rng, bld.size
    radius = size * rng.uniform(2.0, 5.0)
    reach = 1.6 * size  # the body circle's centre is ``radius - reach`` above the image: bands curve gently
    depths = np.cumsum([rng.uniform(1.5, 4.0), rng.uniform(0.03, 0.15) * size, rng.uniform(0.05, 0.2) * size])
    shape = Shape("blob", (size / 2 + rng.normal(0, 0.1 * size), reach - radius), radius, 0.0, 1.0,
                  np.zeros((0, 2)))
    fractions = [1 - (reach - d) / radius for d in depths[::-1]]  # deepest band first: later ones cover it
    body = bld.add(shape, str(rng.choice(("liver", "spleen", "soft", "muscle"))), "body",
                   layers=tuple(zip(fractions, ("muscle", "fat", "skin"))), extent="long", targetable=False)
    body.label = BODY
    top = depths[-1]
    ox, oy = size * rng.uniform(0.3, 0.7), top + (size - top) * rng.uniform(0.35, 0.6)
    oa, ob = size * rng.uniform(0.2, 0.4), size * rng.uniform(0.15, 0.3)
    organ = bld.add(bld.ellipse((ox, oy), oa, ob, rng.uniform(-0.4, 0.4), 0.2, "lobulated"),
                    str(rng.choice(("liver", "kidney", "spleen", "soft"))))
    if organ.tissue == "kidney":
        organ.layers.append((float(rng.uniform(0.35, 0.6)), bld.label, "fat"))
        bld.label += 1
    for _ in range(int(rng.integers(1, 5))):
        x, y = rng.uniform(0.1, 0.9) * size, top + rng.uniform(0.05, 0.8) * (size - top)
        if rng.random() < 0.5:
            r = size * rng.uniform(0.01, 0.05)
            bld.add(bld.ellipse((x, y), r, r * rng.uniform(0.6, 1.0), rng.uniform(0, np.pi), 0.04), "vessel")
        else:
            bld.add(bld.tube((x, y), size * rng.uniform(0.01, 0.03), size * rng.uniform(0.1, 0.3),
                             rng.uniform(-0.5, 0.5), 0.6), "vessel")
    if rng.random() < 0.4:
        bld.lesions(organ, oa, ob, int(rng.integers(1, 3)))
    if rng.random() < 0.5:  # a bone surface or gas: bright, with an acoustic shadow behind it
        x, y = rng.uniform(0.2, 0.8) * size, top + rng.uniform(0.3, 0.8) * (size - top)
        if rng.random() < 0.6:
            bld.add(bld.tube((x, y), size * rng.uniform(0.006, 0.015), size * rng.uniform(0.05, 0.15),
                             rng.uniform(-0.3, 0.3), 0.8), "bone")
        else:
            r = size * rng.uniform(0.01, 0.03)
            bld.add(bld.ellipse((x, y), r * 2, r, 0, 0.1), "air", targetable=False)
    return "ultrasound"


BUILDERS: Dict[str, Callable[[_Builder], str]] = {"trunk": trunk, "head": head, "organs": organs}
VASCULAR_ORGANS = ("liver", "spleen", "kidney")  # organs whose vessels ``organ_vessels_prob`` draws inside them


def draw_anatomy(rng: np.random.Generator, cfg: GeneratorConfig, size: int, modality: str) -> Scene:
    """An anatomy-like scene with one target among its structures (or a shape primitive placed inside it)."""
    bld = _Builder(rng, size, cfg.version)
    kind = ultrasound(bld) if modality == "us" else BUILDERS[_choice(rng, cfg.scene_weights)](bld)
    primitive = {}
    if rng.random() < 0.3:  # one of the shape primitives, inside the body like a lesion or an odd organ
        body = bld.structures[0]
        cx, cy = body.shape.center if modality != "us" else (size / 2, size * 0.6)
        area = _log_uniform(rng, *cfg.target_area) * size * size
        centre = (cx + rng.uniform(-0.2, 0.2) * size, cy + rng.uniform(-0.2, 0.2) * size)
        prim = _choice(rng, cfg.shape_weights)
        primitive[bld.add(draw_shape(rng, prim, centre, min(area, 0.15 * size * size)), "lesion").label] = prim
    if cfg.organ_vessels_prob > 0:
        for organ in [s for s in bld.structures if s.tissue in VASCULAR_ORGANS and s.role != "body"]:
            if rng.random() < cfg.organ_vessels_prob:
                bld.organ_vessels(organ)
    candidates = [s for s in bld.structures if s.targetable and s.role != "body"]
    target = candidates[int(rng.integers(len(candidates)))]
    target.role = "target"
    kind_name = primitive.get(target.label, target.tissue)
    return Scene(bld.structures, target.label, modality, {"modality": modality, "target_kind": kind_name,
                                                          "scene": kind, "touching_labels": []})
