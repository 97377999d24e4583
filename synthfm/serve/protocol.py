"""The worker's wire format, shared by the server and the Slicer client (numpy only, no torch, no web code).

Masks travel as ``{"shape": [...], "offset": [...], "bits": base64(packbits(mask))}``: ``offset`` places a
cropped block inside the full array (propagation results are cropped to the structure's bounding box).
Volumes are uploaded as raw C-ordered bytes (optionally zlib-compressed) with their shape and dtype.
"""
from __future__ import annotations

import base64
import zlib
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

API_VERSION = 1
TOKEN_HEADER = "X-SynthFM-Token"
TOKEN_ENV = "SYNTHFM_TOKEN"
VOLUME_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")


def encode_mask(mask: np.ndarray, crop: bool = False) -> Dict[str, object]:
    """A boolean array as JSON-able packed bits; ``crop`` keeps only the bounding box of its true voxels."""
    mask = np.asarray(mask, bool)
    full = list(mask.shape)
    offset = [0] * mask.ndim
    if crop and mask.any():
        spans = [np.nonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != d)))[0] for d in range(mask.ndim)]
        offset = [int(s[0]) for s in spans]
        mask = mask[tuple(slice(s[0], s[-1] + 1) for s in spans)]
    return {"full_shape": full, "offset": offset, "shape": list(mask.shape),
            "bits": base64.b64encode(np.packbits(mask, axis=None).tobytes()).decode("ascii")}


def decode_mask(data: Dict[str, object]) -> np.ndarray:
    """The boolean array of :func:`encode_mask`, at its full shape (a cropped block is put back in place)."""
    shape = tuple(int(v) for v in data["shape"])
    bits = np.frombuffer(base64.b64decode(data["bits"]), np.uint8)
    block = np.unpackbits(bits, count=int(np.prod(shape)) if shape else 0).astype(bool).reshape(shape)
    full_shape = tuple(int(v) for v in data.get("full_shape", shape))
    if full_shape == shape:
        return block
    out = np.zeros(full_shape, bool)
    offset = [int(v) for v in data["offset"]]
    out[tuple(slice(o, o + s) for o, s in zip(offset, shape))] = block
    return out


def volume_bytes(array: np.ndarray, compress: bool = False) -> Tuple[memoryview, Dict[str, str]]:
    """A volume as an upload body (a view of its bytes, no copy when already C-ordered) and the query parameters
    that describe it (shape, dtype, compression)."""
    array = np.asarray(array)
    if array.dtype.name not in VOLUME_DTYPES:
        array = array.astype(np.float32)
    body = memoryview(np.ascontiguousarray(array)).cast("B")
    if compress:
        body = memoryview(zlib.compress(body, 1))
    return body, {"shape": ",".join(str(s) for s in array.shape), "dtype": array.dtype.name,
                  "compression": "zlib" if compress else "none"}


def volume_from_bytes(body: bytes, shape: str, dtype: str, compression: str = "none") -> np.ndarray:
    """Inverse of :func:`volume_bytes`, with a message naming what does not fit."""
    try:
        dims = tuple(int(v) for v in shape.split(","))
    except ValueError:
        raise ValueError(f"shape '{shape}' is not three comma-separated whole numbers Z,Y,X") from None
    if len(dims) != 3 or min(dims) < 1:
        raise ValueError(f"shape '{shape}' must be three positive sizes Z,Y,X")
    if dtype not in VOLUME_DTYPES:
        raise ValueError(f"dtype '{dtype}' is not supported; use one of {', '.join(VOLUME_DTYPES)}")
    if compression not in ("none", "zlib"):
        raise ValueError(f"compression '{compression}' is not supported; use none or zlib")
    if compression == "zlib":
        try:
            body = zlib.decompress(body)
        except zlib.error as exc:
            raise ValueError(f"the body is not zlib-compressed data ({exc})") from None
    expected = int(np.prod(dims)) * np.dtype(dtype).itemsize
    if len(body) != expected:
        raise ValueError(f"the body has {len(body)} bytes but a {dtype} volume of shape {dims} needs {expected}")
    return np.frombuffer(body, dtype).reshape(dims)


def parse_window(text: Optional[str]):
    """``auto``/``percentile``/a CT preset name, or ``low,high`` -> what ``intensity_range`` takes."""
    text = (text or "auto").strip()
    if "," in text:
        try:
            lo, hi = (float(v) for v in text.split(","))
        except ValueError:
            raise ValueError(f"window '{text}' is neither a preset name nor two numbers low,high") from None
        return (lo, hi)
    return text


def window_text(window) -> str:
    """Inverse of :func:`parse_window` (for query strings and settings)."""
    if isinstance(window, (tuple, list)):
        return f"{float(window[0])!r},{float(window[1])!r}"
    return str(window)


def points_list(points: Optional[Sequence[Sequence[float]]]) -> list:
    """Prompt points as plain lists of floats (JSON)."""
    return [[float(v) for v in p] for p in (points or [])]
