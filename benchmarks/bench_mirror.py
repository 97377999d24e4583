"""The slice alone or the slice and its left-right mirror image averaged (``ModelSpec.mirror_average``): Dice per
prompt protocol on fresh generator images (the choice) and, for reporting only, real slices; and what the
mirror image adds to a first prompt on a new slice (one more encoder call).

Run: .venv/bin/python benchmarks/bench_mirror.py --generated 300 [--pairs data/real/cases.csv --max-slices 10]
     [--model synthfm-lite]
(``--generated`` images are drawn from seed 5105: never trained or calibrated on). Masks are kept inside the box.
"""
from __future__ import annotations

import time
from typing import Dict, List

import numpy as np

from bench_box_clip import protocol_bench
from bench_mask_choice import prompts_for
from synthfm.evaluate.metrics import dice

PROTOCOLS = ("point1", "point3", "point1neg2", "box", "box-jitter")


def main() -> None:
    args, predictor, sources = protocol_bench(__doc__.splitlines()[0], PROTOCOLS)
    print(f"{'data':<48}{'prompt':<12}{'n':>5}{'one view':>10}{'mirrored':>10}{'gain':>8}{'better':>8}")
    seconds: Dict[bool, List[float]] = {False: [], True: []}
    for name, items in sources:
        table: Dict[str, List[List[float]]] = {}
        for image, truth, key, vrange, seed in items:
            for protocol in args.protocols:
                prompts = prompts_for(protocol, truth, np.random.default_rng([0, seed]))
                row = []
                for mirror in (False, True):
                    start = time.perf_counter()
                    mask = predictor.predict(image, prompts, key=key, value_range=vrange, mirror=mirror).mask
                    if protocol == args.protocols[0]:  # the first prompt on this slice: its encoder calls included
                        seconds[mirror].append(time.perf_counter() - start)
                    row.append(dice(mask, truth))
                table.setdefault(protocol, []).append(row)
        for protocol, rows in table.items():
            values = np.array(rows)
            gain = values[:, 1] - values[:, 0]
            print(f"{name:<48}{protocol:<12}{len(values):>5}{values[:, 0].mean():>10.3f}{values[:, 1].mean():>10.3f}"
                  f"{gain.mean():>+8.3f}{(gain > 0).mean():>8.0%}", flush=True)
    print(f"\nfirst prompt on a new slice (median): one view {1e3 * np.median(seconds[False]):.0f} ms; the mirror "
          f"image adds {1e3 * np.median(seconds[True]):.0f} ms (its encoding and a second decoder call)")


if __name__ == "__main__":
    main()
