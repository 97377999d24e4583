"""Zoomed decoding: the slice cropped to a square window around the prompt (the box, or for points the first pass's
mask) and encoded again, so that a small structure covers more of the encoder's 256 x 256 input. Dice per prompt
protocol and window size on held-out synthetic images (the choice) and, for reporting only, real slices.

Run: .venv/bin/python benchmarks/bench_zoom.py --generated 40 [--pairs data/real/cases.csv --max-slices 10]
     [--protocols box point1]

The idea: LiteMedSAM's encoder sees 256 x 256, so a 20-pixel structure of a 512 x 512 CT slice is 10 input pixels,
under three cells of its 64 x 64 embedding; a crop around it would show it larger. Measured 2026-12-02 (stage-6
decoder, one core; Dice, whole slice / window 1.5, 2, 3, 4 x the prompt's extent / best of the five), not adopted:

| data | prompt | whole | x1.5 | x2 | x3 | x4 | best |
| --- | --- | --- | --- | --- | --- | --- | --- |
| synthetic, 40 generated images | box | **0.676** | 0.654 | 0.664 | 0.670 | 0.665 | 0.697 |
| synthetic, 40 generated images | jittered box | **0.640** | 0.626 | 0.637 | 0.636 | 0.635 | 0.664 |
| synthetic, 40 generated images | 1 point | **0.439** | 0.333 | 0.353 | 0.328 | 0.377 | 0.496 |
| synthetic, 40 generated images | 3 points | 0.553 | 0.529 | 0.557 | 0.552 | **0.559** | 0.645 |
| synthetic, 40 generated images | 1 point + 2 far negatives | **0.440** | 0.318 | 0.346 | 0.327 | 0.358 | 0.551 |
| real, 206 slices (reported only) | box | **0.776** | 0.746 | 0.754 | 0.760 | 0.760 | 0.797 |
| real, 206 slices (reported only) | 1 point | **0.594** | 0.462 | 0.490 | 0.495 | 0.534 | 0.653 |

The decoder does best at the scale it was trained at, with the whole slice as context: zooming in loses more than
the extra resolution gains, on synthetic and real slices alike (points suffer most: the first pass's mask, which
places the window, is often a part of the structure, and the crop then hides the rest).
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Dict, Hashable, List, Optional, Tuple

import numpy as np

from bench_box_clip import protocol_bench
from synthfm.evaluate.metrics import dice
from synthfm.evaluate.protocols import make_prompts
from synthfm.segment.predictor import Prediction, SlicePredictor
from synthfm.segment.preprocess import intensity_range
from synthfm.segment.prompts import Prompts
from synthfm.utils.masks import tight_box

PROTOCOLS = ("box", "box-jitter", "point1", "point3", "point1neg2")
#: (name, context: window side over the prompt's extent, or None for the whole slice)
VARIANTS = (("whole", None), ("x1.5", 1.5), ("x2", 2.0), ("x3", 3.0), ("x4", 4.0))


def zoom_window(region: np.ndarray, shape: Tuple[int, int], context: float,
                min_side: float = 16.0) -> Optional[Tuple[int, int, int, int]]:
    """The square window ``(x0, y0, x1, y1)`` (end-exclusive) ``context`` times the longer side of ``region`` (x0, y0,
    x1, y1; at least ``min_side``), centred on it and moved inside a slice of ``shape``; ``None`` when it would not be
    smaller than the slice (nothing to zoom)."""
    h, w = shape
    x0, y0, x1, y1 = region
    side = max(min_side, context * max(x1 - x0 + 1, y1 - y0 + 1))
    if side >= max(h, w):
        return None
    bounds = []
    for lo, hi, n in ((x0, x1, w), (y0, y1, h)):
        if side >= n:
            bounds.append((0, n))
            continue
        start = int(round((lo + hi + 1) / 2 - side / 2))
        start = min(max(start, 0), n - int(np.ceil(side)))
        bounds.append((start, start + int(np.ceil(side))))
    (a, b), (c, d) = bounds
    return a, c, b, d


def zoom_predict(predictor: SlicePredictor, image: np.ndarray, prompts: Prompts, context: float,
                 key: Optional[Hashable] = None, value_range: Optional[Tuple[float, float]] = None,
                 min_side: float = 16.0) -> Prediction:
    """Segment ``image`` from ``prompts`` in a window around the prompt: the box or, without one, the points and the
    mask they give on the whole slice. The window's mask is put back into the slice (``logits`` and the candidates
    stay those of the window)."""
    image = np.asarray(image)
    if value_range is None:
        value_range = intensity_range(image, predictor.window)
    key = predictor.key_of(image) if key is None else key
    if prompts.box is not None:
        region = np.asarray(prompts.box, float)
    else:
        first = predictor.predict(image, prompts, key=key, value_range=value_range)
        pts = prompts.points[prompts.labels == 1]
        region = np.concatenate([pts.min(0), pts.max(0)]) if len(pts) else None
        if first.mask.any():
            box = tight_box(first.mask)
            region = box if region is None else np.concatenate([np.minimum(region[:2], box[:2]),
                                                               np.maximum(region[2:], box[2:])])
        if region is None:
            return first
    window = zoom_window(region, image.shape, context, min_side)
    if window is None:
        return predictor.predict(image, prompts, key=key, value_range=value_range)
    x0, y0, x1, y1 = window
    offset = np.array([x0, y0], float)
    points = prompts.points - offset
    inside = np.all((points >= -0.5) & (points <= np.array([x1 - x0, y1 - y0]) - 0.5), axis=1)  # far negatives go
    inner = Prompts(points[inside], prompts.labels[inside],
                    None if prompts.box is None else prompts.box - np.concatenate([offset, offset]))
    pred = predictor.predict(image[y0:y1, x0:x1], inner, key=(key, window), value_range=value_range)
    mask = np.zeros(image.shape, bool)
    mask[y0:y1, x0:x1] = pred.mask
    return replace(pred, mask=mask, candidates=None)


def main() -> None:
    args, predictor, sources = protocol_bench(__doc__.splitlines()[0], PROTOCOLS)
    print(f"{'data':<44}{'prompt':<12}{'n':>5}" + "".join(f"{name:>9}" for name, _ in VARIANTS) + f"{'best':>9}")
    for name, items in sources:
        table: Dict[str, List[List[float]]] = {}
        start = time.perf_counter()
        for image, truth, key, vrange, seed in items:
            rng = np.random.default_rng([0, seed])
            for protocol in args.protocols:
                prompts = make_prompts(protocol, truth, rng)
                row = []
                for _, context in VARIANTS:
                    if context is None:
                        mask = predictor.predict(image, prompts, key=key, value_range=vrange).mask
                    else:
                        mask = zoom_predict(predictor, image, prompts, context, key=key, value_range=vrange).mask
                    row.append(dice(mask, truth))
                table.setdefault(protocol, []).append(row)
        for protocol, values in table.items():
            mean = np.mean(values, axis=0)
            print(f"{name:<44}{protocol:<12}{len(values):>5}" + "".join(f"{v:>9.3f}" for v in mean)
                  + f"{np.mean(np.max(values, axis=1)):>9.3f}", flush=True)
        print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
