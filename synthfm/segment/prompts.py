"""Prompts on one 2D slice: positive/negative points and a box, validated against the slice size."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np


@dataclass
class Prompts:
    """Points ``(N, 2)`` as pixel ``(x, y)``, labels ``(N,)`` (1 positive, 0 negative), box ``x0, y0, x1, y1``."""

    points: np.ndarray
    labels: np.ndarray
    box: Optional[np.ndarray] = None
    mask_logits: Optional[np.ndarray] = None  # (256, 256) low-res logits from a previous prediction

    @classmethod
    def make(cls, positive: Sequence[Sequence[float]] = (), negative: Sequence[Sequence[float]] = (),
             box: Optional[Sequence[float]] = None) -> "Prompts":
        pts = [tuple(p) for p in positive] + [tuple(p) for p in negative]
        points = np.asarray(pts, np.float64).reshape(-1, 2)
        labels = np.array([1] * len(positive) + [0] * len(negative), np.int64)
        return cls(points, labels, None if box is None else np.asarray(box, np.float64).reshape(4))

    @property
    def empty(self) -> bool:
        return len(self.labels) == 0 and self.box is None and self.mask_logits is None

    @property
    def points_alone(self) -> bool:
        """Points without a box (no mask input either): where a thin strip deserves a warning."""
        return self.box is None and self.mask_logits is None and len(self.labels) > 0

    @property
    def ambiguous(self) -> bool:
        """A single point without a box may mean a part or the whole: SAM predicts several masks then."""
        return self.box is None and len(self.labels) == 1

    def validate(self, height: int, width: int) -> None:
        """Raise ValueError for empty prompts or coordinates outside a ``height x width`` slice."""
        if self.empty:
            raise ValueError("no prompts given: add at least one positive point or a box")
        if len(self.labels) and not (self.labels == 1).any() and self.box is None:
            raise ValueError("only negative points given: add a positive point or a box inside the structure")
        for (x, y), lab in zip(self.points, self.labels):
            if not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5):
                kind = "positive" if lab else "negative"
                raise ValueError(f"{kind} point ({x:g}, {y:g}) lies outside the {width}x{height} slice "
                                 f"(x must be in 0..{width - 1}, y in 0..{height - 1})")
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if x1 < x0 or y1 < y0:
                raise ValueError(f"box {tuple(self.box)} must be x0, y0, x1, y1 with x0 <= x1 and y0 <= y1")
            if x0 < -0.5 or y0 < -0.5 or x1 > width - 0.5 or y1 > height - 0.5:
                raise ValueError(f"box {tuple(self.box)} extends outside the {width}x{height} slice")


#: Points alone on a slice whose physical height and width differ more than ``1 / THIN_STRIP`` times get a warning:
#: on the real sets such strips (coronal/sagittal slices of short CT crops) let one point take a whole tissue band.
THIN_STRIP = 0.25


def thin_strip_note(shape: Tuple[int, int], spacing: Tuple[float, float]) -> Optional[str]:
    """"a 40 x 500 mm strip: ..." for a slice of ``shape`` (rows, columns) pixels of ``spacing`` (rows, columns) mm
    that is a thin strip (:data:`THIN_STRIP`), said when points without a box prompt it; None otherwise."""
    height, width = shape[0] * spacing[0], shape[1] * spacing[1]
    if min(height, width) > THIN_STRIP * max(height, width):
        return None
    return (f"a {height:.0f} x {width:.0f} mm strip: points alone there can take a whole band of tissue and carry it "
            "through the volume; a box is the safer prompt")


COORDS = ("ijk", "lps", "ras")


def load_prompt_file(path: Path) -> Dict[str, Any]:
    """Read and check a prompts JSON: ``{"coords": "ijk"|"lps"|"ras", "points": [[..3..], ...], "negative":
    [...], "box": [[..3..], [..3..]], "boxes": [box, box, ...], "axis": 0|1|2}`` (a box: two opposite corners on
    one slice; ``boxes``: one box on each of several slices).

    ``coords`` (default ``ijk``) applies to this file's prompts only."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"prompts file {path} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"prompts file {path} must hold a JSON object with points/negative/box (docs/segment.md)")
    unknown = set(data) - {"coords", "points", "negative", "box", "boxes", "axis"}
    if unknown:
        raise ValueError(f"prompts file {path} has unknown keys {sorted(unknown)}; allowed: coords, points, "
                         "negative, box, boxes, axis")
    if data.get("coords", "ijk") not in COORDS:
        raise ValueError(f"prompts file {path}: \"coords\": {json.dumps(data['coords'])} is not one of "
                         f"{', '.join(COORDS)}")
    if "axis" in data and (isinstance(data["axis"], bool) or data["axis"] not in (0, 1, 2)):
        raise ValueError(f"prompts file {path}: \"axis\": {json.dumps(data['axis'])} must be 0 (axial), "
                         "1 (coronal) or 2 (sagittal)")
    for key, count in (("points", None), ("negative", None), ("box", 2)):
        value = data.get(key, [])
        ok = _is_point_list(value)
        if not ok or (count is not None and key in data and len(value) != count):
            shape = "two corners [[x, y, z], [x, y, z]]" if count else "a list of [x, y, z] points"
            raise ValueError(f"prompts file {path}: \"{key}\" must be {shape} (numbers)")
    boxes = data.get("boxes", [])
    if not isinstance(boxes, list) or not all(_is_point_list(b) and len(b) == 2 for b in boxes):
        raise ValueError(f"prompts file {path}: \"boxes\" must be a list of boxes, each two corners "
                         "[[x, y, z], [x, y, z]] (numbers)")
    return data


def _is_point_list(value: Any) -> bool:
    """``value`` is a JSON list of ``[x, y, z]`` finite numbers."""
    return isinstance(value, list) and all(
        isinstance(p, list) and len(p) == 3 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 and np.isfinite(v) for v in p) for p in value)


def to_index(volume, points: List[Sequence[float]], coords: str) -> np.ndarray:
    """Points given as voxel ``ijk`` or physical ``lps``/``ras`` mm -> continuous voxel indices (i, j, k)."""
    pts = np.asarray(points, np.float64).reshape(-1, 3)
    if coords == "ijk":
        return pts
    if coords == "lps":
        return np.array([volume.lps_to_index(p) for p in pts]).reshape(-1, 3)
    if coords == "ras":
        return np.array([volume.ras_to_index(p) for p in pts]).reshape(-1, 3)
    raise ValueError(f"unknown coordinate system '{coords}'; use ijk, lps or ras")
