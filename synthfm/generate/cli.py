"""``synthfm generate``: write a synthetic dataset and/or a gallery PNG."""
from __future__ import annotations

import argparse


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
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from synthfm.generate import GeneratorConfig, SyntheticGenerator
    from synthfm.generate.dataset import write_dataset
    from synthfm.generate.gallery import write_gallery
    from synthfm.utils.progress import tqdm_progress

    if not args.out and not args.gallery:
        raise ValueError("nothing to do: give --out for a dataset and/or --gallery for a PNG")
    size = args.size or (256 if args.dim == 2 else 128)
    config = GeneratorConfig.from_preset(args.preset, size=size, depth=args.depth)
    if args.out:
        path = write_dataset(args.out, config, args.count, args.seed, args.dim, args.overwrite,
                             progress=tqdm_progress("generate", "sample"))
        print(f"wrote {args.count} {args.dim}D samples to {path} (manifest.json describes the format)")
    if args.gallery:
        if args.gallery_count <= 0:
            raise ValueError(f"--gallery-count must be positive, got {args.gallery_count}")
        gen = SyntheticGenerator(config, args.seed)
        draw = gen.sample_2d if args.dim == 2 else gen.sample_3d
        path = write_gallery([draw(i) for i in range(args.gallery_count)], args.gallery)
        print(f"wrote gallery {path}")
    return 0
