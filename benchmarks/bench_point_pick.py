"""Which of the three candidates to return for one point: the calibrated score (fitted per returned mask) against a
selector fitted on *all* candidates (a linear score over the candidates' quality signals, the candidate's index in
the decoder's output and its area against the largest candidate's, trained to maximise the expected Dice of a
softmax pick). Fitted on fresh generator images of seed 5101 (the calibration's), tested on held-out synthetic
images (the choice) and, for reporting only, real slices.

Run: .venv/bin/python benchmarks/bench_point_pick.py --fit 300 --cache runs/lite3/cache/val 0:64 --generated 300
     [--pairs data/real/cases.csv --max-slices 10]

Measured 2026-12-02 (stage-6 decoder; not adopted): IoU head / calibrated / selector / best of three, one point:
64 validation images 0.534 / 0.539 / 0.535 / 0.626; 300 fresh images of seed 5105 0.516 / 0.519 / 0.525 / 0.620.
The candidates hold ~0.09 more than any pick finds, but these signals do not say which: the selector is level.
"""
from __future__ import annotations

import argparse
from typing import Tuple

import numpy as np
import torch

from bench_box_clip import add_data_arguments, data_sources, generated_items
from synthfm.evaluate.metrics import dice
from synthfm.evaluate.protocols import make_prompts
from synthfm.models import load_model
from synthfm.segment import SlicePredictor

SIGNALS = ("iou_head", "stability", "confidence", "points_agree", "area", "contrast", "edge")
FIT_SEED = 5101


def candidate_table(predictor: SlicePredictor, items) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per one-point prompt: features (n, 3, F), Dice of each candidate (n, 3), the calibration's picking scores
    (its points picker when it has one, as ``SlicePredictor`` picks), IoU head."""
    feats, dices, calibrated, head = [], [], [], []
    for image, truth, key, vrange, seed in items:
        prompts = make_prompts("point1", truth, np.random.default_rng([0, seed]))
        pred = predictor.predict(image, prompts, key=key, value_range=vrange, multimask=True)
        s = pred.all_signals
        area = np.maximum(s["area"], 1e-6)
        f = [np.nan_to_num(np.asarray(s[k], float)) for k in SIGNALS]
        f += [np.log(area / area.max()), *np.eye(3)]
        feats.append(np.stack(f, 1))
        dices.append([dice(c, truth) for c in pred.candidates])
        pick = getattr(predictor.calibrator, "pick", None)
        calibrated.append(pred.all_scores if pick is None else pick(s, "points"))
        head.append(s["iou_head"])
    return np.array(feats), np.array(dices), np.array(calibrated), np.array(head)


def fit_selector(x: np.ndarray, d: np.ndarray, l2: float = 1e-3):
    """Weights of a linear candidate score maximising the mean expected Dice of a softmax pick."""
    mean, scale = x.reshape(-1, x.shape[-1]).mean(0), x.reshape(-1, x.shape[-1]).std(0) + 1e-9
    z, target = torch.tensor((x - mean) / scale), torch.tensor(d)
    w = torch.zeros(x.shape[-1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -(torch.softmax(z @ w, 1) * target).sum(1).mean() + l2 * (w @ w)
        loss.backward()
        return loss
    opt.step(closure)
    return lambda feats: ((feats - mean) / scale) @ w.detach().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="synthfm-lite")
    parser.add_argument("--fit", type=int, default=300, help="fresh generator images (seed 5101) to fit on")
    add_data_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(1)
    predictor = SlicePredictor(load_model(args.model), "cpu")
    x, d, _, _ = candidate_table(predictor, generated_items(args.fit, FIT_SEED))
    select = fit_selector(x, d)
    print(f"fitted on {len(d)} one-point prompts (seed {FIT_SEED}); the selector's pick on them: Dice "
          f"{np.mean(d[np.arange(len(d)), np.argmax(select(x), 1)]):.3f}", flush=True)
    print(f"{'data':<48}{'n':>5}{'IoU head':>10}{'calibrated':>11}{'selector':>10}{'oracle':>8}", flush=True)
    for name, items in data_sources(predictor, args.cache, args.pairs, args.max_slices, args.generated,
                                    args.generated_seed):
        x, d, cal, head = candidate_table(predictor, items)
        idx = np.arange(len(d))
        picks = [d[idx, np.argmax(head, 1)], d[idx, np.argmax(cal, 1)], d[idx, np.argmax(select(x), 1)], d.max(1)]
        print(f"{name:<48}{len(d):>5}" + "".join(f"{np.mean(p):>{w}.3f}" for p, w in zip(picks, (10, 11, 10, 8))),
              flush=True)


if __name__ == "__main__":
    main()
