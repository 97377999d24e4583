"""Segmentation metrics: Dice, IoU, 95% Hausdorff distance and normalised surface distance (mm).

Surface metrics use MONAI's implementations (spacing aware).  Conventions for empty masks:
both empty -> Dice/IoU/NSD 1 and HD95 0; exactly one empty -> Dice/IoU/NSD 0 and HD95 infinite
(reported as ``inf`` and excluded from means, with the count of such cases kept).
"""
from __future__ import annotations

import math
import warnings
from typing import Dict, Sequence

import numpy as np

from synthfm.utils.masks import dice, iou  # noqa: F401  (overlap metrics live below the stages)


def _surface(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float], tolerance: float):
    import torch
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    p = torch.from_numpy(np.asarray(pred, bool))[None, None]
    t = torch.from_numpy(np.asarray(truth, bool))[None, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = float(compute_hausdorff_distance(p, t, percentile=95, spacing=list(spacing)))
        nsd = float(compute_surface_dice(p, t, class_thresholds=[tolerance], spacing=list(spacing)))
    return hd, nsd


def all_metrics(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float], tolerance_mm: float = 2.0
                ) -> Dict[str, float]:
    """Dice, IoU, HD95 (mm) and NSD at ``tolerance_mm``; ``spacing`` per array axis (mm)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if len(spacing) != pred.ndim:
        raise ValueError(f"spacing {tuple(spacing)} needs one value per array axis ({pred.ndim})")
    out = {"dice": dice(pred, truth), "iou": iou(pred, truth)}
    if not pred.any() and not truth.any():
        out.update(hd95=0.0, nsd=1.0)
    elif not pred.any() or not truth.any():
        out.update(hd95=math.inf, nsd=0.0)
    else:
        out["hd95"], out["nsd"] = _surface(pred, truth, spacing, tolerance_mm)
    return out
