"""Promptable segmentation of 2D slices with an embedding cache (one encoder call per slice).

``SlicePredictor.predict(slice, prompts)`` returns the mask on the slice's own pixel grid.  Slices
are identified by a key (e.g. ``(volume_id, axis, index)``) or by a hash of their pixels, so every
prompt on the same slice reuses its embedding.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Hashable, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
from scipy import ndimage as ndi

from synthfm.models.encoding import encode
from synthfm.models.sam import LOW_RES, DecoderOutput, PromptableModel, token_window, window_pixels
from synthfm.segment.embedding_store import EmbeddingStore
from synthfm.segment.preprocess import SliceTransform, Window, intensity_range, normalize, prepare_slice
from synthfm.segment.prompts import Prompts
from synthfm.segment.quality import QualityCalibrator, image_signals, prompt_kind, quality_signals
from synthfm.utils.masks import best_box_fit, box_region, cut_to_intensity, inside_and_ring, iou, parts_touching


@dataclass
class Prediction:
    """A predicted mask on the slice grid, its quality score, and the low-res logits (for the next prompt).

    ``score`` estimates the mask's IoU: the calibrated quality score when the model has a calibration
    (:mod:`synthfm.segment.quality`), else the decoder's raw predicted IoU; ``iou_head`` is always the raw one.
    """

    mask: np.ndarray
    score: float
    logits: np.ndarray  # (256, 256)
    all_scores: np.ndarray  # score of every candidate mask
    candidates: Optional[np.ndarray] = None  # (M, H, W) every candidate mask, when several were asked for
    candidate_logits: Optional[np.ndarray] = None  # (M, 256, 256)
    all_signals: Optional[Dict[str, np.ndarray]] = None  # quality signals of every candidate, (M,) each
    index: int = 0  # which candidate this prediction is
    #: the decoder's mask before the point cut (:meth:`SlicePredictor._gate_points`) removed part of it; None: not cut
    uncut: Optional[np.ndarray] = None
    #: which of the decoder's three candidates the user could choose instead (``predict(candidate=)``) this mask
    #: comes from: the candidate shown for one point or a fitted box, the first round's for points in rounds; None
    #: when the prompts give one mask
    choice: Optional[int] = None
    #: the slice's pixel height over width the model saw it with (:class:`SliceTransform`; 1: square pixels)
    aspect: float = 1.0

    @property
    def signals(self) -> Dict[str, float]:
        """The quality signals of this mask (:data:`synthfm.segment.quality.SIGNALS`; empty when not computed)."""
        return {k: float(v[self.index]) for k, v in (self.all_signals or {}).items()}

    @property
    def iou_head(self) -> float:
        """The decoder's raw predicted IoU of this mask."""
        return self.signals.get("iou_head", self.score)

    def closest_to(self, reference: np.ndarray) -> "Prediction":
        """The candidate with the highest IoU against ``reference`` (e.g. the neighbouring slice's mask)."""
        if self.candidates is None or len(self.candidates) < 2:
            return self
        return self.candidate(int(np.argmax([iou(c, reference) for c in self.candidates])))

    def candidate(self, k: int) -> "Prediction":
        """Candidate ``k`` as the prediction (needs :attr:`candidates`)."""
        return replace(self, mask=self.candidates[k], score=float(self.all_scores[k]), logits=self.candidate_logits[k],
                       index=k, uncut=None, choice=None if self.choice is None else k)


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an unavailable CUDA request is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("CUDA was requested but no CUDA GPU is available; use --device cpu (or auto)")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device '{device}'; use auto, cpu, cuda, cuda:N or mps") from None


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), so that bf16 autocast is the fast choice.

    Without it PyTorch's oneDNN emulates bf16: on a 2-core AVX2 EPYC one 256 x 256 TinyViT slice took 15.4 s in
    bf16 against 1.2 s in fp32 (docs/segment.md, "Precision follows the CPU"), while on CPUs with AVX512-BF16 bf16
    is about 4x faster than fp32.  ``SYNTHFM_BF16=1`` / ``=0`` overrides the choice.
    """
    forced = os.environ.get("SYNTHFM_BF16", "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    if forced:
        raise ValueError(f"SYNTHFM_BF16={forced!r} is not understood; set it to 1 (bf16 on the CPU) or 0 (fp32), "
                         "or unset it to let SynthFM choose from the CPU's instructions")
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None)


def default_bf16(device: torch.device) -> bool:
    """Inference precision: bf16 autocast on a CPU that computes bf16 natively, fp32 elsewhere (GPUs included)."""
    return device.type == "cpu" and cpu_has_fast_bf16()


class SlicePredictor:
    """Encode slices once (LRU cache of embeddings) and decode any number of prompts on them."""

    def __init__(self, model: PromptableModel, device: Union[str, torch.device] = "cpu", window: Window = "auto",
                 cache_size: int = 512, bf16: Optional[bool] = None, clip_to_box: bool = True) -> None:
        self.device = pick_device(device) if isinstance(device, str) else device
        self.model = model.to(self.device).eval()
        self.window = window
        self.cache_size = cache_size
        #: bf16 autocast (None: :func:`default_bf16`, i.e. only on a CPU with native bf16 arithmetic)
        self.bf16 = default_bf16(self.device) if bf16 is None else bf16
        self._cache: "OrderedDict[Hashable, Tuple[torch.Tensor, SliceTransform]]" = OrderedDict()
        self._aspects: Dict[Hashable, float] = {}  # slices whose pixels are not square: key -> height / width
        #: slices run through the encoder so far (cached and stored ones are not counted)
        self.encoder_calls = 0
        #: turns the quality signals into ``Prediction.score`` (None: the raw IoU head); set by load_model
        self.calibrator: Optional[QualityCalibrator] = getattr(model, "quality_calibrator", None)
        #: > 0: masks of point prompts cut to the structure's intensity (:meth:`_gate_points`; ``ModelSpec.point_gate``)
        self.point_gate: float = float(getattr(model, "point_gate", 0.0))
        #: compute the ``consistency`` signal (one more decoder call per prediction); None: when the calibration uses it
        self.consistency: Optional[bool] = None
        #: keep masks (and logits) inside a box prompt: a box says where the structure is, yet decoders leak past
        #: it (14.7% of synthfm-lite's predicted pixels on the real cases). Chosen on held-out synthetic images
        #: (docs/segment.md): tight box Dice 0.557 -> 0.645, jittered 0.547 -> 0.614; a margin did worse.
        self.clip_to_box = clip_to_box
        #: decode each prompt on the slice and on its left-right mirror image and average the two views' low-res
        #: logits (one more encoder call per slice); None: the model's ``mirror_average`` (ModelSpec)
        self.mirror: Optional[bool] = None
        #: slice embeddings kept on disk between runs (:meth:`use_store`); None: in memory only
        self.store: Optional[EmbeddingStore] = None
        #: per thread (a worker's propagation and a user's prompts share one predictor): ``crop``, the (margin, pool)
        #: of :meth:`cropped_decodes` while its block runs in that thread
        self._local = threading.local()

    def use_store(self, folder: Union[str, Path, None], max_bytes: Optional[int] = None) -> Optional[EmbeddingStore]:
        """Keep slice embeddings in ``folder`` (:class:`~synthfm.segment.embedding_store.EmbeddingStore`) as well as
        in memory, and read them from there, the least recently used deleted past ``max_bytes`` (None: no cap);
        None: in memory only."""
        self.store = None if folder is None else EmbeddingStore(folder, self.model, self.bf16, max_bytes=max_bytes)
        return self.store

    def share_embeddings(self, other: "SlicePredictor") -> bool:
        """Use ``other``'s embedding cache when both models run the same frozen encoder on the same device with
        the same window (e.g. synthfm-lite and medsam-lite): each slice is then encoded once for both."""
        a, b = self.model, other.model
        same = (a.encoder_name == b.encoder_name and a.image_size == b.image_size and self.device == other.device
                and self.window == other.window and self.bf16 == other.bf16
                and torch.equal(a.pixel_mean, b.pixel_mean) and torch.equal(a.pixel_std, b.pixel_std))
        wa, wb = a.image_encoder.state_dict(), b.image_encoder.state_dict()
        same = same and wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
        if same:
            self._cache = other._cache
        return same

    @property
    def mirrors(self) -> bool:
        """Whether :meth:`predict` averages the slice's mirror image by default (:attr:`mirror`)."""
        return bool(getattr(self.model, "mirror_average", False) if self.mirror is None else self.mirror)

    @staticmethod
    def key_of(image: np.ndarray, aspect: float = 1.0) -> str:
        key = hashlib.sha1(np.ascontiguousarray(image).view(np.uint8)).hexdigest() + str(image.shape)
        return key if aspect == 1.0 else f"{key}@{aspect:g}"

    def _aspect(self, key: Hashable, aspect: Optional[float] = None) -> float:
        """The pixel aspect of slice ``key``: ``aspect`` (remembered for the key's later calls), or None: the one
        given for it before (1: square pixels)."""
        if aspect is None:
            return self._aspects.get(key, 1.0)
        aspect = float(aspect)
        if not aspect > 0:
            raise ValueError(f"a pixel aspect (height / width) must be positive, got {aspect}")
        if aspect == 1.0:
            self._aspects.pop(key, None)
        else:
            self._aspects[key] = aspect
            if len(self._aspects) > 4 * self.cache_size:  # a long-running worker: forget slices no longer cached
                self._aspects = {k: a for k, a in self._aspects.items() if k in self._cache or k == key}
        return aspect

    @contextlib.contextmanager
    def cropped_decodes(self, margin: int, pool: int = 0) -> Iterator[None]:
        """Inside the block, a decode prompted by a box and a mask (a propagated slice's) runs on the embedding's
        tokens around the box, grown by ``margin`` tokens, with the rest of the slice averaged over ``pool`` x
        ``pool`` cells as context (``pool`` 0: the crop alone; with ``pool`` but without the fast decoder: the whole
        embedding); its logits outside the window are -20. Cheaper where the structure is small; a propagated
        mask stays near its box (docs/segment.md, "Propagated slices decoded on a crop")."""
        before = self.decode_crop
        self._local.crop = (int(margin), int(pool))
        try:
            yield
        finally:
            self._local.crop = before

    @property
    def decode_crop(self) -> Tuple[int, int]:
        """The (margin, pool) of the :meth:`cropped_decodes` block this thread is in; (0, 0): the whole embedding."""
        return getattr(self._local, "crop", (0, 0))

    def _decode(self, emb: torch.Tensor, coords: Optional[torch.Tensor], labels: Optional[torch.Tensor],
                boxes: Optional[torch.Tensor], masks: Optional[torch.Tensor], multi: bool) -> DecoderOutput:
        """The model's decode of one prompt set, on a window around its box where :attr:`decode_crop` asks."""
        margin, pool = self.decode_crop
        if (margin <= 0 or boxes is None or masks is None
                or (pool and not getattr(self.model.mask_decoder, "uses_fast", lambda: False)())):
            return self.model.decode(emb, coords, labels, boxes, masks, multimask=multi)
        grid = emb.shape[-1]
        x0, y0, x1, y1 = (float(v) for v in boxes[0])
        window = token_window((y0, y1), (x0, x1), self.model.image_size / grid, margin, max(1, pool), grid)
        out = self.model.decode(emb, coords, labels, boxes, masks, multimask=multi, window=window, context_pool=pool)
        logits = out.logits.new_full((*out.logits.shape[:2], LOW_RES, LOW_RES), -20.0)
        logits[(..., *window_pixels(window))] = out.logits
        return DecoderOutput(logits=logits, iou=out.iou)

    def _autocast(self):
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16)

    def is_cached(self, key: Hashable) -> bool:
        return key in self._cache

    def put_embedding(self, key: Hashable, embedding: torch.Tensor, transform: SliceTransform) -> None:
        """Use an embedding ``(1, 256, 64, 64)`` computed elsewhere (e.g. a training cache) for slice ``key``."""
        self._cache[key] = (embedding.to(self.device, torch.float32), transform)
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def embed_many(self, images, keys, value_range: Optional[Tuple[float, float]] = None,
                   aspect: Optional[float] = None) -> None:
        """Encode several slices (those not cached yet with their pixel ``aspect``: height over width, None: as given
        for each key before, :meth:`_aspect`); on a CPU two at a time (:func:`synthfm.models.encoding.encode`)."""
        aspects = [self._aspect(k, aspect) for k in keys]
        todo = [(img, k, a) for img, k, a in zip(images, keys, aspects)
                if k not in self._cache or self._cache[k][1].aspect != a]
        if not todo:
            return
        inputs, transforms = zip(*(prepare_slice(img, self.model.image_size, self.window, value_range, a)
                                   for img, _, a in todo))
        emb = [self.store.load(x) if self.store is not None else None for x in inputs]
        missing = [j for j, e in enumerate(emb) if e is None]
        if missing:
            new = encode(self.model, torch.stack([inputs[j] for j in missing]), self.bf16)
            self.encoder_calls += len(missing)
            for j, e in zip(missing, new):
                emb[j] = e
                if self.store is not None:
                    self.store.save(inputs[j], e)
        for (_, key, _), e, t in zip(todo, emb, transforms):
            e = e.to(self.device, torch.float32)
            self._cache[key] = (e[None], t)
            self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def embed(self, image: np.ndarray, key: Optional[Hashable] = None,
              value_range: Optional[Tuple[float, float]] = None,
              aspect: Optional[float] = None) -> Tuple[torch.Tensor, SliceTransform]:
        """The slice's embedding ``(1, 256, 64, 64)`` and transform, computed once per key; ``aspect``: its pixels'
        height over width (the slice is shown to the encoder with square physical pixels; None: as given for this
        key before, else 1)."""
        image = _a_slice(image)
        key = self.key_of(image, 1.0 if aspect is None else aspect) if key is None else key
        aspect = self._aspect(key, aspect)
        if key not in self._cache or self._cache[key][1].aspect != aspect:
            self.embed_many([image], [key], value_range, aspect)
        self._cache.move_to_end(key)
        return self._cache[key]

    @torch.inference_mode()
    def predict(self, image: np.ndarray, prompts: Prompts, key: Optional[Hashable] = None,
                multimask: Union[str, bool] = "auto", value_range: Optional[Tuple[float, float]] = None,
                split_box: float = 0.0, mirror: Optional[bool] = None, candidate: Optional[int] = None,
                aspect: Optional[float] = None) -> Prediction:
        """Segment ``image`` (H, W) from ``prompts``; ``multimask='auto'`` follows the model's ``mask_choice``
        (:class:`synthfm.models.registry.ModelSpec`): three candidates for a box, the one whose bounding box fits it
        best ("box-fit"), or the single-mask output; three candidates for one point, the IoU head's pick ("multi"),
        the one with the highest quality score ("calibrated": :attr:`calibrator`'s score, the IoU head's pick without
        a calibration), or the single-mask output. ``True``: three candidates, the IoU head picks; ``False``: the
        single-mask output.

        ``split_box`` > 0: a box longer than ``split_box`` times its width is cut across its length into tiles no
        longer than that, each tile is segmented on its own (with the points inside it) and the tiles' masks are
        joined; decoders trained on compact shapes miss most of a long thin structure from one elongated box.

        ``mirror`` (None: :attr:`mirrors`): the same prediction is made on the slice's left-right mirror image (its
        own embedding, cached under ``(key, "mirror")``) with mirrored prompts, and the two views' low-res logits
        are averaged (test-time augmentation; docs/segment.md, item 9). Each view picks its own candidate.

        ``candidate`` (0, 1 or 2): where ``multimask="auto"`` picks among the decoder's three candidates (one point;
        a box with ``"box-fit"``; with points in rounds, the first round), that candidate instead of the pick, in
        every view; a point mask is then cut as the pick would be. For a user who sees the pick is the wrong
        interpretation (a part or the whole) and cycles through the others.

        ``aspect``: the slice's pixel height over its width (e.g. 8.8 for a coronal slice of 5 mm axial slices with
        0.57 mm pixels); the model then sees the slice with square physical pixels, as a viewer shows it and as it
        was trained, and the mask comes back on the slice's own pixel grid. None: as given for ``key`` before, else 1.
        """
        image = np.asarray(image)
        prompts.validate(*image.shape[-2:])
        if aspect is not None:  # remembered for the slice (and its mirror image) by every embedding call below
            key = self.key_of(image, aspect) if key is None else key
            self._aspect(key, aspect)
            self._aspect((key, "mirror"), aspect)
        if candidate is not None and not (multimask == "auto" and int(candidate) in range(3)):
            raise ValueError(f"candidate must be 0, 1 or 2 with multimask='auto' (the decoder's three candidates), "
                             f"got {candidate!r} with multimask={multimask!r}")
        if not (self.mirrors if mirror is None else mirror):
            return self._gate_points(image, self._predict_view(image, prompts, key, multimask, value_range, split_box,
                                                               candidate), prompts, value_range)
        key = self.key_of(image) if key is None else key
        self.embed_views(image, key, value_range)
        transform = self.embed(image, key, value_range)[1]
        seen = self._predict_view(image, prompts, key, multimask, value_range, split_box, candidate)
        mirrored = self._predict_view(np.ascontiguousarray(image[:, ::-1]), _mirror_prompts(prompts, transform),
                                      (key, "mirror"), multimask, value_range, split_box, candidate)
        return self._gate_points(image, self._average_views(seen, mirrored, transform, prompts, prompt_kind(prompts)),
                                 prompts, value_range)

    def _gate_points(self, image: np.ndarray, pred: Prediction, prompts: Prompts,
                     value_range: Optional[Tuple[float, float]]) -> Prediction:
        """``pred`` cut to its structure's intensity when the prompts are points alone (no box, no mask prompt) and
        :attr:`point_gate` k > 0: pixels whose windowed intensity (1-pixel Gaussian smoothing) is further than k
        spreads (the larger of the mask's contrast against its 3-px ring and its inside std) from the mean within
        3 px of the positive points are removed, the rest opened and filled, and only its parts that hold a positive
        point kept (docs/segment.md, item 10). The logits are lowered where the cut removed pixels
        (:meth:`restrict`); the fraction removed is the ``cut`` quality signal, and the score is computed again with
        it (the other signals stay those of the decoder's mask)."""
        positives = prompts.points[prompts.labels == 1] if len(prompts.labels) else prompts.points[:0]
        if self.point_gate <= 0 or prompts.box is not None or prompts.mask_logits is not None or not len(positives):
            return pred
        if pred.mask.sum() < 10:
            return self._with_cut(pred, 0.0)
        lo, hi = value_range if value_range is not None else intensity_range(image, self.window)
        ys, xs = np.nonzero(pred.mask)  # work in the mask's box grown by its 3-px ring and the smoothing's 4-px
        window = (slice(max(ys.min() - 8, 0), ys.max() + 9), slice(max(xs.min() - 8, 0), xs.max() + 9))  # reach: exact
        mask = pred.mask[window]
        smooth = ndi.gaussian_filter(normalize(image[window], lo, hi), 1.0)
        seeds = np.zeros(mask.shape, bool)
        rows = np.clip(np.round(positives[:, 1]).astype(int), 0, image.shape[0] - 1) - window[0].start
        cols = np.clip(np.round(positives[:, 0]).astype(int), 0, image.shape[1] - 1) - window[1].start
        inside_window = (rows >= 0) & (rows < mask.shape[0]) & (cols >= 0) & (cols < mask.shape[1])
        seeds[rows[inside_window], cols[inside_window]] = True  # points further away are > 3 px from the mask
        near = ndi.binary_dilation(seeds, iterations=3) & mask
        inside = smooth[mask]
        centre = float(smooth[near].mean()) if near.any() else float(np.median(inside))
        mean, ring = inside_and_ring(smooth, mask)
        spread = max(abs(mean - ring), float(inside.std()))
        kept = np.zeros_like(pred.mask)
        kept[window] = parts_touching(cut_to_intensity(mask, smooth, centre, self.point_gate * spread), seeds)
        kept &= pred.mask  # filling holes may add the decoder mask's own holes back: those are not kept
        if not kept.any():
            return self._with_cut(pred, 0.0)
        removed = 1.0 - kept.sum() / pred.mask.sum()  # kept lies within the decoder's mask
        cut = self._with_cut(self.restrict(pred, kept), removed)
        return replace(cut, uncut=pred.mask) if removed > 0 else cut

    def _with_cut(self, pred: Prediction, fraction: float) -> Prediction:
        """``pred`` with the ``cut`` signal (``fraction`` for its own mask, 0 for the other candidates) and its
        scores computed again with it."""
        if not pred.all_signals:
            return pred
        signals = dict(pred.all_signals)
        signals["cut"] = np.zeros(len(signals["iou_head"]))
        signals["cut"][pred.index] = fraction
        scores = self._scores(signals, "points")
        return replace(pred, all_signals=signals, all_scores=scores, score=float(scores[pred.index]))

    def embed_views(self, image: np.ndarray, key: Hashable, value_range: Optional[Tuple[float, float]] = None,
                    aspect: Optional[float] = None) -> None:
        """Encode the slice and its mirror image (those not cached yet) together, as :meth:`predict` with ``mirror``
        needs them: on a CPU side by side (:meth:`embed_many`)."""
        image = _a_slice(image)
        self.embed_many([image, np.ascontiguousarray(image[:, ::-1])], [key, (key, "mirror")], value_range, aspect)

    def _predict_view(self, image: np.ndarray, prompts: Prompts, key: Optional[Hashable],
                      multimask: Union[str, bool], value_range: Optional[Tuple[float, float]],
                      split_box: float, candidate: Optional[int] = None) -> Prediction:
        """:meth:`predict` on one view of the slice."""
        tiles = _box_tiles(prompts.box, split_box) if split_box and prompts.box is not None else []
        if len(tiles) > 1:
            if candidate is not None:
                raise ValueError("a box segmented in tiles (split_box) has no candidates to choose from")
            return self._predict_tiles(image, prompts, tiles, key, multimask, value_range)
        if self._in_rounds(prompts):
            return self._predict_rounds(image, prompts, key, multimask, value_range, candidate)
        return self._predict_once(image, prompts, key, multimask, value_range, prompt_kind(prompts), candidate)

    def _in_rounds(self, prompts: Prompts) -> bool:
        """Whether these prompts are decoded in rounds (:meth:`_predict_rounds`): several points, or with the model's
        ``box_first`` a box and any points."""
        return bool(getattr(self.model, "points_in_rounds", False)) and prompts.mask_logits is None \
            and len(prompts.labels) > len(self._first_round(prompts))

    def _first_round(self, prompts: Prompts) -> List[int]:
        """The points of the first round: none with a box when the model's ``box_first`` is set (the box alone, as
        training's correction rounds start), else the first point."""
        return [] if prompts.box is not None and getattr(self.model, "box_first", False) else [0]

    def _asks_candidates(self, prompts: Prompts, multimask: Union[str, bool]) -> Tuple[bool, bool, Optional[str]]:
        """(three candidates asked for, picked by box fit, the point rule ``mask_choice`` gives or None) for one
        decoder call on ``prompts``."""
        choice = getattr(self.model, "mask_choice", {})
        pick_box_fit = multimask == "auto" and prompts.box is not None and choice.get("box") == "box-fit"
        point_choice = choice.get("point", "multi") if multimask == "auto" and prompts.ambiguous else None
        multi = (pick_box_fit or point_choice in ("multi", "calibrated")) if multimask == "auto" else bool(multimask)
        return multi, pick_box_fit, point_choice

    def offers_choice(self, prompts: Prompts) -> bool:
        """Whether ``predict(prompts)`` picks among three candidates that ``candidate=`` can choose instead (one
        point, a box with box fit, the first round of several points in rounds): :attr:`Prediction.choice` is set."""
        if self._in_rounds(prompts):
            head = self._first_round(prompts)
            prompts = replace(prompts, points=prompts.points[head], labels=prompts.labels[head])
        return self._asks_candidates(prompts, "auto")[0]

    def restrict(self, pred: Prediction, keep: np.ndarray) -> Prediction:
        """``pred`` with its mask cut to ``keep`` and its low-res logits lowered to <= -20 where the cut removed
        pixels, so that a mask prompt made from it (propagation) carries the cut too; the other candidates stay."""
        removed = pred.mask & ~keep
        if not removed.any():
            return pred
        transform = SliceTransform(*pred.mask.shape, self.model.image_size, pred.aspect)
        cut = transform.mask_to_lowres(removed).numpy() > 0.5
        return replace(pred, mask=pred.mask & keep, logits=np.where(cut, np.minimum(pred.logits, -20.0), pred.logits))

    def blend(self, a: Prediction, b: Prediction, weight: float) -> Prediction:
        """One slice's prediction from two of it (fronts meeting between prompted slices): the low-res logits mixed
        ``(1 - weight) * a + weight * b``, the mask kept within the union of the two masks, the scores mixed alike."""
        transform = SliceTransform(*a.mask.shape, self.model.image_size, a.aspect)
        logits = (1 - weight) * a.logits + weight * b.logits
        masks, _ = self._masks_of(logits[None], transform, None)
        return replace(a, mask=masks[0] & (a.mask | b.mask), logits=logits, candidates=None, candidate_logits=None,
                       score=float((1 - weight) * a.score + weight * b.score))

    def _predict_rounds(self, image: np.ndarray, prompts: Prompts, key: Optional[Hashable],
                        multimask: Union[str, bool], value_range: Optional[Tuple[float, float]],
                        candidate: Optional[int] = None) -> Prediction:
        """The points given one per round, in their order (the box, if any, in every round): the first round
        decodes the first point, each later one adds the next point and feeds the previous round's low-res logits
        back as the mask prompt, as SAM's interactive rounds and our decoders' correction rounds in training. The
        result depends on the order only, never on what was predicted before this call. Scored as ``prompts``.

        With the model's ``points_in_rounds == "corrections"`` only a point the current mask gets wrong (a positive
        outside it, a negative inside) opens a round, as training's correction clicks always lie on an error; a
        point the mask already honours joins the next round, and if no round follows the first, all points are
        decoded at once without a mask prompt (training's first rounds: several points, or far negatives). With the
        model's ``box_first`` and a box, the first round is the box alone and the points follow as corrections (a
        click after a box is decoded as training's correction rounds; a box with an interior point stays one call).
        ``candidate``: the first round's (see :meth:`predict`)."""
        kind = prompt_kind(prompts)

        def upto(idx: List[int], logits: Optional[np.ndarray], last: bool, chosen: Optional[int] = None) -> Prediction:
            step = replace(prompts, points=prompts.points[idx], labels=prompts.labels[idx], mask_logits=logits)
            return self._predict_once(image, step, key, multimask if last else "auto", value_range, kind, chosen)

        n, head = len(prompts.labels), self._first_round(prompts)
        box_first = not head  # the box alone first: the points follow as corrections
        pred = first = upto(head, None, n == len(head), candidate)
        if getattr(self.model, "points_in_rounds", False) != "corrections" and not box_first:
            for m in range(2, n + 1):
                pred = upto(list(range(m)), pred.logits, m == n)
            return replace(pred, choice=first.choice)
        given, rounds = list(head), 0
        for i in range(len(head), n):
            given.append(i)
            if not honours(pred.mask, prompts.points[i], prompts.labels[i]):
                pred, rounds = upto(given, pred.logits, i == n - 1), rounds + 1
            elif i == n - 1:  # the last points are honoured already: one more decode with them
                pred = upto(given, pred.logits if rounds else None, True, None if rounds else candidate)
        return replace(pred, choice=first.choice if rounds else pred.choice)

    def _predict_once(self, image: np.ndarray, prompts: Prompts, key: Optional[Hashable],
                      multimask: Union[str, bool], value_range: Optional[Tuple[float, float]],
                      kind: str, candidate: Optional[int] = None) -> Prediction:
        """One decoder call on ``prompts`` (see :meth:`predict`); the scores are those of prompt kind ``kind``;
        ``candidate``: which of the three candidates is kept where the model would pick among them."""
        emb, transform = self.embed(image, key, value_range)
        multi, pick_box_fit, point_choice = self._asks_candidates(prompts, multimask)
        if candidate is not None and not (multimask == "auto" and multi):
            raise ValueError("these prompts give the decoder's single mask, there are no candidates to choose from "
                             "(candidates come with one point, or a box for models that fit three candidates to it)")
        coords = labels = boxes = masks = None
        if len(prompts.labels):
            coords = torch.as_tensor(transform.to_input(prompts.points), dtype=torch.float32, device=self.device)[None]
            labels = torch.as_tensor(prompts.labels, device=self.device)[None]
        if prompts.box is not None:
            boxes = torch.as_tensor(transform.box_to_input(prompts.box), dtype=torch.float32, device=self.device)[None]
        if prompts.mask_logits is not None:
            masks = torch.as_tensor(prompts.mask_logits, dtype=torch.float32, device=self.device)[None, None]
        with self._autocast():
            out = self._decode(emb, coords, labels, boxes, masks, multi)
        low = out.logits[0].float()
        signals = self._signals(low, out.iou[0], transform, prompts)
        if self.wants_consistency:
            signals["consistency"] = self._consistency(low, emb, coords, labels, boxes, masks, multi, transform)
        masks, low = self._masks_of(low, transform, prompts.box)
        lo, hi = value_range if value_range is not None else intensity_range(image, self.window)
        split_box = prompts.box if kind == "box" else None  # split_agreement: only the box kind's model reads it
        signals.update(image_signals(normalize(image, lo, hi), masks, box=split_box))  # of the masks returned
        scores = self._scores(signals, kind)
        if candidate is not None:  # the user's choice among the candidates
            best = int(candidate)
        elif pick_box_fit:  # the candidate whose bounding box fits the box best (ties: the IoU head's choice)
            best = best_box_fit(masks, prompts.box, signals["iou_head"])
        elif point_choice == "calibrated":  # the candidate the calibration's picker (or its score) rates best
            pick = getattr(self.calibrator, "pick", None)
            best = int(np.argmax(scores if pick is None else pick(signals, kind)))
        else:
            best = int(np.argmax(signals["iou_head"]))  # the decoder's choice among its candidates, as trained
        return Prediction(masks[best], float(scores[best]), low[best], scores,
                          masks if multi else None, low if multi else None, signals, best,
                          choice=best if multimask == "auto" and multi else None, aspect=transform.aspect)

    def _masks_of(self, low: Union[torch.Tensor, np.ndarray], transform: SliceTransform, box: Optional[np.ndarray]
                  ) -> Tuple[np.ndarray, np.ndarray]:
        """Slice masks ``(M, H, W)`` and low-res logits ``(M, 256, 256)`` of low-res logits ``(M, 256, 256)``, both
        kept inside ``box`` when :attr:`clip_to_box` (the logits lowered to <= -20 outside it)."""
        low = torch.as_tensor(low, dtype=torch.float32)
        masks = np.stack([(transform.logits_to_slice(m) > 0).cpu().numpy() for m in low])
        low = low.cpu().numpy()
        if self.clip_to_box and box is not None:
            masks &= box_region(masks.shape[-2:], box)
            low = np.where(box_region(low.shape[-2:], transform.box_to_input(box) * (LOW_RES / transform.size)),
                           low, np.minimum(low, -20.0))
        return masks, low

    def _average_views(self, seen: Prediction, mirrored: Prediction, transform: SliceTransform,
                       prompts: Prompts, kind: str) -> Prediction:
        """One prediction from a slice's and its mirror image's: each view's chosen low-res logits averaged (the
        mirror's mirrored back), likewise every candidate (same index) and the signals; the two views' agreement
        is one more signal (``mirror_agreement``), and the scores are those of the averaged signals."""
        back = _mirror_lowres(mirrored.logits, transform)
        mask, logits = self._masks_of((seen.logits + back)[None] / 2, transform, prompts.box)
        chosen = _agreement(seen.logits[None], back[None], transform)[0]
        candidates = candidate_logits = None
        agreement = np.array([chosen])
        if seen.candidate_logits is not None and mirrored.candidate_logits is not None:
            back_all = _mirror_lowres(mirrored.candidate_logits, transform)
            candidates, candidate_logits = self._masks_of((seen.candidate_logits + back_all) / 2, transform,
                                                          prompts.box)
            agreement = _agreement(seen.candidate_logits, back_all, transform)
            agreement[seen.index] = chosen  # this prediction's own mask: the two views' chosen masks
        signals = dict(seen.all_signals or {})
        for k, v in (mirrored.all_signals or {}).items():
            if k in signals and np.shape(v) == np.shape(signals[k]):
                signals[k] = (signals[k] + v) / 2
        scores = seen.all_scores
        if signals and np.shape(signals["iou_head"]) == np.shape(agreement):
            signals["mirror_agreement"] = agreement
            scores = self._scores(signals, kind)
        elif np.shape(mirrored.all_scores) == np.shape(scores):  # signals of different shapes: the scores' mean
            scores = (scores + mirrored.all_scores) / 2
        return Prediction(mask[0], float(scores[seen.index]), logits[0], scores, candidates, candidate_logits,
                          signals or None, seen.index, choice=seen.choice, aspect=transform.aspect)

    @property
    def wants_consistency(self) -> bool:
        """Whether predictions compute the ``consistency`` signal (one more decoder call): when asked for with
        ``self.consistency`` (True / False) or, by default (None), when the calibration uses it."""
        if self.consistency is not None:
            return self.consistency
        return self.calibrator is not None and self.calibrator.uses("consistency")

    def _consistency(self, low, emb, coords, labels, boxes, masks, multi, transform) -> np.ndarray:
        """IoU of each candidate with the same candidate decoded from slightly moved prompts (points shifted by 2%
        of the input size, box grown by 5% of its size on each side): a mask that holds when the prompt moves a
        little is one the decoder is sure of."""
        rh, rw = transform.resized
        limit = torch.tensor([rw - 1, rh - 1], dtype=torch.float32, device=self.device)
        shift = 0.02 * transform.size
        coords = None if coords is None else torch.minimum(coords + shift, limit)
        if boxes is not None:
            grow = 0.05 * (boxes[:, 2:] - boxes[:, :2])
            boxes = torch.cat([(boxes[:, :2] - grow).clamp(min=0), torch.minimum(boxes[:, 2:] + grow, limit)], 1)
        with self._autocast():
            moved = self._decode(emb, coords, labels, boxes, masks, multi).logits[0].float()
        h, w = transform.lowres_shape
        a, b = low[:, :h, :w] > 0, moved[:, :h, :w] > 0
        inter, union = (a & b).flatten(1).sum(1).float(), (a | b).flatten(1).sum(1).float()
        return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)).cpu().numpy().astype(np.float64)

    @staticmethod
    def _signals(low: torch.Tensor, iou_head: torch.Tensor, transform: SliceTransform,
                 prompts: Prompts) -> Dict[str, np.ndarray]:
        """Quality signals of the candidates, on the part of the low-res logits that covers the slice."""
        factor = LOW_RES / transform.size
        h, w = transform.lowres_shape
        crop = low[:, :h, :w]
        box = transform.box_to_input(prompts.box) * factor if prompts.box is not None else None
        points = transform.to_input(prompts.points) * factor if len(prompts.labels) else None
        return quality_signals(crop, iou_head, box, points, prompts.labels)

    def _scores(self, signals: Dict[str, np.ndarray], kind: str) -> np.ndarray:
        if self.calibrator is None:
            return signals["iou_head"].copy()
        return self.calibrator(signals, kind)

    def _predict_tiles(self, image: np.ndarray, prompts: Prompts, tiles: list, key: Optional[Hashable],
                       multimask: Union[str, bool], value_range: Optional[Tuple[float, float]]) -> Prediction:
        """One prediction per tile ``(axis, lo, hi, box)``; candidate m = tile candidates m joined, each kept
        within its tile's span along the box's length (the first and last tiles reach the slice's edges)."""
        _, transform = self.embed(image, key, value_range)
        axis = tiles[0][0]  # 0: the box is long in x (columns), 1: in y (rows)
        n_pixels, factor = image.shape[1 - axis], LOW_RES / transform.size
        masks = logits = scores = signals = None
        for t, (_, lo, hi, box) in enumerate(tiles):
            lo = 0 if t == 0 else lo
            hi = n_pixels if t == len(tiles) - 1 else hi
            inside = (prompts.points[:, axis] >= lo) & (prompts.points[:, axis] < hi)
            sub = Prompts(prompts.points[inside], prompts.labels[inside], box, prompts.mask_logits)
            pred = self.predict(image, sub, key, multimask, value_range, mirror=False)
            if multimask is True:  # every candidate, joined tile by tile
                cands, cand_logits, tile_scores = pred.candidates, pred.candidate_logits, pred.all_scores
                tile_signals = pred.all_signals or {}
            else:  # each tile's own choice
                one = slice(pred.index, pred.index + 1)
                cands, cand_logits, tile_scores = pred.mask[None], pred.logits[None], pred.all_scores[one]
                tile_signals = {k: v[one] for k, v in (pred.all_signals or {}).items()}
            if masks is None:
                masks, logits = np.zeros_like(cands), np.full_like(cand_logits, -20.0)
                scores = np.zeros(len(cands))
                signals = {k: np.zeros(len(cands)) for k in tile_signals}
            span = [slice(None), slice(None), slice(None)]
            span[2 - axis] = slice(int(np.floor(lo)), int(np.ceil(hi)))
            masks[tuple(span)] |= cands[tuple(span)]
            low = transform.to_input(np.array([[lo, lo], [hi, hi]]))[:, axis] * factor
            span[2 - axis] = slice(int(np.floor(low[0])), int(np.ceil(low[1])))
            logits[tuple(span)] = cand_logits[tuple(span)]
            scores += tile_scores / len(tiles)
            for k, v in tile_signals.items():  # each tile's signals, averaged like the scores
                signals[k] += v / len(tiles)
        best = int(np.argmax(signals["iou_head"] if signals else scores))
        several = len(masks) > 1
        return Prediction(masks[best], float(scores[best]), logits[best], scores,
                          masks if several else None, logits if several else None, signals or None, best,
                          aspect=transform.aspect)


def _a_slice(image) -> np.ndarray:
    """``image`` as an array, refused unless it is one 2D slice."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"a slice must be 2D (H, W); got shape {image.shape}")
    return image


def honours(mask: np.ndarray, point: np.ndarray, label: int) -> bool:
    """Whether ``mask`` already agrees with the click ``point`` ``(x, y)``: inside for a positive, outside for a
    negative (a point off the slice counts as outside)."""
    x, y = int(round(float(point[0]))), int(round(float(point[1])))
    inside = 0 <= y < mask.shape[0] and 0 <= x < mask.shape[1] and bool(mask[y, x])
    return inside == bool(label)


def _mirror_lowres(logits: np.ndarray, transform: SliceTransform) -> np.ndarray:
    """Low-res logits ``(..., 256, 256)`` of a slice's mirror image as those of the slice (or the reverse): the
    columns that cover the slice (the rest is the encoder input's padding) in reverse order."""
    width = transform.lowres_shape[1]
    out = np.array(logits, dtype=np.float32, copy=True)
    out[..., :width] = np.asarray(logits)[..., :width][..., ::-1]
    return out


def _agreement(a: np.ndarray, b: np.ndarray, transform: SliceTransform) -> np.ndarray:
    """IoU of the masks of low-res logits ``a`` and ``b`` ``(M, 256, 256)`` on the part that covers the slice, per
    mask (0 when both are empty)."""
    h, w = transform.lowres_shape
    a, b = np.asarray(a)[:, :h, :w] > 0, np.asarray(b)[:, :h, :w] > 0
    inter, union = (a & b).sum((1, 2)), (a | b).sum((1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0).astype(np.float64)


def _mirror_prompts(prompts: Prompts, transform: SliceTransform) -> Prompts:
    """``prompts`` on the slice's left-right mirror image (x -> width - 1 - x; a mask prompt mirrored too)."""
    last = transform.width - 1
    points = prompts.points.astype(np.float64, copy=True)
    points[:, 0] = last - points[:, 0]
    box = None if prompts.box is None else np.array([last - prompts.box[2], prompts.box[1], last - prompts.box[0],
                                                     prompts.box[3]], np.float64)
    mask = None if prompts.mask_logits is None else _mirror_lowres(prompts.mask_logits, transform)
    return replace(prompts, points=points, box=box, mask_logits=mask)


def _box_tiles(box: np.ndarray, ratio: float) -> list:
    """``[(axis, lo, hi, tile box), ...]`` cutting ``box`` across its longer side into tiles at most ``ratio``
    times as long as wide; one tile when the box is not that long (``axis``: 0 long in x, 1 long in y)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0 + 1, y1 - y0 + 1
    axis = 0 if w >= h else 1
    long, short = max(w, h), max(min(w, h), 1.0)
    n = int(np.ceil(long / short / ratio - 1e-9))
    if n <= 1:
        return [(axis, None, None, box)]
    start = x0 if axis == 0 else y0
    edges = start + long * np.arange(n + 1) / n
    tiles = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sub = np.array([lo, y0, hi - 1, y1] if axis == 0 else [x0, lo, x1, hi - 1], float)
        tiles.append((axis, float(lo), float(hi), sub))
    return tiles
