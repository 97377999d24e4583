"""``synthfm train``: fit a SynthFM decoder from scratch on synthetic images.

Before any work: every option, the output folder and an earlier run in it are checked.  While training,
``OUT/.synthfm.lock`` keeps a second run out of the same folder, and Ctrl-C / SIGTERM stop at the end
of the current step with a checkpoint and resume state written (atomically) at that step.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a decoder from scratch on synthetic data (resumable)",
                              description="Freeze the model's pretrained image encoder, re-initialise the prompt "
                                          "encoder and mask decoder, and fit them with Dice(+BCE) loss on synthetic "
                                          "images. Re-running with the same --out resumes.")
    p.add_argument("--model", default="synthfm-lite", help="synthfm-lite (CPU-friendly) or synthfm-vit-b (GPU)")
    p.add_argument("--preset", default="mixed", help="generator preset: ct, mr, us or mixed")
    p.add_argument("--generator", default="{}", help='JSON of generator overrides, e.g. \'{"touch_prob": 0.8}\'')
    p.add_argument("--samples", type=int, default=600, help="synthetic training images (encoded once, cached)")
    p.add_argument("--val-samples", type=int, default=64)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-budget", type=float, help="stop after this many minutes (checkpoint kept; rerun resumes)")
    p.add_argument("--device", default="auto")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--bf16", action="store_true", default=None,
                           help="train in bf16 (default: on a GPU, or a CPU with native bf16 such as AVX512-BF16/AMX)")
    precision.add_argument("--no-bf16", dest="bf16", action="store_false",
                           help="train in fp32 (default on CPUs without native bf16, e.g. AVX2 laptops)")
    p.add_argument("--cache", help="folder for cached embeddings (default: OUT/cache)")
    p.add_argument("--data", default="cache", choices=("cache", "on-the-fly"),
                   help="cache: encode each image once, memory-mapped (CPU); on-the-fly: generate + encode every "
                        "step (GPU, no disk)")
    p.add_argument("--workers", type=int, default=0,
                   help="with --data on-the-fly: processes that generate and prompt the next steps' batches while "
                        "the GPU trains (same batches as without them; default 0: in the training process)")
    p.add_argument("--init", help="fine-tune: start from this decoder (model name or checkpoint path) instead of "
                                  "from scratch; it must use the same encoder as --model")
    p.add_argument("--user-data", metavar="CASES.csv",
                   help="fine-tune on your labelled volumes too: CSV with image,label[,label_value][,name] columns "
                        "(paths relative to the CSV, read with SimpleITK; as for `synthfm evaluate --cases`). The "
                        "slices containing the labels are encoded once and mixed with synthetic images")
    p.add_argument("--user-fraction", type=float, default=0.5,
                   help="share of each batch drawn from --user-data (0..1, default 0.5)")
    p.add_argument("--neighbour-volumes", type=int, default=0,
                   help="also train on neighbouring-slice pairs of this many synthetic 3D volumes (6 encoded slices "
                        "each): the slice prompted from the structure's mask on the next slice, empty past its end. "
                        "Teaches propagation to follow a structure and to stop")
    p.add_argument("--neighbour-prob", type=float, default=0.3,
                   help="chance that a step trains on neighbouring-slice pairs (0..1, default 0.3)")
    p.add_argument("--neighbour-mask-prob", type=float, default=0.0,
                   help="chance that a neighbouring-slice step also gives the structure's mask on the neighbour as "
                        "simulated logits, the mask prompt propagation carries from slice to slice (0..1, default 0)")
    p.add_argument("--no-neighbour-mask-past-end", dest="neighbour_mask_past_end", action="store_false",
                   help="carried-mask steps draw only slices where the structure is present (not those past its ends)")
    p.add_argument("--no-neighbour-mask-iou", dest="neighbour_mask_iou", action="store_false",
                   help="the IoU head does not learn from the carried-mask steps' first round")
    p.add_argument("--correction-prob", type=float, default=0.5,
                   help="chance that a step adds interactive correction rounds (click on the error + previous "
                        "logits as mask prompt; default 0.5)")
    p.add_argument("--correction-rounds", type=int, default=1,
                   help="up to this many correction clicks per sample; all but the last run without gradient, as "
                        "in SAM's interactive training (default 1)")
    p.add_argument("--extra-click-prob", type=float, default=0.0,
                   help="chance that a correction round's click is one a user adds without looking at the error "
                        "(a point inside the target or a far negative; the answer must not change; default 0)")
    p.add_argument("--feature-stats-aug", type=float, default=0.0,
                   help="chance that a sample's embedding has its per-channel mean and std redrawn around them (DSU; "
                        "a decoder less tied to the synthetic images' statistics; 0..1, default 0)")
    p.add_argument("--prompt-modes", nargs="+", metavar="MODE",
                   help="first-round prompt kinds to draw from: point1 points pos_neg far_neg box box_point "
                        "(default: all)")
    p.add_argument("--multimask-modes", nargs="+", metavar="MODE",
                   help="first-round prompt kinds decoded as three candidates with SAM's min-over-masks loss "
                        "(default: point1 only)")
    p.add_argument("--lr-warmup", type=int, default=100, help="linear learning-rate warm-up steps (default 100)")
    p.add_argument("--val-every", type=int, default=200, help="validate every N steps")
    p.add_argument("--ckpt-every", type=int, default=100, help="write checkpoint + resume state every N steps")
    p.add_argument("--out", default="outputs/train", help="output folder (checkpoint, resume state, curve.png)")
    p.add_argument("--no-resume", action="store_true",
                   help="start from scratch even if OUT has a resume state (with --overwrite: replaces that run)")
    p.add_argument("--overwrite", action="store_true",
                   help="allow replacing an earlier run's checkpoint in --out (with --no-resume, or when OUT holds a "
                        "checkpoint without resume state)")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.set_defaults(func=run)
    c = subparsers.add_parser("train-compare", help="validation Dice of several models on one synthetic validation set",
                              description="Point (1 interior click) and box Dice of each model on the images of a "
                                          "training run's validation cache, with identical prompts for all models.")
    c.add_argument("--models", nargs="+", required=True, help="registry names or decoder checkpoint paths")
    c.add_argument("--val-cache", required=True, help="a run's validation cache folder, e.g. OUT/cache/val")
    c.add_argument("--device", default="auto")
    c.add_argument("--threads", type=int, help="CPU threads for torch")
    c.add_argument("--json", help="also write the results to this JSON file")
    c.add_argument("--overwrite", action="store_true", help="replace --json if it exists")
    c.set_defaults(func=run_compare)


def config_from_args(args: argparse.Namespace):
    """The :class:`TrainConfig` described by parsed ``train`` options."""
    from synthfm.segment.predictor import pick_device
    from synthfm.train import TrainConfig, cases_from_csv

    try:
        overrides = json.loads(args.generator)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--generator must be a JSON object ({exc})") from exc
    user_data = cases_from_csv(args.user_data) if args.user_data else []
    return TrainConfig(model=args.model, preset=args.preset, generator=overrides, samples=args.samples,
                       val_samples=args.val_samples, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                       seed=args.seed, device=str(pick_device(args.device)), bf16=args.bf16,
                       time_budget_min=args.time_budget, out=args.out, cache=args.cache, data=args.data,
                       val_every=args.val_every, ckpt_every=args.ckpt_every, init=args.init,
                       user_data=user_data, user_fraction=args.user_fraction,
                       neighbour_volumes=args.neighbour_volumes, neighbour_prob=args.neighbour_prob,
                       neighbour_mask_prob=args.neighbour_mask_prob,
                       neighbour_mask_past_end=args.neighbour_mask_past_end,
                       neighbour_mask_iou=args.neighbour_mask_iou,
                       correction_prob=args.correction_prob, correction_rounds=args.correction_rounds,
                       extra_click_prob=args.extra_click_prob, prompt_modes=args.prompt_modes,
                       multimask_modes=args.multimask_modes, warmup=args.lr_warmup,
                       workers=args.workers, feature_stats_aug=args.feature_stats_aug)


def check_arguments(args: argparse.Namespace):
    """Every check before a model is built or an image encoded; returns the :class:`TrainConfig`."""
    from synthfm.io.checks import (InputError, check_device, check_init_decoder, check_input_path, check_range,
                                   check_writable_folder)
    from synthfm.models.registry import get_spec

    args.device = check_device(args.device)
    if args.threads is not None:
        check_range(args.threads, "--threads", 1)
    if args.time_budget is not None:
        check_range(args.time_budget, "--time-budget", 0.0)
    if args.init:
        get_spec(args.model)  # an unknown --model is named as such, not as a misfit of --init
        check_init_decoder(args.init, args.model)
    if args.user_data:
        check_input_path(args.user_data, "--user-data", "cases CSV")
    out = check_writable_folder(args.out)
    if args.cache:
        check_writable_folder(args.cache, "--cache")
    checkpoint, state, history = out / f"{args.model}.pt", out / "resume.pt", out / "history.json"
    if checkpoint.exists() and not state.exists() and not history.exists() and not args.overwrite:
        raise InputError(f"--out {out} already holds {checkpoint.name} without a resume state (resume.pt or "
                         "history.json), so this run would replace it; choose another --out or add --overwrite")
    if args.no_resume and (state.exists() or checkpoint.exists()) and not args.overwrite:
        raise InputError(f"--out {out} holds an earlier run ({state.name if state.exists() else checkpoint.name}) "
                         "that --no-resume would replace; drop --no-resume to continue it, choose another --out, or "
                         "add --overwrite")
    config = config_from_args(args)
    config.validate()
    check_caches_and_disk(config)
    return config


def check_caches_and_disk(config) -> None:
    """Embedding caches that are damaged or were built with other settings, and too little disk space for
    the caches still to fill and the checkpoints, found before any model is built (the cache of the user's
    slices is checked the same way when it is opened, before encoding)."""
    import os

    from synthfm.io.checks import check_disk_space, existing_folder, format_bytes
    from synthfm.train.embed_cache import bytes_per_item, inspect_cache
    from synthfm.train.trainer import CHECKPOINT_BYTES, planned_caches

    per = bytes_per_item(config.generator_config().size)
    needs: dict = {}  # file system -> [a folder on it, bytes, images]

    def add(folder: Path, nbytes: int, images: int) -> None:
        entry = needs.setdefault(os.stat(existing_folder(folder)).st_dev, [folder, 0, 0])
        entry[1], entry[2] = entry[1] + nbytes, entry[2] + images

    for folder, wanted in planned_caches(config):
        missing = inspect_cache(folder, wanted)
        add(folder, missing, -(-missing // per))
    add(Path(config.out), CHECKPOINT_BYTES, 0)
    for folder, nbytes, images in needs.values():
        parts = [f"{images} images x {format_bytes(per)} for the embedding caches"] if images else []
        if nbytes > images * per:
            parts.append(f"about {format_bytes(nbytes - images * per)} for checkpoints and the resume state")
        check_disk_space(folder, nbytes, " and ".join(parts),
                         "free space there, give --cache (or --out) a folder on a larger disk, or use fewer --samples")


def run(args: argparse.Namespace) -> int:
    config = check_arguments(args)

    import torch

    from synthfm.io.atomic import clean_stale_temps
    from synthfm.train import train
    from synthfm.utils.progress import CancelToken, Cancelled, tqdm_progress
    from synthfm.utils.run_lock import RunLock, stop_on_signals

    if args.threads:
        torch.set_num_threads(args.threads)
    out, cancel, last = Path(config.out), CancelToken(), {"step": None}
    with RunLock(out, "synthfm train") as lock:
        if lock.taken_over:
            print(f"took over the lock of an earlier run that is gone (pid {lock.taken_over.get('pid')}, started "
                  f"{lock.taken_over.get('started')})")
        cache = Path(config.cache) if config.cache else out / "cache"
        folders = [out, cache] + ([p for p in cache.iterdir() if p.is_dir()] if cache.is_dir() else [])
        removed = [p for folder in folders for p in clean_stale_temps(folder)]
        if removed:
            print(f"removed {len(removed)} temporary file(s) left by an earlier run that was killed")
        try:
            with stop_on_signals(cancel, "saving a checkpoint at the end of this step"):
                path = train(config, progress=tqdm_progress("train", "step"), cancel=cancel,
                             resume=not args.no_resume, data_progress=tqdm_progress("encode images", "img"),
                             on_metrics=lambda step, metrics: last.update(step=step))
        except Cancelled:
            again = "run the same command again to resume"
            if last["step"] is None:
                raise Cancelled(f"stopped while preparing the data (encoded images are kept); {again}") from None
            raise Cancelled(f"stopped at step {last['step']}; checkpoint and resume state saved in {out}; "
                            f"{again}") from None
    print(f"wrote decoder checkpoint {path} (curve: {path.parent / 'curve.png'})")
    print(f"use it: synthfm segment --model {path} ...  or copy it into the user models folder")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from synthfm.io.checks import (JSON_EXTENSIONS, check_device, check_input_path, check_model_name,
                                   check_output_file)

    device = check_device(args.device)
    for model in args.models:
        check_model_name(model, "--models")
    check_input_path(args.val_cache, "--val-cache", "validation cache folder", folder_ok=True)
    if args.json:
        check_output_file(args.json, "--json", JSON_EXTENSIONS, args.overwrite)

    import torch

    from synthfm.io.atomic import atomic_write_text
    from synthfm.train.compare import compare_on_validation

    if args.threads:
        torch.set_num_threads(args.threads)
    results = compare_on_validation(args.models, args.val_cache, device)
    print(f"{'model':<40}{'Dice 1 point':>14}{'Dice box':>10}")
    for name, r in results.items():
        print(f"{name:<40}{r['val_point']:>14.3f}{r['val_box']:>10.3f}")
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=1))
    return 0
