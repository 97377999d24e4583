"""Run models x prompt protocols over every slice that contains each structure, and collect metrics."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from synthfm.evaluate.baselines import FLOORS
from synthfm.evaluate.cases import Case, load_case
from synthfm.evaluate.metrics import all_metrics, dice
from synthfm.evaluate.protocols import PROTOCOLS, make_prompts, next_click
from synthfm.utils.progress import CancelToken, ProgressCallback, check_cancel, report


@dataclass
class Results:
    rows: List[Dict[str, object]] = field(default_factory=list)
    skipped: List[Dict[str, str]] = field(default_factory=list)
    examples: Dict[tuple, list] = field(default_factory=dict)  # (model, protocol) -> [(dice, image, truth, pred)]


def _slices_with(mask: np.ndarray, limit: Optional[int]) -> List[int]:
    """Slices (axis 0) holding the structure, evenly subsampled to at most ``limit``."""
    present = np.nonzero(mask.any(axis=(1, 2)))[0]
    if limit and len(present) > limit:
        present = present[np.unique(np.linspace(0, len(present) - 1, limit).round().astype(int))]
    return [int(s) for s in present]


class _ModelRunner:
    """A registry model behind one SlicePredictor (embeddings shared by all protocols of a slice)."""

    def __init__(self, name: str, device: str) -> None:
        from synthfm.models import load_model
        from synthfm.segment import SlicePredictor

        self.name = name
        self.model = load_model(name)
        self.predictor = SlicePredictor(self.model, device)

    def accepts(self, protocol: str) -> Optional[str]:
        if not self.model.trained_points and protocol not in ("box", "box-jitter"):
            return f"{self.name} was trained with box prompts only"
        return None

    def predict(self, image, prompts, key, value_range):
        return self.predictor.predict(image, prompts, key=key, value_range=value_range).mask


class _FloorRunner:
    def __init__(self, name: str) -> None:
        self.name, self.floor = name, FLOORS[name]

    def accepts(self, protocol: str) -> Optional[str]:
        is_box = protocol.startswith("box")
        if (self.floor.needs == "box") != is_box:
            return f"{self.name} needs {self.floor.needs} prompts"
        return None

    def predict(self, image, prompts, key, value_range):
        return self.floor.predict(image, prompts)


def evaluate(cases: Sequence[Case], models: Sequence[str], protocols: Sequence[str], seed: int = 0,
             max_slices: Optional[int] = 20, clicks: int = 5, device: str = "cpu", tolerance_mm: float = 2.0,
             progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None) -> Results:
    """Evaluate every (model, protocol) on the structure slices of every case (axis 0)."""
    for p in protocols:
        if p not in PROTOCOLS:
            raise ValueError(f"unknown prompt protocol '{p}'; choose from {', '.join(PROTOCOLS)}")
    from synthfm.segment.preprocess import intensity_range

    runners = [_FloorRunner(m) if m in FLOORS else _ModelRunner(m, device) for m in models]
    results = Results()
    for runner in runners:
        for protocol in protocols:
            reason = runner.accepts(protocol)
            if reason:
                results.skipped.append({"model": runner.name, "protocol": protocol, "reason": reason})
    loaded = [load_case(c) for c in cases]
    jobs = [(lc, v, s) for lc in loaded for v in lc.values for s in _slices_with(lc.label.array == v, max_slices)]
    for done, (lc, value, s) in enumerate(jobs, 1):
        check_cancel(cancel)
        image, truth = lc.image.array[s].astype(np.float32), lc.label.array[s] == value
        spacing2d = (lc.image.spacing[1], lc.image.spacing[0])
        vrange = intensity_range(lc.image.array, "auto")
        for runner in runners:
            for protocol in protocols:
                if runner.accepts(protocol):
                    continue
                rng = np.random.default_rng([seed, done])
                prompts = make_prompts(protocol, truth, rng, spacing2d)
                key = (str(lc.case.image), 0, s)  # slices shared by several structures are encoded once
                pred = runner.predict(image, prompts, key, vrange)
                curve = [dice(pred, truth)]
                if protocol == "clicks":
                    for _ in range(clicks - 1):
                        prompts = next_click(prompts, pred, truth)
                        if prompts is None:
                            break
                        pred = runner.predict(image, prompts, key, vrange)
                        curve.append(dice(pred, truth))
                row = {"case": lc.case.name, "label": value, "slice": s, "model": runner.name, "protocol": protocol,
                       **all_metrics(pred, truth, spacing2d, tolerance_mm)}
                if protocol == "clicks":
                    row["dice_per_click"] = curve
                results.rows.append(row)
                ex = results.examples.setdefault((runner.name, protocol), [])
                ex.append((row["dice"], (image - vrange[0]) / max(vrange[1] - vrange[0], 1e-6), truth, pred,
                           f"{lc.case.name} label {value} slice {s}"))
                ex.sort(key=lambda e: e[0])
                if len(ex) > 2:
                    del ex[1:-1]  # keep worst and best
        report(progress, done, len(jobs), lc.case.name)
    return results


def summarize(results: Results) -> Dict[str, object]:
    """Means per model x protocol and per case/structure; ``mean_dice`` over everything evaluated."""
    def means(rows):
        out = {"n": len(rows)}
        for k in ("dice", "iou", "nsd"):
            out[k] = float(np.mean([r[k] for r in rows]))
        finite = [r["hd95"] for r in rows if math.isfinite(r["hd95"])]
        out["hd95_mm"] = float(np.mean(finite)) if finite else None
        out["hd95_undefined"] = len(rows) - len(finite)
        return out

    groups: Dict[str, list] = {}
    per_case: Dict[str, list] = {}
    for r in results.rows:
        groups.setdefault(f"{r['model']} | {r['protocol']}", []).append(r)
        per_case.setdefault(f"{r['model']} | {r['protocol']} | {r['case']} | label {r['label']}", []).append(r)
    return {
        "mean_dice": float(np.mean([r["dice"] for r in results.rows])) if results.rows else None,
        "by_model_protocol": {k: means(v) for k, v in groups.items()},
        "by_case": {k: means(v) for k, v in per_case.items()},
        "skipped": results.skipped,
    }
