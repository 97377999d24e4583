"""``synthfm demo``: the whole pipeline on a synthetic volume, no downloads needed.

Generate a volume with known truth, prompt the slice where the structure is largest and two slices near its ends
(as a user marks a structure in 3D; ``--prompted-slices 1`` for the largest slice alone), fill between them and
propagate beyond with the default model, write the label volume and an overlay PNG, and print Dice against the
synthetic truth.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="segment a synthetic volume end to end and report Dice (offline)")
    p.add_argument("--model", default="synthfm-lite", help="registry name or decoder checkpoint")
    p.add_argument("--preset", default="ct", help="generator preset of the demo volume (ct, mr, us, mixed)")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--depth", type=int, default=40)
    p.add_argument("--out", default="outputs/demo", help="output folder")
    p.add_argument("--device", default="auto")
    p.add_argument("--overwrite", action="store_true", help="replace the files of an earlier demo in --out")
    p.add_argument("--prompted-slices", type=int, default=3,
                   help="slices prompted with a box (and a point): the largest plus ones near both ends (default 3)")
    p.set_defaults(func=run)


DEMO_FILES = ("image.nii.gz", "truth.nii.gz", "label.nii.gz", "overlay.png")


def check_arguments(args: argparse.Namespace) -> str:
    """Every check before the demo volume is generated; returns the device to use."""
    from synthfm.generate.cli import BYTES_PER_VOXEL_WORK
    from synthfm.io.checks import check_device, check_memory, check_model_name, check_output_files, check_range

    check_range(args.size, "--size", 32)
    check_range(args.depth, "--depth", 4)
    check_range(args.prompted_slices, "--prompted-slices", 1)
    check_memory(args.size * args.size * args.depth * BYTES_PER_VOXEL_WORK, f"--size {args.size} --depth {args.depth}",
                 "use a smaller --size or --depth")
    check_model_name(args.model)
    check_output_files(args.out, DEMO_FILES, args.overwrite)
    return check_device(args.device)


def run(args: argparse.Namespace) -> int:
    device = check_arguments(args)

    import numpy as np

    from synthfm.evaluate.metrics import dice
    from synthfm.evaluate.protocols import point_and_box, prompt_slices
    from synthfm.generate import GeneratorConfig, SyntheticGenerator
    from synthfm.io import write_volume
    from synthfm.io.png import GREEN, YELLOW, overlay, write_png
    from synthfm.models import load_model
    from synthfm.segment import PropagationOptions, SlicePredictor, VolumeSegmenter
    from synthfm.segment.preprocess import normalize
    from synthfm.segment.propagate import propagation_bar

    out = Path(args.out)
    config = GeneratorConfig.from_preset(args.preset, size=args.size, depth=args.depth)
    sample = SyntheticGenerator(config, args.seed).sample_3d(0)
    write_volume(out / "image.nii.gz", sample.to_volume())  # checked above: new, or --overwrite
    write_volume(out / "truth.nii.gz", sample.to_volume(sample.mask.astype(np.uint8)))

    model = load_model(args.model)
    segmenter = VolumeSegmenter(SlicePredictor(model, device), sample.image, axis=0)
    mid = int(np.argmax(sample.mask.sum(axis=(1, 2))))  # the structure's largest slice, as a user would pick
    prompted = prompt_slices(sample.mask, args.prompted_slices)
    prompts = {i: point_and_box(sample.mask[i], model.trained_points) for i in prompted}
    print(f"demo volume: {sample.meta['modality']} {sample.meta['target_kind']}, {args.depth} slices, target on slices "
          f"{sample.meta['target_slices'][0]}..{sample.meta['target_slices'][1]}; prompts on slice"
          f"{'s' * (len(prompted) > 1)} {', '.join(map(str, prompted))}: {'point + ' if model.trained_points else ''}box")
    result = segmenter.propagate_slices(prompts, progress=propagation_bar(),
                                        options=PropagationOptions.for_model(model))
    truth_mid = sample.mask[mid]
    write_volume(out / "label.nii.gz", sample.to_volume(result.mask.astype(np.uint8)))

    present = np.nonzero(sample.mask.any(axis=(1, 2)))[0]  # the structure's extent and one slice past each end
    shown = sorted({int(s) for s in np.linspace(present[0] - 1, present[-1] + 1, 5).round() if 0 <= s < args.depth})
    panels = [overlay(normalize(sample.image[s], 0, 1), [(sample.mask[s], GREEN), (result.mask[s], YELLOW)])
              for s in shown]
    write_png(out / "overlay.png", np.concatenate(panels, axis=1), scale=2)
    d3 = dice(result.mask, sample.mask)
    d2 = dice(result.mask[mid], truth_mid)
    print(f"model {args.model}: Dice {d3:.3f} over the volume ({result.describe()}), "
          f"{d2:.3f} on the prompted slice {mid}")
    print(f"wrote {out}/label.nii.gz and {out}/overlay.png (green: truth, yellow: SynthFM) for slices {shown}")
    return 0
