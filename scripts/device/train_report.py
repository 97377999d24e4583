"""Run ``synthfm train`` in this process, then write what a GPU run costs and yields to a JSON summary.

    python scripts/device/train_report.py SUMMARY.json train --out RUN ... (the options of `synthfm train`)

Used by ``train_gpu.sh`` on the lent GPU machine: throughput (prompted samples per second of this call's
training steps, validation and checkpoints included), peak GPU memory, the steps done and the last validation Dice.
"""
from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path


def _option(argv: list, name: str, default: str = "") -> str:
    """The last value of ``name`` in ``argv`` (argparse keeps the last one too)."""
    values = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == name]
    return values[-1] if values else default


def _progress(argv: list) -> tuple:
    """(step, training seconds) of the run in ``argv``'s ``--out`` so far; (0, 0.0) before its first checkpoint."""
    from synthfm.models import load_decoder_checkpoint

    path = Path(_option(argv, "--out")) / f"{_option(argv, '--model', 'synthfm-lite')}.pt"
    if not path.is_file():
        return 0, 0.0
    meta = load_decoder_checkpoint(path)[1]
    return int(meta.get("step", 0)), float(meta.get("train_seconds", 0.0))


def summary(argv: list, rc: int, wall_s: float, before: tuple = (0, 0.0)) -> dict:
    """Steps, samples, throughput (of this call: steps since ``before``) and validation of the run in ``argv``'s
    ``--out``, from its files."""
    import torch

    from synthfm.models import load_decoder_checkpoint

    out, model = Path(_option(argv, "--out")), _option(argv, "--model", "synthfm-lite")
    result = {"exit_code": rc, "wall_s": round(wall_s, 1), "device": _option(argv, "--device", "auto"),
              "torch": torch.__version__, "command": "synthfm " + " ".join(argv)}
    if torch.cuda.is_available():
        result.update(gpu=torch.cuda.get_device_name(0),
                      peak_gpu_memory_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
                      peak_gpu_reserved_gib=round(torch.cuda.max_memory_reserved() / 2**30, 2))
    if (out / f"{model}.pt").is_file():
        meta = load_decoder_checkpoint(out / f"{model}.pt")[1]
        batch = int(meta["train_config"]["batch_size"])
        steps, seconds = int(meta["step"]) - before[0], float(meta.get("train_seconds", 0.0)) - before[1]
        result.update(step=meta["step"], steps_planned=meta["train_config"]["steps"], batch_size=batch,
                      steps_this_call=steps, train_seconds_this_call=round(seconds, 1),
                      samples_per_s=round(steps * batch / seconds, 3) if seconds > 0 else None,
                      prompted_samples=int(meta["step"]) * batch, val=meta.get("val", {}))
    return result


def main(argv: list) -> int:
    from synthfm.cli import main as synthfm_main
    from synthfm.io.atomic import atomic_write_text
    from synthfm.utils.progress import Cancelled

    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    target, train_argv = Path(argv[0]), argv[1:]
    before, start = _progress(train_argv), time.monotonic()
    try:  # with --debug, errors come with their traceback (a device call is too dear to run twice)
        rc = synthfm_main(train_argv)
    except (KeyboardInterrupt, Cancelled):
        traceback.print_exc()
        rc = 130
    except Exception:
        traceback.print_exc()
        rc = 1
    result = summary(train_argv, rc, time.monotonic() - start, before)
    atomic_write_text(target, json.dumps(result, indent=1))
    print("summary: " + ", ".join(f"{k} {result[k]}" for k in ("step", "steps_planned", "samples_per_s",
                                                                  "peak_gpu_memory_gib", "val") if k in result))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
