"""Several points at once or in rounds (``ModelSpec.points_in_rounds``): Dice per prompt protocol on held-out
synthetic images (the choice) and, for reporting only, real slices. In rounds, the points are decoded one per
round in their order, each later round fed the previous round's logits as the mask prompt (training's correction
rounds); "corrections" opens a round only for a point the current mask gets wrong (``SlicePredictor`` docstring);
each mode's paired difference to the first mode (per image or slice, bootstrap interval) is printed below the table;
``clicks`` is one point then 4 correction clicks (evaluate's protocol; the Dice after each click); point1 is the
reference of far negatives.

Run: .venv/bin/python benchmarks/bench_point_rounds.py --cache runs/lite3/cache/val 0:64
     [--generated 300 --generated-seed 5121] (fresh generator images) [--modes true corrections]
     [--pairs data/real/cases.csv --max-slices 10] [--model synthfm-lite]
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np

from bench_box_clip import protocol_bench
from compare_generators import paired_difference
from synthfm.evaluate.metrics import dice
from synthfm.evaluate.protocols import make_prompts, next_click

PROTOCOLS = ("point1", "point3", "point1neg2", "clicks")
MODES = {"false": False, "true": True, "corrections": "corrections"}
CLICKS = 5


def dice_curve(predict, protocol: str, truth: np.ndarray, rng: np.random.Generator) -> List[float]:
    """Dice of the protocol's prompts; for ``clicks`` after each of the 5 clicks (the last repeated when perfect)."""
    prompts = make_prompts(protocol, truth, rng)
    pred = predict(prompts)
    curve = [dice(pred, truth)]
    while protocol == "clicks" and len(curve) < CLICKS:
        prompts = next_click(prompts, pred, truth)
        if prompts is None:
            curve += [curve[-1]] * (CLICKS - len(curve))
            break
        pred = predict(prompts)
        curve.append(dice(pred, truth))
    return curve


def main() -> None:
    args, predictor, sources = protocol_bench(__doc__.splitlines()[0], PROTOCOLS,
                                              modes=dict(nargs="+", choices=MODES, default=list(MODES)[:3]))
    modes = [MODES[m] for m in args.modes]
    print(f"{'data':<44}{'prompt':<12}{'n':>5}" + "".join(f"{m[:10]:>11}" for m in args.modes)
          + f"  clicks 1..5 ({' | '.join(args.modes)})")
    for name, items in sources:
        table: Dict[tuple, List[List[float]]] = {}
        for image, truth, key, vrange, seed in items:
            for rounds in modes:
                predictor.model.points_in_rounds = rounds
                for protocol in args.protocols:
                    curve = dice_curve(lambda p: predictor.predict(image, p, key=key, value_range=vrange).mask,
                                       protocol, truth, np.random.default_rng([0, seed]))
                    table.setdefault((protocol, rounds), []).append(curve)
        for protocol in args.protocols:
            means = [np.mean(table[(protocol, r)], 0) for r in modes]
            curves = ("  " + " | ".join(" ".join(f"{v:.3f}" for v in m) for m in means)
                      if protocol == "clicks" else "")
            print(f"{name:<44}{protocol:<12}{len(table[(protocol, modes[0])]):>5}"
                  + "".join(f"{m[-1]:>11.3f}" for m in means) + curves, flush=True)
        for protocol in args.protocols:  # each mode against the first, paired per image / slice (final Dice)
            first = {(protocol, i): c[-1] for i, c in enumerate(table[(protocol, modes[0])])}
            for mode, label in zip(modes[1:], args.modes[1:]):
                other = {(protocol, i): c[-1] for i, c in enumerate(table[(protocol, mode)])}
                d, lo, hi, better, n = paired_difference(other, first, protocol)
                worse = sum(other[k] < first[k] for k in first)
                print(f"  {protocol:<12}{label} - {args.modes[0]}: {d:+.4f} [{lo:+.4f}, {hi:+.4f}] paired over {n}, "
                      f"{better} better, {worse} worse", flush=True)


if __name__ == "__main__":
    main()
