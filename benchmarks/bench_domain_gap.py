"""How far the generator's images lie from real slices in the encoder's eyes, without labels or a decoder.

Each image becomes one descriptor: its TinyViT embedding's per-channel mean over the slice's own part of the 64 x 64
grid (the padding left out). Real: the slices ``synthfm evaluate`` prompts on (the label picks the slices, nothing
else is read from it). Synthetic: fresh generator images of one seed, once per generator variant (JSON overrides on
the ``mixed`` preset), encoded as training encodes them. Printed per variant, real against synthetic on as many
images of each (the descriptors standardised by the real spread of each channel):

- ``1nn_acc``: leave-one-out nearest-neighbour accuracy at telling the two domains apart (0.5: indistinguishable);
  a real slice's neighbours in its own volume are left out (the next slice is nearly the same image);
- ``gap``: the distance between the two centroids over the mean distance of an image to its own centroid;
- ``real_nn_synth``: the share of real slices whose nearest neighbour is synthetic (0.5 when mixed evenly);
- ``real_to_synth``: the median distance of a real slice to its nearest synthetic image (coverage; lower: closer).

Run: .venv/bin/python benchmarks/bench_domain_gap.py --pairs data/real/cases.csv --max-slices 10 \
       --embedding-cache runs/embeddings --generated 150 --seed 5150 \
       --variant v3 '{}' --variant v4 '{"version": 4}'
(one torch job at a time on this machine; 150 images take about a minute to encode per variant).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from synthfm.evaluate.cases import load_cases, read_cases_csv
from synthfm.evaluate.runner import _slices_with
from synthfm.generate.config import GeneratorConfig
from synthfm.models import load_model
from synthfm.segment import SlicePredictor
from synthfm.segment.preprocess import SliceTransform, intensity_range, slice_aspect
from synthfm.train.embed_cache import SyntheticItems, encode_images

GRID = 64  # the embedding's side


def channel_means(embedding: torch.Tensor, transform: SliceTransform) -> np.ndarray:
    """``(256,)`` per-channel mean of a ``(1, 256, 64, 64)`` embedding over the cells that cover the slice."""
    rh, rw = transform.resized
    h, w = max(1, round(rh * GRID / transform.size)), max(1, round(rw * GRID / transform.size))
    return embedding[0, :, :h, :w].float().mean(dim=(1, 2)).cpu().numpy()


def real_descriptors(pairs: Sequence[str], max_slices: int, predictor: SlicePredictor
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """One descriptor per (image, slice) that holds a labelled structure (a slice shared by structures counts once)
    and the file name of its image volume."""
    seen: Dict[Tuple[str, int], np.ndarray] = {}
    for path in pairs:
        for lc in load_cases(read_cases_csv(path)):
            vrange = intensity_range(lc.image.array, "auto")
            aspect = slice_aspect(lc.image.spacing, 0)
            for value in lc.values:
                for s in _slices_with(lc.label.array == value, max_slices):
                    key = (str(lc.case.image), s)
                    if key not in seen:
                        image = lc.image.array[s].astype(np.float32)
                        emb, transform = predictor.embed(image, (key[0], 0, s), vrange, aspect)
                        seen[key] = channel_means(emb, transform)
    return np.stack(list(seen.values())), np.array([Path(path).name for path, _ in seen])


def synthetic_descriptors(model, overrides: dict, count: int, seed: int, batch: int = 4) -> np.ndarray:
    """Descriptors of generator images ``0 .. count - 1`` of ``seed`` (percentile-normalised, as training)."""
    items = SyntheticItems(GeneratorConfig.from_preset("mixed", **overrides), seed)
    full = SliceTransform(model.image_size, model.image_size, model.image_size)
    out: List[np.ndarray] = []
    for first in tqdm(range(0, count, batch), desc="generate + encode", leave=False):
        images = [im for im, _, _ in items(np.arange(first, min(count, first + batch)))]
        emb = encode_images(model, images)
        out.extend(channel_means(e[None], full) for e in emb)
    return np.stack(out)


def gap_metrics(real: np.ndarray, volume: np.ndarray, synth: np.ndarray, seed: int = 0) -> Dict[str, float]:
    """The figures of the module docstring on ``min(len(real), len(synth))`` images of each; a real slice's
    neighbours in its own volume are left out (they are nearly the same image)."""
    n = min(len(real), len(synth))
    rng = np.random.default_rng(seed)
    keep = rng.permutation(len(real))[:n]
    r, s, volume = real[keep], synth[rng.permutation(len(synth))[:n]], volume[keep]
    mu, sd = r.mean(0), r.std(0) + 1e-6
    r, s = (r - mu) / sd, (s - mu) / sd
    x = np.concatenate([r, s])
    domain = np.r_[np.zeros(n), np.ones(n)]
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    d[:n, :n][volume[:, None] == volume[None, :]] = np.inf  # any labels: indices or file names
    nearest = domain[d.argmin(1)]
    cr, cs = r.mean(0), s.mean(0)
    spread = 0.5 * (np.linalg.norm(r - cr, axis=1).mean() + np.linalg.norm(s - cs, axis=1).mean())
    return {"n": float(n), "1nn_acc": float((nearest == domain).mean()),
            "gap": float(np.linalg.norm(cr - cs) / spread), "real_nn_synth": float(nearest[:n].mean()),
            "real_to_synth": float(np.median(np.sqrt(d[:n, n:].min(1))))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", action="append", required=True, help="real cases CSV (repeatable)")
    parser.add_argument("--max-slices", type=int, default=10)
    parser.add_argument("--embedding-cache", default=None, help="embedding store of the real slices")
    parser.add_argument("--model", default="synthfm-lite")
    parser.add_argument("--generated", type=int, default=150)
    parser.add_argument("--seed", type=int, default=5150)
    parser.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "JSON"), required=True,
                        help="generator overrides on the mixed preset (repeatable)")
    parser.add_argument("--save", default=None, help="write every descriptor to this .npz")
    parser.add_argument("--plot", default=None, help="draw the descriptors' first two principal components here (PNG)")
    args = parser.parse_args()
    variants = []
    for name, text in args.variant:  # refuse a bad variant before any encoding
        if name in ("real", "volume") or name in dict(variants):
            parser.error(f"--variant {name}: the name is taken; give each variant its own name (not real or volume)")
        try:
            overrides = json.loads(text)
            GeneratorConfig.from_preset("mixed", **overrides)
        except (ValueError, TypeError) as exc:
            parser.error(f"--variant {name}: {exc} (give a JSON object of generator knobs, e.g. '{{\"version\": 4}}')")
        variants.append((name, overrides))

    torch.manual_seed(0)
    model = load_model(args.model)
    predictor = SlicePredictor(model, cache_size=1)
    predictor.use_store(args.embedding_cache)
    real, volume = real_descriptors(args.pairs, args.max_slices, predictor)
    saved = {"real": real, "volume": volume}
    print(f"real slices: {len(real)}; synthetic: {args.generated} per variant, seed {args.seed}")
    print(f"{'variant':<14}{'1nn_acc':>9}{'gap':>8}{'real_nn_synth':>15}{'real_to_synth':>15}  generator")
    for name, overrides in variants:
        synth = synthetic_descriptors(model, overrides, args.generated, args.seed)
        saved[name] = synth
        m = gap_metrics(real, volume, synth)
        print(f"{name:<14}{m['1nn_acc']:>9.3f}{m['gap']:>8.2f}{m['real_nn_synth']:>15.3f}{m['real_to_synth']:>15.2f}"
              f"  {json.dumps(overrides)}", flush=True)
    if args.save:
        np.savez_compressed(args.save, **saved)
    if args.plot:
        plot_descriptors(saved, args.plot)


def plot_descriptors(saved: Dict[str, np.ndarray], path: str) -> None:
    """Scatter of the first two principal components (of the real slices and the first variant), standardised by
    the real spread: real slices coloured by volume, each variant's images in its own colour."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real, volume = saved["real"], saved["volume"]
    variants = [k for k in saved if k not in ("real", "volume")]
    mu, sd = real.mean(0), real.std(0) + 1e-6
    basis = (np.concatenate([real] + [saved[k] for k in variants[:1]]) - mu) / sd
    centre = basis.mean(0)
    _, _, vt = np.linalg.svd(basis - centre, full_matrices=False)

    def project(x: np.ndarray) -> np.ndarray:
        return ((x - mu) / sd - centre) @ vt[:2].T

    fig, ax = plt.subplots(figsize=(7, 6))
    for name in variants:
        xy = project(saved[name])
        ax.scatter(xy[:, 0], xy[:, 1], s=8, alpha=0.5, label=f"generator: {name}")
    xy = project(real)
    for v in np.unique(volume):
        ax.scatter(xy[volume == v, 0], xy[volume == v, 1], s=22, marker="x", label=f"real: {v.split('.')[0]}")
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.set_title("TinyViT embedding channel means: real slices vs generator images")
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
