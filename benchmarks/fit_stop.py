"""Fit propagation's learned stop (``PropagationOptions.keep_rule``) on synthetic volumes and compare it with the
hand-set stop rule on other, held-out synthetic volumes (never on real data): 3D Dice and slices kept.

Run: .venv/bin/python benchmarks/fit_stop.py [--model synthfm-lite] [--fit 32] [--held-out 24] [--rows runs/stop_rows]
     [--grid] (also search the hand-set thresholds: the best few on the fit volumes, with their held-out Dice)
     [--embedding-cache runs/embeddings] (slice embeddings kept between runs, shared with bench_propagation.py)
Each volume is prompted on the target's largest slice (interior point + tight box) and propagated both ways once
with every stop off, recording each slice's evidence (``SliceRecord.evidence``) and its overlap with the truth. A
slice's mask and evidence depend only on the slices before it, so any stop rule is replayed exactly on these records
(each direction keeps its slices up to the rule's first stop). Fit volumes: seed 778; held-out: seed 777, the volumes
of bench_propagation.py. Records are kept in ``--rows`` (one JSON per model and volume set) for refits.
"""
from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

from synthfm.evaluate.calibrate import fit_logistic
from synthfm.evaluate.protocols import point_and_box
from synthfm.generate import GeneratorConfig, SyntheticGenerator
from synthfm.io.atomic import atomic_write_text
from synthfm.models import load_model
from synthfm.segment import PropagationOptions, SlicePredictor, VolumeSegmenter
from synthfm.segment.propagate import EVIDENCE, keep_probability, stop_reason

FIT_SEED, HELD_OUT_SEED = 778, 777  # bench_propagation.py's volumes are seed 777
#: the sign each evidence's weight is held to (monotone): a slice is less likely the structure as its intensity moves
#: or its area jumps, more likely as its score, overlap with the previous mask and contrast rise; "size" is free
SIGNS = {"score": 1, "shift": -1, "drift": -1, "toward": -1, "growth": -1, "size": 0, "overlap": 1, "contrast": 1,
         "cut": -1}
#: every stop off; the recorded chain is the one any rule follows up to its first stop
#: the hand-set thresholds ``--grid`` searches (every combination)
GRID = {"max_intensity_shift": (0.0, 0.3, 0.5, 0.75, 1.0), "max_intensity_drift": (0.0, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0),
        "max_growth": (1.5, 2.0, 3.0), "min_overlap": (0.0, 0.3, 0.5), "min_contrast_ratio": (0.0, 0.3, 0.5),
        "min_score": (0.0, 0.3, 0.5)}
NO_STOP = {"min_score": 0.0, "max_growth": float("inf"), "max_intensity_shift": 0.0, "max_intensity_drift": 0.0,
           "min_overlap": 0.0, "min_contrast_ratio": 0.0, "min_keep": 0.0}


def record_volume(predictor: SlicePredictor, model, image: np.ndarray, truth: np.ndarray, volume_id) -> dict:
    """Propagate with every stop off from the largest slice; per direction the slices' evidence, area, overlap."""
    options = PropagationOptions.for_model(model, **NO_STOP)
    start = int(np.argmax(truth.sum(axis=(1, 2))))
    result = VolumeSegmenter(predictor, image, volume_id=volume_id).propagate(
        start, point_and_box(truth[start], model.trained_points), options=options)
    first = result.mask[start]
    out = {"truth": int(truth.sum()), "start": [int(first.sum()), int((first & truth[start]).sum())],
           "up": [], "down": []}
    for r in sorted(result.records, key=lambda r: abs(r.index - start)):
        if r.source == "propagated":
            m = result.mask[r.index]
            out["up" if r.index > start else "down"].append(
                {"area": r.area, "inter": int((m & truth[r.index]).sum()), "truth": int(truth[r.index].sum()),
                 **r.evidence})
    return out


def record_set(model_name: str, seed: int, count: int, folder: Path, depth: int = 40,
               embedding_cache: Optional[Path] = None) -> List[dict]:
    """The records of ``count`` volumes of ``seed`` with ``depth`` slices (read back from ``folder`` when made);
    ``embedding_cache``: a folder of slice embeddings (:meth:`SlicePredictor.use_store`) read and filled."""
    path = folder / f"{Path(model_name).stem}_seed{seed}_{count}{'' if depth == 40 else f'_depth{depth}'}.json"
    if path.is_file():
        rows = json.loads(path.read_text())
        if all(set(EVIDENCE) <= set(r) for v in rows for chain in (v["up"], v["down"]) for r in chain):
            return rows
        print(f"{path} was recorded before the evidence {', '.join(EVIDENCE)}: recording again")
    model = load_model(model_name)
    predictor = SlicePredictor(model, cache_size=48)
    predictor.use_store(embedding_cache)
    gen = SyntheticGenerator(GeneratorConfig.from_preset("mixed", size=128, depth=depth), seed)
    rows = []
    for i in tqdm(range(count), desc=f"volumes of seed {seed}", unit="volume"):
        s = gen.sample_3d(i)
        rows.append(record_volume(predictor, model, s.image, s.mask, ("stop", seed, i)))
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(rows))
    return rows


Rule = Callable[[dict, int, List[float]], bool]  # (slice record, previous area, kept slices' "toward") -> stop here


def replay(volumes: Sequence[dict], rule: Optional[Rule], oracle: bool = False) -> tuple:
    """Mean 3D Dice and slices kept when each direction stops at ``rule``'s first stop (None: never; ``oracle``:
    only the slices with truth kept, a bound)."""
    dices, kept = [], []
    for v in volumes:
        area, inter, n = v["start"][0], v["start"][1], 1
        for chain in (v["up"], v["down"]):
            prev, towards = v["start"][0], [0.0]
            for r in chain:
                if (rule is not None and rule(r, prev, towards)) or (oracle and r["truth"] == 0):
                    if not oracle:
                        break
                    continue
                area, inter, n, prev = area + r["area"], inter + r["inter"], n + 1, r["area"]
                towards.append(r["toward"])
        dices.append(2 * inter / max(area + v["truth"], 1))
        kept.append(n)
    return float(np.mean(dices)), float(np.mean(kept))


def best_cut(volumes: Sequence[dict]) -> tuple:
    """Mean 3D Dice and slices kept of the best place to stop in each direction, per volume: what no stop rule
    can beat."""
    dices, kept = [], []
    for v in volumes:
        sums = [np.cumsum([[0, 0]] + [[r["area"], r["inter"]] for r in chain], axis=0)
                for chain in (v["up"], v["down"])]
        best = max(((2 * (v["start"][1] + u[1] + d[1]) / max(v["start"][0] + u[0] + d[0] + v["truth"], 1), a + b + 1)
                    for a, u in enumerate(sums[0]) for b, d in enumerate(sums[1])), key=lambda t: t[0])
        dices.append(best[0])
        kept.append(best[1])
    return float(np.mean(dices)), float(np.mean(kept))


def options_rule(options: PropagationOptions) -> Rule:
    """``stop_reason`` of ``options`` as a replay rule (one prompted slice: intensity stops in evidence's units
    unless the options measure them in contrast units, which the records do not keep)."""
    if options.intensity_scale == "contrast":
        raise ValueError("replay needs intensity stops in spread units (intensity_scale spread or spread-single)")
    keep = keep_probability(options.keep_rule) if options.min_keep > 0 and options.keep_rule else None
    window = options.drift_window
    return lambda r, prev, towards: stop_reason(options, r, r["area"], prev, options.min_score, 1.0, keep,
                                                towards[max(0, len(towards) - window)] if window else 0.0) is not None


def slice_rows(volumes: Sequence[dict]) -> List[dict]:
    """One row per recorded slice with the slice's Dice as the target (``iou`` key, as fit_logistic reads it); rows
    after a chain has left the structure for good are dropped (no rule reaches them)."""
    rows = []
    for v in volumes:
        for chain in (v["up"], v["down"]):
            for r in chain:
                rows.append({**r, "iou": 2 * r["inter"] / max(r["area"] + r["truth"], 1)})
                if r["truth"] == 0 and r["inter"] == 0 and r["area"] >= 6:
                    break
    return rows


def fit_rule(volumes: Sequence[dict], features: Sequence[str]) -> tuple:
    """The keep rule fitted on ``volumes`` in raw units (``(("bias", b), (name, w), ...)``)."""
    model = fit_logistic(slice_rows(volumes), features, SIGNS)
    weights = [c / s for c, s in zip(model.coef, model.scale)]
    bias = model.bias - sum(w * m for w, m in zip(weights, model.mean))
    return (("bias", round(bias, 4)),) + tuple((f, round(w, 4)) for f, w in zip(features, weights) if w != 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="synthfm-lite")
    parser.add_argument("--fit", type=int, default=32, help="fit volumes (seed 778)")
    parser.add_argument("--held-out", type=int, default=24, help="held-out volumes (seed 777)")
    parser.add_argument("--rows", type=Path, default=Path("runs/stop_rows"))
    parser.add_argument("--features", nargs="+", default=list(EVIDENCE), choices=EVIDENCE)
    parser.add_argument("--depth", type=int, default=40, help="slices per volume (40: bench_propagation.py's; more "
                        "slices: thinner slices through the same structures, as the 1 mm MNI152 volumes)")
    parser.add_argument("--grid", action="store_true", help="also search the hand-set thresholds (GRID)")
    parser.add_argument("--embedding-cache", metavar="DIR", type=Path,
                        help="keep the volumes' slice embeddings in DIR between runs (e.g. runs/embeddings)")
    args = parser.parse_args()
    fit = record_set(args.model, FIT_SEED, args.fit, args.rows, args.depth, args.embedding_cache)
    held = record_set(args.model, HELD_OUT_SEED, args.held_out, args.rows, args.depth, args.embedding_cache)
    model = load_model(args.model)
    default = PropagationOptions.for_model(model)
    rule = fit_rule(fit, args.features)
    no_intensity = dict(max_intensity_shift=0.0, max_intensity_drift=0.0)
    thresholds = np.round(np.arange(0.05, 0.96, 0.05), 2)
    rows: Dict[str, PropagationOptions] = {"registry default": default}
    for base, extra in (("learned", no_intensity), ("learned + hand-set intensity stops", {})):
        best = max(thresholds, key=lambda t: replay(fit, options_rule(replace(default, keep_rule=rule, min_keep=t,
                                                                            **extra)))[0])
        rows[f"{base}, keep >= {best:g}"] = replace(default, keep_rule=rule, min_keep=float(best), **extra)
    if args.grid:
        combos = [replace(default, **dict(zip(GRID, values))) for values in itertools.product(*GRID.values())]
        ranked = sorted(combos, key=lambda o: -replay(fit, options_rule(o))[0])
        for rank, options in enumerate(ranked[:3], 1):
            rows[f"grid #{rank}: " + ", ".join(f"{k}={getattr(options, k):g}" for k in GRID
                                              if getattr(options, k) != getattr(default, k))] = options
    print(f"keep_rule fitted on {len(fit)} volumes of seed {FIT_SEED}: {rule}\n")
    width = max(48, *map(len, rows)) + 2
    print(f"{'stop rule':<{width}}{'fit 3D Dice':>12}{'kept':>7}{'held-out 3D Dice':>18}{'kept':>7}")
    for name, options in rows.items():
        a, b = replay(fit, options_rule(options)), replay(held, options_rule(options))
        print(f"{name:<{width}}{a[0]:>12.3f}{a[1]:>7.1f}{b[0]:>18.3f}{b[1]:>7.1f}")
    for name, kwargs in (("no stop", {}), ("oracle stop (slices with truth)", {"oracle": True})):
        a, b = replay(fit, None, **kwargs), replay(held, None, **kwargs)
        print(f"{name:<{width}}{a[0]:>12.3f}{a[1]:>7.1f}{b[0]:>18.3f}{b[1]:>7.1f}")
    a, b = best_cut(fit), best_cut(held)
    print(f"{'best place to stop, per volume (a bound)':<{width}}{a[0]:>12.3f}{a[1]:>7.1f}{b[0]:>18.3f}{b[1]:>7.1f}")


if __name__ == "__main__":
    main()
