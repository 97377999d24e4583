"""The shipped decoder's whole validation curve in one figure: the lite3 run, then the annealing fork from its end.

    python Resources/training/lite3/plot_curve.py Resources/training/lite3/history.json \\
        Resources/training/lite3/anneal_history.json Resources/models/synthfm-lite_curve.png
"""
from __future__ import annotations

import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("main", help="history.json of the main run")
    p.add_argument("fork", help="history.json of the run forked from the main run's last step")
    p.add_argument("out", help="PNG to write")
    args = p.parse_args()
    with open(args.main) as a, open(args.fork) as b:
        main_run, fork = json.load(a), json.load(b)
    offset = main_run["step"][-1]
    fig, ax = plt.subplots(figsize=(9, 4))
    for h, start, tag, colour in ((main_run, 0, "lite3", "C0"), (fork, offset, "anneal", "C3")):
        steps = np.asarray(h["val_step"]) + start
        ax.plot(steps, h["val_point"], "o-", ms=2, color=colour, label=f"val 1 point ({tag})")
        ax.plot(steps, h["val_box"], "s-", ms=2, color=colour, alpha=0.5, label=f"val box ({tag})")
    ax.axvline(offset, color="grey", ls="--", lw=1)
    ax.set_xlabel("step (8 prompted samples each)")
    ax.set_ylabel("held-out synthetic Dice (64 images)")
    ax.set_ylim(0.2, 0.7)
    ax.legend(ncol=2, fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(f"synthfm-lite decoder: lite3 run (lr 2e-4, cosine over 37,500 steps), then a 1,500-step anneal "
                 f"from step {offset}", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)


if __name__ == "__main__":
    main()
