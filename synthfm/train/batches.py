"""Turn cached label maps into training batches: pick a target, simulate prompts, build tensors."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import List, Optional, Sequence

import numpy as np
import torch

from synthfm.segment.preprocess import SliceTransform
from synthfm.train.prompt_sim import SimPrompt, simulate

MIN_TARGET_PIXELS = 12
BOX_MODES = ("box", "box_point")
POINT_MODES = ("point1", "points", "pos_neg", "far_neg")
LEGACY_MODES = ("point1", "points", "pos_neg", "box", "box_point")  # the prompt mix of runs before far negatives
MULTIMASK_MODES = ("point1",)  # first rounds decoded as three candidates (min-over-masks loss), as SAM trains


@dataclass
class Batch:
    """Decoder inputs for ``B`` samples in the encoder frame, plus targets and the prompts used."""

    index: np.ndarray
    masks: List[np.ndarray]  # pixel-frame target masks
    prompts: List[SimPrompt]
    targets: torch.Tensor  # (B, 1, 256, 256) float
    point_coords: Optional[torch.Tensor]
    point_labels: Optional[torch.Tensor]
    boxes: Optional[torch.Tensor]
    multimask: bool
    mask_inputs: Optional[torch.Tensor] = None  # (B, 1, 256, 256) low-res logits given as the first round's mask prompt
    iou_weight: float = 1.0  # weight of the first round's IoU-head loss (0: the head learns nothing from this batch)

    def to(self, device) -> "Batch":
        """The same batch with its tensors on ``device`` (where the embeddings are: a GPU in on-the-fly training)."""
        return replace(self, targets=self.targets.to(device), point_coords=to_device(self.point_coords, device),
                       point_labels=to_device(self.point_labels, device), boxes=to_device(self.boxes, device),
                       mask_inputs=to_device(self.mask_inputs, device))


def to_device(tensor: Optional[torch.Tensor], device) -> Optional[torch.Tensor]:
    """``tensor`` on ``device`` (None stays None)."""
    return None if tensor is None else tensor.to(device)


def pick_target(rng: np.random.Generator, labels: np.ndarray, default: int, other_prob: float = 0.4) -> np.ndarray:
    """The generator's target, or with ``other_prob`` another visible structure (any structure can be a target)."""
    if rng.random() < other_prob:
        values, counts = np.unique(labels[labels > 1], return_counts=True)
        values = values[counts >= MIN_TARGET_PIXELS]
        if len(values):
            return labels == values[int(rng.integers(len(values)))]
    return labels == default


def prompt_tensors(prompts: List[SimPrompt], transform: SliceTransform):
    """Pad points with label -1 and map everything to the encoder frame."""
    n = max(len(p.labels) for p in prompts)
    coords = labels = boxes = None
    if n:
        coords = torch.zeros(len(prompts), n, 2)
        labels = -torch.ones(len(prompts), n, dtype=torch.long)
        for i, p in enumerate(prompts):
            k = len(p.labels)
            coords[i, :k] = torch.from_numpy(transform.to_input(p.points)).float()
            labels[i, :k] = torch.from_numpy(p.labels)
    if prompts[0].box is not None:
        boxes = torch.from_numpy(np.stack([transform.box_to_input(p.box) for p in prompts])).float()
    return coords, labels, boxes


def assemble(index: np.ndarray, masks: List[np.ndarray], prompts: List[SimPrompt], transform: SliceTransform,
             multimask: bool) -> Batch:
    """A batch from pixel-frame target masks and their prompts (targets and prompts mapped to the encoder frame)."""
    tgt = torch.stack([transform.mask_to_lowres(m) for m in masks])[:, None].gt(0.5).float()
    coords, plabels, boxes = prompt_tensors(prompts, transform)
    return Batch(index, masks, prompts, tgt, coords, plabels, boxes, multimask)


def make_batch(rng: np.random.Generator, labels: np.ndarray, targets: np.ndarray, index: np.ndarray,
               transform: SliceTransform, mode: str, multimask_modes: Sequence[str] = MULTIMASK_MODES) -> Batch:
    """A first-round batch of prompt kind ``mode``, decoded as three candidates when it is one of
    ``multimask_modes``."""
    masks = [pick_target(rng, labels[k], int(targets[k])) for k in range(len(index))]
    prompts = [simulate(rng, m, labels[k], mode) for k, m in enumerate(masks)]
    return assemble(index, masks, prompts, transform, multimask=mode in multimask_modes)
