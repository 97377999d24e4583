"""Realism report: the statistics of synthetic targets next to those of real labelled structures.

Every structure (real or synthetic) is measured on a 2D slice in the model's frame (longest side
``FRAME`` pixels), intensities mapped to [0, 1] the way the model sees them: real volumes with the
segmentation default (``auto``: a soft-tissue window for CT, percentiles otherwise), synthetic images
with percentiles as in training:

- ``cnr``: contrast-to-noise ratio between the structure and a ring 2-6 px around it;
- ``edge_width``: 10-90 % rise of the mean intensity profile across the boundary (px);
- ``local_std`` / ``grad_energy``: internal texture (5x5 local standard deviation; mean squared gradient);
- ``area_fraction``, ``solidity``, ``elongation``, ``parts``: size and shape;
- ``contact``: share of the boundary whose outside (1-3 px, smoothed) has the structure's intensity.

Real images serve this check only; the generator's parameters come from physical facts
(``docs/generate.md``).  :func:`coverage` gives one number per statistic: the share of real values
inside the synthetic 5-95 % range.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError

from synthfm.io.atomic import PathLike, atomic_path, atomic_write_text
from synthfm.io.tables import csv_text
from synthfm.utils.masks import signed_distance
from synthfm.utils.progress import CancelToken, ProgressCallback, check_cancel, report

FRAME = 256
STATS = ("cnr", "edge_width", "local_std", "grad_energy", "area_fraction", "solidity", "elongation", "parts", "contact")
CSV_FIELDS = ("source", "modality", "name", "slice", *STATS)  # real_stats.csv, synthetic_stats.csv
INVISIBLE_CNR = 0.5  # below this a target is hard to see at all: the model can only guess its outline
CONTACT_TOLERANCE = 0.06  # "similar intensity": within 6 % of the normalised range after smoothing
MODALITY_WORDS = {"ct": ("ct",), "mr": ("mr", "mri", "t1", "t2", "mni152", "mni152-2009", "flair"),
                  "us": ("us", "ultrasound", "echo")}
REPORT_FILES = ("realism.json", "realism.md", "real_stats.csv", "synthetic_stats.csv")


def to_frame(image: np.ndarray, mask: np.ndarray, spacing_yx: Tuple[float, float] = (1.0, 1.0)
             ) -> Tuple[np.ndarray, np.ndarray]:
    """A 2D slice and its mask resampled to square pixels with the longest side ``FRAME``."""
    h, w = image.shape
    sy, sx = spacing_yx
    ph, pw = h * sy, w * sx  # physical extent
    scale = FRAME / max(ph, pw)
    zoom = (sy * scale, sx * scale)
    if np.allclose(zoom, 1.0):
        return image.astype(np.float32), mask.astype(bool)
    return (ndi.zoom(image.astype(np.float32), zoom, order=1),
            ndi.zoom(mask.astype(np.uint8), zoom, order=0).astype(bool))


def _edge_width(image: np.ndarray, dist: np.ndarray) -> float:
    """10-90 % rise of the mean profile across the boundary, in px; NaN when there is no edge to measure."""
    bins = np.arange(-6.0, 6.01, 0.5)
    idx = np.digitize(dist, bins)
    ok = (idx > 0) & (idx < len(bins))
    counts = np.bincount(idx[ok], minlength=len(bins))[1:]
    sums = np.bincount(idx[ok], image[ok], minlength=len(bins))[1:]
    centres = bins[:-1] + 0.25
    have = counts >= 3
    if not have.any():
        return float("nan")
    profile = np.where(have, sums / np.maximum(counts, 1), np.nan)
    inner = profile[(centres < -1.5) & have]
    outer = profile[(centres > 2.5) & have]
    if inner.size == 0 or outer.size == 0:
        return float("nan")
    lo, hi = float(outer.mean()), float(inner[:max(1, inner.size)].mean())
    if abs(hi - lo) < 1e-3:
        return float("nan")
    f = (profile - lo) / (hi - lo)  # 1 inside, 0 outside
    valid = have & np.isfinite(f)
    rising = valid & (f > 0.1) & (f < 0.9)
    return float(rising.sum() * 0.5)


def _solidity(mask: np.ndarray) -> float:
    ys, xs = np.nonzero(mask & ~ndi.binary_erosion(mask))
    if len(xs) < 3:
        return 1.0
    corners = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (-0.5, 0.5) for dy in (-0.5, 0.5)])
    try:
        hull = ConvexHull(corners).volume
    except QhullError:
        return 1.0
    return float(min(1.0, mask.sum() / hull))


def _elongation(mask: np.ndarray) -> float:
    """1 - minor/major axis ratio of the second moments: 0 for a disc, towards 1 for a line."""
    ys, xs = np.nonzero(mask)
    if len(xs) < 3:
        return 0.0
    cov = np.cov(np.stack([xs, ys]).astype(float)) + np.eye(2) / 12  # a pixel's own extent
    small, big = np.linalg.eigvalsh(cov)
    return float(1 - np.sqrt(max(small, 0.0) / big))


def structure_stats(image01: np.ndarray, mask: np.ndarray) -> Dict[str, float]:
    """The statistics of ``mask`` on ``image01`` (both in the model frame); see the module docstring."""
    mask = np.asarray(mask, bool)
    h, w = mask.shape
    box = tuple(slice(max(0, int(a.min()) - 9), int(a.max()) + 10) for a in np.nonzero(mask))
    image, sub = image01[box].astype(np.float32), mask[box]
    dist = signed_distance(sub)
    inside, ring = image[sub], image[(dist > 2) & (dist <= 6)]
    mu_in, mu_ring = float(inside.mean()), float(ring.mean()) if ring.size else float("nan")
    pooled = np.sqrt(0.5 * (inside.var() + (ring.var() if ring.size else 0.0))) + 1e-3
    interior = sub if sub.sum() < 40 else ndi.binary_erosion(sub, iterations=2) | (dist < -2)
    if not interior.any():
        interior = sub
    mean = ndi.uniform_filter(image, 5)
    sq = ndi.uniform_filter(image * image, 5)
    local_std = np.sqrt(np.clip(sq - mean * mean, 0, None))[interior]
    gy, gx = np.gradient(image)
    smooth = ndi.gaussian_filter(image, 1.0)
    outer = (dist > 0) & (dist <= 3)
    labels, parts = ndi.label(sub, np.ones((3, 3), bool))
    return {
        "cnr": abs(mu_in - mu_ring) / pooled,
        "edge_width": _edge_width(image, dist),
        "local_std": float(local_std.mean()),
        "grad_energy": float((gx * gx + gy * gy)[interior].mean()),
        "area_fraction": float(sub.sum() / (h * w)),
        "solidity": _solidity(sub),
        "elongation": _elongation(sub),
        "parts": float(parts),
        "contact": float((np.abs(smooth[outer] - mu_in) < CONTACT_TOLERANCE).mean()) if outer.any() else 0.0,
    }


def normalise01(image: np.ndarray) -> np.ndarray:
    """Percentile (0.5-99.5 %) normalisation to [0, 1], as training and segmentation do."""
    from synthfm.segment.preprocess import intensity_range, normalize

    return normalize(image, *intensity_range(image, "percentile"))


# ---------------------------------------------------------------------------------------- real cases
@dataclass
class RealStructure:
    """A labelled structure of a real volume to measure, with its modality."""

    name: str
    modality: str
    image: Path
    label: Path
    value: int


def modality_of(name: str, given: str = "") -> Optional[str]:
    """``given`` if set, else a modality word in ``name`` (ct / mr / us), else None."""
    if given:
        return given.strip().lower()
    words = set(name.lower().replace("_", " ").split())
    hits = [m for m, keys in MODALITY_WORDS.items() if words & set(keys)]
    return hits[0] if len(hits) == 1 else None


def read_realism_csv(path: PathLike) -> List[RealStructure]:
    """Rows of ``image,label[,label_value][,name][,modality]``, every file and label checked before any work."""
    from synthfm.evaluate.cases import read_cases_csv
    from synthfm.io import read_volume

    path = Path(path)
    cases = read_cases_csv(path)
    with open(path, newline="") as handle:
        modalities = [row.get("modality") or "" for row in csv.DictReader(handle)]
    out, labels = [], {}
    for row, (case, given) in enumerate(zip(cases, modalities), start=2):
        where = f"{path} row {row} ({case.name})"
        for what in ("image", "label"):
            if not getattr(case, what).is_file():
                raise FileNotFoundError(f"{where}: {what} file {getattr(case, what)} does not exist")
        modality = modality_of(case.name, given)
        if modality not in MODALITY_WORDS:
            raise ValueError(f"{where}: cannot tell the modality from the name; add a 'modality' column "
                             f"(ct, mr or us)" + (f", got '{given}'" if given else ""))
        if case.label not in labels:
            labels[case.label] = read_volume(case.label).array
        present = labels[case.label] != 0 if case.label_value is None else labels[case.label] == case.label_value
        if not present.any():
            what = "no non-zero label" if case.label_value is None else f"no voxel with label {case.label_value}"
            raise ValueError(f"{where}: {case.label} has {what}; fix the row or drop it")
        values = [case.label_value] if case.label_value is not None else \
            sorted(int(v) for v in np.unique(labels[case.label]) if v != 0)
        out += [RealStructure(case.name, modality, case.image, case.label, v) for v in values]
    if not out:
        raise ValueError(f"{path} lists no structures")
    return out


def real_panels(structures: Sequence[RealStructure], modality: str, count: int = 6) -> List[Tuple[np.ndarray, str]]:
    """RGB panels of the largest slice of up to ``count`` real structures of ``modality``, outlined."""
    from synthfm.io import read_volume
    from synthfm.io.png import GREEN, overlay
    from synthfm.segment.preprocess import intensity_range

    panels = []
    for st in [s for s in structures if s.modality == modality][:count]:
        image, label = read_volume(st.image), read_volume(st.label)
        mask3 = label.array == st.value
        z = int(mask3.sum(axis=(1, 2)).argmax())
        img, m = to_frame(image.array[z], mask3[z], (float(image.spacing[1]), float(image.spacing[0])))
        lo, hi = intensity_range(image.array, "auto")
        panels.append((overlay(np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1), [(m, GREEN)]), f"real {st.name[-22:]}"))
    return panels


def side_by_side_png(real: List[Tuple[np.ndarray, str]], config, count: int = 6, seed: int = 0) -> bytes:
    """Real slices (top row, green outline) above synthetic samples of ``config`` (yellow), as PNG bytes."""
    import io

    from synthfm.generate.gallery import tile
    from synthfm.generate.sample import SyntheticGenerator
    from synthfm.io.png import YELLOW, overlay

    gen = SyntheticGenerator(config, seed)
    synth = []
    for i in range(count):
        s = gen.sample_2d(i)
        synth.append((overlay(normalise01(s.image), [(s.mask, YELLOW)]),
                      f"v{config.version} {s.meta.get('scene', '')} {s.meta.get('target_kind', '')}"))
    real = list(real[:count]) + [(np.zeros((8, 8, 3), np.uint8), "")] * max(0, count - len(real))
    panels = real + synth
    buffer = io.BytesIO()
    tile([p for p, _ in panels], [c for _, c in panels], columns=count).save(buffer, format="PNG")
    return buffer.getvalue()


def real_stats(structures: Sequence[RealStructure], max_slices: int = 8, min_pixels: int = 20,
               progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None) -> List[dict]:
    """Statistics on up to ``max_slices`` evenly spaced axial slices of each structure."""
    from synthfm.io import read_volume

    rows, volumes = [], {}
    for n, st in enumerate(structures):
        check_cancel(cancel)
        for p in (st.image, st.label):
            if p not in volumes:
                volumes[p] = read_volume(p)
        image, label = volumes[st.image], volumes[st.label]
        mask3 = label.array == st.value
        areas = mask3.sum(axis=(1, 2))
        slices = np.nonzero(areas >= min_pixels)[0]
        if max_slices and len(slices) > max_slices:
            slices = slices[np.linspace(0, len(slices) - 1, max_slices).round().astype(int)]
        sx, sy = float(image.spacing[0]), float(image.spacing[1])
        lo_hi = None
        for z in slices:
            if lo_hi is None:
                from synthfm.segment.preprocess import intensity_range

                lo_hi = intensity_range(image.array, "auto")  # per volume, as segmentation does (CT: soft window)
            img, m = to_frame(image.array[z], mask3[z], (sy, sx))
            img01 = np.clip((img - lo_hi[0]) / max(lo_hi[1] - lo_hi[0], 1e-6), 0, 1)
            if m.sum() < 4:
                continue
            rows.append({"source": "real", "modality": st.modality, "name": st.name, "slice": int(z),
                         **structure_stats(img01, m)})
        report(progress, n + 1, len(structures), "measuring real structures")
    return rows


def synthetic_stats(config, count: int, seed: int = 0, label: str = "synthetic",
                    progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None) -> List[dict]:
    """Statistics of the targets of ``count`` 2D samples of ``config`` (a GeneratorConfig)."""
    from synthfm.generate.sample import SyntheticGenerator

    gen = SyntheticGenerator(config, seed)
    rows = []
    for i in range(count):
        check_cancel(cancel)
        s = gen.sample_2d(i)
        img01 = normalise01(s.image)
        rows.append({"source": label, "modality": s.meta["modality"], "name": s.meta.get("target_kind", ""),
                     "slice": i, **structure_stats(img01, s.mask)})
        report(progress, i + 1, count, f"measuring {label} targets")
    return rows


def _values(rows: Iterable[dict], stat: str) -> np.ndarray:
    v = np.array([r[stat] for r in rows], float)
    return v[np.isfinite(v)]


def coverage(real: np.ndarray, synthetic: np.ndarray) -> float:
    """Share of ``real`` values inside the 5-95 % range of ``synthetic`` (NaN if either is empty)."""
    if real.size == 0 or synthetic.size == 0:
        return float("nan")
    lo, hi = np.percentile(synthetic, [5, 95])
    return float(((real >= lo) & (real <= hi)).mean())


def summarise(real: List[dict], synthetic: Dict[str, List[dict]]) -> dict:
    """Per modality and statistic: real median/5-95 %, each synthetic set's 5-95 % and coverage."""
    out: dict = {}
    for modality in sorted({r["modality"] for r in real}):
        rm = [r for r in real if r["modality"] == modality]
        entry = {"real_structures": len({r["name"] for r in rm}), "real_slices": len(rm), "stats": {},
                 "invisible_share": {"real": float(np.mean(_values(rm, "cnr") < INVISIBLE_CNR))}}
        for name, rows in synthetic.items():
            sm = [r for r in rows if r["modality"] == modality]
            entry["invisible_share"][name] = float(np.mean(_values(sm, "cnr") < INVISIBLE_CNR)) if sm else float("nan")
        for stat in STATS:
            rv = _values(rm, stat)
            e = {"real_median": float(np.median(rv)) if rv.size else float("nan"),
                 "real_5_95": [float(x) for x in np.percentile(rv, [5, 95])] if rv.size else None}
            for name, rows in synthetic.items():
                sv = _values([r for r in rows if r["modality"] == modality], stat)
                e[name] = {"coverage": coverage(rv, sv),
                           "synthetic_5_95": [float(x) for x in np.percentile(sv, [5, 95])] if sv.size else None,
                           "synthetic_median": float(np.median(sv)) if sv.size else float("nan")}
            entry["stats"][stat] = e
        out[modality] = entry
    return out


def markdown(summary: dict, names: Sequence[str]) -> str:
    """The summary as Markdown tables: coverage per statistic and synthetic set, per modality."""
    lines = ["# Realism report", "",
             "Coverage = share of real values inside the synthetic 5-95 % range (1.0 = every real value covered).", ""]
    for modality, e in summary.items():
        lines += [f"## {modality.upper()} ({e['real_structures']} real structures, {e['real_slices']} slices)", "",
                  "| statistic | real median | real 5-95 % | " + " | ".join(f"{n} 5-95 % | {n} coverage" for n in names) + " |",
                  "| --- | --- | --- | " + " | ".join("--- | ---" for _ in names) + " |"]
        for stat, s in e["stats"].items():
            cells = []
            for n in names:
                rng = s[n]["synthetic_5_95"]
                cells += [f"{rng[0]:.3g}-{rng[1]:.3g}" if rng else "-", f"{s[n]['coverage']:.2f}"]
            real = s["real_5_95"]
            lines.append(f"| {stat} | {s['real_median']:.3g} | {real[0]:.3g}-{real[1]:.3g} | " + " | ".join(cells) + " |")
        inv = e["invisible_share"]
        lines += ["", f"Share with CNR < {INVISIBLE_CNR}: " + ", ".join(f"{k} {v:.2f}" for k, v in inv.items()), ""]
    return "\n".join(lines) + "\n"


def histogram_png(real: List[dict], synthetic: Dict[str, List[dict]], modality: str) -> bytes:
    """Side-by-side histograms (one panel per statistic) of real and synthetic values, as PNG bytes."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 3, figsize=(12, 9))
    rm = [r for r in real if r["modality"] == modality]
    for ax, stat in zip(axes.ravel(), STATS):
        sets = [("real", _values(rm, stat))] + [(n, _values([r for r in rows if r["modality"] == modality], stat))
                                               for n, rows in synthetic.items()]
        allv = np.concatenate([v for _, v in sets if v.size]) if any(v.size for _, v in sets) else np.zeros(1)
        log = stat in ("cnr", "area_fraction", "grad_energy") and allv.min() > 0
        lo, hi = np.percentile(allv, [0.5, 99.5])
        bins = np.geomspace(max(lo, 1e-6), max(hi, 2e-6), 30) if log else np.linspace(lo, hi if hi > lo else lo + 1, 30)
        for name, v in sets:
            if v.size:
                ax.hist(v, bins=bins, density=True, alpha=0.45, label=f"{name} (n={v.size})",
                        histtype="stepfilled" if name == "real" else "step", linewidth=1.5)
        if log:
            ax.set_xscale("log")
        ax.set_title(stat)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"{modality.upper()}: real structures vs synthetic targets")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


def write_report(out: PathLike, real: List[dict], synthetic: Dict[str, List[dict]], overwrite: bool = False,
                 figures: Optional[Dict[str, bytes]] = None) -> dict:
    """Write realism.json/.md, the per-structure CSVs and one histogram PNG per modality; returns the summary.

    Everything is computed before the first file is written, and each file is written atomically.
    """
    out = Path(out)
    if (out / "realism.json").exists() and not overwrite:
        raise FileExistsError(f"{out} already holds a realism report; pick another --out or pass --overwrite")
    summary = summarise(real, synthetic)
    pngs = {m: histogram_png(real, synthetic, m) for m in summary}
    texts = {"realism.json": json.dumps(summary, indent=1), "realism.md": markdown(summary, list(synthetic)),
             "real_stats.csv": csv_text(real, CSV_FIELDS),
             "synthetic_stats.csv": csv_text([r for rows in synthetic.values() for r in rows], CSV_FIELDS)}
    out.mkdir(parents=True, exist_ok=True)
    for modality, data in (figures or {}).items():
        with atomic_path(out / f"slices_{modality}.png") as tmp:
            tmp.write_bytes(data)
    for modality, data in pngs.items():
        with atomic_path(out / f"realism_{modality}.png") as tmp:
            tmp.write_bytes(data)
    for name in ("realism.md", "real_stats.csv", "synthetic_stats.csv", "realism.json"):  # the summary last
        atomic_write_text(out / name, texts[name])
    return summary
