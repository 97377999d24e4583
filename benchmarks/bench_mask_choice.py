"""Which mask to return (``ModelSpec.mask_choice``): the decoder's single-mask output, the IoU head's pick of its
three candidates, the calibrated quality score's pick (the model's calibration; the IoU head's without one), or the
candidate whose bounding box best fits the box prompt, per prompt protocol; Dice on held-out synthetic images (the
choice) and, for reporting only, real slices. The oracle column is the best of them.

Run: .venv/bin/python benchmarks/bench_mask_choice.py --cache runs/lite3/cache/val 0:64 --cache runs/lite3/cache/train 600:750
     [--pairs data/real/cases.csv --max-slices 10] [--model synthfm-lite]
(cache items: embeddings the shipped decoder never trained on; see bench_box_clip.py). Masks are kept inside the box.
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np

from bench_box_clip import protocol_bench
from synthfm.evaluate.metrics import dice
from synthfm.evaluate.protocols import interior_point, make_prompts
from synthfm.segment import Prompts
from synthfm.utils.masks import best_box_fit

PROTOCOLS = ("box", "box-jitter", "box+point", "point1", "point3", "point1neg2")
CHOICES = ("single", "multi", "calibrated", "box-fit", "oracle")


def prompts_for(protocol: str, truth: np.ndarray, rng: np.random.Generator) -> Prompts:
    """``make_prompts``, plus ``box+point``: the tight box and the structure's most interior point (propagation's)."""
    if protocol == "box+point":
        return Prompts.make([interior_point(truth)], box=make_prompts("box", truth, rng).box)
    return make_prompts(protocol, truth, rng)


def choices(predict, prompts: Prompts, truth: np.ndarray) -> Dict[str, float]:
    """Dice of each way to choose, from one single-mask and one three-candidate prediction."""
    single, multi = predict(prompts, False), predict(prompts, True)
    scores = [dice(m, truth) for m in multi.candidates]
    out = {"single": dice(single.mask, truth), "multi": scores[int(np.argmax(multi.all_signals["iou_head"]))],
           "calibrated": scores[int(np.argmax(multi.all_scores))]}
    if prompts.box is not None:
        out["box-fit"] = scores[best_box_fit(multi.candidates, prompts.box, multi.all_signals["iou_head"])]
    out["oracle"] = max(scores + [out["single"]])
    return out


def main() -> None:
    args, predictor, sources = protocol_bench(__doc__.splitlines()[0], PROTOCOLS)
    print(f"{'data':<48}{'prompt':<12}{'n':>5}" + "".join(f"{c:>11}" for c in CHOICES))
    for name, items in sources:
        table: Dict[str, List[Dict[str, float]]] = {}
        for image, truth, key, vrange, seed in items:
            def predict(p, multimask):
                return predictor.predict(image, p, key=key, value_range=vrange, multimask=multimask)
            for protocol in args.protocols:
                table.setdefault(protocol, []).append(choices(predict, prompts_for(protocol, truth,
                                                                                   np.random.default_rng([0, seed])), truth))
        for protocol, rows in table.items():
            cells = [np.mean([r[c] for r in rows]) if c in rows[0] else np.nan for c in CHOICES]
            print(f"{name:<48}{protocol:<12}{len(rows):>5}" + "".join(f"{v:>11.3f}" for v in cells), flush=True)


if __name__ == "__main__":
    main()
