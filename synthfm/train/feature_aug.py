"""Embedding statistics perturbed in training, so the decoder leans less on a slice's per-channel statistics.

Per-channel means of the encoder's embeddings tell real slices from synthetic ones almost perfectly
(docs/segment.md, item 8; the experiment: docs/train.md, thirty-ninth session). Following DSU (Li et al., ICLR 2022,
"Uncertainty modeling for out-of-distribution generalization"), each chosen sample's per-channel mean and standard
deviation over the grid are replaced by values drawn around them, with the spread of those statistics across the
batch as the scale.
"""
from __future__ import annotations

from typing import Optional

import torch

EPS = 1e-6


def perturb_feature_stats(emb: torch.Tensor, prob: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``emb`` ``(B, C, H, W)`` with each sample's channel statistics redrawn with chance ``prob``: ``(x - mu) / sd *
    (sd + e1 * spread(sd)) + mu + e2 * spread(mu)``, ``e1, e2 ~ N(0, 1)`` per sample and channel, ``spread`` the
    standard deviation across the batch (a batch of one, or ``prob`` 0, is returned unchanged)."""
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"the feature-statistics augmentation's chance must be between 0 and 1, got {prob}")
    if prob == 0.0 or emb.shape[0] < 2:
        return emb
    x = emb.float()
    mu = x.mean(dim=(2, 3), keepdim=True)
    sd = (x.var(dim=(2, 3), keepdim=True) + EPS).sqrt()
    spread_mu = (mu.var(dim=0, keepdim=True) + EPS).sqrt()
    spread_sd = (sd.var(dim=0, keepdim=True) + EPS).sqrt()
    shape = (x.shape[0], x.shape[1], 1, 1)
    noise = torch.randn((2, *shape), generator=generator).to(x.device)
    chosen = (torch.rand((x.shape[0], 1, 1, 1), generator=generator) < prob).to(x.device)
    out = (x - mu) / sd * (sd + noise[0] * spread_sd) + mu + noise[1] * spread_mu
    return torch.where(chosen, out, x).to(emb.dtype)
