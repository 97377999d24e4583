"""``synthfm generate``: write a synthetic dataset and/or a gallery PNG."""
from __future__ import annotations

import argparse

#: Peak bytes per voxel while one sample is generated (measured: 35-90), and per voxel of a sample kept in
#: memory (2D shards, gallery panels).
BYTES_PER_VOXEL_WORK, BYTES_PER_VOXEL_KEPT = 100, 10
REALISM_FILES = ("realism.json", "realism.md", "real_stats.csv", "synthetic_stats.csv")


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate synthetic images/volumes (and a gallery PNG)",
                              description="Write a synthetic dataset (2D shards or 3D NIfTI volumes) and/or a "
                                          "gallery PNG of samples with the target outlined.")
    p.add_argument("--preset", default="mixed", help="ct, mr, us or mixed (default: mixed)")
    p.add_argument("--count", type=int, default=64, help="number of samples (default: 64)")
    p.add_argument("--out", help="output folder for the dataset (omit to only draw a gallery)")
    p.add_argument("--dim", type=int, choices=(2, 3), default=2, help="2D images or 3D volumes")
    p.add_argument("--size", type=int, default=None, help="image side in pixels (default 256 for 2D, 128 for 3D)")
    p.add_argument("--depth", type=int, default=64, help="slices per 3D volume (default: 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gallery", help="write a gallery PNG here")
    p.add_argument("--gallery-count", type=int, default=24)
    p.add_argument("--overwrite", action="store_true",
                   help="replace files of an earlier dataset (or report) in --out and an existing --gallery")
    p.add_argument("--generator", default="{}",
                   help='JSON of generator overrides, e.g. \'{"version": 2}\' for the previous generator')
    r = p.add_argument_group("realism report (synthetic targets vs real labelled structures)")
    r.add_argument("--realism", metavar="CASES.csv",
                   help="image,label[,label_value][,name][,modality] CSV of real structures; writes the report to --out")
    r.add_argument("--realism-count", type=int, default=300, help="synthetic targets per modality (default: 300)")
    r.add_argument("--realism-slices", type=int, default=8, help="axial slices per real structure (default: 8)")
    r.add_argument("--compare-version", type=int, action="append", default=[],
                   help="also measure this generator version (repeatable), e.g. --compare-version 2")
    p.set_defaults(func=run)


def check_arguments(args: argparse.Namespace, overrides: dict):
    """Every check before generating anything; returns the generator config."""
    from synthfm.generate import GeneratorConfig
    from synthfm.generate.dataset import SHARD_SIZE, check_dataset_out
    from synthfm.io.checks import PNG_EXTENSIONS, check_memory, check_output_file, check_range

    if not args.out and not args.gallery:
        raise ValueError("nothing to do: give --out for a dataset and/or --gallery for a PNG")
    check_range(args.count, "--count", 1)
    check_range(args.gallery_count, "--gallery-count", 1)
    size = args.size or (256 if args.dim == 2 else 128)
    config = GeneratorConfig.from_preset(args.preset, **{"size": size, "depth": args.depth, **overrides})
    voxels = config.size * config.size * (config.depth if args.dim == 3 else 1)
    kept = (min(args.count, SHARD_SIZE) if args.out and args.dim == 2 else 0) + (args.gallery_count if args.gallery else 0)
    check_memory(voxels * (BYTES_PER_VOXEL_WORK + BYTES_PER_VOXEL_KEPT * kept),
                 f"--size {config.size}" + (f" --depth {config.depth}" if args.dim == 3 else ""),
                 "use a smaller --size" + (" or --depth" if args.dim == 3 else "") + " (or fewer --gallery-count)")
    if args.out:
        check_dataset_out(args.out, args.count, args.dim, args.overwrite)
    if args.gallery:
        check_output_file(args.gallery, "--gallery", PNG_EXTENSIONS, args.overwrite)
    return config


def run(args: argparse.Namespace) -> int:
    overrides = parse_overrides(args.generator)
    if args.realism:
        return run_realism(args, overrides)
    config = check_arguments(args, overrides)

    from synthfm.generate import SyntheticGenerator
    from synthfm.generate.dataset import write_dataset
    from synthfm.generate.gallery import write_gallery
    from synthfm.utils.progress import tqdm_progress

    if args.out:
        path = write_dataset(args.out, config, args.count, args.seed, args.dim, args.overwrite,
                             progress=tqdm_progress("generate", "sample"))
        print(f"wrote {args.count} {args.dim}D samples to {path} (manifest.json describes the format)")
    if args.gallery:
        gen = SyntheticGenerator(config, args.seed)
        draw = gen.sample_2d if args.dim == 2 else gen.sample_3d
        path = write_gallery([draw(i) for i in range(args.gallery_count)], args.gallery)
        print(f"wrote gallery {path}")
    return 0


def parse_overrides(text: str) -> dict:
    """``--generator`` JSON as a dict of generator overrides (a clear message when it is not one)."""
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--generator must be a JSON object of generator settings, got {text!r} ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"--generator must be a JSON object, e.g. '{{\"version\": 2}}', got {text!r}")
    return value


def run_realism(args: argparse.Namespace, overrides: dict) -> int:
    """Measure real structures and synthetic targets per modality; write the report to ``--out``."""
    from pathlib import Path

    from synthfm.generate import GeneratorConfig
    from synthfm.generate.realism import (read_realism_csv, real_panels, real_stats, side_by_side_png, synthetic_stats,
                                          write_report)
    from synthfm.io.checks import check_output_files
    from synthfm.utils.progress import tqdm_progress

    if not args.out:
        raise ValueError("--realism needs --out, the folder for the report")
    if args.realism_count <= 0 or args.realism_slices <= 0:
        raise ValueError("--realism-count and --realism-slices must be positive")
    structures = read_realism_csv(args.realism)  # every row checked before any work
    modalities = sorted({s.modality for s in structures})
    check_output_files(args.out, [*REALISM_FILES, *(f"{kind}_{m}.png" for kind in ("realism", "slices")
                                                     for m in modalities)], args.overwrite)
    sets = {}
    for version in [None, *args.compare_version]:
        extra = {} if version is None else {"version": version}
        configs = {m: GeneratorConfig.from_preset(m, **{**overrides, **extra}) for m in modalities}
        name = f"v{configs[modalities[0]].version}"
        sets[name] = [row for m in modalities for row in
                      synthetic_stats(configs[m], args.realism_count, args.seed, name, tqdm_progress("synthetic", m))]
    real = real_stats(structures, args.realism_slices, progress=tqdm_progress("real", "structure"))
    figures = {m: side_by_side_png(real_panels(structures, m), GeneratorConfig.from_preset(m, **overrides),
                                   seed=args.seed) for m in modalities}
    write_report(args.out, real, sets, overwrite=args.overwrite, figures=figures)
    print((Path(args.out) / "realism.md").read_text())
    print(f"wrote the realism report to {args.out} (realism.md, realism.json, realism_<modality>.png histograms, "
          "slices_<modality>.png real vs synthetic slices)")
    return 0
