"""``synthfm segment``: segment a volume from prompts and write a label volume aligned with it.

Everything that can be checked without the model is checked first (outputs, options, the image, the
prompts inside the volume), so a mistake costs a second, not a segmentation.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from synthfm.io.checks import InputError

MAX_LABEL = 65535  # labels up to 255 are written as uint8, larger ones as uint16


def _numbers(text: str, count: int, what: str, example: str) -> List[float]:
    parts = text.replace(";", ",").split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != count or not all(abs(v) < float("inf") for v in values):
        raise InputError(f"{what} '{text}' must be {count} comma-separated numbers, e.g. {example}")
    return values


def _triples(values: Optional[List[str]], what: str) -> List[List[float]]:
    return [_numbers(v, 3, what, "120,88,40") for v in values or []]


@dataclass
class PromptSource:
    """Prompts from one place (the command line or a prompts file), in that place's coordinate system."""

    name: str
    coords: str
    positive: List[List[float]] = field(default_factory=list)
    negative: List[List[float]] = field(default_factory=list)
    boxes: List[List[List[float]]] = field(default_factory=list)  # each two opposite corners on one slice


def prompt_sources(args: argparse.Namespace):
    """The prompts of the command line and of ``--prompts``, each with its own coordinate system, and the
    slicing axis.  ``--coords`` applies to --point/--neg-point/--box only; a prompts file states its own."""
    from synthfm.segment.prompts import load_prompt_file

    boxes = [[v[:3], v[3:]] for v in (_numbers(b, 6, "--box", "90,60,40,150,120,40") for b in args.box or [])]
    sources = [PromptSource("command line", args.coords or "ijk", _triples(args.point, "--point"),
                            _triples(args.neg_point, "--neg-point"), boxes)]
    axis = args.axis
    if args.prompts:
        data = load_prompt_file(args.prompts)
        has_prompts = any(data.get(k) for k in ("points", "negative", "box", "boxes"))
        if has_prompts and "coords" not in data and args.coords not in (None, "ijk"):
            raise InputError(f"prompts file {args.prompts} does not say its coordinate system, and --coords "
                             f"{args.coords} applies to command-line prompts only; add \"coords\": "
                             f"\"{args.coords}\" (or \"ijk\") to the file")
        if "axis" in data and axis is not None and data["axis"] != axis:
            raise InputError(f"--axis {axis} and \"axis\": {data['axis']} in {args.prompts} disagree: prompts on "
                             "different axes cannot be combined; keep one")
        axis = data.get("axis", axis)
        boxes = ([data["box"]] if "box" in data else []) + data.get("boxes", [])
        sources.append(PromptSource(f"prompts file {args.prompts}", data.get("coords", "ijk"), data.get("points", []),
                                    data.get("negative", []), boxes))
    return sources, 0 if axis is None else int(axis)


def parse_candidates(values: List[str]) -> Dict[Optional[int], int]:
    """``--candidate`` values (``K`` or ``SLICE=K``) as {slice or None (every prompted slice): K}."""
    out: Dict[Optional[int], int] = {}
    for text in values:
        where, _, k = text.rpartition("=")
        try:
            index, value = (int(where) if where else None), int(k)
        except ValueError:
            index, value = None, -1
        if value not in (0, 1, 2) or (index is not None and index < 0):
            raise InputError(f"--candidate {text}: give K or SLICE=K with K 0, 1 or 2 (the decoder's three "
                             "candidates) and SLICE a prompted slice's index, e.g. --candidate 40=2")
        if index in out and out[index] != value:
            raise InputError(f"--candidate chooses both {out[index]} and {value} on "
                             f"{'every prompted slice' if index is None else f'slice {index}'}: keep one")
        out[index] = value
    return out


def candidates_by_slice(chosen: Dict[Optional[int], int], prompted: List[int], axis: int) -> Dict[int, int]:
    """``--candidate`` choices resolved to the prompted slices (SLICE=K overrides a plain K there)."""
    stray = sorted(i for i in chosen if i is not None and i not in prompted)
    if stray:
        raise InputError(f"--candidate on slice{'s' * (len(stray) > 1)} {', '.join(map(str, stray))} along axis "
                         f"{axis}, which hold{'s' * (len(stray) == 1)} no prompts (prompted: "
                         f"{', '.join(map(str, prompted))})")
    resolved = {i: chosen.get(i, chosen.get(None)) for i in prompted}
    return {i: k for i, k in resolved.items() if k is not None}


def check_arguments(args: argparse.Namespace):
    """Every check that needs neither the image's voxels nor the model; returns (sources, axis, device)."""
    from synthfm.io.checks import (PNG_EXTENSIONS, VOLUME_EXTENSIONS, check_device, check_distinct,
                                   check_input_path, check_model_name, check_output_file, check_range,
                                   check_writable_folder)
    from synthfm.segment.preprocess import WINDOWS
    from synthfm.segment.propagate import PropagationOptions

    check_range(args.label, "--label", 1, MAX_LABEL, "0 is the background")
    check_input_path(args.image, "--image", "image", folder_ok=True)
    check_output_file(args.out, "--out", VOLUME_EXTENSIONS + PNG_EXTENSIONS, args.overwrite)  # PNG: 2D images only
    for option, path in (("--overlay", args.overlay), ("--choices-png", args.choices_png)):
        if path:
            check_output_file(path, option, PNG_EXTENSIONS, args.overwrite)
    check_distinct({"--image": args.image, "--out": args.out, "--overlay": args.overlay,
                    "--choices-png": args.choices_png, "--prompts": args.prompts})
    if args.window not in WINDOWS:
        raise InputError(f"--window {args.window}: unknown window; choose one of {', '.join(WINDOWS)}")
    PropagationOptions.parse_overrides(args.propagation)
    parse_candidates(args.candidate)
    check_model_name(args.model)
    if args.embedding_cache is not None:
        check_writable_folder(args.embedding_cache, "--embedding-cache")
    sources, axis = prompt_sources(args)
    if not any(s.positive or s.negative or s.boxes for s in sources):
        raise InputError("no prompts given: add --point x,y,z or --box (or --prompts FILE)")
    return sources, axis, check_device(args.device)


def prompts_to_index(volume, sources: List[PromptSource]):
    """All prompts as voxel indices ``(i, j, k)`` (points, and boxes as corner pairs), each source converted
    from its own coordinates and checked to lie inside the volume."""
    import numpy as np

    from synthfm.io.checks import check_inside_volume
    from synthfm.segment.prompts import to_index

    pos, neg, boxes = [], [], []
    for source in sources:
        corners = [c for box in source.boxes for c in box]
        for kind, points, out in (("positive point", source.positive, pos), ("negative point", source.negative, neg),
                                  ("box corner", corners, boxes)):
            if not len(points):
                continue
            ijk = to_index(volume, points, source.coords)
            check_inside_volume(ijk, volume.shape, f"{kind} ({source.name}, {source.coords} coordinates)")
            out.extend(ijk.tolist())
    return (np.asarray(pos).reshape(-1, 3), np.asarray(neg).reshape(-1, 3),
            [np.asarray(boxes[i:i + 2]) for i in range(0, len(boxes), 2)])


def register(subparsers) -> None:
    p = subparsers.add_parser("segment", help="segment a volume from point/box prompts (with propagation)",
                              description="Segment the structure under the prompts on one slice (or several: the "
                                          "slices between are filled), then follow it slice by slice; writes a "
                                          "label volume with the input's geometry.")
    p.add_argument("--image", required=True, help="volume (NIfTI, NRRD, MHA, ... or a DICOM folder)")
    p.add_argument("--out", required=True, help="output label volume, e.g. label.nii.gz (a 2D image: also .png)")
    p.add_argument("--model", default="synthfm-lite", help="registry name or decoder checkpoint (default synthfm-lite)")
    p.add_argument("--point", action="append", help="positive point x,y,z (repeatable)")
    p.add_argument("--neg-point", action="append", help="negative point x,y,z (repeatable)")
    p.add_argument("--box", action="append",
                   help="box as two opposite corners: x0,y0,z0,x1,y1,z1 (same slice); repeat it on other slices to "
                        "prompt several slices: the slices between are filled, propagation continues beyond")
    p.add_argument("--coords", choices=("ijk", "lps", "ras"), default=None,
                   help="coordinates of --point/--neg-point/--box: voxel indices or physical mm (default ijk); "
                        "a --prompts file states its own")
    p.add_argument("--prompts", help="JSON file with coords/points/negative/box/boxes/axis (see docs/segment.md)")
    p.add_argument("--axis", type=int, choices=(0, 1, 2), default=None,
                   help="slicing axis of the prompted view: 0 axial (default), 1 coronal, 2 sagittal; "
                        "propagation runs along it")
    p.add_argument("--direction", choices=("both", "up", "down"), default="both")
    p.add_argument("--no-propagate", action="store_true", help="segment only the prompted slice(s)")
    p.add_argument("--propagation", action="append", default=[], metavar="KEY=VALUE",
                   help="override a propagation setting, e.g. min_score=0.5 or max_slices=20 (repeatable; "
                        "see PropagationOptions in docs/segment.md)")
    p.add_argument("--candidate", action="append", default=[], metavar="[SLICE=]K",
                   help="on a prompted slice (all of them without SLICE=), keep the decoder's candidate K (0, 1 or 2) "
                        "instead of the model's pick: one point or a box give three candidates (a part, or the "
                        "whole); the output lists the candidate kept on each prompted slice, --choices-png draws "
                        "all three (repeatable)")
    p.add_argument("--mirror", choices=("auto", "on", "off"), default="auto",
                   help="decode the prompted slices on the slice and its left-right mirror image and average them: "
                        "auto follows the model (synthfm-lite: on; more accurate, one more encoder call per prompted "
                        "slice), off is faster (docs/segment.md)")
    p.add_argument("--window", default="auto", help="auto, percentile, minmax or a CT preset (ct-soft, ct-lung, ...)")
    p.add_argument("--embedding-cache", metavar="DIR",
                   help="keep slice embeddings in DIR (2 MB per slice): segmenting the same volume again, with other "
                        "prompts or settings, then needs no encoder call for the slices seen before")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--label", type=int, default=1,
                   help=f"label value written for the structure, 1..{MAX_LABEL} (default 1)")
    p.add_argument("--nonfinite", choices=("error", "fill"), default="error",
                   help="NaN/infinite voxels: refuse the image (default) or replace them by the lowest finite "
                        "value, with a warning")
    p.add_argument("--overlay", help="also write a PNG of the prompted slice with the result outlined")
    p.add_argument("--choices-png", metavar="PNG",
                   help="also write a PNG of the three candidate masks of each prompted slice that offers a choice "
                        "(a row per slice, candidates 0, 1, 2 from left to right): see them, then keep one with "
                        "--candidate SLICE=K")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out (and --overlay, --choices-png) if they exist")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    sources, axis, device = check_arguments(args)

    import numpy as np

    from synthfm.io import read_volume, write_volume
    from synthfm.io.checks import (PNG_EXTENSIONS, check_contrast, check_finite, check_not_constant,
                                   check_slicing_axis, extension)
    from synthfm.io.views import preset_view, slice_view
    from synthfm.models import load_model
    from synthfm.segment.predictor import SlicePredictor
    from synthfm.segment.preprocess import intensity_range, slice_spacing
    from synthfm.segment.propagate import PropagationOptions, VolumeSegmenter, propagation_bar
    from synthfm.segment.volume_prompts import prompts_by_slice

    volume = read_volume(args.image)
    propagate = not args.no_propagate
    if extension(args.out) in PNG_EXTENSIONS and volume.shape[0] > 1:
        raise InputError(f"--out {args.out}: a PNG holds one slice and {args.image} has {volume.shape[0]}; write the "
                         "label volume as .nii.gz (or .nrrd, .mha)")
    check_slicing_axis(volume.shape, axis, str(args.image), "leave --axis (and a prompts file's \"axis\") out")
    if volume.shape[0] == 1:  # a 2D image (PNG, JPEG, a one-slice volume): its one slice, nothing to propagate
        if propagate:
            print(f"{args.image} is a 2D image: segmenting its one slice (nothing to propagate)")
        propagate = False
    volume = volume.with_array(check_finite(volume.array, args.image, args.nonfinite, "--nonfinite fill"))
    check_not_constant(volume.array, args.image)
    preset = preset_view(volume.ijk_to_ras_matrix(), axis)  # Slicer's view that shows slices along axis
    view, view_name = slice_view(volume.ijk_to_ras_matrix(), axis, name=preset), preset.lower()  # pictures as it shows
    prompted = prompts_by_slice(*prompts_to_index(volume, sources), axis)
    candidates = candidates_by_slice(parse_candidates(args.candidate), list(prompted), axis)
    value_range = intensity_range(volume.array, args.window)
    for index, prompts in prompted.items():
        slice_ = np.take(volume.array, index, axis=axis)
        try:
            prompts.validate(*slice_.shape)
        except ValueError as exc:
            raise InputError(f"prompts on slice {index} along axis {axis} ({view_name}): {exc}") from None
        check_contrast(_around(slice_, prompts), *value_range, f"slice {index} (axis {axis}) around the prompts")
        _print_line(thin_strip_warning(index, slice_.shape, slice_spacing(volume.spacing, axis), prompts, view_name))

    model = load_model(args.model)
    predictor = SlicePredictor(model, device, args.window)
    predictor.mirror = None if args.mirror == "auto" else args.mirror == "on"
    predictor.use_store(args.embedding_cache)
    segmenter = VolumeSegmenter(predictor, volume.array, axis=axis, spacing=volume.spacing)
    options = PropagationOptions.for_model(model, **PropagationOptions.parse_overrides(args.propagation))
    with_choices = [i for i, prompts in prompted.items() if predictor.offers_choice(prompts)]
    if args.choices_png and not with_choices:
        raise InputError(f"--choices-png: the prompts on slice{'s' * (len(prompted) > 1)} "
                         f"{', '.join(map(str, prompted))} give one mask each ({args.model}), there are no candidates "
                         "to show; one point or a box gives three")
    if not propagate:
        mask = np.zeros(volume.shape, bool)
        for index, prompts in prompted.items():
            try:
                pred = segmenter.segment_slice(index, prompts, candidate=candidates.get(index))
            except ValueError as exc:
                if index not in candidates:
                    raise
                raise InputError(f"--candidate on slice {index}: {exc}") from None
            np.moveaxis(mask, axis, 0)[index] = pred.mask
            _print_line(describe_candidate(index, pred.choice, candidates.get(index)))
        kept = list(prompted)
    else:
        result = segmenter.propagate_slices(prompted, args.direction, propagation_bar(),
                                            options=options, candidates=candidates)
        mask, kept = result.mask, result.slices
        for record in result.records:
            if record.source == "prompt":
                _print_line(describe_candidate(record.index, record.candidate, candidates.get(record.index)))
        for record in result.records:
            if record.stop:
                print(f"stopped before slice {record.index}: {record.stop} (area {record.area}, score {record.score:.2f})")
        for note in result.notes:
            print(f"warning: {note}")
    if predictor.store is not None:
        print(predictor.store.describe())
    dtype = np.uint8 if args.label <= 255 else np.uint16
    write_volume(args.out, volume.with_array(mask.astype(dtype) * dtype(args.label)), overwrite=args.overwrite)
    if volume.shape[0] == 1:  # a 2D image: an area, at the pixel size its file states (PNG: often none, 1 mm)
        print(f"wrote {args.out}: {int(mask.sum())} pixels of label {args.label} ("
              f"{volume.spacing[0] * volume.spacing[1] * mask.sum():.0f} mm2 at the file's pixel size, "
              f"{volume.spacing[0]:.3g} x {volume.spacing[1]:.3g} mm)")
    else:
        print(f"wrote {args.out}: {int(mask.sum())} voxels of label {args.label} on {len(kept)} slices "
              f"({min(kept)}..{max(kept)} along axis {axis}, {view_name}; prompted {', '.join(map(str, prompted))}), "
              f"{volume.spacing[0] * volume.spacing[1] * volume.spacing[2] * mask.sum() / 1000:.2f} mL")
    if args.overlay:
        from synthfm.io.png import YELLOW, overlay, write_png
        from synthfm.segment.preprocess import normalize

        index = list(prompted)[len(prompted) // 2]  # the middle prompted slice
        shown = normalize(segmenter.slice(index), *segmenter.value_range)
        write_png(args.overlay, view.show(overlay(shown, [(np.take(mask, index, axis=axis), YELLOW)])), scale=2,
                  aspect=view.aspect)
        print(f"wrote {args.overlay} (slice {index}, as Slicer's {view_name} view shows it)")
    if args.choices_png:
        write_choices_png(args.choices_png, segmenter, {i: prompted[i] for i in with_choices}, view)
        print(f"wrote {args.choices_png}: candidates 0, 1, 2 from left to right, one row per prompted slice "
              f"({', '.join(map(str, with_choices))}); keep one with --candidate SLICE=K")
    return 0


def write_choices_png(path, segmenter, prompted, view, size: int = 160, gap: int = 4) -> None:
    """A PNG of the masks each candidate gives on each prompted slice (``segment_slice(candidate=k)``: the point cut
    and rounds included), over the same region of the slice turned as ``view`` (:class:`synthfm.io.views.SliceView`)
    shows it: a row per slice, candidates 0, 1, 2 left to right."""
    import numpy as np

    from synthfm.io.png import write_png
    from synthfm.io.thumbnails import choice_thumbnails, prompts_as_marks
    from synthfm.segment.preprocess import normalize

    rows = []
    for index, prompts in prompted.items():
        masks = [segmenter.segment_slice(index, prompts, candidate=k).mask for k in range(3)]
        shown = normalize(segmenter.slice(index), *segmenter.value_range)
        marks = prompts_as_marks(prompts, shown.shape)
        seen = [view.show(a) for a in (shown, marks, *masks)]
        pictures = choice_thumbnails(seen[0], seen[2:], size=size, window=(0.0, 1.0), marks=seen[1],
                                     aspect=view.aspect)[..., :3]
        spacer = np.full((size, gap, 3), 255, np.uint8)
        rows.append(np.concatenate([pictures[0], spacer, pictures[1], spacer, pictures[2]], axis=1))
    spacer = np.full((gap, rows[0].shape[1], 3), 255, np.uint8)
    write_png(path, np.concatenate([part for row in rows for part in (row, spacer)][:-1], axis=0))


def thin_strip_warning(index: int, shape: Tuple[int, int], spacing: Tuple[float, float], prompts,
                       view_name: str) -> Optional[str]:
    """The CLI's line for :func:`synthfm.segment.prompts.thin_strip_note` (None: nothing to warn about)."""
    from synthfm.segment.prompts import thin_strip_note

    note = thin_strip_note(shape, spacing) if prompts.points_alone else None
    return f"warning: slice {index} ({view_name}) is {note} (docs/segment.md)" if note else None


def describe_candidate(index: int, shown: Optional[int], chosen: Optional[int]) -> Optional[str]:
    """One line on which of the decoder's candidates prompted slice ``index`` kept (``shown``; with several points,
    the first point's, the others added in rounds; None: its prompts give one mask, nothing to say) and how to see
    the others; ``chosen``: the user's ``--candidate`` there."""
    if shown is None:
        return None
    others = " or ".join(f"--candidate {index}={k}" for k in range(3) if k != shown)
    whose = "your choice" if chosen is not None else "the model's pick"
    return f"slice {index}: candidate {shown} of 3 ({whose}); to see another: {others}"


def _print_line(line: Optional[str]) -> None:
    if line:
        print(line)


def _around(slice_, prompts, margin: int = 16):
    """The part of ``slice_`` covered by the prompts (box, points) plus ``margin`` pixels."""
    import numpy as np

    xy = np.vstack([prompts.points.reshape(-1, 2)] + ([prompts.box.reshape(2, 2)] if prompts.box is not None else []))
    (x0, y0), (x1, y1) = np.floor(xy.min(0)).astype(int) - margin, np.ceil(xy.max(0)).astype(int) + margin
    return slice_[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1]
