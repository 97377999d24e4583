"""Whole-volume segmentation: pre-encode slices, then propagate prompted masks slice by slice.

From the prompted slice the structure is followed in both directions; each next slice is prompted
with the previous mask's box (plus a margin), its most interior point, and its low-res logits.
Propagation stops where the structure ends: an empty mask, a low predicted IoU, an implausible jump in
area (the usual sign of leaking into a neighbour) or, optionally, in the mean intensity under the mask,
in the shape (overlap with the previous mask) or in the mask's contrast against its surroundings.
With several prompted slices, the slices between them are filled by two fronts (one from each side,
prompted with boxes interpolated between the prompted masks) that are reconciled where they agree best.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, fields, replace
from typing import (ContextManager, Dict, Hashable, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Sequence,
                    Tuple, Union)

import numpy as np
import torch
from scipy import ndimage as ndi

from synthfm.models.encoding import splits
from synthfm.segment.predictor import Prediction, SlicePredictor
from synthfm.segment.preprocess import intensity_range, slice_spacing
from synthfm.segment.prompts import Prompts
from synthfm.utils.masks import (cut_to_intensity, inside_and_ring, interior_point, iou, mean_shape, parts_touching,
                                 tight_box)
from synthfm.utils.progress import CancelToken, ProgressCallback, check_cancel, report, tqdm_progress

DIRECTIONS = ("both", "up", "down")
#: how the two fronts between prompted slices are reconciled (PropagationOptions.between)
BETWEEN = ("seam", "nearest", "score", "blend", "register", "mix")
#: what the intensity stops compare (PropagationOptions.intensity_stat) and in which unit (intensity_scale)
INTENSITY_STATS = ("mean", "median")
INTENSITY_SCALES = ("contrast", "spread", "spread-single")
#: the stops that ``stop_patience`` lets a structure come back from (a small mask change can flip them)
PATIENT_STOPS = ("intensity jump", "intensity drift")
#: what each propagated slice records about itself against the previous and the prompted slice (SliceRecord.evidence):
#: the mask's score; the mean intensity under it moved from the previous slice's ("shift"), from the prompted slice's
#: ("drift") and towards the prompted slice's surroundings ("toward"), in units of the prompted structure's spread
#: (max of its contrast and inside std); |log area ratio| to the previous mask ("growth"), log area ratio to the
#: prompted mask ("size"), IoU with the previous mask ("overlap"), contrast against its ring / the prompted one's,
#: the fraction of the decoder's mask that intensity_gate / max_step cut off ("cut")
EVIDENCE = ("score", "shift", "drift", "toward", "growth", "size", "overlap", "contrast", "cut")


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
    #: > 0: a propagated mask larger than this x the prompted mask its direction started from: stop (a structure
    #: prompted on a large cross-section does not grow far past it; a slow leak into a neighbour does)
    max_size: float = 0.0
    max_end_growth: float = 0.0  # > 0: past a prompted end (docs/segment.md), area > this x its area: stop
    #: > 0: past a prompted end (as for max_end_growth), at most ceil(this x the span of the prompted slices) slices
    #: are kept (the user prompted near the structure's end, docs/segment.md)
    max_end_extension: float = 0.0
    #: > 0: past the outermost prompted slice, stop where the distance from it exceeds this x the equivalent diameter
    #: of its mask (2 sqrt(area / pi)), both in millimetres (in voxels without a spacing): a structure rarely reaches
    #: further from a cross-section than a few times its width there, a leak along a neighbour does
    max_extent: float = 0.0
    #: with 3 or more prompted slices both outermost are the structure's ends (the user marked it near both ends and
    #: in between), whatever their masks' areas; False: an outermost prompted slice is an end only when its mask is
    #: smaller than the next prompted one's (with one or two prompted slices this is always how ends are found)
    outer_ends: bool = False
    max_intensity_shift: float = 0.0  # mean under the mask moved by more than this x the object's contrast: stop
    max_intensity_drift: float = 0.0  # ... measured from the start slice's mean (slow drifts into a neighbour)
    drift_window: int = 0  # > 0: the drift is measured from the mean this many kept slices back (0: the start slice's)
    intensity_stat: str = "mean"  # what the intensity stops compare: the "mean" or the "median" under the mask
    #: the intensity stops' unit: the start slice's "contrast", max(contrast, inside std) "spread", or
    #: "spread-single": spread from a single prompted slice, contrast past the outermost of several
    intensity_scale: str = "contrast"
    #: > 0: an intensity stop (:data:`PATIENT_STOPS`) ends propagation only when it fires on this many more slices in a
    #: row, each compared with (and prompted from) the last slice that passed; when one passes, the slices it fired
    #: on are kept (a mask that moved a little onto a neighbour's edge for one slice does not end the structure)
    stop_patience: int = 0
    #: with ``pick_closest``: when an intensity stop (:data:`PATIENT_STOPS`) fires on the candidate closest to the
    #: previous mask, the other candidates are tried, closest first; the first the stop rule passes is kept (the
    #: closest may have spread onto a neighbour where a smaller candidate holds the structure)
    stop_candidates: bool = False
    pick_closest: bool = False  # ask for 3 candidates and keep the one closest (IoU) to the previous mask
    min_overlap: float = 0.0  # IoU with the previous slice's mask below this: the shape jumped, stop
    min_contrast_ratio: float = 0.0  # mask-vs-ring contrast below this x the start slice's: the edge is gone, stop
    max_slices: Optional[int] = None  # per direction
    #: between prompted slices: switch fronts where they agree best ("seam"), at the middle ("nearest"), per slice by
    #: score ("score"), or mix each slice's two fronts' logits by distance ("blend": the nearer front weighs more);
    #: "register": no fronts and no model, each prompted mask carried slice by slice by image registration and the two
    #: mixed by distance (:mod:`synthfm.segment.register`; the slices between are neither encoded nor decoded);
    #: "mix": both "seam"'s and "register"'s fills, each slice's mask the outline half-way between their two
    between: str = "seam"
    register_iterations: int = 50  # with between="register" or "mix": demons iterations per pair of slices
    register_smoothing: float = 2.0  # with between="register" or "mix": the displacement field's smoothing, pixels
    split_box: float = 0.0  # > 0: boxes longer than this x their width are segmented in tiles (SlicePredictor.predict)
    interpolate_box: bool = True  # between prompted slices: box interpolated between theirs (else the previous mask's)
    between_margin: float = 0.0  # added to box_margin for the interpolated boxes (structures do not grow linearly)
    #: between prompted slices, the previous mask's most interior point joins the box (with use_points; False: the
    #: box and the previous logits only)
    between_points: bool = True
    #: between prompted slices, the previous slice's low-res logits are the mask prompt (with use_mask_prompt; False:
    #: each slice between is prompted by its interpolated box, and the point if between_points, alone)
    between_mask_prompt: bool = True
    #: learned stop: ``sigmoid(bias + sum w * evidence)`` over a slice's :data:`EVIDENCE` estimates whether it is
    #: still the structure (fitted on synthetic volumes by benchmarks/fit_stop.py); ``(("bias", b), (name, w), ...)``
    keep_rule: Tuple[Tuple[str, float], ...] = ()
    min_keep: float = 0.0  # > 0 (with a keep_rule): a slice whose keep probability is below this stops propagation
    #: > 0: a propagated mask is cut to the previous mask grown by this x its equivalent radius (at least 2 px): a
    #: structure's outline moves little from one slice to the next, a leak into a neighbour moves far
    max_step: float = 0.0
    #: > 0: pixels of a propagated mask whose (1-pixel Gaussian smoothed) intensity is more than this many spreads of
    #: the prompted structure away from its mean are cut (then opened, holes filled, parts not touching the previous
    #: mask dropped: partial-volume seams along a neighbour's edges go too)
    intensity_gate: float = 0.0
    #: the stop rule reads the masks as cut by intensity_gate / max_step (default: the decoder's own masks, so that
    #: a cut cannot hide a leak from the intensity stops)
    stop_on_cut: bool = False
    #: the stop rule compares propagated slices with a prompted slice's mask as the decoder gave it, before the point
    #: cut (``Prediction.uncut``), as it reads their masks before theirs (unless ``stop_on_cut``); the intensity gate
    #: still takes the cut mask's intensity. False: the prompted slice's mask as kept, cut
    uncut_reference: bool = False
    #: with ``uncut_reference``: also for a prompted slice whose candidate the user chose (``candidates``). False
    #: (default since 2026-12-05, session 29): there the stop rule compares with the mask as chosen and shown (cut)
    chosen_uncut_reference: bool = False
    max_cut: float = 0.0  # > 0: the cut removed more than this fraction of the decoder's mask: it left the structure
    #: propagated slices decoded on their mirror image too, as prompted slices are with a ``mirror_average`` model
    #: (twice the encoder time per slice); False (default): one view; None ("auto"): on a GPU only, where encoding
    #: is cheap (not the default: it lost on the real volumes with one point, docs/segment.md item 9)
    mirror_steps: Optional[bool] = False
    #: > 1: only every this-many-th slice (index a multiple of it) is encoded for propagation and filling; the
    #: slices between are decoded on the embedding interpolated linearly between the nearest encoded ones (fewer
    #: encoder calls, the expensive part on a CPU). Prompted slices, slices after the last multiple, and steps that
    #: take the mirror image too (``mirror_steps``) are always encoded. 1: every slice encoded
    encode_every: int = 1
    #: with ``encode_every`` > 1 and > 0: a slice between two encoded ones is encoded after all when their embeddings
    #: differ by more than this (relative: |above - below| / mean of their norms), where the image changes too much
    #: between them for a linear mix (thick slices, a structure's ends). 0: always interpolated
    max_embedding_change: float = 0.0
    #: > 0: before propagating, a copy of the decoder is fine-tuned this many steps on the prompted slices' own masks
    #: (:func:`synthfm.segment.adapt.adapt_decoder`: this structure's appearance in this volume, no labels) and decodes
    #: every propagated and filled slice; the prompted slices keep the model's own masks. 0: the model's decoder
    adapt_steps: int = 0
    adapt_batch: int = 8  # prompted samples per adaptation step (its cost is linear in steps x batch)
    #: > 0: the adaptation's steps decode only the embedding's tokens around the prompted masks (their boxes grown
    #: by this many tokens of 4 x 4 low-res pixels; cheaper for small structures). 0: the whole embedding
    adapt_crop: int = 0
    #: with ``adapt_crop``: the rest of the slice kept as context, averaged over cells this many tokens wide (each
    #: counted for its tokens in attention; the fast decoder only, else the whole embedding). 0: the crop alone
    adapt_context: int = 0
    #: > 0: each propagated and filled slice is decoded on the embedding's tokens around its box (grown by this many
    #: tokens; :meth:`SlicePredictor.cropped_decodes`), its mask kept inside that window. 0: the whole embedding
    decode_crop: int = 0
    #: with ``decode_crop``: the rest of the slice kept as context, averaged over cells this many tokens wide (the
    #: fast decoder only, else the whole embedding). 0: the crop alone
    decode_context: int = 0

    def check(self) -> None:
        """Raise ValueError naming the first setting out of its range (:data:`_CHOICES`, :data:`_NUMBERS`)."""
        for name, allowed in _CHOICES:
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got '{getattr(self, name)}'")
        for name, least, whole, meaning in _NUMBERS:
            value = getattr(self, name)
            if not ((isinstance(value, int) or not whole) and value >= least):
                raise ValueError(f"{name} must be {meaning}, got {value}")
        for name in ("adapt_context", "decode_context"):  # pooled cells tile the 64 x 64 token grid
            if getattr(self, name) not in CONTEXT_POOLS:
                raise ValueError(f"{name} must be one of {', '.join(map(str, CONTEXT_POOLS))} (0: no context; "
                                 f"else tokens per pooled cell, dividing the 64-token grid), got {getattr(self, name)}")

    @property
    def smallest_mask(self) -> int:
        """The fewest pixels a kept mask has: ``min_area_px``, and at least one (an empty mask always ends it)."""
        return max(1, int(self.min_area_px))

    def mirrors_steps(self, device: Union[str, torch.device]) -> bool:
        """Whether propagated slices take both views on ``device`` (:attr:`mirror_steps`; "auto": not on a CPU)."""
        if self.mirror_steps is None:
            return torch.device(device).type != "cpu"
        return bool(self.mirror_steps)

    @classmethod
    def parse_overrides(cls, items: List[str]) -> Dict[str, object]:
        """``["min_score=0.5", "pick_closest=true"]`` -> typed keyword arguments; unknown keys are an error."""
        defaults, names = cls(), [f.name for f in fields(cls)]
        parsed: Dict[str, object] = {}
        for item in items:
            key, sep, text = item.partition("=")
            key = key.strip().replace("-", "_")
            if key == "keep_rule":
                raise ValueError("keep_rule is set by the model (benchmarks/fit_stop.py fits it); turn the learned "
                                 "stop off with min_keep=0 or change its threshold with min_keep=P")
            if not sep or key not in names:
                raise ValueError(f"propagation setting '{item}' is not KEY=VALUE with KEY one of {', '.join(names)}")
            try:
                like = False if key == "mirror_steps" else getattr(defaults, key)  # true / false, or auto (None)
                auto = key == "mirror_steps" and text.strip().lower() == "auto"
                parsed[key] = None if auto else _parse_value(text.strip(), like)
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


#: the pooled-context cell widths in tokens (``adapt_context``, ``decode_context``): 0 (none) or a divisor of 64
CONTEXT_POOLS = (0, 1, 2, 4, 8, 16, 32)
#: PropagationOptions with a fixed set of values: (name, the values allowed)
_CHOICES = (("between", BETWEEN), ("intensity_stat", INTENSITY_STATS), ("intensity_scale", INTENSITY_SCALES))
#: numeric PropagationOptions with a range: (name, least value, whole numbers only, what the error says it must be)
_NUMBERS = (
    ("drift_window", 0, False, "0 (drift from the prompted slice) or a number of slices"),
    ("stop_patience", 0, True, "0 (stop at once) or a whole number of slices"),
    ("max_end_extension", 0, False, "0 (off) or a positive fraction of the prompted span"),
    ("max_extent", 0, False, "0 (off) or a positive factor of the prompted mask's width"),
    ("encode_every", 1, True, "a whole number of slices, 1 (every slice encoded) or more"),
    ("adapt_steps", 0, True, "0 (the model's decoder) or a whole number of fine-tuning steps"),
    ("adapt_batch", 1, True, "a whole number of prompted samples per adaptation step (1 or more)"),
    ("adapt_crop", 0, True, "0 (the whole embedding) or a whole number of tokens around the prompted masks"),
    ("decode_crop", 0, True, "0 (the whole embedding) or a whole number of tokens around the box"),
    ("max_embedding_change", 0, False, "0 (off) or a positive relative difference of two slices' embeddings"),
    ("max_size", 0, False, "0 (off) or a positive factor of the prompted mask's area"),
    ("register_iterations", 1, True, "a whole number of registration iterations (1 or more)"),
    ("register_smoothing", 0, False, "0 or a positive smoothing of the registration's field, in pixels"),
)


@dataclass
class SliceRecord:
    index: int
    area: int
    score: float
    stop: Optional[str] = None  # why propagation stopped at this slice (the slice itself is not kept)
    source: str = "propagated"  # "prompt" (a prompted slice), "between" (filled between two) or "propagated"
    signals: Dict[str, float] = field(default_factory=dict)  # the mask's quality signals (Prediction.signals)
    evidence: Dict[str, float] = field(default_factory=dict)  # propagated slices: EVIDENCE, what the stop rule reads
    candidate: Optional[int] = None  # prompted slices: the decoder's candidate kept (None: the prompts give one mask)


@dataclass
class PropagationResult:
    mask: np.ndarray  # bool, same shape as the volume
    records: List[SliceRecord] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)  # warnings for people (e.g. prompted slices that disagree)

    @property
    def slices(self) -> List[int]:
        return sorted(r.index for r in self.records if r.stop is None)

    def describe(self) -> str:
        """One line for people: the slices kept and why propagation stopped in each direction."""
        kept = self.slices
        stops = [f"before slice {r.index} ({r.stop})" for r in sorted(self.records, key=lambda r: r.index) if r.stop]
        prompted = sorted(r.index for r in self.records if r.source == "prompt")
        return (f"{len(kept)} slice{'s' * (len(kept) != 1)} ({kept[0]}..{kept[-1]})"
                + (f" from prompted slices {', '.join(map(str, prompted))}" if len(prompted) > 1 else "")
                + (f", stopped {' and '.join(stops)}" if stops else ", up to the volume's ends"))


def _parse_value(text: str, like: object) -> object:
    """``text`` as the type of the default ``like`` (bool, whole number or None, float)."""
    if isinstance(like, bool):
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(text)
        return text.lower() in ("true", "1", "yes")
    if isinstance(like, str):  # between
        return text
    if like is None or isinstance(like, int):  # max_slices (default None) and min_area_px
        return None if text.lower() == "none" else int(text)
    return float(text)


def prompts_from_mask(pred: Prediction, options: PropagationOptions) -> Prompts:
    """Box (with margin), interior point and logits of a mask, to prompt the neighbouring slice."""
    box = _with_margin(tight_box(pred.mask), pred.mask.shape, options.box_margin)
    points, labels = np.zeros((0, 2)), np.zeros(0, np.int64)
    if options.use_points:
        points, labels = np.array([interior_point(pred.mask)], float), np.array([1])
    return Prompts(points, labels, box if options.use_box or not options.use_points else None,
                   pred.logits if options.use_mask_prompt else None)


def embedding_change(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative difference of two slice embeddings: |a - b| / mean of |a| and |b| (0: the same)."""
    scale = 0.5 * (float(a.float().norm()) + float(b.float().norm()))
    return float((a.float() - b.float()).norm()) / scale if scale > 0 else 0.0


class VolumeSegmenter:
    """Segment a ``(Z, Y, X)`` volume slice by slice along ``axis`` (0: axial k, 1: coronal j, 2: sagittal i)."""

    def __init__(self, predictor: SlicePredictor, volume: np.ndarray, axis: int = 0,
                 volume_id: Optional[Hashable] = None, value_range: Optional[Tuple[float, float]] = None,
                 spacing: Optional[Sequence[float]] = None) -> None:
        """``value_range``: the (low, high) intensities mapped to 0..1 (e.g. the viewer's window/level); by default
        the predictor's window applied to the whole volume. ``spacing``: the voxel size ``(x, y, z)``; slices whose
        pixels are not square (a coronal or sagittal slice of thick axial slices) are then shown to the model with
        square physical pixels, as a viewer shows them (None: square pixels)."""
        volume = np.asarray(volume)
        if volume.ndim != 3:
            raise ValueError(f"propagation needs a 3D volume (Z, Y, X); got shape {volume.shape}. "
                             "For a single 2D image use SlicePredictor.predict")
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
        flat = [a for a in range(3) if a != axis and volume.shape[a] == 1]
        if flat:
            raise ValueError(f"the volume {volume.shape} has a single slice along axis {flat[0]}: slices along axis "
                             f"{axis} would be 1 pixel thick; segment along axis {flat[0]} instead")
        self.predictor, self.volume, self.axis = predictor, volume, axis
        rows, cols = (1.0, 1.0) if spacing is None else slice_spacing(spacing, axis)
        #: a slice's pixel height over width (SlicePredictor.predict's ``aspect``)
        self.aspect = rows / cols
        #: a pixel's area and the distance between slices, in mm (voxels without a spacing): ``max_extent``
        self.pixel_area = rows * cols
        self.thickness = 1.0 if spacing is None else float(spacing[2 - axis])
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

    @property
    def _shape(self) -> Dict[str, float]:
        """The ``aspect`` keyword of the predictor's calls where pixels are not square (only then: square-pixel
        volumes call any predictor as before)."""
        return {} if self.aspect == 1.0 else {"aspect": self.aspect}

    def encode_all(self, progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None,
                   order: Optional[List[int]] = None) -> None:
        """Pre-encode slices (by default outward from the middle), skipping cached ones; cancellable. With a
        predictor that averages mirror images, the first slice's mirror image too (the slice in view: its first
        prompt then needs no encoder call)."""
        mid = self.n_slices // 2
        order = order or sorted(range(self.n_slices), key=lambda i: abs(i - mid))
        for done, i in enumerate(order, 1):
            check_cancel(cancel)
            if done == 1 and getattr(self.predictor, "mirrors", False):  # the two side by side on a CPU
                self.predictor.embed_views(self.slice(i), self.key(i), self.value_range, **self._shape)
            elif not self.predictor.is_cached(self.key(i)):
                self.predictor.embed(self.slice(i), self.key(i), self.value_range, **self._shape)
            report(progress, done, len(order), "encoding slices")

    def segment_slice(self, index: int, prompts: Prompts, multimask: Union[str, bool] = "auto",
                      split_box: float = 0.0, propagated: bool = False,
                      options: Optional[PropagationOptions] = None, candidate: Optional[int] = None) -> Prediction:
        """One slice's prediction; a ``propagated`` step takes one view of the slice unless ``options`` mirror steps
        on the predictor's device (:meth:`PropagationOptions.mirrors_steps`; a prompted slice follows the predictor's
        own default: the model's ``mirror_average``). ``candidate``: the user's choice among the decoder's candidates
        (:meth:`SlicePredictor.predict`)."""
        extra: Dict[str, object] = dict(self._shape)  # only when asked: predictors without tiling, mirroring,
        if split_box:  # candidates or non-square pixels keep their plain signature
            extra["split_box"] = split_box
        if candidate is not None:
            extra["candidate"] = candidate
        if propagated and getattr(self.predictor, "mirrors", False):
            device = getattr(self.predictor, "device", "cpu")
            extra["mirror"] = options is not None and options.mirrors_steps(device)
        key = self.key(index)
        if propagated and options is not None and options.encode_every > 1 and not extra.get("mirror"):
            key = self._interpolated_key(index, options.encode_every, options.max_embedding_change)
        cropped = contextlib.nullcontext()
        if propagated and options is not None and options.decode_crop > 0 and hasattr(self.predictor,
                                                                                        "cropped_decodes"):
            cropped = self.predictor.cropped_decodes(options.decode_crop, options.decode_context)
        with cropped:
            return self.predictor.predict(self.slice(index), prompts, key=key, multimask=multimask,
                                          value_range=self.value_range, **extra)

    def interpolated(self, index: int, every: int) -> bool:
        """Whether propagation with ``encode_every = every`` decodes slice ``index`` on an interpolated embedding
        (it is not a multiple of ``every`` and a multiple follows it in the volume)."""
        low = index - index % every
        return every > 1 and low != index and low + every < self.n_slices

    def _encoded_for(self, index: int, every: int) -> List[int]:
        """The slices whose own embeddings propagation with ``encode_every = every`` reads at slice ``index``: the
        encoded slices on either side where it decodes an interpolated embedding, else ``index`` itself."""
        if not self.interpolated(index, every):
            return [index]
        low = index - index % every
        return [low, low + every]

    def _needs(self, index: int, step: int, options: PropagationOptions, end: Optional[int] = None) -> "_Needs":
        """What a front's step at slice ``index`` reads (:meth:`_encoded_for`), and with ``end`` (a front that
        visits every slice up to ``end``, exclusive, whatever the masks: between prompted slices) the next slice it
        will read beyond them."""
        every = max(1, options.encode_every)
        need = self._encoded_for(index, every)
        if end is None:
            return _Needs(need, None)
        following = range(index + step, end, step)
        ahead = next((j for i in following[:2 * every] for j in self._encoded_for(i, every) if j not in need), None)
        return _Needs(need, ahead if ahead is not None and (ahead - end) * step < 0 else None)

    def _run_fronts(self, fronts: Sequence[Iterator], options: PropagationOptions) -> list:
        """Run propagation fronts (generators that yield :class:`_Needs` before each step and return their result)
        side by side, a step each in turn; returns their results. Before each round the slices the fronts' next steps
        read that are not encoded yet are encoded in one call, so that on a CPU in bf16 two are encoded side by side
        (:func:`synthfm.models.encoding.encode`, 6-10 % less time per slice); where only one is missing, a slice
        a front will certainly read later joins it. Every slice encoded is one the fronts read, and every mask is that
        of running the fronts one after another."""
        results: list = [None] * len(fronts)
        needs: Dict[int, _Needs] = {}

        def advance(k: int) -> None:
            try:
                needs[k] = next(fronts[k])
            except StopIteration as done:
                needs.pop(k, None)
                results[k] = done.value

        for k in range(len(fronts)):
            advance(k)
        predictor = self.predictor
        together = (hasattr(predictor, "embed_many")
                    and splits(getattr(predictor, "device", "cpu"), getattr(predictor, "bf16", False))
                    and not options.mirrors_steps(predictor.device))
        while needs:
            if together:
                todo = list(dict.fromkeys(j for n in needs.values() for j in n.now
                                          if not predictor.is_cached(self.key(j))))
                if len(todo) == 1:
                    todo += [n.later for n in needs.values() if n.later is not None and n.later not in todo
                             and not predictor.is_cached(self.key(n.later))][:1]
                if len(todo) > 1:
                    predictor.embed_many([self.slice(j) for j in todo], [self.key(j) for j in todo], self.value_range,
                                         **self._shape)
            for k in list(needs):
                advance(k)
        return results

    def _interpolated_key(self, index: int, every: int, max_change: float = 0.0) -> Hashable:
        """The cache key of slice ``index``'s embedding for ``encode_every = every``: its own (encoded) when ``index``
        is a multiple of ``every`` or past the last one, or when the encoded slices on either side differ by more
        than ``max_change`` (> 0; :func:`embedding_change`); else one interpolated linearly between them (put in the
        predictor's cache under a key of its own; nothing is stored on disk)."""
        around = self._encoded_for(index, every)
        if len(around) == 1:
            return self.key(index)
        low = around[0]
        key = (self.key(index), "interpolated", every)
        cached = self.predictor.is_cached(key)
        if max_change > 0 or not cached:  # the mix may be cached from a run with another max_change
            below, transform = self.predictor.embed(self.slice(low), self.key(low), self.value_range, **self._shape)
            above, _ = self.predictor.embed(self.slice(low + every), self.key(low + every), self.value_range,
                                            **self._shape)
            if max_change > 0 and embedding_change(below, above) > max_change:
                return self.key(index)
            if not cached:
                w = (index - low) / every
                self.predictor.put_embedding(key, (1 - w) * below + w * above, transform)
        return key

    def _mean_in(self, index: int, mask: np.ndarray, stat: str = "mean") -> float:
        """Mean (or ``stat="median"``) intensity under ``mask`` on slice ``index``."""
        values = self.slice(index)[mask]
        return float(np.median(values) if stat == "median" else values.mean())

    def _inside_and_ring(self, index: int, mask: np.ndarray) -> Tuple[float, float]:
        """Mean intensity under ``mask`` and in a 3-pixel ring outside it (the inside mean when there is no ring)."""
        return inside_and_ring(self.slice(index), mask)

    def _contrast(self, index: int, mask: np.ndarray, means: Optional[Tuple[float, float]] = None) -> float:
        """|mean inside - mean of a 3-pixel ring outside| of ``mask`` (``means``: those two, when already measured),
        at least 2% of the intensity window."""
        inside, outside = self._inside_and_ring(index, mask) if means is None else means
        lo, hi = self.value_range
        return max(abs(inside - outside), 0.02 * (hi - lo), 1e-6)

    def _put(self, mask: np.ndarray, index: int, slice_mask: np.ndarray) -> None:
        view = np.moveaxis(mask, self.axis, 0)
        view[index] = slice_mask

    def propagate(self, index: int, prompts: Prompts, direction: str = "both",
                  progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None,
                  options: Optional[PropagationOptions] = None) -> PropagationResult:
        """Segment slice ``index`` from ``prompts`` and follow the structure ``up``/``down``/``both``."""
        return self.propagate_slices({index: prompts}, direction, progress, cancel, options)

    def propagate_slices(self, prompted: Mapping[int, Prompts], direction: str = "both",
                         progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None,
                         options: Optional[PropagationOptions] = None,
                         candidates: Optional[Mapping[int, int]] = None) -> PropagationResult:
        """Segment every prompted slice, fill the slices between them, then follow the structure beyond them.

        Between two prompted slices every slice is segmented twice, by a front from each side (prompted with
        the box interpolated between the two prompted masks' boxes and the front's previous mask), and the
        fronts are reconciled (``options.between``); no stop rule applies there, the user said the structure
        is present. Beyond the outermost prompted slices propagation runs ``up``/``down``/``both`` with the
        stop rule. ``candidates``: for some prompted slices, the candidate the user chose there instead of the
        model's pick (:meth:`SlicePredictor.predict`); propagation starts from it.
        """
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got '{direction}'")
        if not prompted:
            raise ValueError("no prompted slice given: prompt at least one slice")
        chosen = chosen_candidates(candidates, prompted)
        options = options or PropagationOptions()
        options.check()
        order = sorted(int(i) for i in prompted)
        firsts: Dict[int, Prediction] = {}
        for i in order:
            check_cancel(cancel)
            try:
                firsts[i] = self.segment_slice(i, prompted[i], split_box=options.split_box, candidate=chosen.get(i))
            except ValueError as exc:
                if i not in chosen:
                    raise
                raise ValueError(f"slice {i}: {exc}") from None
            if i in chosen and not options.chosen_uncut_reference:
                firsts[i] = replace(firsts[i], uncut=None)  # the stop rule reads the mask the user chose, as shown
            if firsts[i].mask.sum() < options.smallest_mask:
                raise ValueError(f"the prompts give an empty mask on slice {i}; move or add prompts there first"
                                 + (" (or leave that slice out)" if len(order) > 1 else ""))
        adapted = self._adapted_decoder(order, firsts, options, progress, cancel)  # entered below, around propagation
        result = PropagationResult(np.zeros(self.volume.shape, bool))
        for i in order:
            result.records.append(SliceRecord(i, int(firsts[i].mask.sum()), firsts[i].score, source="prompt",
                                              signals=firsts[i].signals, candidate=firsts[i].choice))
            self._put(result.mask, i, firsts[i].mask)
        for a, b in zip(order, order[1:]):
            if not _boxes_overlap(tight_box(firsts[a].mask), tight_box(firsts[b].mask)):
                result.notes.append(f"the masks on prompted slices {a} and {b} do not overlap in the slice plane: "
                                    "the slices between follow a box moving from one to the other; check that "
                                    "both prompts mark the same structure")
        steps = [s for s, name in ((1, "up"), (-1, "down")) if direction in (name, "both")]
        outward = sum(self.n_slices - 1 - order[-1] if s > 0 else order[0] for s in steps)
        twice = 2 if options.between == "mix" else 1  # "mix" fills the slices between twice (model, registration)
        total = twice * sum(b - a - 1 for a, b in zip(order, order[1:])) + outward
        ticker = _Ticker(progress, total)
        with adapted:
            self._propagate_from(order, firsts, steps, options, result, cancel, ticker)
        report(progress, total, total, "done")
        return result

    def _propagate_from(self, order: List[int], firsts: Dict[int, Prediction], steps: List[int],
                        options: PropagationOptions, result: PropagationResult, cancel: Optional[CancelToken],
                        ticker: "_Ticker") -> None:
        """Fill between the prompted slices ``order``, then follow the structure beyond the outermost ones."""
        for a, b in zip(order, order[1:]):
            for i, pred in self._fill_between(a, firsts[a], b, firsts[b], options, cancel, ticker).items():
                result.records.append(SliceRecord(i, int(pred.mask.sum()), pred.score, source="between",
                                                  signals=pred.signals))
                self._put(result.mask, i, pred.mask)
        fronts = []
        for step in steps:
            start = order[-1] if step > 0 else order[0]
            inner = order[-2 if step > 0 else 1] if len(order) > 1 else start  # the next prompted slice inward
            tapering = (firsts[start].mask.sum() < firsts[inner].mask.sum()  # prompted masks shrink toward this end
                        or (options.outer_ends and len(order) >= 3))
            limit = (int(np.ceil(options.max_end_extension * (order[-1] - order[0])))
                     if tapering and options.max_end_extension > 0 else None)
            fronts.append(self._follow(start, firsts[start], step, options, result.mask, cancel, ticker, tapering,
                                       len(order) == 1, limit))
        for records in self._run_fronts(fronts, options):  # each front's records, in the order of ``steps``
            result.records.extend(records)

    def _adapted_decoder(self, order: List[int], firsts: Dict[int, Prediction], options: PropagationOptions,
                         progress: Optional[ProgressCallback], cancel: Optional[CancelToken]) -> ContextManager:
        """A context in which the predictor's model decodes with its decoder adapted to the prompted slices
        (``options.adapt_steps``; fine-tuned here, before the context is entered), or a context that changes nothing."""
        if options.adapt_steps <= 0:
            return contextlib.nullcontext()
        from synthfm.segment.adapt import AdaptExample, adapt_decoder, decoder_swapped  # training's losses, prompts

        examples = [AdaptExample.of(self.predictor, self.slice(i), self.key(i), firsts[i], value_range=self.value_range,
                                    **self._shape) for i in order]
        adapted = adapt_decoder(self.predictor.model, examples, options.adapt_steps, batch=options.adapt_batch,
                                bf16=bool(getattr(self.predictor, "bf16", False)), progress=progress, cancel=cancel,
                                crop=options.adapt_crop, context=options.adapt_context)
        return decoder_swapped(self.predictor.model, adapted)

    def _follow(self, index: int, first: Prediction, step: int, options: PropagationOptions, mask: np.ndarray,
                cancel: Optional[CancelToken], ticker: "_Ticker", from_end: bool = False, single: bool = True,
                limit: Optional[int] = None) -> Iterator["_Needs"]:
        """Propagate from the segmented slice ``index`` by ``step`` until the stop rule or the volume's end, writing
        the kept slices into the volume ``mask``; a front for :meth:`_run_fronts` (it yields what each step reads
        and returns its slices' records).

        ``from_end``: ``index`` is the outermost of several prompted slices and its mask is smaller than the next
        prompted slice's (the user marked the structure near its end), so ``options.max_end_growth`` applies: past
        its end a structure tapers on, it does not grow. ``single``: ``index`` is the only prompted slice (for
        ``intensity_scale="spread-single"``). ``limit``: at most this many slices are kept (``max_end_extension``,
        at a prompted end).
        """
        floor = max(options.min_score, options.min_score_ratio * first.score)
        gate_ref = self._reference(index, first.mask, options.intensity_stat)  # what the intensity gate keeps
        uncut = options.uncut_reference and not options.stop_on_cut and first.uncut is not None
        seen_first = replace(first, mask=first.uncut) if uncut else first  # what the stop rule compares with
        ref = self._reference(index, seen_first.mask, options.intensity_stat) if uncut else gate_ref
        scale = ref.contrast
        if options.intensity_scale == "spread" or (options.intensity_scale == "spread-single" and single):
            scale = ref.spread
        keep = keep_probability(options.keep_rule) if options.min_keep > 0 and options.keep_rule else None
        end_area = options.max_end_growth * seen_first.mask.sum() if from_end and options.max_end_growth else np.inf
        reach = (options.max_extent * 2 * np.sqrt(first.mask.sum() * self.pixel_area / np.pi) / self.thickness
                 if options.max_extent > 0 else np.inf)  # slices from ``index`` (max_extent)
        prev, prev_mean, i, count, towards = first, ref.mean, index + step, 0, [0.0]  # kept slices' "toward"
        prev_seen = seen_first  # the masks the stop rule reads (the decoder's, before cuts, unless options.stop_on_cut)
        pending: List[Tuple[SliceRecord, Prediction]] = []  # slices an intensity stop fired on (stop_patience)
        records: List[SliceRecord] = []

        def judge(seen: Prediction) -> _Step:
            """A candidate mask of slice ``i`` cut (``_constrain``) and read by the stop rule."""
            pred = self._constrain(i, seen, prev.mask, gate_ref, options)
            cut = 1.0 - pred.mask.sum() / max(1, seen.mask.sum())
            judged = pred if options.stop_on_cut else seen  # the mask the stop rule reads
            area = int(judged.mask.sum())
            mean = self._mean_in(i, judged.mask, options.intensity_stat) if area else prev_mean
            evidence = {**self._evidence(i, judged, prev_seen, area, mean, prev_mean, ref), "cut": float(cut)}
            stop = ("past the prompted span" if limit is not None and count >= limit else
                    "farther than its width" if abs(i - index) > reach else
                    "growing past the end" if area > end_area else
                    stop_reason(options, evidence, area, int(prev_seen.mask.sum()), floor, ref.spread / scale, keep,
                                towards[max(0, len(towards) - options.drift_window)] if options.drift_window else 0.0))
            return _Step(pred, judged, mean, evidence, stop)

        while 0 <= i < self.n_slices and (options.max_slices is None or count < options.max_slices):
            yield self._needs(i, step, options)
            check_cancel(cancel)
            decoded = self.segment_slice(i, prompts_from_mask(prev, options), options.pick_closest or "auto",
                                         options.split_box, propagated=True, options=options)
            tries = (judge(seen) for seen in self._candidates(decoded, prev.mask, options))
            chosen = closest = next(tries)
            if closest.stop in PATIENT_STOPS and options.stop_candidates:
                # the next candidate whose stop is not an intensity one, if it passes; else the closest one's stop
                chosen = next((t for t in tries if t.stop not in PATIENT_STOPS), closest)
                chosen = closest if chosen.stop else chosen
            pred, judged, mean, evidence, stop = chosen
            record = SliceRecord(i, int(pred.mask.sum()), pred.score, stop, signals=pred.signals, evidence=evidence)
            ticker.tick(f"slice {i}")
            if stop in PATIENT_STOPS and len(pending) < options.stop_patience and 0 <= i + step < self.n_slices:
                pending.append((record, pred))  # wait: the next slice, from the last one that passed, decides
                i, count = i + step, count + 1
                continue
            if stop:  # a pending slice's intensity stop held: propagation ends where it first fired
                records.append(pending[0][0] if pending else record)
                return records
            for held, held_pred in pending:  # the structure came back: the slices the stop fired on are kept
                records.append(replace(held, stop=None))
                self._put(mask, held.index, held_pred.mask)
            pending.clear()
            records.append(record)
            self._put(mask, i, pred.mask)
            prev, prev_seen, prev_mean, i, count = pred, judged, mean, i + step, count + 1
            towards.append(evidence["toward"])
        if pending:  # the slice limit came first: the stop stands
            records.append(pending[0][0])
        return records

    @staticmethod
    def _candidates(decoded: Prediction, prev_mask: np.ndarray, options: PropagationOptions) -> List[Prediction]:
        """The masks a propagation step may keep, in order: the decoder's choice, or with ``pick_closest`` the
        candidate closest to ``prev_mask`` (then, with ``stop_candidates``, the others by closeness)."""
        if not options.pick_closest:
            return [decoded]
        if not options.stop_candidates or decoded.candidates is None or len(decoded.candidates) < 2:
            return [decoded.closest_to(prev_mask)]
        order = np.argsort([-iou(c, prev_mask) for c in decoded.candidates], kind="stable")
        return [decoded.candidate(int(k)) for k in order]

    def _constrain(self, index: int, pred: Prediction, prev_mask: np.ndarray, ref: Optional["_Reference"],
                   options: PropagationOptions) -> Prediction:
        """``pred`` with its mask (and its logits, for the next slice's mask prompt) cut by ``options.max_step`` and
        ``options.intensity_gate``; unchanged when both are off or the cut would leave under ``min_area_px``."""
        if not (options.max_step > 0 or options.intensity_gate > 0) or not pred.mask.any():
            return pred
        mask = pred.mask.copy()
        if options.max_step > 0:
            radius = max(2.0, options.max_step * float(np.sqrt(prev_mask.sum() / np.pi)))
            mask &= ndi.distance_transform_edt(~prev_mask) <= radius
        if options.intensity_gate > 0:
            smooth = ndi.gaussian_filter(self.slice(index).astype(np.float32), 1.0)
            mask = cut_to_intensity(mask, smooth, ref.mean, options.intensity_gate * ref.spread)
        mask = parts_touching(mask, prev_mask)
        return self.predictor.restrict(pred, mask) if mask.sum() >= options.smallest_mask else pred

    def _reference(self, index: int, mask: np.ndarray, stat: str) -> "_Reference":
        """The prompted slice's intensity statistics that later slices are compared with."""
        mean, around = self._inside_and_ring(index, mask)
        contrast = self._contrast(index, mask, (mean, around))
        spread = max(contrast, float(self.slice(index)[mask].std()))
        return _Reference(self._mean_in(index, mask, stat), contrast, spread, float(np.sign(around - mean) or 1.0),
                          int(mask.sum()))

    def _evidence(self, index: int, pred: Prediction, prev: Prediction, area: int, mean: float, prev_mean: float,
                  ref: "_Reference") -> Dict[str, float]:
        """:data:`EVIDENCE` of the propagated slice ``index``."""
        prev_area = int(prev.mask.sum())
        return {"score": float(pred.score), "shift": abs(mean - prev_mean) / ref.spread,
                "drift": abs(mean - ref.mean) / ref.spread, "toward": (mean - ref.mean) * ref.polarity / ref.spread,
                "growth": abs(float(np.log((area + 1) / (prev_area + 1)))),
                "size": float(np.log((area + 1) / (ref.area + 1))), "overlap": iou(pred.mask, prev.mask),
                "contrast": self._contrast(index, pred.mask) / ref.contrast if area else 0.0}

    def _fill_between(self, a: int, first_a: Prediction, b: int, first_b: Prediction, options: PropagationOptions,
                      cancel: Optional[CancelToken], ticker: "_Ticker") -> Dict[int, Prediction]:
        """Slices strictly between prompted slices ``a < b``: a front from each side, reconciled."""
        if b - a < 2:
            return {}
        if options.between == "register":
            return self._registered_between(a, first_a, b, first_b, options, cancel, ticker)
        if options.between == "mix":
            model = self._fill_between(a, first_a, b, first_b, replace(options, between="seam"), cancel, ticker)
            registered = self._registered_between(a, first_a, b, first_b, options, cancel, ticker)
            return {i: replace(pred, mask=mean_shape(pred.mask, registered[i].mask), candidates=None,
                               candidate_logits=None) for i, pred in model.items()}
        box_a, box_b = tight_box(first_a.mask), tight_box(first_b.mask)
        shape = first_a.mask.shape

        def front(start: int, first: Prediction, step: int) -> Iterator[_Needs]:
            preds, prev = {}, first
            ref = self._reference(start, first.mask, options.intensity_stat) if options.intensity_gate > 0 else None
            carried = replace(options, use_points=options.use_points and options.between_points,  # what is carried
                              use_mask_prompt=options.use_mask_prompt and options.between_mask_prompt)
            for i in range(start + step, b if step > 0 else a, step):
                yield self._needs(i, step, options, b + 1 if step > 0 else a - 1)  # it visits every slice to there
                check_cancel(cancel)
                t = (i - a) / (b - a)
                prompts = prompts_from_mask(prev, carried)
                if options.interpolate_box and prompts.box is not None:  # (no box for point-only settings)
                    prompts = replace(prompts, box=_with_margin((1 - t) * box_a + t * box_b, shape,
                                                                options.box_margin + options.between_margin))
                pred = self.segment_slice(i, prompts, options.pick_closest or "auto", options.split_box,
                                          propagated=True, options=options)
                pred = pred.closest_to(prev.mask) if options.pick_closest else pred
                preds[i] = self._constrain(i, pred, prev.mask, ref, options)
                if preds[i].mask.sum() >= options.smallest_mask:  # an empty slice does not prompt the next one
                    prev = preds[i]
                ticker.tick(f"slice {i}", 0.5)
            return preds

        forward, backward = self._run_fronts([front(a, first_a, 1), front(b, first_b, -1)], options)
        inner = range(a + 1, b)
        if options.between == "score":
            return {i: max(forward[i], backward[i], key=lambda p: p.score) for i in inner}
        if options.between == "blend":
            return {i: self.predictor.blend(forward[i], backward[i], (i - a) / (b - a)) for i in inner}
        if options.between == "nearest":
            seam = a + 1 + (b - a) // 2  # forward up to the middle, backward from there
        else:  # "seam": switch fronts where they agree best, so that every slice agrees with both neighbours
            before = {a: first_a, **forward}
            after = {**backward, b: first_b}
            middle = (a + b) / 2
            seam = max(range(a + 1, b + 1), key=lambda t: (round(iou(before[t - 1].mask, after[t].mask), 3),
                                                           -abs(t - 0.5 - middle)))
        return {i: forward[i] if i < seam else backward[i] for i in inner}

    def _registered_between(self, a: int, first_a: Prediction, b: int, first_b: Prediction,
                            options: PropagationOptions, cancel: Optional[CancelToken],
                            ticker: "_Ticker") -> Dict[int, Prediction]:
        """``between="register"``: the prompted masks carried by image registration (:mod:`.register`), as
        predictions whose score is the prompted slices' mixed by distance (the model saw none of these slices)."""
        from synthfm.segment.register import registered_fill

        def step(i: int) -> None:
            check_cancel(cancel)
            ticker.tick(f"slice {i}", 0.5)

        masks = registered_fill(self.slice, a, first_a.mask, b, first_b.mask, self.value_range,
                                options.register_iterations, options.register_smoothing, step)
        preds = {}
        for i, mask in masks.items():
            t = (i - a) / (b - a)
            score = (1 - t) * first_a.score + t * first_b.score
            preds[i] = Prediction(mask, score, np.zeros_like(first_a.logits), np.array([score]))
        return preds


def propagation_bar() -> ProgressCallback:
    """The command line's progress of a propagation: a bar of the adaptation's steps, then one of the slices."""
    from synthfm.segment.adapt import PROGRESS_MESSAGE

    return tqdm_progress("propagate", "slice", units={PROGRESS_MESSAGE: "step"})


def chosen_candidates(candidates: Optional[Mapping[int, int]], prompted: Iterable[int]) -> Dict[int, int]:
    """``candidates`` (prompted slice -> the decoder's candidate the user chose there) with whole-number keys and
    values; a candidate on a slice without prompts is an error."""
    chosen = {int(k): int(v) for k, v in (candidates or {}).items()}
    stray = sorted(set(chosen) - {int(i) for i in prompted})
    if stray:
        raise ValueError(f"candidates chosen on slices {stray} that hold no prompts; choose a candidate only on a "
                         "prompted slice")
    return chosen


def stop_reason(options: PropagationOptions, evidence: Mapping[str, float], area: int, prev_area: int,
                floor: float = 0.0, unit: float = 1.0, keep=None, window_base: float = 0.0) -> Optional[str]:
    """Why the stop rule ends propagation at a slice with this ``evidence`` (:data:`EVIDENCE`), mask ``area`` and
    previous mask ``prev_area``, or None; ``floor``: the lowest score kept, ``unit``: the intensity stops' unit in
    ``evidence``'s units, ``keep``: the ``keep_rule``'s probability (None: off), ``window_base``: with a
    ``drift_window``, the "toward" evidence of the kept slice that many slices back (0.0: the prompted slice). A
    slice's evidence depends only on the slices before it, so a rule can be replayed on recorded evidence
    (benchmarks/fit_stop.py)."""
    drift = abs(evidence["toward"] - window_base) if options.drift_window else evidence["drift"]
    return ("empty" if area < options.smallest_mask else
            "low score" if evidence["score"] < floor else
            "area jump" if area > options.max_growth * prev_area + options.min_area_px else
            "larger than the prompt" if options.max_size and evidence["size"] > np.log(options.max_size) else
            "cut off" if options.max_cut and evidence.get("cut", 0.0) > options.max_cut else
            "shape jump" if options.min_overlap and evidence["overlap"] < options.min_overlap else
            "intensity jump" if (options.max_intensity_shift and evidence["shift"] * unit
                                 > options.max_intensity_shift) else
            "intensity drift" if options.max_intensity_drift and drift * unit > options.max_intensity_drift else
            "contrast lost" if options.min_contrast_ratio and evidence["contrast"] < options.min_contrast_ratio else
            "unlike the structure" if keep is not None and keep(evidence) < options.min_keep else None)


def keep_probability(rule: Tuple[Tuple[str, float], ...]):
    """``evidence -> sigmoid(bias + sum w * evidence[name])`` of a ``keep_rule``; unknown names are an error."""
    weights = dict(rule)
    unknown = set(weights) - set(EVIDENCE) - {"bias"}
    if unknown:
        raise ValueError(f"keep_rule names {sorted(unknown)}; known: bias, {', '.join(EVIDENCE)}")
    bias = weights.pop("bias", 0.0)
    return lambda evidence: 1.0 / (1.0 + np.exp(-(bias + sum(w * evidence[k] for k, w in weights.items()))))


class _Needs(NamedTuple):
    """What a propagation front's next step reads: the slices whose embeddings it needs now, and one it will
    certainly need later (None: not known, the front may stop)."""
    now: List[int]
    later: Optional[int]


class _Step(NamedTuple):
    """One propagation step's candidate: the mask kept (cut), the mask the stop rule read, the mean intensity under
    the latter, its evidence and the stop it gives (None: kept)."""

    pred: Prediction
    judged: Prediction
    mean: float
    evidence: Dict[str, float]
    stop: Optional[str]


@dataclass
class _Reference:
    """The prompted slice's mask: mean (or median) intensity under it, contrast against its ring, spread (max of
    contrast and inside std), the sign from inside towards the ring (``polarity``) and area."""

    mean: float
    contrast: float
    spread: float
    polarity: float
    area: int


class _Ticker:
    """Progress over several loops: ``tick`` advances the shared count (fractions for slices done twice)."""

    def __init__(self, progress: Optional[ProgressCallback], total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0.0

    def tick(self, message: str, amount: float = 1.0) -> None:
        self.done += amount
        report(self.progress, int(self.done), self.total, message)


def _with_margin(box: np.ndarray, shape: Tuple[int, int], margin: float) -> np.ndarray:
    """``box`` grown by ``margin`` x its size (plus 2 px) on each side, clipped to a ``shape`` slice."""
    h, w = shape
    mx, my = (box[2] - box[0] + 1) * margin + 2, (box[3] - box[1] + 1) * margin + 2
    return np.array([max(0, box[0] - mx), max(0, box[1] - my), min(w - 1, box[2] + mx), min(h - 1, box[3] + my)])


def _boxes_overlap(p: np.ndarray, q: np.ndarray) -> bool:
    return p[0] <= q[2] and q[0] <= p[2] and p[1] <= q[3] and q[1] <= p[3]
