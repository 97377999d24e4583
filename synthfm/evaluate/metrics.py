"""Segmentation metrics: Dice, IoU, 95% Hausdorff distance and normalised surface distance (mm).

Surface metrics give MONAI's numbers (``compute_hausdorff_distance(percentile=95)`` and
``compute_surface_dice``, spacing aware; Testing/core/test_metrics_exact.py checks equality on random masks)
with MONAI's own steps: edges of the masks inside their joint bounding box (grown by one voxel), a KD-tree of the
other mask's edge voxels in mm, distances rounded to float32, ``torch.quantile`` for the 95th percentile. The
edges and distances are computed once for both metrics (MONAI computes them once per metric), which makes
evaluation rows several times faster (benchmarks/bench_evaluate.py).

Conventions for empty masks: both empty -> Dice/IoU/NSD 1 and HD95 0; exactly one empty -> Dice/IoU/NSD 0 and
HD95 infinite (reported as ``inf`` and excluded from means, with the count of such cases kept).
"""
from __future__ import annotations

import math
from typing import Dict, Sequence, Tuple

import numpy as np
import torch

from synthfm.utils.masks import dice, iou  # noqa: F401  (overlap metrics live below the stages)


def _edges_in_box(pred: np.ndarray, truth: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Edge voxels (the mask minus its erosion, outside counting as background) of both non-empty masks, as
    coordinates relative to their joint bounding box's start minus one voxel (MONAI's ``get_mask_edges`` crop)."""
    from scipy.ndimage import binary_erosion

    union = pred | truth
    box = []
    for axis in range(union.ndim):
        present = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim) if a != axis)))
        box.append(slice(int(present[0]), int(present[-1]) + 3))  # in the array padded by one voxel below
    padded = [np.pad(m, 1)[tuple(box)] for m in (pred, truth)]
    return tuple(np.argwhere(binary_erosion(m) ^ m).astype(np.float64) for m in padded)


def surface_distances(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Distances (mm, float32) from each edge voxel of ``pred`` to the nearest edge voxel of ``truth``, and back;
    both masks must be non-empty."""
    from scipy.spatial import KDTree

    scale = np.asarray(spacing, dtype=np.float64)
    edges_pred, edges_truth = (e * scale for e in _edges_in_box(pred, truth))
    return tuple(torch.from_numpy(KDTree(to, leafsize=32).query(frm, k=1)[0]).to(torch.float32)
                 for frm, to in ((edges_pred, edges_truth), (edges_truth, edges_pred)))


def _surface(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float], tolerance: float) -> Tuple[float, float]:
    """HD95 and NSD at ``tolerance`` mm of two non-empty masks."""
    to_truth, to_pred = surface_distances(pred, truth, spacing)
    hd = float(torch.max(torch.stack([torch.quantile(d, 0.95) for d in (to_truth, to_pred)])))
    correct = torch.sum(to_truth <= tolerance) + torch.sum(to_pred <= tolerance)
    nsd = float(correct / (len(to_truth) + len(to_pred)))
    return hd, nsd


def monai_surface(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float], tolerance: float
                  ) -> Tuple[float, float]:
    """HD95 and NSD from MONAI itself, one call per metric on the whole arrays (how they were computed before):
    the reference that Testing/core/test_metrics_exact.py and benchmarks/bench_evaluate.py compare with."""
    import warnings

    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    p, t = (torch.from_numpy(np.asarray(m, bool))[None, None] for m in (pred, truth))
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
