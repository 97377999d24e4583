"""Pictures for people: grey slices with coloured mask outlines, written as PNG atomically."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Tuple

import numpy as np
from scipy import ndimage as ndi

from synthfm.io.atomic import PathLike, atomic_path

YELLOW, GREEN, RED, CYAN = (255, 200, 0), (0, 220, 0), (255, 60, 60), (0, 200, 255)


def outline(mask: np.ndarray) -> np.ndarray:
    """One-pixel inner boundary of a boolean mask."""
    return mask & ~ndi.binary_erosion(mask)


def to_rgb(image01: np.ndarray) -> np.ndarray:
    return np.repeat((np.clip(image01, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)


def overlay(image01: np.ndarray, masks: Sequence[Tuple[np.ndarray, Tuple[int, int, int]]]) -> np.ndarray:
    """RGB uint8 of a [0, 1] grey image with each ``(mask, colour)`` outlined."""
    rgb = to_rgb(image01)
    for mask, colour in masks:
        rgb[outline(np.asarray(mask, bool))] = colour
    return rgb


def to_image(rgb: np.ndarray, scale: int = 1, aspect: float = 1.0):
    """An RGB array as a PIL image, enlarged ``scale`` times; ``aspect``: a pixel's height over its width, the rows
    stretched by it so that the picture has square physical pixels, as a viewer shows it."""
    from PIL import Image  # here: the outlines above are used where Pillow may not be installed (Slicer's effect)

    img = Image.fromarray(np.ascontiguousarray(rgb))
    if scale > 1 or aspect != 1.0:
        img = img.resize((img.width * scale, max(1, round(img.height * scale * aspect))), Image.NEAREST)
    return img


def write_png(path: PathLike, rgb: np.ndarray, scale: int = 1, aspect: float = 1.0) -> Path:
    """Write an RGB array to ``path`` atomically (:func:`to_image`'s ``scale`` and ``aspect``)."""
    with atomic_path(path) as tmp:
        to_image(rgb, scale, aspect).save(tmp, format="PNG")
    return Path(path)
