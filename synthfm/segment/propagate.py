"""Whole-volume segmentation: pre-encode slices, then propagate a prompted mask slice by slice.

From the prompted slice the structure is followed in both directions; each next slice is prompted
with the previous mask's box (plus a margin), its most interior point, and its low-res logits.
Propagation stops where the structure ends: an empty mask, a low predicted IoU, an implausible jump in
area (the usual sign of leaking into a neighbour) or, optionally, in the mean intensity under the mask.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Dict, Hashable, List, Optional, Tuple, Union

import numpy as np
from scipy import ndimage as ndi

from synthfm.segment.predictor import Prediction, SlicePredictor
from synthfm.segment.preprocess import intensity_range
from synthfm.segment.prompts import Prompts
from synthfm.utils.masks import iou
from synthfm.utils.progress import CancelToken, ProgressCallback, check_cancel, report

DIRECTIONS = ("both", "up", "down")


@dataclass
class PropagationOptions:
    """Thresholds of slice-to-slice propagation."""

    box_margin: float = 0.1  # fraction of the box size added on each side (plus 2 px)
    use_box: bool = True  # prompt the next slice with the previous mask's box (needs use_points when off)
    use_points: bool = True  # add the previous mask's most interior point (off for box-only models)
    use_mask_prompt: bool = True  # give the previous low-res logits as mask prompt
    min_area_px: int = 6  # smaller masks mean the structure ended
    min_score: float = 0.7  # predicted IoU below this stops propagation (LiteMedSAM: ~0.6 past the end)
    min_score_ratio: float = 0.0  # ... or below this fraction of the prompted slice's predicted IoU
    max_growth: float = 2.0  # area larger than this factor x previous area: leak, stop
    max_intensity_shift: float = 0.0  # mean under the mask moved by more than this x the object's contrast: stop
    pick_closest: bool = False  # ask for 3 candidates and keep the one closest (IoU) to the previous mask
    min_overlap: float = 0.0  # IoU with the previous slice's mask below this: the shape jumped, stop
    max_slices: Optional[int] = None  # per direction

    @classmethod
    def parse_overrides(cls, items: List[str]) -> Dict[str, object]:
        """``["min_score=0.5", "pick_closest=true"]`` -> typed keyword arguments; unknown keys are an error."""
        defaults, names = cls(), [f.name for f in fields(cls)]
        parsed: Dict[str, object] = {}
        for item in items:
            key, sep, text = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in names:
                raise ValueError(f"propagation setting '{item}' is not KEY=VALUE with KEY one of {', '.join(names)}")
            try:
                parsed[key] = _parse_value(text.strip(), getattr(defaults, key))
            except ValueError:
                raise ValueError(f"propagation setting '{item}': '{text}' is not a valid value for {key} "
                                 f"(default: {getattr(defaults, key)})") from None
        return parsed

    @classmethod
    def for_model(cls, model, **overrides) -> "PropagationOptions":
        """Defaults suited to ``model``: box-only decoders (LiteMedSAM) get no point prompts, and the registry
        entry of the model (or of the model a checkpoint was trained for) adds the settings chosen for it on
        synthetic volumes (``ModelSpec.propagation``, see benchmarks/bench_propagation.py)."""
        from synthfm.models.registry import MODEL_REGISTRY

        spec = MODEL_REGISTRY.get(getattr(model, "name", ""))
        chosen = dict(spec.propagation) if spec is not None else {}
        return cls(**{"use_points": getattr(model, "trained_points", True), **chosen, **overrides})


@dataclass
class SliceRecord:
    index: int
    area: int
    score: float
    stop: Optional[str] = None  # why propagation stopped at this slice (the slice itself is not kept)


@dataclass
class PropagationResult:
    mask: np.ndarray  # bool, same shape as the volume
    records: List[SliceRecord] = field(default_factory=list)

    @property
    def slices(self) -> List[int]:
        return sorted(r.index for r in self.records if r.stop is None)

    def describe(self) -> str:
        """One line for people: the slices kept and why propagation stopped in each direction."""
        kept = self.slices
        stops = [f"before slice {r.index} ({r.stop})" for r in sorted(self.records, key=lambda r: r.index) if r.stop]
        return (f"{len(kept)} slice{'s' * (len(kept) != 1)} ({kept[0]}..{kept[-1]})"
                + (f", stopped {' and '.join(stops)}" if stops else ", up to the volume's ends"))


def _parse_value(text: str, like: object) -> object:
    """``text`` as the type of the default ``like`` (bool, whole number or None, float)."""
    if isinstance(like, bool):
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(text)
        return text.lower() in ("true", "1", "yes")
    if like is None or isinstance(like, int):  # max_slices (default None) and min_area_px
        return None if text.lower() == "none" else int(text)
    return float(text)


def prompts_from_mask(pred: Prediction, options: PropagationOptions) -> Prompts:
    """Box (with margin), interior point and logits of a mask, to prompt the neighbouring slice."""
    ys, xs = np.nonzero(pred.mask)
    h, w = pred.mask.shape
    mx = (xs.max() - xs.min() + 1) * options.box_margin + 2
    my = (ys.max() - ys.min() + 1) * options.box_margin + 2
    box = np.array([max(0, xs.min() - mx), max(0, ys.min() - my), min(w - 1, xs.max() + mx), min(h - 1, ys.max() + my)])
    points, labels = np.zeros((0, 2)), np.zeros(0, np.int64)
    if options.use_points:
        dist = ndi.distance_transform_edt(pred.mask)
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
        points, labels = np.array([[x, y]], float), np.array([1])
    return Prompts(points, labels, box if options.use_box or not options.use_points else None,
                   pred.logits if options.use_mask_prompt else None)


class VolumeSegmenter:
    """Segment a ``(Z, Y, X)`` volume slice by slice along ``axis`` (0: axial k, 1: coronal j, 2: sagittal i)."""

    def __init__(self, predictor: SlicePredictor, volume: np.ndarray, axis: int = 0,
                 volume_id: Optional[Hashable] = None, value_range: Optional[Tuple[float, float]] = None) -> None:
        """``value_range``: the (low, high) intensities mapped to 0..1 (e.g. the viewer's window/level); by default
        the predictor's window applied to the whole volume."""
        volume = np.asarray(volume)
        if volume.ndim != 3:
            raise ValueError(f"propagation needs a 3D volume (Z, Y, X); got shape {volume.shape}. "
                             "For a single 2D image use SlicePredictor.predict")
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
        self.predictor, self.volume, self.axis = predictor, volume, axis
        self.volume_id = id(volume) if volume_id is None else volume_id
        self.value_range = intensity_range(volume, predictor.window if value_range is None else tuple(value_range))

    @property
    def n_slices(self) -> int:
        return self.volume.shape[self.axis]

    def slice(self, index: int) -> np.ndarray:
        if not 0 <= index < self.n_slices:
            raise ValueError(f"slice {index} is outside the volume (0..{self.n_slices - 1} along axis {self.axis})")
        return np.take(self.volume, index, axis=self.axis)

    def key(self, index: int) -> Hashable:
        return (self.volume_id, self.axis, index)

    def encode_all(self, progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None,
                   order: Optional[List[int]] = None) -> None:
        """Pre-encode slices (by default outward from the middle), skipping cached ones; cancellable."""
        mid = self.n_slices // 2
        order = order or sorted(range(self.n_slices), key=lambda i: abs(i - mid))
        for done, i in enumerate(order, 1):
            check_cancel(cancel)
            if not self.predictor.is_cached(self.key(i)):
                self.predictor.embed(self.slice(i), self.key(i), self.value_range)
            report(progress, done, len(order), "encoding slices")

    def segment_slice(self, index: int, prompts: Prompts, multimask: Union[str, bool] = "auto") -> Prediction:
        return self.predictor.predict(self.slice(index), prompts, key=self.key(index), multimask=multimask,
                                      value_range=self.value_range)

    def _mean_in(self, index: int, mask: np.ndarray) -> float:
        """Mean intensity under ``mask`` on slice ``index``."""
        return float(self.slice(index)[mask].mean())

    def _contrast(self, index: int, mask: np.ndarray) -> float:
        """|mean inside - mean of a 3-pixel ring outside| of ``mask``, at least 2% of the intensity window."""
        ring = ndi.binary_dilation(mask, iterations=3) & ~mask
        inside = self._mean_in(index, mask)
        outside = self._mean_in(index, ring) if ring.any() else inside
        lo, hi = self.value_range
        return max(abs(inside - outside), 0.02 * (hi - lo), 1e-6)

    def _put(self, mask: np.ndarray, index: int, slice_mask: np.ndarray) -> None:
        view = np.moveaxis(mask, self.axis, 0)
        view[index] = slice_mask

    def propagate(self, index: int, prompts: Prompts, direction: str = "both",
                  progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None,
                  options: Optional[PropagationOptions] = None) -> PropagationResult:
        """Segment slice ``index`` from ``prompts`` and follow the structure ``up``/``down``/``both``."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got '{direction}'")
        options = options or PropagationOptions()
        first = self.segment_slice(index, prompts)
        if first.mask.sum() < options.min_area_px:
            raise ValueError(f"the prompts give an empty mask on slice {index}; move or add prompts first")
        floor = max(options.min_score, options.min_score_ratio * first.score)
        track = bool(options.max_intensity_shift)  # the mean under the mask, slice to slice
        contrast = self._contrast(index, first.mask) if track else 1.0
        first_mean = self._mean_in(index, first.mask) if track else 0.0
        result = PropagationResult(np.zeros(self.volume.shape, bool), [SliceRecord(index, int(first.mask.sum()), first.score)])
        self._put(result.mask, index, first.mask)
        steps = [s for s, name in ((1, "up"), (-1, "down")) if direction in (name, "both")]
        total = sum(self.n_slices - 1 - index if s > 0 else index for s in steps)
        done = 0
        for step in steps:
            prev, prev_mean, i, count = first, first_mean, index + step, 0
            while 0 <= i < self.n_slices and (options.max_slices is None or count < options.max_slices):
                check_cancel(cancel)
                pred = self.segment_slice(i, prompts_from_mask(prev, options), options.pick_closest or "auto")
                if options.pick_closest:
                    pred = pred.closest_to(prev.mask)
                area = int(pred.mask.sum())
                mean = self._mean_in(i, pred.mask) if track and area else prev_mean
                shift = abs(mean - prev_mean) / contrast
                stop = ("empty" if area < options.min_area_px else
                        "low score" if pred.score < floor else
                        "area jump" if area > options.max_growth * prev.mask.sum() + options.min_area_px else
                        "shape jump" if options.min_overlap and iou(pred.mask, prev.mask) < options.min_overlap else
                        "intensity jump" if track and shift > options.max_intensity_shift else None)
                result.records.append(SliceRecord(i, area, pred.score, stop))
                done += 1
                report(progress, done, total, f"slice {i}")
                if stop:
                    break
                self._put(result.mask, i, pred.mask)
                prev, prev_mean, i, count = pred, mean, i + step, count + 1
        report(progress, total, total, "done")
        return result
