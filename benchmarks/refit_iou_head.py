"""Refit only a decoder's IoU prediction head on frozen features, for judging (docs/segment.md, "The IoU head refitted").

Run: .venv/bin/python benchmarks/refit_iou_head.py --model runs/clicks/stage7.pt --cache runs/smoothmr2/cache/train \
       --images 1500 --rows runs/head/rows.pt --out runs/head/synthfm-lite.pt
Training decodes three candidates only for one-point first rounds, while inference reads the head's candidate outputs
for boxes too (``mask_choice`` "box-fit"). Here every other weight stays frozen, so every candidate mask is unchanged:
for each cache image and each training prompt mode the decoder runs once with the single output and once with three
candidates (the IoU token is the same for both), plus one correction round as training makes it; the IoU token and
every output's hard IoU are stored in ``--rows`` (reused on a rerun), and the head (SAM's 3-layer MLP) is refitted to
them with the training loss (MSE to the hard IoU), early-stopped on a tenth of the images. Use cache images the
decoder never trained on. Prints each output's Spearman and pick on the held-out tenth, old head -> new.
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Dict

import numpy as np
import torch
from scipy.stats import spearmanr
from tqdm import tqdm

from synthfm.models import load_model
from synthfm.models.checkpoint import load_decoder_checkpoint, save_decoder_state
from synthfm.segment.preprocess import SliceTransform
from synthfm.train.batches import make_batch
from synthfm.train.embed_cache import EmbeddingCache
from synthfm.train.losses import hard_iou
from synthfm.train.prompt_sim import MODES
from synthfm.train.trainer import _correct, _decode

CORRECTION = 10  # row kind of a correction round: CORRECTION + the first round's mode index


def collect(model, cache: EmbeddingCache, images: int, seed: int, size: int) -> Dict[str, torch.Tensor]:
    """IoU-token features ``X`` (N, 256), every output's hard IoU ``Y`` (N, 4), which outputs have a target ``W``,
    the row's kind ``K`` and image ``img``."""
    tokens = []
    hook = model.mask_decoder.iou_prediction_head.register_forward_pre_hook(
        lambda module, inputs: tokens.append(inputs[0].float().clone()))
    transform, rng = SliceTransform(size, size, model.image_size), np.random.default_rng(seed)
    parts: Dict[str, list] = {k: [] for k in ("X", "Y", "W", "K", "img")}

    def add(x, y, w, kind, idx):
        for key, value in zip(parts, (x, y, w, torch.full((len(idx),), kind), torch.as_tensor(idx))):
            parts[key].append(value)

    try:
        for start in tqdm(range(0, images, 8), desc="decoding cache images", unit="batch"):
            idx = np.arange(start, min(images, start + 8))
            emb, labels, targets = cache.get(idx)
            for k, mode in enumerate(MODES):
                batch = make_batch(rng, labels, targets, idx, transform, mode)
                tokens.clear()
                single = _decode(model, emb, batch, True, multimask=False)
                multi = _decode(model, emb, batch, True, multimask=True)
                ious = torch.cat([hard_iou(single.logits.float(), batch.targets),
                                  hard_iou(multi.logits.float(), batch.targets)], 1)
                add(tokens[0], ious, torch.ones_like(ious), k, idx)
                tokens.clear()
                corrected, _ = _correct(rng, model, emb, batch, multi if batch.multimask else single, transform, True)
                first = hard_iou(corrected.logits.float(), batch.targets)  # single output: only index 0 has a target
                add(tokens[-1], torch.cat([first, torch.zeros(len(idx), 3)], 1),
                    torch.cat([torch.ones(len(idx), 1), torch.zeros(len(idx), 3)], 1), CORRECTION + k, idx)
    finally:
        hook.remove()
    return {key: torch.cat(values) for key, values in parts.items()}


def held_mse(head: torch.nn.Module, rows: Dict[str, torch.Tensor], held: torch.Tensor) -> float:
    """The training loss on the held rows (the early stop's measure)."""
    with torch.no_grad():
        pred = head(rows["X"][held]).float()
    return float((((pred - rows["Y"][held]) ** 2) * rows["W"][held]).sum() / rows["W"][held].sum())


def report(head: torch.nn.Module, rows: Dict[str, torch.Tensor], held: torch.Tensor) -> Dict[str, float]:
    """Held-out rows: per kind, the single output's Spearman, the candidates' Spearman and the IoU of the candidate
    the head picks (with the best candidate's for reference); ``mse`` over the outputs with a target."""
    with torch.no_grad():
        pred = head(rows["X"][held]).float()
    y, kinds = rows["Y"][held], rows["K"][held]
    out = {"mse": held_mse(head, rows, held)}
    for kind in sorted(set(kinds.tolist())):
        s = kinds == kind
        name = MODES[kind] if kind < CORRECTION else f"correction after {MODES[kind - CORRECTION]}"
        out[f"{name}: single"] = spearmanr(pred[s, 0], y[s, 0]).correlation
        if kind < CORRECTION:
            p3, y3 = pred[s, 1:], y[s, 1:]
            out[f"{name}: candidates"] = spearmanr(p3.flatten(), y3.flatten()).correlation
            out[f"{name}: picked IoU"] = float(y3[torch.arange(len(p3)), p3.argmax(1)].mean())
            out[f"{name}: best IoU"] = float(y3.max(1).values.mean())
    return out


def refit(head: torch.nn.Module, rows: Dict[str, torch.Tensor], held: torch.Tensor, epochs: int, lr: float):
    """The head fitted on the rows not ``held`` (AdamW, batches of 256), early-stopped on the held rows' MSE."""
    head = copy.deepcopy(head).float().train().requires_grad_(True)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.0)
    train = torch.nonzero(~held).flatten()
    best = (held_mse(head.eval(), rows, held), copy.deepcopy(head.state_dict()))
    for _ in tqdm(range(epochs), desc="fitting the head", unit="epoch"):
        head.train()
        for b in train[torch.randperm(len(train))].split(256):
            loss = (((head(rows["X"][b]) - rows["Y"][b]) ** 2) * rows["W"][b]).sum() / rows["W"][b].sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        mse = held_mse(head.eval(), rows, held)
        if mse < best[0]:
            best = (mse, copy.deepcopy(head.state_dict()))
    head.load_state_dict(best[1])
    return head.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="decoder checkpoint whose head is refitted")
    parser.add_argument("--cache", required=True, type=Path, help="a `synthfm train` embedding cache folder")
    parser.add_argument("--images", type=int, default=1500)
    parser.add_argument("--rows", type=Path, required=True, help="collected rows (written once, then reused)")
    parser.add_argument("--out", type=Path, required=True, help="the new checkpoint (never replaces a file)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=20261204)
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} already exists; choose another --out (an earlier result is never replaced)")
    torch.manual_seed(0)
    model = load_model(args.model).eval().requires_grad_(False)
    if args.rows.exists():
        rows = torch.load(args.rows)
    else:
        cache = EmbeddingCache(args.cache, mode="r")
        with torch.no_grad():
            rows = collect(model, cache, min(len(cache), args.images), args.seed, cache.manifest["generator"]["size"])
        args.rows.parent.mkdir(parents=True, exist_ok=True)
        torch.save(rows, args.rows)
    held = rows["img"] % 10 == 0
    old = model.mask_decoder.iou_prediction_head.float().eval()
    new = refit(old, rows, held, args.epochs, args.lr)
    before, after = report(old, rows, held), report(new, rows, held)
    print(f"{'held-out rows (' + str(int(held.sum())) + ')':<44}{'old head':>10}{'new head':>10}")
    for key in before:
        print(f"{key:<44}{before[key]:>10.4f}{after[key]:>10.4f}")
    state, meta = load_decoder_checkpoint(args.model)
    for name, tensor in new.state_dict().items():
        key = f"mask_decoder.iou_prediction_head.{name}"
        state[key] = tensor.detach().to(state[key].dtype)
    meta = {**meta, "iou_head_refit": f"IoU head refitted on frozen features of {args.cache} "
                                      f"(benchmarks/refit_iou_head.py, {args.images} images)"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_decoder_state(args.out, state, meta, overwrite=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
