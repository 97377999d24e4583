"""Trivial floors that give the numbers meaning: an ellipse in the box, region growing from the point."""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from synthfm.segment.preprocess import intensity_range, normalize
from synthfm.segment.prompts import Prompts


class EllipseFloor:
    """Box prompts: the ellipse inscribed in the box."""

    name = "floor-ellipse"
    needs = "box"

    def predict(self, image: np.ndarray, prompts: Prompts) -> np.ndarray:
        x0, y0, x1, y1 = prompts.box
        yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, max((x1 - x0) / 2, 0.5), max((y1 - y0) / 2, 0.5)
        return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1


class RegionGrowingFloor:
    """Point prompts: the connected region around the positive points whose intensity stays close to theirs."""

    name = "floor-region-growing"
    needs = "points"

    def __init__(self, tolerance_sd: float = 2.5, min_tolerance: float = 0.05) -> None:
        self.tolerance_sd, self.min_tolerance = tolerance_sd, min_tolerance

    def predict(self, image: np.ndarray, prompts: Prompts) -> np.ndarray:
        img = normalize(image, *intensity_range(image, "percentile"))
        seeds = [(int(round(y)), int(round(x))) for (x, y), lab in zip(prompts.points, prompts.labels) if lab == 1]
        out = np.zeros(img.shape, bool)
        for y, x in seeds:
            patch = img[max(0, y - 2): y + 3, max(0, x - 2): x + 3]
            tol = max(self.tolerance_sd * patch.std(), self.min_tolerance)
            comps, _ = ndi.label(np.abs(img - patch.mean()) <= tol)
            if comps[y, x]:
                out |= comps == comps[y, x]
        return out


FLOORS = {f.name: f for f in (EllipseFloor(), RegionGrowingFloor())}
