"""Fit and check the calibrated quality score of a decoder on held-out synthetic data (never on real data).

Run: .venv/bin/python benchmarks/fit_quality.py [--model synthfm-lite] [--fit-images 150] [--test-images 150]
     [--fit-volumes 8] [--test-volumes 6] [--rows /tmp/quality_rows.json] [--embedding-cache DIR] [--write]
     [--out candidate.quality.json]
Fitting rows: generator images of seed 5101 prompted with the evaluation protocols (point1, point3, point1neg2,
box, box-jitter, 3 clicks) and the slices propagation reaches in volumes of seed 5103 when nothing stops it; test
rows: seed 5102 images and seed 5104 volumes. Training drew its images from seed 0, bench_propagation.py its
volumes from seed 777. Prints Spearman(signal, true IoU) per protocol on the test rows, for every raw signal and
for the calibrated score; ``--write`` stores the calibration next to the decoder checkpoint
(``<decoder>.quality.json``, tied to the checkpoint's SHA-256), where load_model finds it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from synthfm.evaluate.calibrate import (FEATURES, cache_rows, fit_calibrator, image_rows, rescore, spearman_table,
                                       volume_rows)
from synthfm.generate import GeneratorConfig, SyntheticGenerator
from synthfm.io.atomic import atomic_write_text
from synthfm.models import load_model
from synthfm.models.registry import find_decoder, get_spec
from synthfm.segment import PropagationOptions, SlicePredictor
from synthfm.segment.quality import KINDS, SIGNALS, calibration_path, file_sha256, load_calibration

SEEDS = {"fit": (5101, 5103), "test": (5102, 5104)}  # (2D images, 3D volumes)


def collect(model, predictor, split: str, images: int, volumes: int, preset: str, caches=(),
            store: Optional[Path] = None) -> list:
    """Rows of ``split`` from each source; with ``store`` (a JSON file) each source's rows are kept there as soon
    as they are collected and reused by later runs (``{"fit images 150": [...], ...}``)."""
    seed2d, seed3d = SEEDS[split]
    kept = json.loads(store.read_text()) if store and store.is_file() else {}
    protocols = {} if model.trained_points else {"protocols": ("box", "box-jitter")}
    options = PropagationOptions.for_model(model, min_score=0.0, min_score_ratio=0.0, max_growth=float("inf"),
                                           max_intensity_shift=0.0, min_overlap=0.0, min_contrast_ratio=0.0)

    def images_rows():
        gen2d = SyntheticGenerator(GeneratorConfig.from_preset(preset, size=256), seed2d)
        rows = []
        for i in range(images):
            s = gen2d.sample_2d(i)
            rng = np.random.default_rng([seed2d, i])
            rows += [{**r, "item": f"{split}2d-{i}"}
                     for r in image_rows(predictor, s.image, s.mask, ("q", split, i), rng, **protocols)]
        return rows

    def volumes_rows():
        gen3d = SyntheticGenerator(GeneratorConfig.from_preset(preset, size=128, depth=40), seed3d)
        rows = []
        for i in range(volumes):
            s = gen3d.sample_3d(i)
            rows += [{**r, "item": f"{split}3d-{i}"}
                     for r in volume_rows(predictor, s.image, s.mask, ("q3", split, i), options)]
        return rows

    sources = [(f"{split} cache {folder} {start}:{start + count}",
                lambda f=folder, a=start, n=count: cache_rows(predictor, f, n, seed2d, start=a, **protocols))
               for folder, start, count in caches]
    sources += [(f"{split} images {images} seed {seed2d}", images_rows)] if images else []
    sources += [(f"{split} volumes {volumes} seed {seed3d}", volumes_rows)] if volumes else []
    rows = []
    for name, make in sources:
        if name not in kept:
            start = time.perf_counter()
            kept[name] = make()
            print(f"{name}: {len(kept[name])} rows in {time.perf_counter() - start:.0f} s")
            if store:
                atomic_write_text(store, json.dumps(kept))
        rows += kept[name]
    return rows


def _span(folder: str, text: str) -> tuple:
    """``FOLDER``, ``"START:COUNT"`` or ``"COUNT"`` -> (folder, start, count)."""
    start, _, count = text.rpartition(":")
    return folder, int(start or 0), int(count)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="synthfm-lite")
    parser.add_argument("--preset", default="mixed")
    parser.add_argument("--fit-images", type=int, default=150)
    parser.add_argument("--test-images", type=int, default=150)
    parser.add_argument("--fit-volumes", type=int, default=8)
    parser.add_argument("--test-volumes", type=int, default=6)
    parser.add_argument("--fit-cache", nargs=2, action="append", default=[], metavar=("FOLDER", "[START:]COUNT"),
                        help="also fit on COUNT images (from position START) of a `synthfm train` embedding cache (no "
                             "encoding); only images the decoder was not trained on")
    parser.add_argument("--test-cache", nargs=2, action="append", default=[], metavar=("FOLDER", "[START:]COUNT"))
    parser.add_argument("--rows", type=Path, help="JSON store of the collected rows of each source (reused)")
    parser.add_argument("--embedding-cache", type=Path, metavar="DIR",
                        help="keep the images' embeddings in DIR: a later fit for another decoder on the same encoder "
                             "and precision encodes nothing (benchmarks/judge.sh passes its EMBEDDINGS folder)")
    parser.add_argument("--drop", nargs="*", default=["consistency"],
                        help="signals the calibration must not use (default: consistency, which costs a second "
                             "decoder call per prediction)")
    parser.add_argument("--drop-for", nargs="+", action="append", default=[], metavar=("KIND", "SIGNAL"),
                        help="signals one prompt kind's model must not use, e.g. --drop-for points contrast edge "
                             "area (repeatable)")
    parser.add_argument("--keep-kind", nargs="+", default=[], choices=KINDS, metavar="KIND",
                        help="keep these kinds' models of the calibration already next to the decoder (refit the rest)")
    parser.add_argument("--pick-with-previous", nargs="+", default=[], choices=KINDS, metavar="KIND",
                        help="these kinds' candidates are chosen by the calibration already next to the decoder (its "
                             "model, or its picker), the refitted model gives only the score shown")
    parser.add_argument("--plot", type=Path, help="reliability plot of the test rows: raw IoU head vs calibrated")
    parser.add_argument("--write", action="store_true", help="store the calibration next to the decoder checkpoint")
    parser.add_argument("--out", type=Path, help="also store the calibration in this file (a candidate to compare, e.g. "
                                                  "with quality_report.py --calibration)")
    args = parser.parse_args()
    model = load_model(args.model)
    predictor = SlicePredictor(model, cache_size=64)
    predictor.calibrator, predictor.consistency = None, True  # collect every raw signal
    predictor.use_store(args.embedding_cache)
    data = {"fit": collect(model, predictor, "fit", args.fit_images, args.fit_volumes, args.preset,
                           [_span(f, n) for f, n in args.fit_cache], args.rows),
            "test": collect(model, predictor, "test", args.test_images, args.test_volumes, args.preset,
                            [_span(f, n) for f, n in args.test_cache], args.rows)}
    decoder = Path(args.model) if args.model.endswith(".pt") else find_decoder(get_spec(args.model).decoder_file or "")
    info = {"fitted_on": f"held-out synthetic ({args.preset}): {args.fit_images} images of seed {SEEDS['fit'][0]}, "
                         f"embedding caches {args.fit_cache} x protocols, propagation through {args.fit_volumes} "
                         f"volumes of seed {SEEDS['fit'][1]}; {len(data['fit'])} rows",
            "command": "benchmarks/fit_quality.py " + " ".join(sys.argv[1:])}
    dropped = {kind: set(signals) for kind, *signals in args.drop_for}
    unknown = set(dropped) - set(KINDS)
    if unknown:
        parser.error(f"--drop-for: unknown prompt kind {sorted(unknown)}; choose from {', '.join(KINDS)}")
    features = {k: tuple(f for f in v if f not in args.drop and f not in dropped.get(k, ())) for k, v in FEATURES.items()}
    calibrator = fit_calibrator(data["fit"], features, decoder_sha256=file_sha256(decoder) if decoder else None, info=info)
    if args.keep_kind or args.pick_with_previous:
        existing = load_calibration(decoder) if decoder else None
        if existing is None:
            raise SystemExit(f"--keep-kind / --pick-with-previous: no calibration fitted for {decoder} next to it")
        calibrator.models.update({k: existing.models[k] for k in args.keep_kind if k in existing.models})
        calibrator.pickers.update({k: existing.pickers.get(k, existing.models[k]) for k in args.pick_with_previous
                                   if k in existing.pickers or k in existing.models})
        calibrator.info["from_previous"] = {"kept": args.keep_kind, "pickers": args.pick_with_previous,
                                            "previous_command": existing.info.get("command", "")}
    test = rescore(data["test"], calibrator)
    table = spearman_table(test, (*SIGNALS, "calibrated"))
    print(f"\nSpearman(signal, true IoU) on held-out synthetic test rows, {args.model}")
    print(f"{'protocol':<13}{'n':>5}" + "".join(f"{s:>13}" for s in (*SIGNALS, "calibrated")))
    for group, cols in table.items():
        print(f"{group:<13}{next(iter(cols.values()))[0]:>5}" + "".join(f"{rho:>13.3f}" for _, rho in cols.values()))
    calibrator.info["held_out_spearman"] = {g: round(cols["calibrated"][1], 3) for g, cols in table.items()}
    calibrator.info["held_out_spearman_iou_head"] = {g: round(cols["iou_head"][1], 3) for g, cols in table.items()}
    mae = np.mean([abs(r["calibrated"] - r["iou"]) for r in test])
    print(f"\ncalibrated score: mean |score - IoU| {mae:.3f} on {len(test)} test rows")
    if args.plot:
        from synthfm.evaluate.report import reliability_plot

        kinds = {"points": "points", "box": "box", "mask": "propagation"}
        panels = [{"panel": f"{kinds[r['kind']]}: {name}", "value": r[key], "iou": r["iou"]}
                  for key, name in (("iou_head", "IoU head"), ("calibrated", "calibrated")) for r in test]
        panels.sort(key=lambda p: p["panel"])
        reliability_plot(panels, args.plot, group="panel", score="value")
        print(f"wrote {args.plot}")
    if args.out:
        atomic_write_text(args.out, calibrator.to_json())
        print(f"wrote {args.out}")
    if args.write:
        if decoder is None:
            raise SystemExit(f"{args.model} has no decoder checkpoint to store a calibration next to")
        atomic_write_text(calibration_path(decoder), calibrator.to_json())
        print(f"wrote {calibration_path(decoder)}")


if __name__ == "__main__":
    main()
