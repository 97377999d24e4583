"""Point-prompt masks cut to their structure's intensity (``SlicePredictor.point_gate``, docs/segment.md item 10):
Dice per prompt protocol with each gate, paired against the first (images better / worse), on held-out synthetic
images (the choice) and, for reporting only, real slices. Boxes are never gated.

Run: .venv/bin/python benchmarks/bench_point_gate.py --generated 300 --generated-seed 5118 [--gates 0 1.5 2.5]
     [--pairs data/real/cases.csv --max-slices 10] [--model synthfm-lite] [--protocols point3 clicks]
"""
from __future__ import annotations

import itertools
import sys
from typing import Dict, List

import numpy as np

from bench_box_clip import protocol_bench
from bench_point_rounds import dice_curve

PROTOCOLS = ("point1", "point3", "point1neg2", "clicks")


def main() -> None:
    gates = [0.0, 1.5]
    if "--gates" in sys.argv:  # parsed here so that protocol_bench's parser stays the shared one
        at = sys.argv.index("--gates")
        values = list(itertools.takewhile(lambda a: not a.startswith("--"), sys.argv[at + 1:]))
        gates, sys.argv = [float(v) for v in values], sys.argv[:at] + sys.argv[at + 1 + len(values):]
    args, predictor, sources = protocol_bench(__doc__.splitlines()[0], PROTOCOLS)
    print(f"{'data':<44}{'prompt':<12}{'n':>5}" + "".join(f"{f'gate {g:g}':>26}" for g in gates))
    for name, items in sources:
        table: Dict[tuple, List[float]] = {}
        for image, truth, key, vrange, seed in items:
            for gate in gates:
                predictor.point_gate = gate
                for protocol in args.protocols:
                    curve = dice_curve(lambda p: predictor.predict(image, p, key=key, value_range=vrange).mask,
                                       protocol, truth, np.random.default_rng([0, seed]))
                    table.setdefault((protocol, gate), []).append(curve[-1])
        for protocol in args.protocols:
            base = np.array(table[(protocol, gates[0])])
            cells = []
            for gate in gates:
                d = np.array(table[(protocol, gate)]) - base
                cells.append(f"{d.mean() + base.mean():.3f}" + ("" if gate == gates[0] else
                             f" {d.mean():+.3f} ({int((d > 1e-9).sum())}/{int((d < -1e-9).sum())})"))
            print(f"{name:<44}{protocol:<12}{len(base):>5}" + "".join(f"{c:>26}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
