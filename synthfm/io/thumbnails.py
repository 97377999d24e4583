"""Small pictures of a slice's candidate masks side by side, so that a user can see the choices at once
(the Slicer effect's mask buttons, ``synthfm segment --choices-png``). Plain numpy: no image library needed."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np

from synthfm.io.png import CYAN, GREEN, RED, YELLOW, outline

BOX_MARK = 2  # prompt_marks' value at a box prompt's two corners

MIN_CROP = 24  # pixels of the slice: the smallest region a thumbnail shows, so that a tiny mask keeps its context


def crop_around(masks: Sequence[np.ndarray], shape: Tuple[int, int], margin: float = 0.3,
                aspect: float = 1.0) -> Tuple[slice, slice]:
    """A square region (in physical size: a pixel is ``aspect`` times taller than wide) of a slice of ``shape``
    holding every mask with a ``margin`` (fraction of its size) around them, at least :data:`MIN_CROP` pixels wide
    where the slice allows; the whole slice when every mask is empty."""
    union = np.any(np.stack([np.asarray(m, bool) for m in masks]), axis=0)
    if not union.any():
        return slice(0, shape[0]), slice(0, shape[1])
    rows, cols = np.nonzero(union)
    centre = ((rows.min() + rows.max() + 1) / 2, (cols.min() + cols.max() + 1) / 2)
    side = max((rows.max() - rows.min() + 1) * aspect, cols.max() - cols.min() + 1)  # in column pixels
    side = min(max(np.ceil(side * (1 + 2 * margin)), MIN_CROP), max(shape[0] * aspect, shape[1]))
    out = []
    for c, n, length in zip(centre, shape, (int(np.ceil(side / aspect)), int(side))):
        start = int(round(c - length / 2))
        start = min(max(start, 0), max(n - length, 0))
        out.append(slice(start, min(start + length, n)))
    return out[0], out[1]


def _scales(h: int, w: int, size: int, aspect: float) -> Tuple[float, float]:
    """Thumbnail pixels per row and per column of an ``h`` x ``w`` region fitted to ``size`` in physical shape."""
    scale = size / max(h * aspect, w)
    return scale * aspect, scale


def resize_nearest(array: np.ndarray, size: int, aspect: float = 1.0) -> np.ndarray:
    """``array`` (H, W[, C]) scaled to fit a ``size`` x ``size`` square (nearest neighbour, physical shape kept: a
    pixel is ``aspect`` times taller than wide) and centred on a black square."""
    h, w = array.shape[:2]
    row_scale, col_scale = _scales(h, w, size, aspect)
    oh, ow = min(size, max(1, int(round(h * row_scale)))), min(size, max(1, int(round(w * col_scale))))
    rows = np.minimum((np.arange(oh) + 0.5) / row_scale, h - 1).astype(int)
    cols = np.minimum((np.arange(ow) + 0.5) / col_scale, w - 1).astype(int)
    out = np.zeros((size, size) + array.shape[2:], array.dtype)
    top, left = (size - oh) // 2, (size - ow) // 2
    out[top:top + oh, left:left + ow] = array[rows][:, cols]
    return out


def prompt_marks(shape: Tuple[int, int], positive: Sequence = (), negative: Sequence = (),
                 box: Optional[Sequence] = None) -> np.ndarray:
    """The prompts (x, y) as an int8 image of ``shape``: 1 at positive points, -1 at negative ones, :data:`BOX_MARK`
    at a box's two opposite corners (turn it with the image, then pass it to :func:`choice_thumbnails` as
    ``marks``)."""
    marks = np.zeros(shape, np.int8)
    corners = () if box is None else np.asarray(box, float).reshape(2, 2)
    for points, value in ((corners, BOX_MARK), (positive, 1), (negative, -1)):
        for x, y in np.asarray(points, float).reshape(-1, 2):
            row, col = int(round(y)), int(round(x))
            if 0 <= row < shape[0] and 0 <= col < shape[1]:
                marks[row, col] = value
    return marks


def prompts_as_marks(prompts, shape: Tuple[int, int]) -> np.ndarray:
    """:func:`prompt_marks` of a :class:`synthfm.segment.Prompts` (its points labelled 1 / 0 and its box, if any)."""
    positive = np.asarray(prompts.labels) == 1
    return prompt_marks(shape, prompts.points[positive], prompts.points[~positive], prompts.box)


def _draw_prompts(rgb: np.ndarray, marks: np.ndarray, rows: slice, cols: slice, radius: int,
                  aspect: float = 1.0) -> None:
    """The prompts on a thumbnail: the box (:data:`BOX_MARK` corners of ``marks``, the slice's size) outlined in cyan,
    dots where ``marks`` is 1 (green) or -1 (red); what lies outside the shown region is left out."""
    h, w = marks[rows, cols].shape
    size = rgb.shape[0]
    row_scale, col_scale = _scales(h, w, size, aspect)
    top = (size - min(size, int(round(h * row_scale)))) // 2
    left = (size - min(size, int(round(w * col_scale)))) // 2
    corners = np.argwhere(marks == BOX_MARK)
    if len(corners):  # in thumbnail pixels, clipped to the picture
        (r0, c0), (r1, c1) = corners.min(0), corners.max(0)
        y0, y1 = (np.clip(top + (np.array([r0, r1 + 1]) - rows.start) * row_scale, 0, size - 1)).astype(int)
        x0, x1 = (np.clip(left + (np.array([c0, c1 + 1]) - cols.start) * col_scale, 0, size - 1)).astype(int)
        rgb[[y0, y1], x0:x1 + 1] = CYAN
        rgb[y0:y1 + 1, [x0, x1]] = CYAN
    for value, colour in ((1, GREEN), (-1, RED)):
        for r, c in zip(*np.nonzero(marks[rows, cols] == value)):
            y, x = int(top + (r + 0.5) * row_scale), int(left + (c + 0.5) * col_scale)
            rgb[max(y - radius, 0):y + radius + 1, max(x - radius, 0):x + radius + 1] = colour


def choice_thumbnails(image: np.ndarray, masks: Sequence[np.ndarray], size: int = 64,
                      window: Optional[Tuple[float, float]] = None,
                      marks: Union[None, np.ndarray, Sequence[np.ndarray]] = None,
                      colour: Tuple[int, int, int] = YELLOW, fill: float = 0.35, aspect: float = 1.0,
                      reference: Optional[np.ndarray] = None, margin: float = 0.3) -> np.ndarray:
    """RGBA thumbnails ``(len(masks), size, size, 4)`` uint8 of one slice ``image`` (H, W) with each mask tinted
    (``fill``) and outlined in ``colour``, all over the same square region around the masks and prompts (so that they
    compare at a glance; ``margin``: crop_around's); ``marks`` (:func:`prompt_marks`, one for all masks or one per
    mask): the prompt points as green / red dots, a box outlined; ``reference``: a mask outlined in green on every
    thumbnail (e.g. the truth). ``window`` (low, high): the intensities shown from black to white (default: the
    region's 1st-99th percentiles). Rows and columns keep the image's order: orient the image, masks and marks as the
    user sees them first; ``aspect``: a pixel's height over its width as shown (the pictures keep the physical shape,
    as a view does)."""
    image = np.asarray(image, np.float32)
    if image.ndim != 2 or not masks:
        raise ValueError(f"choice_thumbnails takes one 2D slice and at least one mask, got an image of shape "
                         f"{image.shape} and {len(masks)} masks")
    per_mask = [None] * len(masks) if marks is None else (
        [marks] * len(masks) if isinstance(marks, np.ndarray) else list(marks))
    if len(per_mask) != len(masks):
        raise ValueError(f"marks: give one array for all masks or one per mask ({len(masks)}), got {len(per_mask)}")
    extra = [m for m in per_mask if m is not None] + ([reference] if reference is not None else [])
    if any(np.shape(m) != image.shape for m in list(masks) + extra):
        raise ValueError(f"every mask, the marks and the reference must have the slice's shape {image.shape}, got "
                         f"{[np.shape(m) for m in masks]} and {[np.shape(m) for m in extra]}")
    if size < 8:
        raise ValueError(f"thumbnail size {size} is too small: use at least 8 pixels")
    rows, cols = crop_around(list(masks) + [np.asarray(m) != 0 for m in extra], image.shape, margin=margin,
                             aspect=aspect)
    region = image[rows, cols]
    low, high = window if window is not None else np.percentile(region, [1, 99])
    grey = np.clip((region - low) / max(float(high) - float(low), 1e-6), 0, 1)
    base = resize_nearest(np.repeat((grey * 255)[..., None], 3, axis=2), size, aspect)
    truth = None if reference is None else resize_nearest(np.asarray(reference, bool)[rows, cols], size, aspect)
    pictures = []
    for mask, mask_marks in zip(masks, per_mask):
        m = resize_nearest(np.asarray(mask, bool)[rows, cols], size, aspect)
        rgb = base.copy()
        rgb[m] = (1 - fill) * rgb[m] + fill * np.asarray(colour, np.float32)
        if truth is not None:
            rgb[outline(truth)] = GREEN
        rgb[outline(m)] = colour
        if mask_marks is not None:
            _draw_prompts(rgb, mask_marks, rows, cols, radius=max(1, size // 40), aspect=aspect)
        pictures.append(np.concatenate([rgb.round().astype(np.uint8), np.full((size, size, 1), 255, np.uint8)], 2))
    return np.stack(pictures)
