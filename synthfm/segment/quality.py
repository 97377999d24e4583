"""How good is a predicted mask? Cheap, training-free signals and a small calibrated score built from them.

Per candidate mask, computed on the decoder's low-res logits (256 x 256, cropped to the slice's part of the
encoder frame) in a few tensor operations:

* ``iou_head``: the decoder's own predicted IoU (raw);
* ``stability``: IoU of the masks thresholded at logit +1 and -1 (segment-anything's
  ``calculate_stability_score`` with offset 1.0); a mask whose edge moves little when the threshold moves is
  usually a real edge;
* ``confidence``: mean sigmoid probability inside the mask (0 for an empty mask);
* ``box_fill``: mask area / prompt box area (only with a box; nan without);
* ``outside_box``: fraction of the mask outside the prompt box (only with a box);
* ``points_agree``: fraction of prompt points the mask agrees with (positives inside, negatives outside;
  nan without points);
* ``area``: mask area as a fraction of the slice;
* ``contrast``: |mean intensity inside - mean in a 3-pixel ring outside| / their pooled standard deviation, on
  the windowed slice (a mask that follows a real structure stands out from its surroundings);
* ``edge``: mean intensity gradient on the mask's boundary / mean gradient over the slice (a mask whose edge lies
  on image edges);
* ``split_agreement`` (box prompts without a mask prompt, so not on propagation steps): the box's pixels
  (smoothed, Gaussian sigma 1 px) split in two at their Otsu threshold; the larger IoU, within the box, of the mask
  with either side (a structure that stands out in its box is a bright or dark region the mask should match);
* ``consistency`` (only when asked for, or when the calibration uses it: one more decoder call): IoU of each
  candidate with the same candidate decoded from slightly moved prompts (``SlicePredictor._consistency``);
* ``mirror_agreement`` (only when the prediction averages the slice's mirror image, ``SlicePredictor.mirror``):
  IoU of the two views' masks (the mirror's mirrored back; 0 when both are empty): where the encoder's two views
  of the slice disagree, the mask is unsure.
* ``cut`` (point prompts of a model with ``point_gate``): the fraction of the decoder's mask that the cut to the
  structure's intensity removed (``SlicePredictor._gate_points``; 0 for the candidates it did not touch): a mask that
  spilled far past its intensity is one the decoder was unsure of.

:class:`QualityCalibrator` maps them to a score in [0, 1] that estimates the mask's IoU: one logistic model per
prompt kind (``mask``: a previous mask was given, as in propagation; else ``box``: a box was given; else
``points``), each coefficient held to the
sign its signal was declared with (monotone), fitted on held-out synthetic images
(``synthfm.evaluate.calibrate``) and stored as a small JSON next to the decoder checkpoint.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import torch

log = logging.getLogger(__name__)

SIGNALS = ("iou_head", "stability", "confidence", "box_fill", "outside_box", "points_agree", "area", "contrast",
           "edge", "consistency", "mirror_agreement", "split_agreement", "cut")
KINDS = ("box", "points", "mask")
STABILITY_OFFSET = 1.0  # segment-anything's default stability_score_offset
CALIBRATION_FORMAT = "synthfm-quality-calibration"


def stability_score(logits: torch.Tensor, offset: float = STABILITY_OFFSET) -> torch.Tensor:
    """IoU of ``logits > offset`` and ``logits > -offset`` per mask (``(..., H, W)`` -> ``(...)``); 0 when empty.

    The first mask is contained in the second, so the IoU is a ratio of counts (as in segment-anything)."""
    inner = (logits > offset).flatten(-2).sum(-1, dtype=torch.int32)
    outer = (logits > -offset).flatten(-2).sum(-1, dtype=torch.int32)
    return torch.where(outer > 0, inner.float() / outer.clamp(min=1).float(), torch.zeros_like(inner, dtype=torch.float))


def quality_signals(logits: torch.Tensor, iou_head: torch.Tensor, box: Optional[np.ndarray] = None,
                    points: Optional[np.ndarray] = None, labels: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
    """The logit and prompt signals of :data:`SIGNALS` for ``M`` candidate masks (the image signals come from
    :func:`image_signals`).

    ``logits`` ``(M, h, w)``: low-res logits cropped to the slice; ``iou_head`` ``(M,)``; ``box`` (x0, y0, x1, y1)
    and ``points`` ``(N, 2)`` (x, y) in the same ``h x w`` pixel frame as ``logits``; ``labels`` 1/0 per point.
    Returns float arrays of shape ``(M,)``."""
    logits = logits.float()
    m, h, w = logits.shape
    masks = logits > 0
    area = masks.flatten(1).sum(1).float()
    prob = torch.sigmoid(logits)
    confidence = torch.where(area > 0, (prob * masks).flatten(1).sum(1) / area.clamp(min=1), torch.zeros_like(area))
    out = {"iou_head": iou_head.float().cpu().numpy().astype(np.float64),
           "stability": stability_score(logits).cpu().numpy().astype(np.float64),
           "confidence": confidence.cpu().numpy().astype(np.float64),
           "area": (area / float(h * w)).cpu().numpy().astype(np.float64)}
    nan = np.full(m, np.nan)
    if box is not None:
        x0, y0 = (max(0, int(np.floor(v))) for v in box[:2])
        x1, y1 = (int(np.ceil(v)) + 1 for v in box[2:])
        inside = masks[:, y0:min(y1, h), x0:min(x1, w)].flatten(1).sum(1).float()
        box_area = max((x1 - x0) * (y1 - y0), 1)
        out["box_fill"] = (area / box_area).cpu().numpy().astype(np.float64)
        out["outside_box"] = torch.where(area > 0, 1 - inside / area.clamp(min=1), torch.zeros_like(area)).cpu().numpy()
    else:
        out["box_fill"], out["outside_box"] = nan, nan.copy()
    if points is not None and len(points):
        xy = np.clip(np.round(np.asarray(points, float)).astype(int), 0, [w - 1, h - 1])
        at = masks[:, xy[:, 1], xy[:, 0]].cpu().numpy()  # (M, N)
        want = np.asarray(labels).astype(bool)[None]
        out["points_agree"] = (at == want).mean(1).astype(np.float64)
    else:
        out["points_agree"] = nan.copy()
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


def prompt_kind(prompts) -> str:
    """Which calibration model applies to ``prompts`` (:data:`KINDS`)."""
    return "mask" if prompts.mask_logits is not None else "box" if prompts.box is not None else "points"


def image_signals(image01: np.ndarray, masks: np.ndarray, ring: int = 3,
                  box: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
    """``contrast`` and ``edge`` (see the module docstring) of ``M`` masks ``(M, H, W)`` on a windowed slice
    ``image01`` ``(H, W)``; each mask is handled in its bounding box grown by ``ring + 1`` pixels. With ``box``
    (x0, y0, x1, y1, slice pixels) also ``split_agreement``."""
    from scipy import ndimage as ndi

    from synthfm.utils.masks import around

    image01 = np.asarray(image01, np.float32)
    gy, gx = np.gradient(image01)
    grad = np.hypot(gx, gy)
    mean_grad = float(grad.mean()) + 1e-6
    contrast, edge = np.zeros(len(masks)), np.zeros(len(masks))
    for k, mask in enumerate(masks):
        if not mask.any():
            continue
        box_k = around(mask, ring + 1)
        m, img = mask[box_k], image01[box_k]
        beside = ndi.binary_dilation(m, iterations=ring) & ~m
        border = m & ~ndi.binary_erosion(m, border_value=0)
        inside, outside = img[m], img[beside] if beside.any() else img[m]
        pooled = np.sqrt((inside.var() + outside.var()) / 2) + 0.01
        contrast[k] = abs(float(inside.mean()) - float(outside.mean())) / pooled
        edge[k] = float(grad[box_k][border].mean()) / mean_grad
    out = {"contrast": contrast, "edge": edge}
    if box is not None:
        out["split_agreement"] = split_agreement(image01, masks, box)
    return out


def split_agreement(image01: np.ndarray, masks: np.ndarray, box: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """``split_agreement`` (module docstring) of ``M`` masks ``(M, H, W)`` for the prompt ``box`` (x0, y0, x1, y1,
    slice pixels, inclusive): 0 for a box of constant intensity."""
    import SimpleITK as sitk
    from scipy import ndimage as ndi

    from synthfm.utils.masks import iou

    h, w = image01.shape
    x0, y0 = (int(np.clip(np.round(v), 0, n - 1)) for v, n in zip(box[:2], (w, h)))
    x1, y1 = (int(np.clip(np.round(v), 0, n - 1)) for v, n in zip(box[2:], (w, h)))
    pad = int(np.ceil(3 * sigma))
    around = (slice(max(y0 - pad, 0), y1 + pad + 1), slice(max(x0 - pad, 0), x1 + pad + 1))
    smooth = ndi.gaussian_filter(np.asarray(image01[around], np.float32), sigma)
    inner = (slice(y0 - around[0].start, y1 - around[0].start + 1), slice(x0 - around[1].start, x1 - around[1].start + 1))
    region = smooth[inner]
    if region.size < 2 or float(region.max() - region.min()) < 1e-6:
        return np.zeros(len(masks))
    otsu = sitk.OtsuThresholdImageFilter()
    otsu.SetNumberOfHistogramBins(128)
    otsu.Execute(sitk.GetImageFromArray(np.ascontiguousarray(region)))
    bright = region > otsu.GetThreshold()
    cut = masks[:, y0:y1 + 1, x0:x1 + 1]
    return np.array([max(iou(m, bright), iou(m, ~bright)) for m in cut], np.float64)


@dataclass
class LogisticQuality:
    """``sigmoid(bias + sum coef_i * (x_i - mean_i) / scale_i)`` over named signals; nan inputs take ``fill``."""

    features: Sequence[str]
    coef: Sequence[float]
    bias: float
    mean: Sequence[float]
    scale: Sequence[float]
    fill: Sequence[float]

    def __call__(self, signals: Mapping[str, np.ndarray]) -> np.ndarray:
        n = np.shape(next(iter(signals.values())))  # a signal not computed (e.g. consistency turned off) takes fill
        x = np.stack([np.asarray(signals[f], np.float64) if f in signals else np.full(n, np.nan)
                      for f in self.features], -1)
        x = np.where(np.isnan(x), np.asarray(self.fill), x)
        z = self.bias + ((x - np.asarray(self.mean)) / np.asarray(self.scale)) @ np.asarray(self.coef)
        return 1.0 / (1.0 + np.exp(-z))


@dataclass
class QualityCalibrator:
    """Calibrated quality score (estimated IoU in [0, 1]) from the signals, one logistic model per prompt kind.

    ``pickers`` (optional, per kind): models that only choose among one prediction's candidates (:meth:`pick`),
    where ``models`` give the score shown. Choosing compares masks of the same image, ranking compares masks of
    different images: a signal such as contrast can serve the first and mislead the second."""

    models: Dict[str, LogisticQuality]
    decoder_sha256: Optional[str] = None  # the decoder checkpoint it was fitted for (None: not tied to a file)
    info: Dict[str, object] = field(default_factory=dict)  # how it was fitted, held-out figures
    pickers: Dict[str, LogisticQuality] = field(default_factory=dict)

    def __call__(self, signals: Mapping[str, np.ndarray], kind: str) -> np.ndarray:
        if kind not in KINDS:
            raise ValueError(f"prompt kind must be one of {', '.join(KINDS)}, got '{kind}'")
        model = self.models.get(kind)
        if model is None:  # no model for this kind: the raw head, clipped
            return np.clip(np.asarray(signals["iou_head"], np.float64), 0.0, 1.0)
        return model(signals)

    def pick(self, signals: Mapping[str, np.ndarray], kind: str) -> np.ndarray:
        """Scores that choose among candidates: the kind's picker, or the score itself without one."""
        picker = self.pickers.get(kind)
        return self(signals, kind) if picker is None else picker(signals)

    def uses(self, signal: str) -> bool:
        """Whether any of the models or pickers reads ``signal``."""
        return any(signal in m.features for m in (*self.models.values(), *self.pickers.values()))

    def to_json(self) -> str:
        def plain(models: Dict[str, LogisticQuality]) -> dict:
            return {k: {name: list(v) if isinstance(v, (list, tuple, np.ndarray)) else v for name, v in vars(m).items()}
                    for k, m in models.items()}

        data = {"format": CALIBRATION_FORMAT, "version": 1, "decoder_sha256": self.decoder_sha256,
                "models": plain(self.models), "info": self.info}
        if self.pickers:
            data["pickers"] = plain(self.pickers)
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str, source: str = "calibration") -> "QualityCalibrator":
        try:
            data = json.loads(text)
            if data.get("format") != CALIBRATION_FORMAT:
                raise ValueError(f"no '{CALIBRATION_FORMAT}' header")
            models, pickers = ({k: LogisticQuality(**{**m, "bias": float(m["bias"])}) for k, m in part.items()}
                               for part in (data["models"], data.get("pickers", {})))
            for k, m in (*models.items(), *pickers.items()):
                if k not in KINDS or not set(m.features) <= set(SIGNALS):
                    raise ValueError(f"unknown prompt kind '{k}' or signal in {list(m.features)}")
                if not (len(m.features) == len(m.coef) == len(m.mean) == len(m.scale) == len(m.fill)):
                    raise ValueError(f"model '{k}' has lists of different lengths")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{source} is not a valid quality calibration ({exc}); delete it or refit it with "
                             "benchmarks/fit_quality.py") from None
        return cls(models, data.get("decoder_sha256"), data.get("info", {}), pickers)


def calibration_path(decoder: Path) -> Path:
    """Where a decoder checkpoint's calibration lives: ``<name>.quality.json`` next to it."""
    return Path(decoder).with_suffix(".quality.json")


def file_sha256(path: Path) -> str:
    from synthfm.models.weights import sha256_of

    return sha256_of(Path(path))


def load_calibration(decoder: Path) -> Optional[QualityCalibrator]:
    """The calibration next to ``decoder`` when there is one fitted for this very file (same SHA-256), else None
    (a decoder retrained in place keeps its raw IoU head until it is calibrated again)."""
    path = calibration_path(decoder)
    if not path.is_file():
        return None
    calibrator = QualityCalibrator.from_json(path.read_text(), str(path))
    if calibrator.decoder_sha256 is not None and calibrator.decoder_sha256 != file_sha256(Path(decoder)):
        log.warning("%s was fitted for another decoder file than %s: not used, the decoder's raw IoU head scores and "
                    "picks instead; fit it again for this decoder (benchmarks/fit_quality.py) or remove it", path,
                    decoder)
        return None
    return calibrator
