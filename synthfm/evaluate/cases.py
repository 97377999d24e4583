"""Evaluation cases: a CSV of image/label pairs or an MSD / nnU-Net folder, checked before use."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from synthfm.io import Volume, read_volume


@dataclass
class Case:
    name: str
    image: Path
    label: Path
    label_value: Optional[int] = None  # None: every non-zero label in turn


@dataclass
class LoadedCase:
    case: Case
    image: Volume
    label: Volume
    values: List[int]


def read_cases_csv(path: Path) -> List[Case]:
    """``image,label[,label_value][,name]`` rows; paths are relative to the CSV."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cases file {path} does not exist")
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path} is not a readable CSV file ({exc})") from None
    if not rows or not {"image", "label"} <= set(rows[0]):
        raise ValueError(f"{path} needs a header with at least 'image' and 'label' columns")
    cases = []
    for line, row in enumerate(rows, start=2):
        where = f"{path} line {line}"
        image, label = (row.get("image") or "").strip(), (row.get("label") or "").strip()
        if not image or not label:
            raise ValueError(f"{where} has no {'image' if not image else 'label'} cell; give image,label"
                             "[,label_value][,name] on every row")
        value = (row.get("label_value") or "").strip()
        try:
            number = int(value) if value else None
        except ValueError:
            raise ValueError(f"{where}: label_value '{value}' is not a whole number") from None
        if number is not None and number <= 0:
            raise ValueError(f"{where}: label_value {number} must be positive (0 is the background)")
        for what, cell in (("image", image), ("label", label)):
            if not (path.parent / cell).exists():
                raise FileNotFoundError(f"{where}: {what} {path.parent / cell} does not exist (paths are relative "
                                        "to the CSV)")
        cases.append(Case((row.get("name") or "").strip() or Path(image).name.split(".")[0], path.parent / image,
                          path.parent / label, number))
    return cases


def read_msd_folder(root: Path) -> List[Case]:
    """Medical Segmentation Decathlon / nnU-Net layout: ``imagesTr/X(_0000).nii.gz`` + ``labelsTr/X.nii.gz``."""
    root = Path(root)
    images, labels = root / "imagesTr", root / "labelsTr"
    if not images.is_dir() or not labels.is_dir():
        raise FileNotFoundError(f"{root} has no imagesTr/ and labelsTr/ folders")
    cases = []
    for label in sorted(labels.glob("*.nii*")):
        stem = label.name.split(".")[0]
        candidates = [images / label.name, images / label.name.replace(stem, stem + "_0000")]
        image = next((c for c in candidates if c.exists()), None)
        if image is None:
            raise FileNotFoundError(f"no image for {label} in {images} (looked for {[c.name for c in candidates]})")
        cases.append(Case(stem, image, label))
    if not cases:
        raise ValueError(f"{labels} holds no .nii/.nii.gz labels")
    return cases


def load_cases(cases: Sequence[Case], tolerance: float = 1e-3) -> List[LoadedCase]:
    """:func:`load_case` for every case, reading each file once (cases often share an image and a label map)."""
    volumes: Dict[Path, Volume] = {}

    def read(path: Path) -> Volume:
        key = Path(path).resolve()
        if key not in volumes:
            volumes[key] = read_volume(path)
        return volumes[key]

    return [load_case(c, tolerance, read) for c in cases]


def load_case(case: Case, tolerance: float = 1e-3, read: Callable[[Path], Volume] = read_volume) -> LoadedCase:
    """Read and check a case: finite image, an integer label map on the same grid, the requested label present.
    ``read`` reads a volume (e.g. a memo shared by several cases)."""
    from synthfm.io.checks import check_finite, check_integer_labels

    image, label = read(case.image), read(case.label)
    check_finite(image.array, f"case {case.name}: image {case.image}")
    label = label.with_array(check_integer_labels(label.array, f"{case.label} (case {case.name})"))
    if image.shape != label.shape:
        raise ValueError(f"case {case.name}: image {image.shape} and label {label.shape} have different sizes")
    for what, a, b in (("spacing", image.spacing, label.spacing), ("origin", image.origin, label.origin),
                       ("direction", image.direction.ravel(), label.direction.ravel())):
        if not np.allclose(a, b, atol=tolerance, rtol=tolerance):
            raise ValueError(f"case {case.name}: image and label {what} differ ({a} vs {b}); resample the label")
    present = _label_values(label.array)
    if case.label_value is not None:
        if case.label_value not in present:
            raise ValueError(f"case {case.name}: label {case.label_value} is not in {case.label} (has {present})")
        present = [case.label_value]
    if not present:
        raise ValueError(f"case {case.name}: {case.label} has no non-zero label")
    return LoadedCase(case, image, label, present)


def _label_values(labels: np.ndarray) -> List[int]:
    """The non-zero values of an integer label map, ascending (a count per value when none is negative: no sort)."""
    flat = labels.ravel()
    countable = flat.dtype.kind == "i" or (flat.dtype.kind == "u" and flat.dtype.itemsize < 8)
    if flat.size and countable and flat.min() >= 0 and flat.max() < 2 ** 24:
        return [int(v) for v in np.flatnonzero(np.bincount(flat)) if v != 0]
    return sorted(int(v) for v in np.unique(flat) if v != 0)
