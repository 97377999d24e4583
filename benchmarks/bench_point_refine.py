"""Point prompts refined by a second decoder pass: the first pass's mask gives a box (grown by a margin) and its
low-res logits, decoded again with the same points. Dice per point protocol on held-out synthetic images (the
choice) and, for reporting only, real slices.

Run: .venv/bin/python benchmarks/bench_point_refine.py --cache runs/lite3/cache/val 0:64 --generated 200
     [--pairs data/real/cases.csv --max-slices 10] [--model synthfm-lite]

Measured 2026-12-02 (stage-6 decoder, the 64 validation images; not adopted): one point 0.539 as is, 0.531 with
the first pass's logits, 0.502 / 0.477 / 0.450 / 0.424 with its box grown by 0 / 0.1 / 0.2 / 0.3 (and the logits);
3 points 0.607 -> 0.603 / 0.525 / 0.479 / 0.433 / 0.395; 1 point + 2 far negatives 0.531 -> 0.528 / 0.517 / 0.499
/ 0.480 / 0.460. A box drawn around a one-point mask makes the decoder fill the box: errors grow, not shrink.
A majority vote of the masks from the points as given and moved by 1 / 2 / 4% of the slice up, down, left and right
(5 decoder calls): one point 0.535 / 0.542 / 0.468, 3 points 0.602 / 0.602 / 0.570, far negatives 0.523 / 0.524 /
0.465: within noise at best, for five times the decoder's time.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Dict, List, Optional

import numpy as np

from bench_box_clip import protocol_bench
from synthfm.evaluate.metrics import dice
from synthfm.evaluate.protocols import make_prompts
from synthfm.segment.propagate import _with_margin
from synthfm.segment.prompts import Prompts
from synthfm.utils.masks import tight_box

PROTOCOLS = ("point1", "point3", "point1neg2")
#: second pass: (name, box margin or None for no box, feed the first pass's logits)
REFINES = (("as is", None, False), ("+logits", None, True), ("+box 0", 0.0, True), ("+box 0.1", 0.1, True),
           ("+box 0.2", 0.2, True), ("+box 0.1 nolog", 0.1, False), ("+box 0.3", 0.3, True),
           ("vote 0.01", 0.01, False), ("vote 0.02", 0.02, False), ("vote 0.04", 0.04, False))


def refined(predict: Callable, prompts: Prompts, margin: Optional[float], logits: bool, first) -> np.ndarray:
    if not first.mask.any():
        return first.mask
    box = None if margin is None else _with_margin(tight_box(first.mask), first.mask.shape, margin)
    return predict(replace(prompts, box=box, mask_logits=first.logits if logits else None)).mask


def jitter_vote(predict: Callable, prompts: Prompts, shift: float, shape) -> np.ndarray:
    """Majority vote of the masks from the prompts as given and with every point moved by ``shift`` x the slice's
    longer side up, down, left and right (clipped to the slice)."""
    h, w = shape
    step = shift * max(h, w)
    masks = [predict(prompts).mask]
    for dx, dy in ((step, 0), (-step, 0), (0, step), (0, -step)):
        moved = np.clip(prompts.points + [dx, dy], 0, [w - 1, h - 1])
        masks.append(predict(replace(prompts, points=moved)).mask)
    return np.mean(masks, 0) > 0.5


def main() -> None:
    args, predictor, sources = protocol_bench(__doc__.splitlines()[0], PROTOCOLS)
    print(f"{'data':<44}{'prompt':<12}{'n':>5}" + "".join(f"{r[0]:>16}" for r in REFINES), flush=True)
    for name, items in sources:
        table: Dict[str, List[List[float]]] = {}
        for image, truth, key, vrange, seed in items:
            predict = lambda p: predictor.predict(image, p, key=key, value_range=vrange)  # noqa: E731
            for protocol in args.protocols:
                prompts = make_prompts(protocol, truth, np.random.default_rng([0, seed]))
                first = predict(prompts)
                row = [dice(first.mask, truth) if r[0] == "as is" else
                       dice(jitter_vote(predict, prompts, r[1], truth.shape), truth) if r[0].startswith("vote") else
                       dice(refined(predict, prompts, r[1], r[2], first), truth) for r in REFINES]
                table.setdefault(protocol, []).append(row)
        for protocol in args.protocols:
            mean = np.mean(table[protocol], 0)
            print(f"{name:<44}{protocol:<12}{len(table[protocol]):>5}" + "".join(f"{v:>16.3f}" for v in mean),
                  flush=True)


if __name__ == "__main__":
    main()
