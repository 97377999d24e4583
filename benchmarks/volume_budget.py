"""Where a volume's 3D Dice goes (issue 14): the decoder, the stop, or what propagation carries from slice to slice.

Per real structure, with the README volume command's prompts (its largest slice, or three slices with
``--volume-slices 3``; the same random streams, so the first row repeats ``synthfm evaluate --volume``):
- **propagated**: the registry's propagation as shipped;
- **perfect stop**: the same propagation with the stops that end chains inside a structure off (score, growth,
  intensity jump and drift: ``bench_propagation.NO_STOP``), the slices outside the structure then removed: what a stop
  that knew the structure's ends would give. The registry's size limit (an area over 3x the prompted one: a leak) and
  the extension limit past the outer prompted slices (0.3x their span, more than the 10 % of the structure left
  beyond them) stay: they end chains past a structure or on a leak;
- **every slice prompted**: each slice of the structure given its own prompt of the same kind (tight box, interior
  point) and decoded on its own, as the prompted slices are: no propagation, no stop. What the decoder gives where a
  user prompted every slice.

So ``perfect stop - propagated`` is the stop's share of the loss, ``every slice prompted - perfect stop`` what the
masks lose by being carried from slice to slice (drift), and ``1 - every slice prompted`` the decoder's own limit
for that prompt (issue 11). Paired per structure against the propagated row (mean difference, 95 % bootstrap
interval, structures better).

Run: .venv/bin/python benchmarks/volume_budget.py --pairs data/real/cases.csv --prompt box --prompt point1 \\
       --volume-slices 1 3 --embedding-cache runs/embeddings [--out runs/budget.csv]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
from tqdm import tqdm

from synthfm.evaluate.cases import load_cases, read_cases_csv
from synthfm.evaluate.metrics import dice
from synthfm.evaluate.protocols import make_prompts, prompt_slices
from synthfm.evaluate.runner import structure_prompts
from synthfm.io.atomic import atomic_write_text
from synthfm.io.tables import csv_text
from synthfm.models import load_model
from synthfm.segment import PropagationOptions, SlicePredictor, VolumeSegmenter
from synthfm.segment.preprocess import slice_spacing

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_propagation import NO_STOP  # noqa: E402
from compare_generators import paired_difference  # noqa: E402

SETTINGS = ("propagated", "perfect stop", "every slice prompted")


def structure_rows(seg: VolumeSegmenter, model, truth: np.ndarray, protocol: str, ks: Sequence[int],
                   spacing2d, seed: int, job: int) -> List[dict]:
    """The rows of one structure: each setting's 3D Dice (``every slice prompted`` once, the others per K)."""
    present = np.nonzero(truth.any(axis=(1, 2)))[0]
    rows = []
    for k in ks:
        prompts = structure_prompts(protocol, truth, prompt_slices(truth, k), seed, job, spacing2d)
        for setting, overrides in (("propagated", {}), ("perfect stop", NO_STOP)):
            options = PropagationOptions.for_model(model, **overrides)
            try:
                pred = seg.propagate_slices(prompts, options=options).mask
            except ValueError:  # a prompted slice came out empty: nothing to propagate (evaluate scores 0)
                pred = np.zeros_like(truth)
            if setting == "perfect stop":
                pred = pred & truth.any(axis=(1, 2))[:, None, None]
            rows.append({"setting": setting, "k": k, "dice": dice(pred, truth)})
    rng = np.random.default_rng([seed, job])
    every = np.zeros_like(truth)
    for i in present:
        every[i] = seg.segment_slice(int(i), make_prompts(protocol, truth[i], rng, spacing2d)).mask
    rows.append({"setting": "every slice prompted", "k": "", "dice": dice(every, truth)})
    return rows


def budget(pairs: str, model_name: str, protocols: Sequence[str], ks: Sequence[int], embedding_cache=None,
           seed: int = 0) -> List[dict]:
    """One row per structure x protocol x setting (x K), axial slices (axis 0) as the README's volume command."""
    model = load_model(model_name)
    predictor = SlicePredictor(model)
    predictor.use_store(embedding_cache)
    loaded = load_cases(read_cases_csv(Path(pairs)))
    jobs = [(lc, v) for lc in loaded for v in lc.values]
    rows, segmenters = [], {}
    for job, (lc, value) in enumerate(tqdm(jobs, desc="structures", unit="structure"), 1):
        key = str(lc.case.image)
        if key not in segmenters:
            segmenters[key] = VolumeSegmenter(predictor, lc.image.array.astype(np.float32), 0, volume_id=key,
                                              spacing=lc.image.spacing)
        truth = lc.label.array == value
        for protocol in protocols:
            for r in structure_rows(segmenters[key], model, truth, protocol, ks, slice_spacing(lc.image.spacing, 0),
                                    seed, job):
                rows.append({"case": lc.case.name, "label": value, "protocol": protocol, **r})
    return rows


def table(rows: List[dict]) -> str:
    """Mean 3D Dice per protocol x K x setting, each paired per structure against that K's propagated row."""
    lines = [f"{'prompt':<8}{'K':>3}  {'setting':<22}{'3D Dice':>8}   paired against propagated (per structure)"]
    by = {}
    for r in rows:
        by.setdefault((r["protocol"], r["setting"], r["k"]), {})[(r["case"], r["label"])] = r["dice"]
    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    ks = sorted({r["k"] for r in rows if r["k"] != ""})
    for protocol in protocols:
        for k in ks:
            base = by[(protocol, "propagated", k)]
            names = sorted(base)  # (case, label) of each structure
            for setting in SETTINGS:
                values = by[(protocol, setting, "" if setting == "every slice prompted" else k)]
                line = f"{protocol:<8}{k:>3}  {setting:<22}{np.mean([values[s] for s in names]):>8.3f}"
                if setting != "propagated":
                    mean, lo, hi, better, n = paired_difference({("d", *s): values[s] for s in names},
                                                                {("d", *s): base[s] for s in names}, "d")
                    line += f"   {mean:+.3f} [{lo:+.3f}, {hi:+.3f}] {better}/{n}"
                lines.append(line)
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", required=True, help="cases CSV (synthfm evaluate-data writes one)")
    p.add_argument("--model", default="synthfm-lite")
    p.add_argument("--prompt", action="append", choices=("box", "box-jitter", "point1"), default=None)
    p.add_argument("--volume-slices", type=int, nargs="+", default=[1, 3], metavar="K")
    p.add_argument("--embedding-cache", default=None, help="folder of stored slice embeddings (as synthfm evaluate)")
    p.add_argument("--out", default=None, help="CSV of every row")
    args = p.parse_args(argv)
    if not Path(args.pairs).is_file():
        raise SystemExit(f"volume_budget: {args.pairs} is not a file; write one with synthfm evaluate-data")
    rows = budget(args.pairs, args.model, args.prompt or ["box"], args.volume_slices, args.embedding_cache)
    print(table(rows))
    if args.out:
        atomic_write_text(Path(args.out), csv_text(rows, ["case", "label", "protocol", "setting", "k", "dice"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
