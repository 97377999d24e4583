"""A gallery PNG of samples with the target outlined, so a person can judge realism at a glance."""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import numpy as np
from PIL import Image, ImageDraw

from synthfm.io.atomic import PathLike, atomic_path
from synthfm.io.png import YELLOW, overlay


def tile(panels: Sequence[np.ndarray], captions: Sequence[str], columns: int = 6, cell: int = 160) -> Image.Image:
    """Arrange RGB panels in a grid with a caption under each."""
    rows = (len(panels) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * cell, rows * (cell + 14)), (20, 20, 20))
    draw = ImageDraw.Draw(sheet)
    for i, (panel, caption) in enumerate(zip(panels, captions)):
        x, y = (i % columns) * cell, (i // columns) * (cell + 14)
        sheet.paste(Image.fromarray(panel).resize((cell, cell), Image.BILINEAR), (x, y))
        draw.text((x + 3, y + cell + 1), caption[:28], fill=(230, 230, 230))
    return sheet


def write_gallery(samples: List, path: PathLike, columns: int = 6) -> Path:
    """Write a gallery of 2D samples (or the middle slice of 3D ones) to ``path`` atomically."""
    panels, captions = [], []
    for s in samples:
        image, mask = s.image, s.mask
        if image.ndim == 3:
            z = image.shape[0] // 2
            image, mask = image[z], mask[z]
        panels.append(overlay(image, [(mask, YELLOW)]))
        meta = s.meta
        captions.append(f"{meta.get('modality', '?')} {meta.get('target_kind', '')} c={meta.get('contrast', 0):.2f}")
    with atomic_path(path) as tmp:
        tile(panels, captions, columns).save(tmp, format="PNG")
    return Path(path)
