"""Average decoder checkpoints tensor by tensor (a "model soup" of fine-tunes from one start), for judging.

Run: .venv/bin/python benchmarks/average_checkpoints.py A.pt B.pt [...] --out runs/soup/synthfm-lite.pt
The checkpoints must be for the same model and encoder (checked); the result keeps the first one's metadata, with
the averaged files listed under ``averaged_from``. Then fit its calibration and judge it like any candidate
(``benchmarks/judge.sh runs/soup/synthfm-lite.pt soup``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from synthfm.models.checkpoint import load_decoder_checkpoint, save_decoder_state


def average(paths: list) -> tuple:
    """(mean state dict in fp16, metadata of the first checkpoint + ``averaged_from``)."""
    states, metas = zip(*(load_decoder_checkpoint(p) for p in paths))
    for p, m, s in zip(paths[1:], metas[1:], states[1:]):
        for key in ("model", "encoder", "image_size"):
            if m.get(key) != metas[0].get(key):
                raise SystemExit(f"{p}: {key} {m.get(key)!r} differs from {paths[0]}'s {metas[0].get(key)!r}; "
                                 "only checkpoints of one model and encoder can be averaged")
        if set(s) != set(states[0]) or any(s[k].shape != states[0][k].shape for k in s):
            raise SystemExit(f"{p}: its tensors differ from {paths[0]}'s (another decoder architecture)")
    mean = {k: (sum(s[k].float() for s in states) / len(states)).half() if states[0][k].is_floating_point()
            else states[0][k] for k in states[0]}
    return mean, {**metas[0], "averaged_from": [str(p) for p in paths]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if len(args.checkpoints) < 2:
        raise SystemExit("give at least two checkpoints to average")
    if args.out.exists():
        raise SystemExit(f"{args.out} already exists; choose another --out (an earlier result is never replaced)")
    state, meta = average(args.checkpoints)
    save_decoder_state(args.out, state, meta, overwrite=False)
    print(f"wrote {args.out}: mean of {len(args.checkpoints)} checkpoints")


if __name__ == "__main__":
    main()
