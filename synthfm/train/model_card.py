"""A Markdown model card written next to every decoder checkpoint, from the checkpoint's metadata."""
from __future__ import annotations

import json
from typing import Any, Dict

#: What each encoder was pretrained on: the data-free claim covers only what was trained on synthetic images.
ENCODER_DATA = {
    "tinyvit": "LiteMedSAM's TinyViT encoder, distilled from MedSAM, which was trained on **real medical images**: "
               "the data-free claim holds for the decoder only",
    "vit_b": "SAM ViT-B, trained on natural images (SA-1B): no medical data anywhere in the model",
    "tiny": "a tiny random encoder (tests only)",
}


def command_line(cfg: Dict[str, Any]) -> str:
    """The ``synthfm train`` command that reproduces a run's settings."""
    parts = [f"synthfm train --model {cfg.get('model')} --preset {cfg.get('preset')}",
             f"--samples {cfg.get('samples')} --val-samples {cfg.get('val_samples')} --steps {cfg.get('steps')}",
             f"--batch-size {cfg.get('batch_size')} --lr {cfg.get('lr')} --seed {cfg.get('seed')}"]
    if cfg.get("generator"):
        parts.append(f"--generator '{json.dumps(cfg['generator'])}'")
    if cfg.get("init"):
        parts.append(f"--init {cfg['init']}")
    if cfg.get("data", "cache") != "cache":
        parts.append(f"--data {cfg['data']}")
    if cfg.get("neighbour_volumes"):
        parts.append(f"--neighbour-volumes {cfg['neighbour_volumes']} --neighbour-prob {cfg.get('neighbour_prob')}")
        if cfg.get("neighbour_mask_prob"):
            parts.append(f"--neighbour-mask-prob {cfg['neighbour_mask_prob']}")
            if cfg.get("neighbour_mask_past_end") is False:
                parts.append("--no-neighbour-mask-past-end")
            if cfg.get("neighbour_mask_iou") is False:
                parts.append("--no-neighbour-mask-iou")
    for key, default in (("warmup", 100), ("correction_prob", 0.5), ("correction_rounds", 1),
                         ("extra_click_prob", 0.0)):
        if key in cfg and cfg[key] != default:
            parts.append(f"--{'lr-warmup' if key == 'warmup' else key.replace('_', '-')} {cfg[key]}")
    if cfg.get("prompt_modes"):
        parts.append("--prompt-modes " + " ".join(cfg["prompt_modes"]))
    if cfg.get("multimask_modes"):
        parts.append("--multimask-modes " + " ".join(cfg["multimask_modes"]))
    if cfg.get("feature_stats_aug"):
        parts.append(f"--feature-stats-aug {cfg['feature_stats_aug']}")
    return " ".join(parts)


def model_card(name: str, meta: Dict[str, Any], encoder: str = "") -> str:
    """Markdown: what the decoder was trained on, how (command, steps, time), and its validation Dice."""
    cfg = meta.get("train_config", {})
    user = cfg.get("user_data") or []
    start = f"fine-tuned from `{cfg['init']}`" if cfg.get("init") else "trained from scratch"
    data = "synthetic images only" if not user else (
        f"synthetic images mixed with the user's labelled volumes ({cfg.get('user_fraction')} of each batch: "
        + ", ".join(f"{c['name']} labels {c['labels']}" for c in user) + ")")
    if cfg.get("neighbour_volumes"):
        data += (f", plus neighbouring-slice pairs of {cfg['neighbour_volumes']} synthetic 3D volumes "
                 f"({cfg.get('neighbour_prob')} of the steps)")
    encoder = encoder or meta.get("encoder", "")
    hours = meta.get("train_seconds")
    val = ", ".join(f"{k} {v:.3f}" for k, v in sorted(meta.get("val", {}).items()))
    return "\n".join([
        f"# {name}", "",
        f"SynthFM prompt encoder + mask decoder {start} on {data}, behind the frozen image encoder of "
        f"`{meta.get('model')}`.", "",
        f"- encoder: {ENCODER_DATA.get(encoder, encoder or 'unknown')}.",
        f"- training: step {meta.get('step')} of {cfg.get('steps')}, batch {cfg.get('batch_size')}, "
        f"preset `{cfg.get('preset')}`, {cfg.get('samples')} synthetic images, seed {cfg.get('seed')}"
        + (f", {hours / 3600:.2f} h of training" if hours else "") + ".",
        f"- command: `{command_line(cfg)}`",
        f"- validation Dice (val_*: held-out synthetic images; val_user_*: the user's slices): {val or 'none yet'}.",
        "- intended use: research; not validated for clinical use.", ""])
