"""Fit the prompt encoder + mask decoder from scratch on cached synthetic embeddings (Dice loss).

Optionally fine-tune: start from a trained decoder (``init``) and/or mix the user's own labelled
slices (``user_data``, a ``user_fraction`` of each batch) into the synthetic data.  The encoder is frozen; every random choice of step ``s`` comes from ``default_rng([seed, s])``, so a
resumed run reproduces an uninterrupted one exactly.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from synthfm.generate import GeneratorConfig
from synthfm.io.atomic import atomic_path, atomic_write_text
from synthfm.io.checks import InputError, format_bytes, free_disk_bytes, is_disk_full
from synthfm.models import build_model, save_decoder_checkpoint
from synthfm.models.checkpoint import save_torch_atomic
from synthfm.models.loader import init_decoder_state
from synthfm.models.sam import PromptableModel
from synthfm.segment.predictor import cpu_has_fast_bf16
from synthfm.segment.preprocess import SliceTransform
from synthfm.train.batches import BOX_MODES, MULTIMASK_MODES, POINT_MODES, Batch, make_batch, prompt_tensors
from synthfm.train.embed_cache import (DataSource, EmbeddingCache, OnTheFlySource, encode_images, fingerprint_folder,
                                       synthetic_manifest)
from synthfm.train.feature_aug import perturb_feature_stats
from synthfm.train.losses import hard_iou, mask_loss
from synthfm.train.model_card import model_card
from synthfm.train.neighbour_data import (MODES as NEIGHBOUR_MODES, PAST_END_ROLES, PER_VOLUME, make_neighbour_batch,
                                          neighbour_cache, neighbour_manifest)
from synthfm.train.prefetch import BatchPrefetcher, draw_indices
from synthfm.train.prompt_sim import correction_click
from synthfm.train.user_data import UserCase, user_cache
from synthfm.utils.progress import CancelToken, Cancelled, ProgressCallback, check_cancel, report

log = logging.getLogger(__name__)

VAL_OFFSET = 10_000_000  # validation images come from a disjoint index range of the same generator
NEIGHBOUR_OFFSET = 20_000_000  # so do the 3D volumes of neighbouring-slice pairs
CHECKPOINT_BYTES = 64 * 2**20  # a save writes resume.pt (~50 MB: decoder + AdamW moments) + an 8 MB checkpoint
MetricsCallback = Callable[[int, Dict[str, float]], None]
PROMPT_MODES = POINT_MODES + BOX_MODES
DATA_PATHS = ("cache", "on-the-fly")


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in the checkpoint's metadata)."""

    model: str = "synthfm-lite"
    preset: str = "mixed"
    generator: Dict[str, object] = field(default_factory=dict)  # GeneratorConfig overrides
    samples: int = 1000  # synthetic training images (each has several structures to target)
    val_samples: int = 48
    steps: int = 2000
    batch_size: int = 8
    lr: float = 5e-4
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    correction_prob: float = 0.5  # chance of corrective rounds in a step
    correction_rounds: int = 1  # up to this many correction clicks (rounds before the last run without gradient)
    extra_click_prob: float = 0.0  # chance that a round's click is not on the error (a point inside, a far negative)
    prompt_modes: Optional[List[str]] = None  # first-round prompt kinds drawn per step (None: all of PROMPT_MODES)
    #: first-round prompt kinds decoded as three candidates with SAM's min-over-masks loss (None: one point only)
    multimask_modes: Optional[List[str]] = None
    seed: int = 0
    device: str = "cpu"
    bf16: Optional[bool] = None  # None: bf16 on a GPU or a CPU with native bf16 (segment.predictor.cpu_has_fast_bf16)
    bf16_autocast: bool = False  # bf16 through autocast (slower, pre-0.2 runs) instead of a bf16 cast of the decoder
    val_every: int = 200
    ckpt_every: int = 100
    time_budget_min: Optional[float] = None
    out: str = "outputs/train"
    cache: Optional[str] = None  # defaults to <out>/cache
    data: str = "cache"  # "cache": encode once, memory-mapped (CPU); "on-the-fly": generate + encode per step (GPU)
    init: Optional[str] = None  # start from this decoder (model name or checkpoint path) instead of from scratch
    user_data: List[UserCase] = field(default_factory=list)  # the user's labelled volumes (fine-tuning)
    user_fraction: float = 0.5  # share of each batch drawn from user_data (when given)
    neighbour_volumes: int = 0  # synthetic 3D volumes giving neighbouring-slice pairs (propagation training)
    neighbour_prob: float = 0.3  # chance that a step trains on neighbouring-slice pairs (when volumes > 0)
    #: chance that a neighbour step also gives the neighbour's mask as simulated low-res logits (the mask prompt
    #: propagation carries from the previous slice)
    neighbour_mask_prob: float = 0.0
    #: carried-mask steps also draw the slices past the structure's ends (empty targets); False: only slices where it
    #: is present (an empty candidate trained to an IoU of 1 there made the IoU head pick empty masks for points)
    neighbour_mask_past_end: bool = True
    #: the IoU head learns from the carried-mask steps' first round too; False: not (their candidates, past the ends
    #: trained to be empty, taught it that an empty mask can have IoU 1)
    neighbour_mask_iou: bool = True
    workers: int = 0  # on-the-fly data: processes drawing the next steps' batches ahead (0: in this process)
    #: chance that a sample's embedding has its per-channel mean and std redrawn (synthfm.train.feature_aug; 0: off)
    feature_stats_aug: float = 0.0

    def __post_init__(self) -> None:
        self.user_data = [c if isinstance(c, UserCase) else UserCase(*c) for c in self.user_data]
        if self.bf16 is None:
            self.bf16 = str(self.device).startswith("cuda") or cpu_has_fast_bf16()

    def to_dict(self) -> Dict[str, Any]:
        """JSON-able settings (user volumes as name/shape/labels/SHA-256) for metadata and resume checks."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "user_data"}
        out["user_data"] = [c.describe() for c in self.user_data]
        return json.loads(json.dumps(out))

    def validate(self) -> None:
        for name in ("samples", "val_samples", "steps", "batch_size", "val_every", "ckpt_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.samples < self.batch_size and not self.user_data:
            raise ValueError(f"samples ({self.samples}) must be at least batch_size ({self.batch_size}): each step draws "
                             "batch_size different images")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.data not in DATA_PATHS:
            raise ValueError(f"data must be one of {', '.join(DATA_PATHS)}, got '{self.data}'")
        if self.correction_rounds < 1:
            raise ValueError(f"correction_rounds must be at least 1, got {self.correction_rounds}")
        if not 0.0 <= self.extra_click_prob <= 1.0:
            raise ValueError(f"extra_click_prob must be between 0 and 1, got {self.extra_click_prob}")
        unknown = set(self.prompt_modes or ()) - set(PROMPT_MODES)
        if unknown or self.prompt_modes == []:
            raise ValueError(f"prompt_modes must be a non-empty list of {', '.join(PROMPT_MODES)}, got {self.prompt_modes}")
        if set(self.multimask_modes or ()) - set(PROMPT_MODES) or self.multimask_modes == []:
            raise ValueError(f"multimask_modes must be a non-empty list of {', '.join(PROMPT_MODES)}, "
                             f"got {self.multimask_modes}")
        if not 0.0 <= self.user_fraction <= 1.0:
            raise ValueError(f"user_fraction must be between 0 and 1, got {self.user_fraction}")
        if self.workers < 0:
            raise ValueError(f"workers must be 0 or more, got {self.workers}")
        if self.workers and (self.data != "on-the-fly" or self.user_data or self.neighbour_volumes):
            raise ValueError("workers draw on-the-fly synthetic batches only: use them with data 'on-the-fly' and "
                             "without user data or neighbour volumes (or set workers to 0)")
        if not 0.0 <= self.neighbour_prob <= 1.0 or self.neighbour_volumes < 0:
            raise ValueError(f"neighbour_prob must be between 0 and 1 and neighbour_volumes >= 0, got "
                             f"{self.neighbour_prob} and {self.neighbour_volumes}")
        if not 0.0 <= self.feature_stats_aug <= 1.0:
            raise ValueError(f"feature_stats_aug must be between 0 and 1, got {self.feature_stats_aug}")
        if not 0.0 <= self.neighbour_mask_prob <= 1.0:
            raise ValueError(f"neighbour_mask_prob must be between 0 and 1, got {self.neighbour_mask_prob}")
        from synthfm.models.registry import get_spec

        get_spec(self.model)
        self.generator_config()

    def generator_config(self) -> GeneratorConfig:
        return GeneratorConfig.from_preset(self.preset, **self.generator)


def cache_root(config: TrainConfig) -> Path:
    """Where a run's embedding caches live: ``--cache`` or ``OUT/cache``."""
    return Path(config.cache) if config.cache else Path(config.out) / "cache"


def planned_caches(config: TrainConfig) -> List[Tuple[Path, dict]]:
    """(folder, manifest) of every cache of synthetic images the run uses, known without building the model
    (the user's slices are counted once their volumes are sliced)."""
    from synthfm.models.registry import get_spec

    spec, gen, root = get_spec(config.model), config.generator_config(), cache_root(config)
    caches = [(root / "val", synthetic_manifest(spec.encoder, spec.image_size, gen, config.seed, VAL_OFFSET,
                                                config.val_samples))]
    if config.data == "cache":
        caches.append((root / "train", synthetic_manifest(spec.encoder, spec.image_size, gen, config.seed, 0,
                                                          config.samples)))
    if config.neighbour_volumes:
        wanted = neighbour_manifest(spec.encoder, spec.image_size, gen, config.seed, config.neighbour_volumes,
                                    NEIGHBOUR_OFFSET)
        caches.append((fingerprint_folder(root, "neighbours", wanted), wanted))
    return caches


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up then cosine decay to 5% of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


def _decode(model: PromptableModel, emb: torch.Tensor, batch: Batch, bf16: bool, mask_inputs=None, multimask=None,
            autocast: bool = True):
    """Decode ``batch``; with ``bf16`` either under autocast (inference-like) or, with ``autocast=False``, the
    whole mask decoder in bf16 on a differentiable cast of its weights (training's fast path). ``mask_inputs``
    (a correction round's previous logits) replaces the batch's own first-round mask prompt."""
    multimask = batch.multimask if multimask is None else multimask
    mask_inputs = batch.mask_inputs if mask_inputs is None else mask_inputs
    if bf16 and not autocast:
        return model.decode(emb, batch.point_coords, batch.point_labels, batch.boxes, mask_inputs, multimask,
                            compute_dtype=torch.bfloat16)
    with torch.autocast(emb.device.type, torch.bfloat16, enabled=bf16):
        return model.decode(emb, batch.point_coords, batch.point_labels, batch.boxes, mask_inputs, multimask)


def _correct(rng, model, emb, batch, out, transform, bf16, autocast=True, extra_prob=0.0):
    """Next round: a correction click on each sample's error (or, with chance ``extra_prob``, a click that must not
    change the answer: :func:`~synthfm.train.prompt_sim.correction_click`) + the previous logits as mask prompt.
    Returns the new output and the batch with the click added (for a further round)."""
    rows = torch.arange(len(emb), device=emb.device)
    best = out.iou.detach().argmax(1) if batch.multimask else torch.zeros_like(rows)
    prev = out.logits.detach()[rows, best][:, None].float()
    preds = (transform.logits_to_slice(prev[:, 0]) > 0).cpu().numpy()
    prompts = [correction_click(rng, p, pr, m, extra_prob) for p, pr, m in zip(batch.prompts, preds, batch.masks)]
    coords, labels, boxes = prompt_tensors(prompts, transform)
    batch2 = dataclasses.replace(batch, prompts=prompts, point_coords=coords, point_labels=labels, boxes=boxes,
                                 multimask=False).to(emb.device)
    return _decode(model, emb, batch2, bf16, mask_inputs=prev, autocast=autocast), batch2


class StepLoss(torch.nn.Module):
    """One step's loss (first round + optional correction round) as a module, so DDP can wrap it."""

    def __init__(self, model: PromptableModel, config: "TrainConfig") -> None:
        super().__init__()
        self.model, self.config = model, config

    def forward(self, rng: np.random.Generator, emb: torch.Tensor, batch: Batch, transform: SliceTransform):
        cfg = self.config
        out = _decode(self.model, emb, batch, cfg.bf16, autocast=cfg.bf16_autocast)
        loss, dice_l = mask_loss(out.logits, out.iou, batch.targets, iou_weight=batch.iou_weight)
        if rng.random() < cfg.correction_prob:
            rounds = 1 if cfg.correction_rounds == 1 else int(rng.integers(1, cfg.correction_rounds + 1))
            for _ in range(rounds - 1):  # earlier clicks: forward only, as SAM's interactive training
                with torch.no_grad():
                    out, batch = _correct(rng, self.model, emb, batch, out, transform, cfg.bf16, cfg.bf16_autocast,
                                          cfg.extra_click_prob)
            out2, _ = _correct(rng, self.model, emb, batch, out, transform, cfg.bf16, cfg.bf16_autocast,
                               cfg.extra_click_prob)
            loss2, dice_l = mask_loss(out2.logits, out2.iou, batch.targets)
            loss = 0.5 * (loss + loss2)
        return loss, dice_l


class Trainer:
    """One training run; :meth:`run` can be cancelled and resumed.

    With ``world_size > 1`` (see :mod:`synthfm.train.ddp`) each rank draws different samples, the
    step loss is wrapped in DistributedDataParallel, and only rank 0 validates and writes files.
    """

    def __init__(self, config: TrainConfig, rank: int = 0, world_size: int = 1) -> None:
        config.validate()
        self.config, self.rank, self.world_size = config, rank, world_size
        self.out = Path(config.out)
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.out):  # unique name: DDP ranks probe at once
                pass
        except OSError as exc:
            raise PermissionError(f"cannot write to output folder {self.out} ({exc}); choose a writable --out") from exc
        torch.manual_seed(config.seed)
        # fine-tune: the start decoder is read and checked (encoder, tensor shapes) before anything is built
        start = init_decoder_state(config.init, config.model) if config.init else None
        self.model = build_model(config.model).to(config.device)
        if start is not None:
            self.model.load_state_dict(start, strict=False)
        self.params = self.model.decoder_parameters()
        self.step_loss: torch.nn.Module = StepLoss(self.model, config)
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, config.warmup, config.steps))
        self.step, self.train_seconds = 0, 0.0  # seconds summed over every session of a resumed run
        self.saved_step: Optional[int] = None  # step of the last complete save (this session or the resumed one)
        self.history: Dict[str, list] = {"step": [], "loss": [], "dice": [], "val_step": [], "val_point": [], "val_box": []}
        if config.user_data:
            self.history.update(val_user_point=[], val_user_box=[])
        self.user_source: Optional[EmbeddingCache] = None
        self.neighbour_source: Optional[EmbeddingCache] = None
        self.prefetcher: Optional[BatchPrefetcher] = None

    # ---- data -----------------------------------------------------------------------------
    def prepare_data(self, progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None) -> None:
        cfg, gen_cfg = self.config, self.config.generator_config()
        root = cache_root(cfg)
        self.val_cache = self._cache(root / "val", VAL_OFFSET, cfg.val_samples, progress, cancel)
        self.train_source: DataSource
        if cfg.data == "cache":
            self.train_source = self._cache(root / "train", 0, cfg.samples, progress, cancel)
        else:
            self.train_source = OnTheFlySource(self.model, gen_cfg, cfg.seed, 0, cfg.samples, cfg.bf16)
        if cfg.user_data:
            self.user_source = user_cache(root, self.model, cfg.user_data, gen_cfg.size, cfg.bf16, progress, cancel)
        if cfg.neighbour_volumes:
            self.neighbour_source = neighbour_cache(root, self.model, gen_cfg, cfg.seed, cfg.neighbour_volumes,
                                                    cfg.bf16, progress, cancel, first=NEIGHBOUR_OFFSET)
        self.transform = SliceTransform(gen_cfg.size, gen_cfg.size, self.model.image_size)
        if cfg.workers and self.prefetcher is None:
            self.prefetcher = BatchPrefetcher(cfg.workers, 2 * cfg.workers, self._key, self.train_source.items,
                                              cfg.samples, cfg.batch_size, cfg.prompt_modes or PROMPT_MODES,
                                              self.transform, cfg.multimask_modes or MULTIMASK_MODES)

    def close(self) -> None:
        """Stop the batch-drawing workers (if any)."""
        if self.prefetcher is not None:
            self.prefetcher.close()
            self.prefetcher = None

    def _cache(self, folder: Path, first: int, count: int, progress, cancel) -> EmbeddingCache:
        cfg = self.config
        cache = EmbeddingCache.create_or_open(folder, self.model, cfg.generator_config(), cfg.seed, first, count)
        if not cache.complete:
            cache.fill(self.model, bf16=cfg.bf16, progress=progress, cancel=cancel)
        return cache

    # ---- steps ----------------------------------------------------------------------------
    def _key(self, step: int) -> List[int]:
        """Step ``step``'s random key: each rank draws its own samples and prompts."""
        cfg = self.config
        return [cfg.seed, step, 1] if self.world_size == 1 else [cfg.seed, step, 1, self.rank]

    def train_step(self) -> Dict[str, float]:
        cfg = self.config
        key = self._key(self.step)
        rng = np.random.default_rng(key)
        nrng = np.random.default_rng([key[0], key[1], 3, *key[3:]])  # own stream: runs without it draw as before
        if self.prefetcher is not None:  # the draw below (no user data), made ahead by worker processes
            rng, images, batch = self.prefetcher.get(self.step, cfg.steps)
            emb = encode_images(self.model, images, cfg.bf16)
        elif self.neighbour_source is not None and nrng.random() < cfg.neighbour_prob:
            n = len(self.neighbour_source)
            idx = np.sort(nrng.choice(n, cfg.batch_size, replace=cfg.batch_size > n))
            mode = str(nrng.choice(NEIGHBOUR_MODES))
            with_mask = cfg.neighbour_mask_prob > 0 and nrng.random() < cfg.neighbour_mask_prob  # no draw when off
            if with_mask and not cfg.neighbour_mask_past_end:  # drawn again among the slices the structure is on
                present = np.flatnonzero(np.arange(n) % PER_VOLUME >= PAST_END_ROLES)
                idx = np.sort(nrng.choice(present, cfg.batch_size, replace=cfg.batch_size > len(present)))
            emb, labels, targets = self.neighbour_source.get(idx, cfg.device)
            batch = make_neighbour_batch(rng, labels, targets, idx, self.transform, mode, with_mask)
            if with_mask and not cfg.neighbour_mask_iou:
                batch.iou_weight = 0.0
        else:
            n_user, user_idx = self._draw_user(key)
            idx, mode = draw_indices(rng, len(self.train_source), cfg.batch_size - n_user,
                                     cfg.prompt_modes or PROMPT_MODES)
            emb, labels, targets = self._get(idx, user_idx)
            idx = np.concatenate([idx, len(self.train_source) + user_idx])
            batch = make_batch(rng, labels, targets, idx, self.transform, mode, cfg.multimask_modes or MULTIMASK_MODES)
        batch = batch.to(emb.device)
        if cfg.feature_stats_aug:  # its own stream: runs without it draw as before
            emb = perturb_feature_stats(emb, cfg.feature_stats_aug, torch.Generator().manual_seed(
                int(np.random.default_rng([key[0], key[1], 4, *key[3:]]).integers(2**62))))
        self.model.train()
        self.model.image_encoder.eval()
        loss, dice_l = self.step_loss(rng, emb, batch, self.transform)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return {"loss": loss.item(), "dice": 1 - dice_l.mean().item(), "lr": self.scheduler.get_last_lr()[0]}

    def _draw_user(self, key: list):
        """How many of this step's samples come from the user's slices, and which (their own random stream,
        so runs without user data draw exactly as before)."""
        if self.user_source is None:
            return 0, np.zeros(0, np.int64)
        urng = np.random.default_rng([key[0], key[1], 2, *key[3:]])
        n = int(urng.binomial(self.config.batch_size, self.config.user_fraction))
        return n, np.sort(urng.choice(len(self.user_source), n, replace=n > len(self.user_source)))

    def _get(self, idx: np.ndarray, user_idx: np.ndarray):
        """Embeddings, label maps and targets of synthetic items ``idx`` followed by user items ``user_idx``."""
        parts = [source.get(i, self.config.device) for source, i in ((self.train_source, idx),
                                                                      (self.user_source, user_idx)) if len(i)]
        if len(parts) == 1:
            return parts[0]
        return (torch.cat([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                np.concatenate([p[2] for p in parts]))

    def validate(self) -> Dict[str, float]:
        """Mean hard Dice on the fixed validation images with one interior point and with a tight box (and on
        up to 64 of the user's slices, evenly spaced, when fine-tuning on user data)."""
        cfg = self.config
        result = validation_dice(self.model, self.val_cache, self.transform, cfg.seed, cfg.bf16, cfg.device)
        if self.user_source is not None:
            pick = np.unique(np.linspace(0, len(self.user_source) - 1, min(64, len(self.user_source))).astype(int))
            user = validation_dice(self.model, Subset(self.user_source, pick), self.transform, cfg.seed, cfg.bf16,
                                   cfg.device)
            result.update({k.replace("val_", "val_user_"): v for k, v in user.items()})
        return result

    # ---- persistence ----------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out / f"{self.config.model}.pt"

    def save(self) -> Path:
        """Write the resume state, checkpoint, model card, history and curve, each atomically.  ``resume.pt``
        comes first, so a save that finds the disk full leaves every file as the last save wrote it, or a
        resume state newer than the checkpoint (which a rerun continues from), never a damaged one."""
        written: List[str] = []
        try:
            self._write_state(written)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            free = free_disk_bytes(self.out)
            kept = (f"the other files are as the last save (step {self.saved_step}) left them"
                    if self.saved_step is not None else "this run had no earlier save")
            raise InputError(
                f"disk full while saving the training state in {self.out} at step {self.step}: a save needs about "
                f"{format_bytes(CHECKPOINT_BYTES)}{f', {format_bytes(free)} are free' if free is not None else ''}; "
                f"{' and '.join(written) + ' written at this step, ' if written else ''}{kept}; free space there "
                "and run the same command again to resume") from exc
        self.saved_step = self.step
        return self.checkpoint_path

    def _write_state(self, written: List[str]) -> None:
        meta = {"model": self.config.model, "step": self.step, "train_config": self.config.to_dict(),
                "generator": self.config.generator_config().to_dict(),
                "val": {k: v[-1] for k, v in self.history.items() if k.startswith("val_") and k != "val_step" and v},
                "train_seconds": round(self.train_seconds, 1)}
        save_torch_atomic({"step": self.step, "decoder": self.model.decoder_state_dict(),
                           "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                           "history": self.history, "config": self.config.to_dict(),
                           "generator": self.config.generator_config().to_dict(),
                           "train_seconds": self.train_seconds}, self.out / "resume.pt")
        written.append("resume.pt")
        save_decoder_checkpoint(self.checkpoint_path, self.model, meta)
        written.append(self.checkpoint_path.name)
        atomic_write_text(self.checkpoint_path.with_suffix(".md"),
                          model_card(self.config.model, meta, self.model.encoder_name))
        atomic_write_text(self.out / "history.json", json.dumps(self.history))
        self.plot()

    def resume(self) -> bool:
        """Load ``resume.pt`` from the output folder if present (or, without it, the light state: the decoder
        checkpoint + ``history.json``, which is what a committed long run keeps); True when a run was resumed."""
        path = self.out / "resume.pt"
        if not path.is_file():
            return self._resume_light()
        try:
            state = torch.load(path, map_location=self.config.device, weights_only=False)
        except Exception as exc:  # truncated or damaged (e.g. copied from a run that was killed)
            raise ValueError(f"cannot read the resume state {path} ({type(exc).__name__}: {exc}); delete it to start "
                             "this run afresh, or choose another --out") from exc
        self._check_same_run(path, state["config"], state.get("generator") or self._checkpoint_generator())
        self.model.load_state_dict(state["decoder"], strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.history = state["step"], state["history"]
        self.train_seconds = state.get("train_seconds", 0.0)
        self.saved_step = self.step
        return True

    def _check_same_run(self, path: Path, saved_config: dict, saved_generator: Optional[dict] = None) -> None:
        """Refuse to continue a run with other settings. With the run's resolved generator settings at hand,
        those are compared instead of the overrides (a run of generator version 2 continues under version 3's
        code when ``--generator`` now says ``"version": 2``)."""
        # the precision follows the machine (an AVX2 CPU would take ~10x longer in bf16): a run may change it on resume
        ignore = ("steps", "time_budget_min", "device", "out", "cache", "workers", "bf16") + (
            ("generator",) if saved_generator else ())
        if "bf16" in saved_config and bool(saved_config["bf16"]) != bool(self.config.bf16):
            log.warning("resuming %s in %s; it was trained so far in %s (the precision this machine computes fast), so "
                        "it will not match an uninterrupted run bit for bit", path, "bf16" if self.config.bf16 else
                        "fp32", "bf16" if saved_config["bf16"] else "fp32")
        if saved_generator and json.dumps(saved_generator, sort_keys=True) != self.config.generator_config().to_json():
            raise ValueError(f"cannot resume {path}: it was trained on other generator settings "
                             f"({json.dumps(saved_generator, sort_keys=True)}); give the same --generator (older runs: "
                             "add \"version\": 2) or use a new --out")
        saved = {k: v for k, v in saved_config.items() if k not in ignore}
        now = {k: v for k, v in self.config.to_dict().items() if k in saved}
        if json.loads(json.dumps(saved)) != json.loads(json.dumps(now)):
            diff = sorted(k for k in saved if json.dumps(saved[k]) != json.dumps(now[k]))
            raise ValueError(f"cannot resume {path}: settings differ ({', '.join(diff)}); use the same settings "
                             "or a new --out")

    def _checkpoint_generator(self) -> Optional[dict]:
        """The resolved generator settings in the run's decoder checkpoint (resume states written before they
        kept their own)."""
        from synthfm.models import load_decoder_checkpoint

        try:
            return load_decoder_checkpoint(self.checkpoint_path)[1].get("generator")
        except (FileNotFoundError, ValueError):
            return None

    def _resume_light(self) -> bool:
        """Continue from the decoder checkpoint (fp16 weights, step, settings) and ``history.json``: the schedule
        goes on at the saved step; AdamW's moment estimates start afresh (they are not kept, to stay small)."""
        from synthfm.models import load_decoder_checkpoint

        history = self.out / "history.json"
        if not (self.checkpoint_path.is_file() and history.is_file()):
            return False
        state, meta = load_decoder_checkpoint(self.checkpoint_path)
        if "train_config" not in meta:
            return False
        self._check_same_run(self.checkpoint_path, meta["train_config"], meta.get("generator"))
        self.model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                                   strict=False)
        self.step, self.history = int(meta["step"]), json.loads(history.read_text())
        self.train_seconds = float(meta.get("train_seconds", 0.0))
        self.saved_step = self.step
        self.scheduler.last_epoch = self.step  # LambdaLR: lr of the next step
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base * lr_factor(self.step, self.config.warmup, self.config.steps)
        return True

    def plot(self) -> Optional[Path]:
        """Loss and Dice curves next to the checkpoint."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        h = self.history
        if not h["step"]:
            return None
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
        a.plot(h["step"], h["loss"], lw=0.6, alpha=0.6, label="train loss")
        a.set_xlabel("step"), a.set_ylabel("loss"), a.legend()
        b.plot(h["step"], _smooth(h["dice"]), label="train Dice (smoothed)")
        b.plot(h["val_step"], h["val_point"], "o-", label="val Dice, 1 point")
        b.plot(h["val_step"], h["val_box"], "s-", label="val Dice, box")
        if h.get("val_user_point"):
            b.plot(h["val_step"], h["val_user_point"], "^--", label="Dice on your slices, 1 point")
        b.set_xlabel("step"), b.set_ylim(0, 1), b.legend()
        start = f"fine-tuned from {self.config.init}" if self.config.init else "trained from scratch"
        data = " + your labelled slices" if self.config.user_data else ""
        data += " + neighbouring slices of 3D volumes" if self.config.neighbour_volumes else ""
        fig.suptitle(f"{self.config.model}: decoder {start} on synthetic data{data}")
        fig.tight_layout()
        path = self.out / "curve.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=90, format="png")
        plt.close(fig)
        return path

    def run(self, progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None,
            on_metrics: Optional[MetricsCallback] = None) -> Path:
        cfg, main = self.config, self.rank == 0
        start = time.monotonic()
        try:
            while self.step < cfg.steps:
                check_cancel(cancel)
                tick = time.monotonic()
                metrics = self.train_step()
                for key in ("loss", "dice"):
                    self.history[key].append(metrics[key])
                self.history["step"].append(self.step)
                if main and (self.step % cfg.val_every == 0 or self.step == cfg.steps):
                    metrics.update(self._record_validation())
                if on_metrics and main:
                    on_metrics(self.step, metrics)
                report(progress, self.step, cfg.steps, f"loss {metrics['loss']:.3f}")
                if main and self.step % cfg.ckpt_every == 0:
                    self.save()
                self.train_seconds += time.monotonic() - tick
                out_of_time = bool(cfg.time_budget_min) and time.monotonic() - start > 60 * cfg.time_budget_min
                if self._agree(out_of_time):
                    if main and self.history["val_step"][-1:] != [self.step]:
                        self._record_validation()  # the checkpoint's validation Dice is that of its weights
                    break
        except Cancelled:
            if main:
                self.save()  # keep what was learned; resume continues from here
            raise
        finally:
            self.close()
        return self.save() if main else self.checkpoint_path

    def _record_validation(self) -> Dict[str, float]:
        """Validate now and add the result to the history at this step."""
        val = self.validate()
        self.history["val_step"].append(self.step)
        for k, v in val.items():
            self.history[k].append(v)
        return val

    def _agree(self, flag: bool) -> bool:
        """True if any rank says so (all ranks stop at the same step, or DDP would hang)."""
        if self.world_size == 1:
            return flag
        t = torch.tensor([float(flag)])
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())


class Subset:
    """Items ``idx`` of a data source, as a data source."""

    def __init__(self, source: DataSource, idx: np.ndarray) -> None:
        self.source, self.idx = source, np.asarray(idx)

    def __len__(self) -> int:
        return len(self.idx)

    def get(self, idx: np.ndarray, device: str = "cpu"):
        return self.source.get(self.idx[idx], device)


@torch.inference_mode()
def validation_dice(model: PromptableModel, source: DataSource, transform: SliceTransform, seed: int = 0,
                    bf16: bool = True, device: str = "cpu", batch_size: int = 16) -> Dict[str, float]:
    """Mean hard Dice of ``model`` on ``source`` with one interior point (best-IoU of 3 masks) and with a
    jittered box; the prompts depend only on ``seed``, so different models see the same prompts."""
    model.eval()
    result = {}
    for name, mode in (("val_point", "point1"), ("val_box", "box")):
        rng = np.random.default_rng([seed, 7])
        dices = []
        for start in range(0, len(source), batch_size):
            idx = np.arange(start, min(len(source), start + batch_size))
            emb, labels, targets = source.get(idx, device)
            batch = make_batch(rng, labels, targets, idx, transform, mode).to(emb.device)
            out = _decode(model, emb, batch, bf16)
            best = out.iou.float().argmax(1)
            logits = out.logits.float()[torch.arange(len(idx), device=emb.device), best][:, None]
            pred = (logits > 0).float()
            inter = (pred * batch.targets).sum((-1, -2))
            dices.append((2 * inter / (pred.sum((-1, -2)) + batch.targets.sum((-1, -2))).clamp(min=1)).flatten())
        result[name] = float(torch.cat(dices).mean())
    return result


def train(config: TrainConfig, progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None,
          on_metrics: Optional[MetricsCallback] = None, resume: bool = True,
          data_progress: Optional[ProgressCallback] = None) -> Path:
    """Build data (cached embeddings), resume if possible, train, and return the decoder checkpoint path."""
    trainer = Trainer(config)
    if resume:
        trainer.resume()
    trainer.prepare_data(data_progress, cancel)
    return trainer.run(progress, cancel, on_metrics)


def _smooth(values, k: int = 25):
    if len(values) < k:
        return values
    kernel = np.ones(k) / k
    return np.convolve(np.pad(values, (k // 2, k - 1 - k // 2), mode="edge"), kernel, mode="valid")
