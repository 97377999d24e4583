"""Compare decoders on one fixed synthetic validation set with identical prompts (point and box)."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch

from synthfm.generate import GeneratorConfig
from synthfm.io.atomic import PathLike
from synthfm.segment.predictor import default_bf16
from synthfm.segment.preprocess import SliceTransform
from synthfm.train.embed_cache import DataSource, EmbeddingCache, OnTheFlySource
from synthfm.train.trainer import validation_dice


def compare_on_validation(models: Sequence[str], val_cache: PathLike, device: str = "cpu",
                          bf16: Optional[bool] = None) -> Dict[str, Dict[str, float]]:
    """Validation Dice of each model (registry name or checkpoint) on the images of ``val_cache`` (``bf16`` None:
    the inference default for ``device``).

    Models whose encoder made the cache reuse its embeddings; others re-encode the same images.
    """
    from synthfm.models import load_model

    cache = EmbeddingCache(val_cache, mode="r")
    if not cache.complete:
        raise ValueError(f"validation cache {val_cache} is not completely filled; finish the training data step first")
    m = cache.manifest
    bf16 = default_bf16(torch.device(device)) if bf16 is None else bf16
    gen_cfg = GeneratorConfig.from_dict(m["generator"])
    results = {}
    for name in models:
        model = load_model(name, device=device)
        source: DataSource = cache
        if model.encoder_name != m["encoder"] or model.image_size != m["image_size"]:
            source = OnTheFlySource(model, gen_cfg, m["seed"], m["first"], m["count"], bf16)
        transform = SliceTransform(gen_cfg.size, gen_cfg.size, model.image_size)
        results[str(name)] = validation_dice(model, source, transform, m["seed"], bf16, device)
    return results
