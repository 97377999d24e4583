"""``synthfm segment``: segment a volume from prompts and write a label volume aligned with it."""
from __future__ import annotations

import argparse
from typing import List, Optional


def _triples(values: Optional[List[str]], what: str) -> List[List[float]]:
    out = []
    for v in values or []:
        parts = v.replace(";", ",").split(",")
        if len(parts) != 3:
            raise ValueError(f"{what} '{v}' must be three comma-separated numbers, e.g. 120,88,40")
        out.append([float(p) for p in parts])
    return out


def register(subparsers) -> None:
    p = subparsers.add_parser("segment", help="segment a volume from point/box prompts (with propagation)",
                              description="Segment the structure under the prompts on one slice, then follow it "
                                          "slice by slice; writes a label volume with the input's geometry.")
    p.add_argument("--image", required=True, help="volume (NIfTI, NRRD, MHA, ... or a DICOM folder)")
    p.add_argument("--out", required=True, help="output label volume, e.g. label.nii.gz")
    p.add_argument("--model", default="synthfm-lite", help="registry name or decoder checkpoint (default synthfm-lite)")
    p.add_argument("--point", action="append", help="positive point x,y,z (repeatable)")
    p.add_argument("--neg-point", action="append", help="negative point x,y,z (repeatable)")
    p.add_argument("--box", help="box as two opposite corners: x0,y0,z0,x1,y1,z1 (same slice)")
    p.add_argument("--coords", choices=("ijk", "lps", "ras"), default="ijk",
                   help="coordinates of prompts: voxel indices or physical mm (default ijk)")
    p.add_argument("--prompts", help="JSON file with coords/points/negative/box (see docs/segment.md)")
    p.add_argument("--axis", type=int, choices=(0, 1, 2), default=0, help="slicing axis: 0 axial, 1 coronal, 2 sagittal")
    p.add_argument("--direction", choices=("both", "up", "down"), default="both")
    p.add_argument("--no-propagate", action="store_true", help="segment only the prompted slice")
    p.add_argument("--propagation", action="append", default=[], metavar="KEY=VALUE",
                   help="override a propagation setting, e.g. min_score=0.5 or max_slices=20 (repeatable; "
                        "see PropagationOptions in docs/segment.md)")
    p.add_argument("--window", default="auto", help="auto, percentile, minmax or a CT preset (ct-soft, ct-lung, ...)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--label", type=int, default=1, help="label value written for the structure (default 1)")
    p.add_argument("--overlay", help="also write a PNG of the prompted slice with the result outlined")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from synthfm.io import read_volume, write_volume
    from synthfm.models import load_model
    from synthfm.segment.predictor import SlicePredictor
    from synthfm.segment.prompts import load_prompt_file, to_index
    from synthfm.segment.propagate import PropagationOptions, VolumeSegmenter
    from synthfm.segment.volume_prompts import slice_prompts
    from synthfm.utils.progress import tqdm_progress

    volume = read_volume(args.image)
    if volume.shape[0] == 1 and not args.no_propagate:
        raise ValueError(f"{args.image} is a 2D image; propagation needs a 3D volume (use --no-propagate)")
    axis, coords, pos, neg, box = args.axis, args.coords, _triples(args.point, "--point"), _triples(args.neg_point, "--neg-point"), None
    if args.box:
        corners = _triples([",".join(args.box.split(",")[:3]), ",".join(args.box.split(",")[3:])], "--box corner")
        box = corners
    if args.prompts:
        data = load_prompt_file(args.prompts)
        coords = data.get("coords", coords)
        pos += data.get("points", [])
        neg += data.get("negative", [])
        box = data.get("box", box)
        axis = int(data.get("axis", axis))
    to_ijk = lambda pts: to_index(volume, pts, coords) if len(pts) else np.zeros((0, 3))  # noqa: E731
    index, prompts = slice_prompts(to_ijk(pos), to_ijk(neg), to_ijk(box) if box is not None else None, axis)
    model = load_model(args.model)
    segmenter = VolumeSegmenter(SlicePredictor(model, args.device, args.window), volume.array, axis=axis)
    slice_ = segmenter.slice(index)
    prompts.validate(*slice_.shape)
    options = PropagationOptions.for_model(model, **PropagationOptions.parse_overrides(args.propagation))
    if args.no_propagate:
        mask = np.zeros(volume.shape, bool)
        np.moveaxis(mask, axis, 0)[index] = segmenter.segment_slice(index, prompts).mask
        kept = [index]
    else:
        result = segmenter.propagate(index, prompts, args.direction, tqdm_progress("propagate", "slice"),
                                     options=options)
        mask, kept = result.mask, result.slices
        for record in result.records:
            if record.stop:
                print(f"stopped before slice {record.index}: {record.stop} (area {record.area}, score {record.score:.2f})")
    write_volume(args.out, volume.with_array(mask.astype(np.uint8) * args.label), overwrite=args.overwrite)
    print(f"wrote {args.out}: {int(mask.sum())} voxels on {len(kept)} slices ({min(kept)}..{max(kept)} along axis "
          f"{axis}), {volume.spacing[0] * volume.spacing[1] * volume.spacing[2] * mask.sum() / 1000:.2f} mL")
    if args.overlay:
        from synthfm.io.png import YELLOW, overlay, write_png
        from synthfm.segment.preprocess import normalize

        shown = normalize(slice_, *segmenter.value_range)
        write_png(args.overlay, overlay(shown, [(np.take(mask, index, axis=axis), YELLOW)]), scale=2)
        print(f"wrote {args.overlay}")
    return 0
