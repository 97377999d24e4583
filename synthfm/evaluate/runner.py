"""Run models x prompt protocols over every slice that contains each structure, and collect metrics."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from synthfm.evaluate.baselines import FLOORS
from synthfm.evaluate.cases import Case, LoadedCase, load_cases
from synthfm.evaluate.metrics import all_metrics, dice
from synthfm.evaluate.protocols import (CHOOSE, CLICK_PROTOCOLS, PROTOCOLS, base_protocol, make_prompts, next_click,
                                        prompt_slices)
from synthfm.io.checks import check_slicing_axis
from synthfm.io.views import SliceView, slice_view
from synthfm.segment.prompts import Prompts
from synthfm.utils.progress import CancelToken, ProgressCallback, check_cancel, report


@dataclass
class Results:
    rows: List[Dict[str, object]] = field(default_factory=list)
    skipped: List[Dict[str, str]] = field(default_factory=list)
    examples: Dict[tuple, list] = field(default_factory=dict)  # (model, protocol) -> [(dice, image, truth, pred, title,
    #                                                             aspect)], turned as Slicer's view shows the slice
    notes: List[str] = field(default_factory=list)  # lines for people (e.g. how the embedding cache was used)

    def skipped_pairs(self) -> set:
        """``{(model, protocol)}`` of the pairs listed in ``skipped`` (the evaluation loops leave them out)."""
        return {(s["model"], s["protocol"]) for s in self.skipped}


def _others(axis: int) -> tuple:
    """The two array axes in a slice normal to ``axis``."""
    return tuple(a for a in range(3) if a != axis)


def _slices_with(mask: np.ndarray, limit: Optional[int], axis: int = 0) -> List[int]:
    """Slices (along ``axis``) holding the structure, evenly subsampled to at most ``limit``."""
    present = np.nonzero(mask.any(axis=_others(axis)))[0]
    if limit and len(present) > limit:
        present = present[np.unique(np.linspace(0, len(present) - 1, limit).round().astype(int))]
    return [int(s) for s in present]


class _ModelRunner:
    """A registry model behind one SlicePredictor (embeddings shared by all protocols of a slice)."""

    def __init__(self, name: str, device: str, mirror: Optional[bool] = None,
                 embedding_cache: Optional[str] = None, point_gate: Optional[float] = None) -> None:
        from synthfm.models import load_model
        from synthfm.segment import SlicePredictor

        self.name = name
        self.model = load_model(name)
        self.predictor = SlicePredictor(self.model, device)
        self.predictor.mirror = mirror  # None: the model's own (ModelSpec.mirror_average)
        if point_gate is not None:  # None: the model's own (ModelSpec.point_gate)
            self.predictor.point_gate = point_gate
        self.predictor.use_store(embedding_cache)  # None: embeddings in memory only

    def accepts(self, protocol: str) -> Optional[str]:
        if not self.model.trained_points and (protocol in CLICK_PROTOCOLS or not protocol.startswith("box")):
            return f"{self.name} was trained with box prompts only"
        if protocol.endswith(CHOOSE):  # asked on a probe structure: whether these prompts give three candidates
            probe = np.zeros((32, 32), bool)
            probe[8:24, 10:22] = True
            if not self.predictor.offers_choice(make_prompts(protocol, probe, np.random.default_rng(0))):
                return f"{self.name} gives one mask for {base_protocol(protocol)} prompts: nothing to choose among"
        return None

    def predict(self, image, prompts, key, value_range, candidate: Optional[int] = None, aspect: float = 1.0):
        prediction = self.predictor.predict(image, prompts, key=key, value_range=value_range, candidate=candidate,
                                            aspect=aspect)
        self.last_score = prediction.score  # the model's quality score (calibrated when it has a calibration)
        self.last_signals = prediction.signals  # the raw signals it came from (synthfm.segment.quality)
        self.last_choice = prediction.choice  # which candidate it is (None: the prompts give one mask)
        return prediction.mask


class _FloorRunner:
    last_score = None
    last_signals: dict = {}

    def __init__(self, name: str) -> None:
        self.name, self.floor = name, FLOORS[name]

    def accepts(self, protocol: str) -> Optional[str]:
        if protocol in CLICK_PROTOCOLS:
            return f"{self.name} takes no correction clicks"
        is_box = protocol.startswith("box")
        if (self.floor.needs == "box") != is_box:
            return f"{self.name} needs {self.floor.needs} prompts"
        if protocol.endswith(CHOOSE):
            return f"{self.name} gives one mask: nothing to choose among"
        return None

    def predict(self, image, prompts, key, value_range, aspect: float = 1.0):
        return self.floor.predict(image, prompts)  # the floors work on the slice's pixel grid


def _runners(models: Sequence[str], protocols: Sequence[str], device: str, volume: bool, results: Results,
             mirror: Optional[bool] = None, embedding_cache: Optional[str] = None,
             point_gate: Optional[float] = None) -> list:
    """One runner per model; (model, protocol) pairs that cannot run are listed in ``results.skipped``
    (the evaluation loops leave those out)."""
    for p in protocols:
        if p not in PROTOCOLS:
            raise ValueError(f"unknown prompt protocol '{p}'; choose from {', '.join(PROTOCOLS)}")
    runners = [_FloorRunner(m) if m in FLOORS else _ModelRunner(m, device, mirror, embedding_cache, point_gate)
               for m in models]
    models_seen: list = []
    for runner in runners:  # models with the same frozen encoder encode each slice once between them
        if isinstance(runner, _ModelRunner):
            any(runner.predictor.share_embeddings(other.predictor) for other in models_seen)
            models_seen.append(runner)
    for runner in runners:
        for protocol in protocols:
            reason = runner.accepts(protocol)
            if volume and not reason and isinstance(runner, _FloorRunner):
                reason = "floors segment single slices"
            if reason:
                results.skipped.append({"model": runner.name, "protocol": protocol, "reason": reason})
    return runners


def _keep_example(results: Results, row: dict, image, truth, pred, vrange, title: str, view: SliceView) -> None:
    """Keep the worst and the best (model, protocol) example for the report's thumbnails, turned as ``view`` shows
    the slice."""
    ex = results.examples.setdefault((row["model"], row["protocol"]), [])
    image01 = (image - vrange[0]) / max(vrange[1] - vrange[0], 1e-6)
    ex.append((row["dice"], view.show(image01), view.show(truth), view.show(pred), title, view.aspect))
    ex.sort(key=lambda e: e[0])
    if len(ex) > 2:
        del ex[1:-1]


def evaluate(cases: Sequence[Case], models: Sequence[str], protocols: Sequence[str], seed: int = 0,
             max_slices: Optional[int] = 20, clicks: int = 5, device: str = "cpu", tolerance_mm: float = 2.0,
             progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None,
             volume: bool = False, axis: int = 0, volume_slices: int = 1,
             propagation: Optional[Mapping[str, object]] = None, mirror: Optional[bool] = None,
             embedding_cache: Optional[str] = None, point_gate: Optional[float] = None) -> Results:
    """Evaluate every (model, protocol) on the structure slices of every case, slicing along ``axis``
    (0 axial, 1 coronal, 2 sagittal).

    ``volume=True`` instead prompts each structure on ``volume_slices`` slices (its largest, plus slices near
    both ends: :func:`~synthfm.evaluate.protocols.prompt_slices`), propagates through the volume
    (:class:`synthfm.segment.VolumeSegmenter`) and scores the 3D result; ``propagation`` overrides settings of
    every model's propagation defaults (``PropagationOptions`` keyword arguments). ``mirror`` (None: each model's
    own ``mirror_average``) sets ``SlicePredictor.mirror`` for every model, ``point_gate`` (None: each model's own)
    ``SlicePredictor.point_gate``. ``embedding_cache``: a folder where slice
    embeddings are kept between runs (:mod:`synthfm.segment.embedding_store`; another decoder on the same encoder
    then needs no encoder call on these images).
    """
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0 (axial), 1 (coronal) or 2 (sagittal), got {axis}")
    if volume_slices < 1 or (volume_slices > 1 and not volume):
        raise ValueError(f"several prompted slices ({volume_slices}) need volume mode (--volume); "
                         "the per-slice protocol prompts every slice on its own")
    if propagation and not volume:
        raise ValueError("--propagation applies to volume mode: add --volume (or drop --propagation)")
    results = Results()
    loaded = load_cases(cases)  # bad data is found before any model is loaded; each file is read once
    for lc in loaded:
        check_slicing_axis(lc.image.shape, axis, f"case {lc.case.name}", "evaluate 2D images without --axis")
    runners = _runners(models, protocols, device, volume, results, mirror, embedding_cache, point_gate)
    if volume:
        _evaluate_volumes(loaded, runners, protocols, seed, tolerance_mm, results, progress, cancel,
                          axis, volume_slices, dict(propagation or {}), clicks)
    else:
        _evaluate_slices(loaded, runners, protocols, seed, max_slices, clicks, tolerance_mm, results, progress, cancel,
                         axis)
    results.notes += [r.predictor.store.describe() for r in runners
                      if isinstance(r, _ModelRunner) and r.predictor.store is not None]
    return results


def _evaluate_slices(loaded: Sequence[LoadedCase], runners: list, protocols: Sequence[str], seed: int,
                     max_slices: Optional[int], clicks: int, tolerance_mm: float, results: Results,
                     progress: Optional[ProgressCallback], cancel: Optional[CancelToken], axis: int = 0) -> Results:
    """Per structure slice: each (model, protocol) prompted on the slice alone, 2D metrics."""
    from synthfm.segment.preprocess import intensity_range, slice_aspect, slice_spacing

    skipped = results.skipped_pairs()
    jobs = [(lc, v, s) for lc in loaded for v in lc.values
            for s in _slices_with(lc.label.array == v, max_slices, axis)]
    ranges: Dict[str, tuple] = {}  # the intensity window of each image, computed once
    for done, (lc, value, s) in enumerate(jobs, 1):
        check_cancel(cancel)
        image = np.take(lc.image.array, s, axis=axis).astype(np.float32)
        truth = np.take(lc.label.array, s, axis=axis) == value
        spacing2d = slice_spacing(lc.image.spacing, axis)  # (rows, columns) in mm
        view = slice_view(lc.image.ijk_to_ras_matrix(), axis)  # how Slicer shows the slice: the report's pictures
        aspect = slice_aspect(lc.image.spacing, axis)  # the model sees the slice with square physical pixels
        if str(lc.case.image) not in ranges:
            ranges[str(lc.case.image)] = intensity_range(lc.image.array, "auto")
        vrange = ranges[str(lc.case.image)]
        for runner in runners:
            for protocol in protocols:
                if (runner.name, protocol) in skipped:
                    continue
                rng = np.random.default_rng([seed, done])
                prompts = make_prompts(protocol, truth, rng, spacing2d)
                key = (str(lc.case.image), axis, s)  # slices shared by several structures are encoded once
                pred = runner.predict(image, prompts, key, vrange, aspect=aspect)
                curve = [dice(pred, truth)]
                presses = None
                if protocol.endswith(CHOOSE):  # Other mask pressed until the best candidate shows (pick + 1, + 2)
                    shown = [(curve[0], pred, runner.last_score, runner.last_signals)]
                    while len(shown) < 3 and runner.last_choice is not None:
                        mask = runner.predict(image, prompts, key, vrange, (runner.last_choice + 1) % 3, aspect)
                        shown.append((dice(mask, truth), mask, runner.last_score, runner.last_signals))
                    presses = int(np.argmax([d for d, *_ in shown]))  # the first of equals: fewest presses
                    curve[0], pred, runner.last_score, runner.last_signals = shown[presses]
                if protocol in CLICK_PROTOCOLS:
                    for _ in range(clicks - 1):
                        prompts = next_click(prompts, pred, truth)
                        if prompts is None:
                            break
                        pred = runner.predict(image, prompts, key, vrange, aspect=aspect)
                        curve.append(dice(pred, truth))
                row = {"case": lc.case.name, "label": value, "slice": s, "model": runner.name, "protocol": protocol,
                       **all_metrics(pred, truth, spacing2d, tolerance_mm)}
                if protocol in CLICK_PROTOCOLS:
                    row["dice_per_click"] = curve
                if presses is not None:
                    row["presses"] = presses
                if runner.last_score is not None:
                    row["pred_iou"] = runner.last_score
                    row["score_calibrated"] = runner.predictor.calibrator is not None
                    row.update(runner.last_signals)
                results.rows.append(row)
                _keep_example(results, row, image, truth, pred, vrange, f"{lc.case.name} label {value} slice {s}",
                              view)
        report(progress, done, len(jobs), lc.case.name)
    return results


def _span(present: np.ndarray) -> str:
    """``"first..last"`` of the slices where ``present`` is true (``""`` when none)."""
    idx = np.flatnonzero(present)
    return f"{idx[0]}..{idx[-1]}" if len(idx) else ""


def _evaluate_volumes(loaded: Sequence[LoadedCase], runners: list, protocols: Sequence[str], seed: int,
                      tolerance_mm: float, results: Results, progress: Optional[ProgressCallback],
                      cancel: Optional[CancelToken], axis: int = 0, volume_slices: int = 1,
                      propagation: Optional[Dict[str, object]] = None, clicks: int = 5) -> Results:
    """Per structure: prompts on its largest slice along ``axis`` (and near its ends when ``volume_slices`` > 1),
    propagation both ways, 3D metrics. The click protocols place their correction clicks on each prompted slice
    before propagating (:func:`corrected_prompts`)."""
    from synthfm.segment import PropagationOptions, VolumeSegmenter
    from synthfm.segment.preprocess import slice_spacing

    skipped = results.skipped_pairs()
    jobs = [(lc, v) for lc in loaded for v in lc.values]
    segmenters: Dict[tuple, VolumeSegmenter] = {}
    for done, (lc, value) in enumerate(jobs, 1):
        truth = lc.label.array == value
        prompted = prompt_slices(truth, volume_slices, axis)
        s = int(np.argmax(truth.sum(axis=_others(axis))))
        spacing2d, spacing3d = slice_spacing(lc.image.spacing, axis), tuple(lc.image.spacing[::-1])
        view = slice_view(lc.image.ijk_to_ras_matrix(), axis)  # how Slicer shows the slice: the report's pictures
        for runner in runners:
            if all((runner.name, p) in skipped for p in protocols):
                continue
            key = (runner.name, str(lc.case.image))
            if key not in segmenters:  # slices are encoded once per model and image, shared by its structures
                segmenters[key] = VolumeSegmenter(runner.predictor, lc.image.array.astype(np.float32), axis,
                                                  volume_id=str(lc.case.image), spacing=lc.image.spacing)
            seg = segmenters[key]
            for protocol in protocols:
                if (runner.name, protocol) in skipped:
                    continue
                check_cancel(cancel)
                prompts = structure_prompts(protocol, truth, prompted, seed, done, spacing2d, axis)
                chosen, presses = (best_candidates(seg, prompts, truth, axis) if protocol.endswith(CHOOSE)
                                   else ({}, None))
                options = PropagationOptions.for_model(runner.model, **(propagation or {}))
                given = None
                if protocol in CLICK_PROTOCOLS:
                    prompts, given = corrected_prompts(seg, prompts, truth, axis, clicks, options.smallest_mask)
                try:
                    result = seg.propagate_slices(prompts, options=options, cancel=cancel, candidates=chosen)
                    pred, kept = result.mask, len(result.slices)
                    ends = sorted((r for r in result.records if r.stop), key=lambda r: r.index)
                    stops = "; ".join(f"before {r.index}: {r.stop}" for r in ends)
                except ValueError:  # a prompted slice itself came out empty: nothing to propagate
                    pred, kept, stops = np.zeros_like(truth), 0, "prompted slice empty"
                on_truth, on_pred = truth.any(axis=_others(axis)), pred.any(axis=_others(axis))
                row = {"case": lc.case.name, "label": value, "slice": s, "model": runner.name, "protocol": protocol,
                       "axis": axis, "prompted_slices": " ".join(map(str, prompted)),
                       "slices_truth": int(on_truth.sum()), "slices_kept": kept,
                       "slices_outside": int((on_pred & ~on_truth).sum()),  # kept where the structure is not: leaks
                       "truth_range": _span(on_truth), "kept_range": _span(on_pred), "stops": stops,
                       **all_metrics(pred, truth, spacing3d, tolerance_mm)}
                if presses is not None:
                    row["presses"] = presses
                if given is not None:
                    row["clicks_given"] = given
                results.rows.append(row)
                _keep_example(results, row, seg.slice(s), np.take(truth, s, axis=axis), np.take(pred, s, axis=axis),
                              seg.value_range, f"{lc.case.name} label {value}, prompted slice {s}", view)
        report(progress, done, len(jobs), lc.case.name)
    return results


def structure_prompts(protocol: str, truth: np.ndarray, prompted: Sequence[int], seed: int, job: int,
                      spacing2d=None, axis: int = 0) -> Dict[int, Prompts]:
    """The prompts volume mode gives structure number ``job`` (1-based, in the cases' order) on its ``prompted``
    slices: a random stream of its own per structure and protocol, so every protocol and tool draws the same."""
    rng = np.random.default_rng([seed, job])
    return {i: make_prompts(protocol, np.take(truth, i, axis=axis), rng, spacing2d) for i in prompted}


def best_candidates(seg, prompts: Mapping[int, object], truth: np.ndarray, axis: int) -> tuple:
    """The ``-choose`` protocols in volumes: on each prompted slice the candidate with the highest Dice against the
    truth there (the user's Other mask before Propagate; the first of equals), and the presses from the model's pick
    to it, summed over the prompted slices: ``({slice: candidate}, presses)``."""
    chosen, presses = {}, 0
    for i, slice_prompts in prompts.items():
        truth_i = np.take(truth, i, axis=axis)
        auto = seg.segment_slice(i, slice_prompts)  # the model's pick, as shown before any press
        scores = [dice(auto.mask, truth_i)] + [dice(seg.segment_slice(i, slice_prompts, candidate=(auto.choice + n) % 3)
                                                    .mask, truth_i) for n in (1, 2)]
        best = int(np.argmax(scores))
        if best:
            chosen[i], presses = (auto.choice + best) % 3, presses + best
    return chosen, presses


def corrected_prompts(seg, prompts: Mapping[int, Prompts], truth: np.ndarray, axis: int, clicks: int,
                      smallest: int = 1) -> tuple:
    """The click protocols in volumes: on each prompted slice, up to ``clicks - 1`` correction clicks on the
    preview's largest error there (the user's clicks before Propagate; none once the preview is perfect). A click
    that leaves fewer than ``smallest`` pixels in the preview (``PropagationOptions.smallest_mask``: Propagate refuses
    such a prompted slice as empty) is undone and ends that slice's clicks:
    ``({slice: prompts}, correction clicks kept, summed over the prompted slices)``."""
    corrected, given = {}, 0
    for i, slice_prompts in prompts.items():
        truth_i = np.take(truth, i, axis=axis)
        preview = seg.segment_slice(i, slice_prompts).mask
        for _ in range(clicks - 1):
            clicked = next_click(slice_prompts, preview, truth_i)
            if clicked is None:
                break
            preview = seg.segment_slice(i, clicked).mask
            if preview.sum() < smallest:
                break
            slice_prompts, given = clicked, given + 1
        corrected[i] = slice_prompts
    return corrected, given


def iou_calibration(rows: Sequence[dict]) -> Dict[str, object]:
    """How well the model's quality score (``pred_iou``: calibrated when the model has a calibration, else the
    decoder's predicted IoU) ranks its own masks: Spearman correlation with the true IoU, the mean absolute
    error, and ``signal_spearman``: the same correlation for each raw quality signal (``iou_head`` included).
    Rows without a prediction (e.g. floors) give nothing."""
    from synthfm.evaluate.calibrate import spearman
    from synthfm.segment.quality import SIGNALS

    rows = [r for r in rows if r.get("pred_iou") is not None]
    pairs = np.array([(r["pred_iou"], r["iou"]) for r in rows], float)
    if len(pairs) < 3 or np.ptp(pairs[:, 0]) == 0 or np.ptp(pairs[:, 1]) == 0:
        return {}
    signals = {s: round(spearman(rows, s), 4) for s in SIGNALS if any(s in r for r in rows)}
    return {"iou_spearman": spearman(rows, "pred_iou"),
            "iou_mae": float(np.mean(np.abs(pairs[:, 0] - pairs[:, 1]))),
            "score_calibrated": bool(rows[0].get("score_calibrated", False)),
            "signal_spearman": {k: (None if np.isnan(v) else v) for k, v in signals.items()}}


def mean_click_curve(rows: Sequence[dict]) -> Optional[List[float]]:
    """Mean Dice after each prompt of the click protocols' rows (``dice_per_click``: the first point or box, then
    each correction click); a slice that became perfect before its last click keeps its last Dice. None when no row
    has a curve."""
    curves = [r["dice_per_click"] for r in rows if r.get("dice_per_click")]
    if not curves:
        return None
    n = max(len(c) for c in curves)
    return [float(v) for v in np.mean([list(c) + [c[-1]] * (n - len(c)) for c in curves], axis=0)]


def summarize(results: Results) -> Dict[str, object]:
    """Means per model x protocol and per case/structure; ``mean_dice`` over everything evaluated."""
    def means(rows):
        out = {"n": len(rows)}
        for k in ("dice", "iou", "nsd"):
            out[k] = float(np.mean([r[k] for r in rows]))
        finite = [r["hd95"] for r in rows if math.isfinite(r["hd95"])]
        out["hd95_mm"] = float(np.mean(finite)) if finite else None
        out["hd95_undefined"] = len(rows) - len(finite)
        out.update(iou_calibration(rows))
        curve = mean_click_curve(rows)
        if curve is not None:
            out["dice_per_click"] = curve
        if rows and "slices_outside" in rows[0]:  # volume mode: the worst leak past the structure's ends
            worst = max(rows, key=lambda r: r["slices_outside"])
            out["worst_leak"] = {k: worst[k] for k in ("case", "label", "slices_outside", "slices_kept", "slices_truth")}
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
