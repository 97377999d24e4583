"""Keeping box-prompted masks inside the box (``SlicePredictor.clip_to_box``): Dice without clipping and with the
box grown by a margin before clipping, on held-out synthetic images (the choice) and, for reporting, real slices.

Run: .venv/bin/python benchmarks/bench_box_clip.py --cache runs/lite3/cache/val 0:64 --cache runs/lite3/cache/train 600:750
     [--generated 300] [--pairs data/real/cases.csv --max-slices 10] [--model synthfm-lite]
Cache items are ``synthfm train`` embedding-cache items the decoder never trained on (stored embeddings, images drawn
again from the cache's generator settings); real slices are only reported, never used to choose.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from synthfm.evaluate.calibrate import cache_items
from synthfm.evaluate.metrics import dice
from synthfm.evaluate.protocols import make_prompts
from synthfm.models import load_model
from synthfm.segment import SlicePredictor
from synthfm.utils.masks import box_region

MARGINS = (None, 0.0, 0.05, 0.1, 0.2)  # None: the decoder's raw mask; else the box grown by margin x its size
PROTOCOLS = ("box", "box-jitter")
GENERATED_SEED = 5105  # fresh generator images for --generated


def grown_box(box: np.ndarray, margin: float) -> np.ndarray:
    x0, y0, x1, y1 = box
    mx, my = margin * (x1 - x0 + 1), margin * (y1 - y0 + 1)
    return np.array([x0 - mx, y0 - my, x1 + mx, y1 + my])


def rows(predict: Callable, truth: np.ndarray, rng: np.random.Generator) -> Dict[str, List[float]]:
    out = {}
    for protocol in PROTOCOLS:
        prompts = make_prompts(protocol, truth, rng)
        mask = predict(prompts)
        out[protocol] = [dice(mask if m is None else mask & box_region(mask.shape, grown_box(prompts.box, m)), truth)
                         for m in MARGINS]
    return out


def real_items(predictor: SlicePredictor, pairs: str, max_slices: Optional[int]):
    from synthfm.evaluate.cases import load_case, read_cases_csv
    from synthfm.evaluate.runner import _slices_with
    from synthfm.segment.preprocess import intensity_range

    for lc in map(load_case, read_cases_csv(Path(pairs))):
        vrange = intensity_range(lc.image.array, "auto")
        for value in lc.values:
            for s in _slices_with(lc.label.array == value, max_slices, 0):
                yield (lc.image.array[s].astype(np.float32), lc.label.array[s] == value, (str(lc.case.image), 0, s),
                       vrange, s)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--cache FOLDER START:STOP`` (repeatable), ``--pairs``, ``--max-slices``: the data :func:`data_sources` reads."""
    parser.add_argument("--cache", nargs=2, action="append", default=[], metavar=("FOLDER", "START:STOP"))
    parser.add_argument("--generated", type=int, default=0, metavar="N",
                        help="N fresh generator images (preset mixed, seed 5105: never trained or calibrated on)")
    parser.add_argument("--generated-seed", type=int, default=GENERATED_SEED, metavar="SEED",
                        help="their seed (5105: used for choices since 2026-12-02; 5106 was fresh on 2026-12-03)")
    parser.add_argument("--pairs", help="real cases CSV (reported only)")
    parser.add_argument("--max-slices", type=int, default=10)


def generated_items(count: int, seed: int = GENERATED_SEED):
    """``count`` fresh 256x256 images of the generator's ``mixed`` preset drawn from ``seed`` (training draws from
    seed 0, the quality calibration from 5101 and 5102): items as :func:`data_sources` gives them."""
    from synthfm.generate import GeneratorConfig, SyntheticGenerator

    gen = SyntheticGenerator(GeneratorConfig.from_preset("mixed", size=256), seed)
    for i in range(count):
        s = gen.sample_2d(i)
        yield s.image, s.mask, ("generated", seed, i), (0.0, 1.0), i


def data_sources(predictor: SlicePredictor, caches, pairs: Optional[str], max_slices: Optional[int],
                 generated: int = 0, generated_seed: int = GENERATED_SEED) -> list:
    """``[(name, items)]``: held-out synthetic cache items per ``(folder, "start:stop")``, ``generated`` fresh
    generator images, then the real slices of ``pairs``; each item ``(image, truth, key, value_range, seed)``."""
    sources = []
    for folder, span in caches:
        start, stop = map(int, span.split(":"))
        sources.append((f"synthetic {folder} {span}", ((image, truth, key, (0.0, 1.0), i) for i, image, truth, key
                                                       in cache_items(predictor, folder, stop - start, start))))
    if generated:
        sources.append((f"synthetic generated {generated}, seed {generated_seed}",
                        generated_items(generated, generated_seed)))
    if pairs:
        sources.append((f"real {pairs}", real_items(predictor, pairs, max_slices)))
    return sources


def protocol_bench(description: str, protocols: Sequence[str], **extra: dict
                   ) -> Tuple[argparse.Namespace, SlicePredictor, list]:
    """The set-up of the per-protocol benchmarks: ``--model``, the data arguments, ``--protocols`` and the ``extra``
    options (``name=add_argument keywords``) parsed, the model's predictor on the CPU, and its :func:`data_sources`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default="synthfm-lite")
    add_data_arguments(parser)
    parser.add_argument("--protocols", nargs="+", default=list(protocols), choices=protocols)
    for name, keywords in extra.items():
        parser.add_argument(f"--{name}", **keywords)
    args = parser.parse_args()
    predictor = SlicePredictor(load_model(args.model), "cpu")
    return args, predictor, data_sources(predictor, args.cache, args.pairs, args.max_slices, args.generated,
                                         args.generated_seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="synthfm-lite")
    add_data_arguments(parser)
    args = parser.parse_args()
    predictor = SlicePredictor(load_model(args.model), "cpu", clip_to_box=False)
    sources = data_sources(predictor, args.cache, args.pairs, args.max_slices, args.generated, args.generated_seed)
    print(f"{'data':<48}{'prompt':<12}{'n':>5}" + "".join(f"{'raw' if m is None else f'clip+{m:g}':>10}" for m in MARGINS))
    for name, items in sources:
        table: Dict[str, List[List[float]]] = {}
        for image, truth, key, vrange, seed in items:
            r = rows(lambda p: predictor.predict(image, p, key=key, value_range=vrange).mask, truth,
                     np.random.default_rng([0, seed]))
            for protocol, values in r.items():
                table.setdefault(protocol, []).append(values)
        for protocol, values in table.items():
            mean = np.mean(values, axis=0)
            print(f"{name:<48}{protocol:<12}{len(values):>5}" + "".join(f"{v:>10.3f}" for v in mean))


if __name__ == "__main__":
    main()
