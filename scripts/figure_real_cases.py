"""A figure of what the models give on real slices: for the first structure of each image in a cases CSV (the CSV's
order decides, not the results), its largest slice along the axis, turned as Slicer shows it, with the truth outlined
in green and each model x prompt's mask in yellow (the prompt drawn: a green dot, a cyan box), its Dice below.

    python scripts/figure_real_cases.py --pairs data/real/cases.csv --out Resources/Screenshots/SynthFM_real_cases.png \
        --overwrite [--embedding-cache runs/embeddings] [--axis 0] [--size 150]
"""
from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import List, Tuple

import numpy as np

#: (model, evaluation protocol, row label)
ROWS = (("synthfm-lite", "point1", "SynthFM\n1 point"), ("synthfm-lite", "box", "SynthFM\nbox"),
        ("medsam-lite", "box", "LiteMedSAM\nbox"))


def first_structures(pairs: Path) -> list:
    """(loaded case, label value) for the first structure of each image in the CSV, in the CSV's order."""
    from synthfm.evaluate.cases import load_cases, read_cases_csv

    seen, chosen = set(), []
    for case in read_cases_csv(pairs):
        if str(case.image) not in seen:
            seen.add(str(case.image))
            chosen.append(case)
    return [(lc, lc.values[0]) for lc in load_cases(chosen)]


def panels(lc, value: int, predictors: dict, axis: int, size: int) -> Tuple[List[np.ndarray], List[float], int]:
    """One RGB picture per row of :data:`ROWS` (same region of the structure's largest slice), their Dice, the slice."""
    from synthfm.evaluate.metrics import dice
    from synthfm.evaluate.protocols import make_prompts
    from synthfm.io.thumbnails import choice_thumbnails, prompts_as_marks
    from synthfm.io.views import slice_view
    from synthfm.segment.preprocess import intensity_range, normalize, slice_aspect, slice_spacing

    truth3d = lc.label.array == value
    others = tuple(d for d in range(3) if d != axis)
    s = int(np.argmax(truth3d.sum(axis=others)))
    image = np.take(lc.image.array, s, axis=axis).astype(np.float32)
    truth = np.take(truth3d, s, axis=axis)
    vrange = intensity_range(lc.image.array, "auto")
    masks, marks, scores = [], [], []
    for r, (model, protocol, _) in enumerate(ROWS):
        prompts = make_prompts(protocol, truth, np.random.default_rng([0, r]), slice_spacing(lc.image.spacing, axis))
        pred = predictors[model].predict(image, prompts, key=(str(lc.case.image), axis, s), value_range=vrange,
                                         aspect=slice_aspect(lc.image.spacing, axis))
        masks.append(pred.mask)
        marks.append(prompts_as_marks(prompts, image.shape))
        scores.append(dice(pred.mask, truth))
    view = slice_view(lc.image.ijk_to_ras_matrix(), axis)
    pictures = choice_thumbnails(view.show(normalize(image, *vrange)), [view.show(m) for m in masks], size=size,
                                 window=(0.0, 1.0), marks=[view.show(m) for m in marks], fill=0.0,
                                 aspect=view.aspect, reference=view.show(truth), margin=0.6)
    return [p[..., :3] for p in pictures], scores, s


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", required=True, type=Path, help="cases CSV (image,label[,label_value][,name])")
    p.add_argument("--out", required=True, type=Path, help="the PNG to write")
    p.add_argument("--axis", type=int, choices=(0, 1, 2), default=0)
    p.add_argument("--size", type=int, default=150, help="pixels per panel")
    p.add_argument("--embedding-cache", help="reuse (and fill) the slices' embeddings in this folder")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = p.parse_args(argv)
    from synthfm.io.checks import PNG_EXTENSIONS, InputError, check_output_file

    try:
        check_output_file(args.out, "--out", PNG_EXTENSIONS, args.overwrite)
    except InputError as exc:
        p.error(str(exc))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from synthfm.io.atomic import atomic_path
    from synthfm.models import load_model
    from synthfm.segment import SlicePredictor

    predictors = {}
    for model in dict.fromkeys(m for m, _, _ in ROWS):
        predictors[model] = SlicePredictor(load_model(model), "cpu")
        predictors[model].use_store(args.embedding_cache)
    structures = first_structures(args.pairs)
    fig, axes = plt.subplots(len(ROWS), len(structures), figsize=(1.45 * len(structures) + 0.6, 1.65 * len(ROWS) + 0.5),
                             squeeze=False)
    for c, (lc, value) in enumerate(structures):
        pictures, scores, s = panels(lc, value, predictors, args.axis, args.size)
        print(f"{lc.case.name} (slice {s}): " + ", ".join(f"{label.replace(chr(10), ' ')} {d:.3f}"
                                                           for (_, _, label), d in zip(ROWS, scores)))
        for r, (picture, d) in enumerate(zip(pictures, scores)):
            ax = axes[r][c]
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"Dice {d:.2f}", fontsize=7, labelpad=1)
            if r == 0:
                ax.set_title(textwrap.fill(lc.case.name.replace("pyradiomics ", ""), 20), fontsize=7)
            if c == 0:
                ax.set_ylabel(ROWS[r][2], fontsize=8)
    fig.tight_layout(pad=0.3, w_pad=0.2, h_pad=1.0)
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
