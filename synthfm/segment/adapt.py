"""The decoder adapted to one volume before propagation (test-time adaptation, no labels).

A copy of the mask decoder is fine-tuned for a few steps on the prompted slices' own embeddings, with the masks
the user accepted there as targets, under prompts like propagation's (the mask's box jittered, its interior point
moved, its low-res logits shifted as the mask prompt) and tight-ish boxes alone. Propagated slices are then decoded
with the copy: it has seen this structure's appearance in this volume. The shipped weights are never changed.
Like one-shot video object segmentation (OSVOS: fine-tune on the first frame's mask); docs/segment.md
"The decoder adapted to the volume".
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from synthfm.models.sam import token_window, window_pixels
from synthfm.segment.preprocess import SliceTransform
from synthfm.train.batches import to_device
from synthfm.train.losses import mask_loss
from synthfm.train.prompt_sim import jittered_box
from synthfm.utils.masks import interior_point
from synthfm.utils.progress import CancelToken, ProgressCallback, check_cancel, report

#: share of steps with propagation-like prompts (box, interior point, shifted logits); the rest: a box alone
PROPAGATION_SHARE = 0.7
#: how the adaptation reports its steps (a command-line bar counts them as steps: ``propagate.propagation_bar``)
PROGRESS_MESSAGE = "adapting the decoder to this volume"
POINT_SHIFT_PX = 3.0  # the interior point moved by up to this many slice pixels
LOGITS_SHIFT = 4  # the mask prompt shifted by up to this many low-res pixels (a neighbouring slice's mask)


@dataclass(frozen=True)
class AdaptExample:
    """One prompted slice: its embedding ``(1, 256, 64, 64)``, frame, accepted mask (slice grid) and low-res logits."""

    embedding: torch.Tensor
    transform: SliceTransform
    mask: np.ndarray
    logits: np.ndarray

    @classmethod
    def of(cls, predictor, image: np.ndarray, key, prediction, **embed_options) -> "AdaptExample":
        """The example of a slice ``image`` that ``predictor`` segmented as ``prediction`` (its embedding from the
        predictor's cache, keyed ``key``; ``embed_options``: :meth:`SlicePredictor.embed`'s value_range / aspect)."""
        embedding, transform = predictor.embed(image, key, **embed_options)
        return cls(embedding.detach().clone(), transform, prediction.mask, prediction.logits)


def adapt_decoder(model, examples: Sequence[AdaptExample], steps: int, lr: float = 1e-4, batch: int = 8,
                  bf16: bool = False, seed: int = 0, progress: Optional[ProgressCallback] = None,
                  cancel: Optional[CancelToken] = None, crop: int = 0, context: int = 0) -> nn.Module:
    """A copy of ``model.mask_decoder`` fine-tuned ``steps`` steps on ``examples`` (AdamW, SAM's min-over-masks
    loss on three candidates, as propagation decodes them); ``model`` itself is left as it was. ``crop`` > 0: the
    steps decode only the embedding's tokens around the examples' masks (their boxes grown by this many tokens,
    :func:`crop_window`), with the positional encoding of the same tokens: cheaper where the structure is small;
    ``context`` > 0: with the rest of the slice pooled over cells of this many tokens (the fast decoder only; without
    it the steps decode the whole embedding)."""
    if not examples:
        raise ValueError("adapting the decoder needs at least one prompted slice with a mask")
    if any(not np.asarray(e.mask).any() for e in examples):
        raise ValueError("a prompted slice has an empty mask: there is nothing to adapt the decoder to")
    adapted = copy.deepcopy(model.mask_decoder).train()
    optimizer = torch.optim.AdamW(adapted.parameters(), lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    targets = [e.transform.mask_to_lowres(e.mask).gt(0.5).float()[None] for e in examples]
    centres = [np.array([interior_point(e.mask)], float) for e in examples]  # where propagation puts its point
    device = model.device
    if context and not getattr(model.mask_decoder, "uses_fast", lambda: False)():
        crop = 0  # pooled context needs the fast decoder: the whole embedding instead
    window = crop_window([t[0] for t in targets], crop, max(1, context)) if crop > 0 else None
    if window is not None:
        targets = [t[(..., *window_pixels(window))] for t in targets]
    with torch.enable_grad(), decoder_swapped(model, adapted):
        for step in range(steps):
            check_cancel(cancel)
            picks = rng.integers(len(examples), size=batch)
            propagation_like = rng.random() < PROPAGATION_SHARE  # one prompt kind per step: one decoder call
            boxes = torch.stack([_jittered_box(examples[k], rng) for k in picks])
            coords = labels = mask_inputs = None
            if propagation_like:
                coords = torch.stack([_moved_point(examples[k], centres[k], rng) for k in picks])
                labels = torch.ones(batch, 1, dtype=torch.long)
                mask_inputs = torch.stack([_shifted_logits(examples[k], rng) for k in picks])
            emb = torch.cat([examples[k].embedding for k in picks]).to(device)
            out = model.decode(emb, to_device(coords, device), to_device(labels, device), boxes.to(device),
                               to_device(mask_inputs, device), multimask=True,
                               compute_dtype=torch.bfloat16 if bf16 else None, window=window,
                               context_pool=context if window is not None else 0)
            loss, _ = mask_loss(out.logits, out.iou, torch.stack([targets[k] for k in picks]).to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            report(progress, step + 1, steps, PROGRESS_MESSAGE)
    return adapted.eval()


def crop_window(targets: Sequence[torch.Tensor], margin: int, align: int = 1) -> Tuple[slice, slice]:
    """Rows and columns of the embedding's token grid (one token: 4 x 4 low-res pixels) around every ``(256, 256)``
    low-res target's mask, grown by ``margin`` tokens each way (clipped to the grid), then out to multiples of
    ``align``."""
    union = torch.stack([t > 0 for t in targets]).any(0)
    ys, xs = torch.nonzero(union, as_tuple=True)
    return token_window((int(ys.min()), int(ys.max())), (int(xs.min()), int(xs.max())), 4, margin, align,
                        targets[0].shape[-1] // 4)


@contextlib.contextmanager
def decoder_swapped(model, decoder: Optional[nn.Module]) -> Iterator[None]:
    """``model`` decodes with ``decoder`` inside the block (None: its own), and with its own again after it."""
    own = model.mask_decoder
    if decoder is not None:
        model.mask_decoder = decoder
    try:
        yield
    finally:
        model.mask_decoder = own


def _jittered_box(example: AdaptExample, rng: np.random.Generator) -> torch.Tensor:
    """The mask's box with its sides moved as training moves them, in the encoder's frame."""
    return torch.as_tensor(example.transform.box_to_input(jittered_box(rng, example.mask)), dtype=torch.float32)


def _moved_point(example: AdaptExample, centre: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """The mask's interior point moved by up to :data:`POINT_SHIFT_PX`, ``(1, 2)`` in the encoder's frame."""
    moved = centre + rng.uniform(-POINT_SHIFT_PX, POINT_SHIFT_PX, (1, 2))
    return torch.as_tensor(example.transform.to_input(moved), dtype=torch.float32)


def _shifted_logits(example: AdaptExample, rng: np.random.Generator) -> torch.Tensor:
    """The mask's low-res logits shifted by up to :data:`LOGITS_SHIFT` pixels each way, ``(1, 256, 256)``."""
    shift = tuple(int(v) for v in rng.integers(-LOGITS_SHIFT, LOGITS_SHIFT + 1, 2))
    return torch.as_tensor(np.roll(example.logits, shift, (0, 1)), dtype=torch.float32)[None]
