"""The promptable model every stage uses: image encoder + prompt encoder + mask decoder.

Built from segment-anything's own modules.  :class:`PromptableModel` separates the expensive,
frozen image encoding (:meth:`PromptableModel.encode`, cached per slice by the segment stage and
per training image by the train stage) from the cheap prompt-conditioned decoding
(:meth:`PromptableModel.decode`), which also accepts a batch of *different* images, one prompt set
each (needed for training; segment-anything's decoder assumes one image per call).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

from synthfm.models import fast_decoder

EMBED_DIM = 256
EMBED_SIZE = 64  # every supported encoder yields a 256 x 64 x 64 embedding
LOW_RES = 4 * EMBED_SIZE  # decoder masks and mask prompts are 256 x 256


def token_window(rows: Tuple[float, float], cols: Tuple[float, float], per_token: float, margin: int,
                 align: int = 1, grid: int = EMBED_SIZE) -> Tuple[slice, slice]:
    """Rows and columns of the embedding's token grid around a region (its first and last row and column, in units
    of which ``per_token`` make one token), grown by ``margin`` tokens each way (clipped to the grid), then out to
    multiples of ``align``: a ``window`` for :meth:`PromptableModel.decode`."""
    def span(lo: float, hi: float) -> slice:
        first, stop = max(0, int(lo // per_token) - margin), min(grid, int(hi // per_token) + 1 + margin)
        return slice(first - first % align, min(grid, -(-stop // align) * align))
    return span(*rows), span(*cols)


def window_pixels(window: Tuple[slice, slice]) -> Tuple[slice, slice]:
    """The low-res pixels (rows, columns of the 256 x 256 logits) of a token ``window``: 4 per token each way."""
    per = LOW_RES // EMBED_SIZE
    return tuple(slice(per * part.start, per * part.stop) for part in window)


def _pooled_outside(x: torch.Tensor, rows: slice, cols: slice, pool: int) -> torch.Tensor:
    """``(B, C, H, W)`` averaged over ``pool`` x ``pool`` cells, the cells outside ``rows`` x ``cols`` (on
    multiples of ``pool``) as ``(B, cells, C)``."""
    pooled = F.avg_pool2d(x, pool)
    keep = torch.ones(pooled.shape[-2:], dtype=torch.bool, device=x.device)
    keep[rows.start // pool: rows.stop // pool, cols.start // pool: cols.stop // pool] = False
    return pooled.flatten(2)[..., keep.flatten()].transpose(1, 2)


class BatchedMaskDecoder(MaskDecoder):
    """SAM's mask decoder, also accepting one image embedding per prompt set (same weights/keys).

    ``forward`` runs :mod:`synthfm.models.fast_decoder` (same math, reassociated) unless ``fast=False`` or it
    is switched off (``SYNTHFM_FAST_DECODER=0``); ``fast=False`` is segment-anything's own forward.
    """

    def uses_fast(self, fast: Optional[bool] = None) -> bool:
        """Whether ``forward(..., fast=fast)`` takes the fast path."""
        return (fast_decoder.enabled() if fast is None else fast) and fast_decoder.supports(self)

    def forward(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                multimask_output: bool, fast: Optional[bool] = None, context: Optional[tuple] = None):
        if self.uses_fast(fast):
            return fast_decoder.forward(self, image_embeddings, image_pe, sparse_prompt_embeddings,
                                        dense_prompt_embeddings, multimask_output, context)
        return super().forward(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                               multimask_output)

    def predict_masks(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings):
        n = sparse_prompt_embeddings.shape[0]
        if image_embeddings.shape[0] == n:
            return self._predict(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings)
        return super().predict_masks(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings)

    def _predict(self, src, image_pe, sparse, dense):
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat((output_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse), dim=1)
        src = src + dense
        pos_src = image_pe.expand(src.shape[0], -1, -1, -1)
        b, c, h, w = src.shape
        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)
        return masks, self.iou_prediction_head(iou_token_out)


def build_prompt_encoder(image_size: int) -> PromptEncoder:
    """SAM's prompt encoder for a square encoder input of ``image_size`` pixels."""
    return PromptEncoder(
        embed_dim=EMBED_DIM,
        image_embedding_size=(EMBED_SIZE, EMBED_SIZE),
        input_image_size=(image_size, image_size),
        mask_in_chans=16,
    )


class LayerNormOutsideAffine(nn.LayerNorm):
    """``nn.LayerNorm`` (same parameters and result) with the affine part applied outside the fused kernel.

    The fused CPU ``layer_norm`` backward sums the weight and bias gradients over every row in the input's dtype:
    in bf16 training, over the decoder's 4096 image tokens per sample, it kept only 40-66% of their size (and the
    user fine-tune of ``Testing/core/test_train_user.py`` diverged once a second such norm lost ~95%).  A broadcast
    ``addcmul`` sums them in float32 (Testing/core/test_fast_decoder.py checks every gradient's size)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_decoder.layer_norm_outside_affine(x, self.normalized_shape, self.weight, self.bias, self.eps)


def _split_affine_norms(module: nn.Module) -> nn.Module:
    """Make every ``nn.LayerNorm`` inside ``module`` a :class:`LayerNormOutsideAffine` (same parameters)."""
    for m in module.modules():
        if type(m) is nn.LayerNorm and m.elementwise_affine and m.bias is not None:
            m.__class__ = LayerNormOutsideAffine
    return module


def build_mask_decoder() -> BatchedMaskDecoder:
    """SAM's mask decoder (two-way transformer, 3 multimask outputs + IoU head), freshly initialised."""
    return _split_affine_norms(BatchedMaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=EMBED_DIM, mlp_dim=2048, num_heads=8),
        transformer_dim=EMBED_DIM,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    ))


@dataclass
class DecoderOutput:
    """Low-resolution mask logits ``(B, M, 256, 256)`` in the encoder's input frame and IoU ``(B, M)``."""

    logits: torch.Tensor
    iou: torch.Tensor


class PromptableModel(nn.Module):
    """Image encoder + prompt encoder + mask decoder for square inputs of ``image_size`` pixels.

    ``encode`` takes images already resized and padded to ``image_size`` with values in [0, 1]
    (``(B, 3, S, S)``) and applies the encoder's own normalisation (``pixel_mean``/``pixel_std``
    on the [0, 1] scale).  Prompts given to ``decode`` are in the same ``S x S`` pixel frame.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        image_size: int,
        encoder_name: str,
        pixel_mean: Sequence[float] = (0.0, 0.0, 0.0),
        pixel_std: Sequence[float] = (1.0, 1.0, 1.0),
        prompt_encoder: Optional[PromptEncoder] = None,
        mask_decoder: Optional[MaskDecoder] = None,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder or build_prompt_encoder(image_size)
        self.mask_decoder = mask_decoder or build_mask_decoder()
        self.image_size = int(image_size)
        self.encoder_name = encoder_name
        self.name = encoder_name  # registry name once loaded by synthfm.models.load_model
        self.trained_points = True  # False for decoders that only learned boxes (LiteMedSAM)
        self.mask_choice = {"box": "single", "point": "multi"}  # ModelSpec.mask_choice once loaded
        self.points_in_rounds = False  # ModelSpec.points_in_rounds once loaded
        self.box_first = False  # ModelSpec.box_first once loaded
        self.mirror_average = False  # ModelSpec.mirror_average once loaded
        self.point_gate = 0.0  # ModelSpec.point_gate once loaded
        self.checkpoint_meta: Optional[dict] = None
        self.quality_calibrator = None  # synthfm.segment.quality.QualityCalibrator fitted for this decoder, if any
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` images in [0, 1] -> ``(B, 256, 64, 64)`` embeddings."""
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"encode expects (B, 3, {self.image_size}, {self.image_size}) images, got {tuple(images.shape)}"
            )
        return self.image_encoder((images - self.pixel_mean) / self.pixel_std)

    def decode(
        self,
        embeddings: torch.Tensor,
        point_coords: Optional[torch.Tensor] = None,
        point_labels: Optional[torch.Tensor] = None,
        boxes: Optional[torch.Tensor] = None,
        mask_inputs: Optional[torch.Tensor] = None,
        multimask: bool = False,
        compute_dtype: Optional[torch.dtype] = None,
        fast: Optional[bool] = None,
        window: Optional[Tuple[slice, slice]] = None,
        context_pool: int = 0,
    ) -> DecoderOutput:
        """Decode masks for ``B`` prompt sets on ``B`` embeddings (or one embedding shared by all).

        ``point_coords`` ``(B, N, 2)`` as (x, y) in the ``S x S`` input frame, ``point_labels``
        ``(B, N)`` with 1 positive, 0 negative, -1 padding; ``boxes`` ``(B, 4)`` as x0, y0, x1, y1;
        ``mask_inputs`` ``(B, 1, 256, 256)`` logits from a previous prediction.

        ``compute_dtype`` (e.g. ``torch.bfloat16``) runs the whole mask decoder in that dtype on a cast of its
        weights (the cast is differentiable, so gradients reach the float32 weights): training's fast path,
        with one weight cast per call instead of autocast's casts of every activation around every op.

        ``fast`` picks the mask decoder's forward: :mod:`synthfm.models.fast_decoder` (same result up to float
        rounding, several times faster on a CPU) or segment-anything's own (``False``); ``None`` follows
        ``SYNTHFM_FAST_DECODER`` (on unless ``0``).

        ``window`` (rows, columns of the embedding's token grid): decode only those tokens, with their positional
        encoding and mask-prompt embedding (prompts stay in the whole input frame); the logits are those of the
        window's low-res pixels (4 per token each way). Cheaper where the structure is small (the volume
        adaptation's steps, :func:`synthfm.segment.adapt.crop_window`). ``context_pool`` > 0 (the fast decoder; a
        window on multiples of it): the tokens outside the window stay as context, averaged over cells of this
        many tokens each way, each cell's attention weight counted for its tokens.
        """
        points = None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels are required with point_coords")
            points = (point_coords, point_labels)
        if points is None and boxes is None and mask_inputs is None:
            raise ValueError("decode needs at least one prompt: points, a box or a mask")
        # With compute_dtype the prompt encoder runs under autocast, exactly as at inference: its positional
        # encodings (sin/cos of a matmul) come out differently in bf16, and a decoder must see in training
        # the encodings it will see when used.
        with torch.autocast(self.device.type, compute_dtype or torch.bfloat16, enabled=compute_dtype is not None):
            sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=mask_inputs)
            image_pe = self.prompt_encoder.get_dense_pe()
        if mask_inputs is None and isinstance(self.mask_decoder, BatchedMaskDecoder) and self.mask_decoder.uses_fast(fast):
            # the "no mask" embedding, unexpanded (its gradient then needs no sum over every pixel)
            dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        context = None
        if window is not None:
            rows, cols = window
            if context_pool:
                if any(edge % context_pool for edge in (rows.start, rows.stop, cols.start, cols.stop)):
                    raise ValueError(f"a window with pooled context must lie on multiples of {context_pool} tokens, "
                                     f"got rows {rows.start}..{rows.stop}, columns {cols.start}..{cols.stop}")
                full = dense if dense.shape[-1] > 1 else dense.expand(-1, -1, *embeddings.shape[-2:])
                context = (*(_pooled_outside(x, rows, cols, context_pool) for x in (embeddings, image_pe, full)),
                           context_pool ** 2)
            embeddings, image_pe = embeddings[..., rows, cols], image_pe[..., rows, cols]
            dense = dense if dense.shape[-1] == 1 else dense[..., rows, cols]  # one "no mask" embedding for all
        return self.run_mask_decoder(embeddings, image_pe, sparse, dense, multimask, compute_dtype, fast, context)

    def run_mask_decoder(self, embeddings: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor,
                         dense: torch.Tensor, multimask: bool = False, compute_dtype: Optional[torch.dtype] = None,
                         fast: Optional[bool] = None, context: Optional[tuple] = None) -> DecoderOutput:
        """The mask decoder part of :meth:`decode`, on the prompt encoder's outputs (same options; ``context``:
        pooled tokens outside a window, :func:`_pooled_outside`)."""
        inputs = dict(image_embeddings=embeddings, image_pe=image_pe,
                      sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense)
        batched = isinstance(self.mask_decoder, BatchedMaskDecoder)
        use_fast = batched and self.mask_decoder.uses_fast(fast)
        if context is not None and not use_fast:
            raise ValueError("decoding with pooled context needs the fast decoder (SYNTHFM_FAST_DECODER not 0)")
        options = dict(multimask_output=multimask, **({"fast": use_fast} if batched else {}),
                       **({"context": context} if context is not None else {}))
        if compute_dtype is None:
            logits, iou = self.mask_decoder(**inputs, **options)
        else:
            weights = {name: t.to(compute_dtype) if t.is_floating_point() else t
                       for name, t in (*self.mask_decoder.named_parameters(), *self.mask_decoder.named_buffers())}
            if not use_fast:  # the fast path casts its inputs itself (the embeddings while going channels-last)
                inputs = {k: v.to(compute_dtype) for k, v in inputs.items()}
            logits, iou = torch.func.functional_call(self.mask_decoder, weights, kwargs={**inputs, **options})
        return DecoderOutput(logits=logits, iou=iou)

    def decoder_parameters(self):
        """Parameters trained by SynthFM: prompt encoder + mask decoder (the encoder stays frozen)."""
        return list(self.prompt_encoder.parameters()) + list(self.mask_decoder.parameters())

    def decoder_state_dict(self) -> dict:
        """State of the prompt encoder and mask decoder only (what a decoder checkpoint stores)."""
        return {
            **{f"prompt_encoder.{k}": v for k, v in self.prompt_encoder.state_dict().items()},
            **{f"mask_decoder.{k}": v for k, v in self.mask_decoder.state_dict().items()},
        }
