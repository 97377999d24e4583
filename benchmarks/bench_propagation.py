"""Propagation settings compared on held-out synthetic volumes (never on real data): 3D Dice and slices kept.

Run: .venv/bin/python benchmarks/bench_propagation.py [--models synthfm-lite medsam-lite CKPT.pt] [--volumes 12]
     [--first 12] (other held-out volumes, to check a choice) [--only "tight box+mask | closest"] (settings by name)
The "oracle stop" rows keep only the slices where the truth is: how good propagation would be with a perfect stop.
Each volume is prompted on the target's largest slice (interior point + tight box; box only for box-only
models), then propagated both ways with each set of PropagationOptions.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage as ndi

from synthfm.evaluate.metrics import dice
from synthfm.generate import GeneratorConfig, SyntheticGenerator
from synthfm.models import load_model
from synthfm.segment import PropagationOptions, Prompts, SlicePredictor, VolumeSegmenter

#: stop rule x prompt set; every model also runs its registry default ("default")
STOPS = {"score>=0.7": {"min_score": 0.7}, "score>=0.5": {"min_score": 0.5},
         "score>=0.8*first": {"min_score": 0.0, "min_score_ratio": 0.8},
         "score>=0.9*first": {"min_score": 0.0, "min_score_ratio": 0.9},
         "score>=0.5, shift<=0.3": {"min_score": 0.5, "max_intensity_shift": 0.3},
         "score>=0.5, shift<=0.5": {"min_score": 0.5, "max_intensity_shift": 0.5},
         "shift<=0.3": {"min_score": 0.0, "max_intensity_shift": 0.3},
         "shift<=0.5": {"min_score": 0.0, "max_intensity_shift": 0.5},
         "closest": {"min_score": 0.0, "pick_closest": True},
         "closest, overlap>=0.3": {"min_score": 0.0, "pick_closest": True, "min_overlap": 0.3},
         "closest, overlap>=0.5": {"min_score": 0.0, "pick_closest": True, "min_overlap": 0.5},
         "overlap>=0.5": {"min_score": 0.0, "min_overlap": 0.5},
         "closest, overlap>=0.5, shift<=0.5": {"min_score": 0.0, "pick_closest": True, "min_overlap": 0.5,
                                               "max_intensity_shift": 0.5},
         "closest, shift<=0.5": {"min_score": 0.0, "pick_closest": True, "max_intensity_shift": 0.5},
         "score>=0.7, shift<=0.5": {"min_score": 0.7, "max_intensity_shift": 0.5},
         "closest, oracle stop": {"min_score": 0.0, "pick_closest": True, "max_growth": float("inf")},
         "oracle stop": {"min_score": 0.0, "max_growth": float("inf")}}  # kept only where the truth is: a bound
PROMPTS = {"box+mask": {}, "box": {"use_mask_prompt": False}, "tight box+mask": {"box_margin": 0.0}}
SETTINGS = {"default": {}, **{f"{p} | {s}": {**po, **so} for p, po in PROMPTS.items() for s, so in STOPS.items()}}
SEED = 777  # held-out: training draws 2D images from seed 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["synthfm-lite", "medsam-lite"])
    parser.add_argument("--volumes", type=int, default=12)
    parser.add_argument("--first", type=int, default=0, help="index of the first volume (to check on other volumes)")
    parser.add_argument("--preset", default="mixed")
    parser.add_argument("--only", nargs="+", default=[], help="run only settings whose name contains one of these")
    args = parser.parse_args()
    gen = SyntheticGenerator(GeneratorConfig.from_preset(args.preset, size=128, depth=40), SEED)
    samples = [gen.sample_3d(i) for i in range(args.first, args.first + args.volumes)]
    print(f"{args.volumes} synthetic {args.preset} volumes 40x128x128, seed {SEED}, "
          f"volumes {args.first}..{args.first + args.volumes - 1}\n")
    print(f"{'model':<16}{'setting':<36}{'3D Dice':>9}{'slices kept/truth':>19}{'s/volume':>10}")
    for name in args.models:
        model = load_model(name)
        predictor = SlicePredictor(model, cache_size=40 * len(samples))  # every slice encoded once
        for setting, overrides in SETTINGS.items():
            if args.only and not any(part in setting for part in args.only):
                continue
            options = (PropagationOptions.for_model(model) if setting == "default" else
                       PropagationOptions(use_points=model.trained_points, **overrides))
            scores, kept, truth_n, start = [], [], [], time.perf_counter()
            for i, s in enumerate(samples):
                k = int(np.argmax(s.mask.sum(axis=(1, 2))))
                t = s.mask[k]
                ys, xs = np.nonzero(t)
                y, x = np.unravel_index(int(np.argmax(ndi.distance_transform_edt(t))), t.shape)
                prompts = Prompts.make([(x, y)] if model.trained_points else [],
                                       box=(xs.min(), ys.min(), xs.max(), ys.max()))
                seg = VolumeSegmenter(predictor, s.image, volume_id=("bench", i))
                try:
                    result = seg.propagate(k, prompts, options=options)
                    mask, n = result.mask, len(result.slices)
                except ValueError:
                    mask, n = np.zeros_like(s.mask), 0
                if setting.endswith("oracle stop"):
                    mask = mask & s.mask.any(axis=(1, 2))[:, None, None]
                scores.append(dice(mask, s.mask))
                kept.append(n)
                truth_n.append(int(s.mask.any(axis=(1, 2)).sum()))
            seconds = (time.perf_counter() - start) / len(samples)
            print(f"{name:<16}{setting:<36}{np.mean(scores):>9.3f}{np.mean(kept):>10.1f}/{np.mean(truth_n):<8.1f}"
                  f"{seconds:>10.2f}")


if __name__ == "__main__":
    main()
