"""Losses: soft Dice (SynthFM's), binary cross-entropy, and IoU-prediction regression."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Per-mask soft Dice loss over the last two dims: ``(...)``."""
    prob = torch.sigmoid(logits.float())
    inter = (prob * target).sum((-1, -2))
    return 1 - (2 * inter + eps) / (prob.sum((-1, -2)) + target.sum((-1, -2)) + eps)


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), target.expand_as(logits), reduction="none").mean((-1, -2))


def hard_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of the thresholded masks (no gradient): the IoU head's regression target (1 when both are empty,
    e.g. an empty answer past a structure's end)."""
    pred = (logits.detach() > 0).float()
    inter = (pred * target).sum((-1, -2))
    union = pred.sum((-1, -2)) + target.sum((-1, -2)) - inter
    return torch.where(union > 0, inter / union.clamp(min=1.0), torch.ones_like(union))


def mask_loss(logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor, bce_weight: float = 1.0,
              iou_weight: float = 1.0):
    """Loss for ``(B, M, H, W)`` logits against ``(B, 1, H, W)`` targets.

    With several masks (ambiguous prompt) only the best mask per sample is trained for segmentation
    (SAM's min-over-masks), while every mask's IoU prediction is regressed.
    Returns the total loss and the per-sample Dice loss of the chosen masks.
    """
    logits = logits.float()  # once (bf16 logits from training's decoder), not in every term
    dice = dice_loss(logits, target)
    per_mask = dice + bce_weight * bce_loss(logits, target)
    best = per_mask.argmin(dim=1, keepdim=True)
    seg = per_mask.gather(1, best).mean()
    iou = F.mse_loss(iou_pred.float(), hard_iou(logits, target))
    return seg + iou_weight * iou, dice.gather(1, best).squeeze(1)
