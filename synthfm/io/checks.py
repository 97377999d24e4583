"""Checks of user inputs and outputs, run before any expensive work.

Every command (and the Slicer modules) calls these first: output paths writable, with a known
extension and not already there unless overwriting was asked for; input files present and intact;
option values in range.  A failed check raises :class:`InputError` (a ``ValueError``) whose message
names the problem and the fix, so the command line prints one line and exits with code 2.
"""
from __future__ import annotations

import errno
import gzip
import os
import shutil
import struct
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from synthfm.io.atomic import PathLike, clean_stale_temps

VOLUME_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
PNG_EXTENSIONS = (".png",)
JSON_EXTENSIONS = (".json",)
DEVICES = "auto, cpu, cuda, cuda:N or mps"


class InputError(ValueError):
    """A bad input or output path or option value; the message says what is wrong and how to fix it."""


def warn(message: str) -> None:
    """Tell the user about something suspicious that does not stop the work (one line on stderr)."""
    print(f"warning: {message}", file=sys.stderr)


def _label(option: str, path: PathLike) -> str:
    return f"{option} {path}" if option else str(path)


# ---- output files and folders ----------------------------------------------------------------
def extension(path: PathLike) -> str:
    """The file's extension in lower case, with ``.gz`` kept together with the one before (``.nii.gz``)."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if len(suffixes) >= 2 and suffixes[-1] == ".gz":
        return "".join(suffixes[-2:])
    return suffixes[-1] if suffixes else ""


def check_writable_folder(folder: PathLike, option: str = "--out") -> Path:
    """Raise unless files can be created in ``folder`` (created later if missing: its nearest existing parent
    must be a writable folder).  Probes with a temporary file, so read-only file systems are caught too."""
    folder = Path(folder)
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise InputError(f"{_label(option, folder)}: {existing} is a file, not a folder; choose another path")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InputError(f"{_label(option, folder)}: cannot write in {existing} ({reason}); choose a writable "
                         "folder") from None
    return folder


def check_output_file(path: PathLike, option: str, extensions: Sequence[str], overwrite: bool) -> Path:
    """A file the command will write: not a folder, a known extension, absent unless ``overwrite``, writable.
    Temporaries that killed earlier writes of it left (``synthfm.io.atomic``) are removed."""
    text = str(path)
    if not text.strip():
        raise InputError(f"{option} is empty; give a file name such as out{extensions[0]}")
    path = Path(path)
    if path.is_dir() or text.endswith(("/", os.sep)):
        raise InputError(f"{_label(option, path)} is a folder; give a file name inside it, e.g. "
                         f"{path / ('out' + extensions[0])}")
    if extension(path) not in extensions:
        raise InputError(f"{_label(option, path)}: unknown extension '{extension(path) or '(none)'}'; use one of "
                         f"{', '.join(extensions)}")
    if path.exists() and not overwrite:
        raise InputError(f"{_label(option, path)} already exists; choose another name or add --overwrite to "
                         "replace it")
    check_writable_folder(path.parent if str(path.parent) else Path("."), option)
    clean_stale_temps(path.parent if str(path.parent) else Path("."), path.name)  # what killed runs left
    return path


def check_output_files(folder: PathLike, names: Iterable[str], overwrite: bool, option: str = "--out") -> Path:
    """Files ``names`` the command will write into ``folder``: the folder writable, none of them there unless
    ``overwrite`` (the first ones found are named, so the user sees what would be lost).  Temporaries of
    killed earlier writes in the folder are removed."""
    folder = check_writable_folder(folder, option)
    clean_stale_temps(folder)  # temporaries of killed earlier runs (never a user's file)
    if overwrite or not folder.is_dir():
        return folder
    present = [n for n in names if (folder / n).exists()]
    if present:
        shown = ", ".join(present[:3]) + (f" and {len(present) - 3} more" if len(present) > 3 else "")
        raise InputError(f"{_label(option, folder)} already holds {shown}, which this command would replace; choose "
                         "another folder or add --overwrite")
    return folder


def check_distinct(paths: dict) -> None:
    """Refuse two options naming the same file (e.g. ``--out`` = ``--image`` would replace the input)."""
    seen: dict = {}
    for option, path in paths.items():
        if path is None:
            continue
        key = os.path.realpath(path)
        if key in seen:
            raise InputError(f"{option} and {seen[key]} name the same file {path}; give the output another name")
        seen[key] = option


# ---- input files -----------------------------------------------------------------------------
def check_input_path(path: PathLike, option: str, what: str = "file", folder_ok: bool = False) -> Path:
    """An input that must exist (a file; or a folder too when ``folder_ok``)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{_label(option, path)}: no such {what}; check the path")
    if path.is_dir() and not folder_ok:
        raise InputError(f"{_label(option, path)} is a folder; give the {what} itself")
    return path


@dataclass
class NiftiLayout:
    """Where a NIfTI file's voxels are: byte offset, count, element type (floating point: for NaN checks)."""

    offset: int
    voxels: int
    bitpix: int
    dtype: Optional[np.dtype]  # set for float32/float64 data

    @property
    def data_bytes(self) -> int:
        return self.offset + self.voxels * self.bitpix // 8


def _nifti_layout(header: bytes) -> Optional[NiftiLayout]:
    """The voxel layout a NIfTI-1/2 header describes; None if ``header`` is not NIfTI."""
    for order in "<>":
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            datatype, bitpix = struct.unpack(order + "2h", header[70:74])
            dims = struct.unpack(order + "8h", header[40:56])
            offset = struct.unpack(order + "f", header[108:112])[0]
            break
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540:
            datatype, bitpix = struct.unpack(order + "2h", header[12:16])
            dims = struct.unpack(order + "8q", header[16:80])
            offset = struct.unpack(order + "q", header[168:176])[0]
            break
    else:
        return None
    n = int(dims[0])
    if not 1 <= n <= 7 or bitpix <= 0:
        return None
    voxels = int(np.prod([max(1, int(d)) for d in dims[1:n + 1]], dtype=np.int64))
    dtype = {16: np.dtype(order + "f4"), 64: np.dtype(order + "f8")}.get(int(datatype))
    return NiftiLayout(int(offset), voxels, int(bitpix), dtype)


def verify_image_file(path: PathLike) -> dict:
    """Raise :class:`InputError` for a damaged ``.gz`` stream or a NIfTI file shorter than its header says.

    SimpleITK reads such files without an error and fills the missing voxels with zeros.  It also reads
    NaN/infinite NIfTI voxels as 0, so for floating-point NIfTI data this returns ``{flat index: value}`` of
    the non-finite voxels (in ``(z, y, x)`` C order), for the reader to put back; else an empty dict."""
    path = Path(path)
    compressed = path.name.lower().endswith(".gz")
    is_nifti = extension(path) in (".nii", ".nii.gz")
    if not compressed and not is_nifti:
        return {}
    damaged = (f"could not read {path}: the file is damaged or incomplete (cut off while copying or downloading?); "
               "copy it again or re-export it")
    layout, size, nonfinite, pending = None, 0, {}, b""
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as handle:
            while True:
                chunk = handle.read(1 << 22)
                if not chunk:
                    break
                if size == 0 and is_nifti:
                    layout = _nifti_layout(chunk)
                if layout is not None and layout.dtype is not None:
                    pending = _scan_nonfinite(layout, size, chunk, pending, nonfinite)
                size += len(chunk)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(f"{damaged} ({exc})") from None
    if layout is not None and size < layout.data_bytes:
        raise InputError(f"{damaged}: its header describes {layout.data_bytes} bytes, it holds {size}")
    return nonfinite


def _scan_nonfinite(layout: NiftiLayout, at: int, chunk: bytes, pending: bytes, found: dict) -> bytes:
    """Record the non-finite voxels of ``chunk`` (which starts at byte ``at`` of the file) in ``found``;
    returns the bytes of an element cut by the chunk's end."""
    item = layout.dtype.itemsize
    start = max(layout.offset - at, 0)
    if start >= len(chunk):
        return pending
    first = (at + start - layout.offset - len(pending)) // item  # voxel index of the first element in data
    data = pending + chunk[start:]
    whole = len(data) // item * item
    values = np.frombuffer(data[:whole], layout.dtype)[:max(layout.voxels - first, 0)]
    for i in np.flatnonzero(~np.isfinite(values)):
        found[first + int(i)] = float(values[i])
    return data[whole:]


# ---- voxel values ------------------------------------------------------------------------------
def check_finite(array: np.ndarray, name: str, policy: str = "error", fill_option: str = "") -> np.ndarray:
    """Refuse NaN/infinite voxels (``policy="error"``) or replace them by the lowest finite value, with a
    warning (``policy="fill"``); returns the (possibly new) array.  ``fill_option`` is the option that asks
    for filling (named in the message)."""
    if array.dtype.kind not in "fc":
        return array
    bad = ~np.isfinite(array)
    count = int(bad.sum())
    if not count:
        return array
    if policy != "fill":
        also = f" or add {fill_option} (replaces them by the lowest finite value)" if fill_option else ""
        raise InputError(f"{name} has {count} NaN or infinite voxels, which make the intensity window undefined; "
                         f"fill them in the file{also}")
    finite = array[~bad]
    if not finite.size:
        raise InputError(f"{name} has no finite voxel at all; check the file")
    warn(f"{name}: {count} NaN or infinite voxels replaced by the lowest finite value {float(finite.min()):g}")
    return np.where(bad, finite.min(), array).astype(array.dtype)


def check_not_constant(array: np.ndarray, name: str) -> None:
    """Refuse a volume whose voxels all have one value: there is nothing to segment."""
    if array.size and array.min() == array.max():
        raise InputError(f"{name} has the same value ({array.flat[0]:g}) in every voxel: nothing to segment; "
                         "check that it is the right file and that it was exported completely")


def check_slicing_axis(shape: Sequence[int], axis: int, name: str, fix: str) -> None:
    """Refuse slicing a 2D image (one slice along axis 0) along axis 1 or 2: every slice would be one pixel thick."""
    if axis and shape[0] == 1:
        raise InputError(f"{name} is a 2D image: its one slice lies along axis 0, so --axis {axis} would cut it into "
                         f"one-pixel strips; {fix}")


def check_integer_labels(array: np.ndarray, name: str) -> np.ndarray:
    """A label map as integers; floating-point maps are accepted only when every value is a whole number."""
    if array.dtype.kind in "iub":
        return array
    if array.dtype.kind == "f" and np.isfinite(array).all() and np.array_equal(array, np.round(array)):
        return array.astype(np.int64)
    odd = np.unique(array[~np.isfinite(array) | (array != np.round(array))])[:3]
    raise InputError(f"label map {name} holds non-integer values ({', '.join(f'{v:g}' for v in odd)}): it looks "
                     "like a probability map; threshold it into a label map (0 = background) first")


# ---- option values -----------------------------------------------------------------------------
def check_range(value, option: str, low=None, high=None, why: str = ""):
    """``low <= value <= high`` (either bound optional), else an error naming the valid range."""
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = (f"between {low} and {high}" if low is not None and high is not None else
                  f"at least {low}" if low is not None else f"at most {high}")
        raise InputError(f"{option} {value}: must be {bounds}{' (' + why + ')' if why else ''}")
    return value


def check_device(device: str, option: str = "--device") -> str:
    """``auto``, ``cpu``, ``cuda[:N]`` or ``mps``, and available here; returns the device torch will use."""
    kind, _, number = device.partition(":")
    if kind not in ("auto", "cpu", "cuda", "mps") or (number and not (kind == "cuda" and number.isdigit())):
        raise InputError(f"{option} {device}: unknown device; use {DEVICES}")
    import torch

    if kind == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"{option} {device}: no CUDA GPU is available here; use --device cpu (or auto)")
        if number and int(number) >= torch.cuda.device_count():
            raise InputError(f"{option} {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                             f"numbered from 0")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError(f"{option} mps: Apple's MPS backend is not available here; use --device cpu (or auto)")
    if kind == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def check_model_name(name: str, option: str = "--model", extra: Sequence[str] = ()) -> str:
    """A registry model name, an existing decoder checkpoint, a user model, or one of ``extra``."""
    from synthfm.models.registry import MODEL_REGISTRY, user_models_dir

    if name in extra or name in MODEL_REGISTRY:
        return name
    path = Path(name)
    if path.suffix in (".pt", ".pth") or path.exists():
        check_input_path(path, option, "decoder checkpoint")
        return name
    if (user_models_dir() / f"{name}.pt").is_file():
        return name
    choices = [m for m in MODEL_REGISTRY if m != "tiny-test"] + list(extra)
    raise InputError(f"{option} {name}: unknown model; choose one of {', '.join(choices)} or give a decoder "
                     "checkpoint path (.pt)")


def check_init_decoder(init: str, model: str, option: str = "--init") -> str:
    """A decoder to fine-tune ``model`` from: known (:func:`check_model_name`), for the same encoder and input
    size, and a checkpoint whose tensors fit ``model``'s decoder; only the decoder file is read."""
    check_model_name(init, option)
    from synthfm.models.loader import check_init_decoder as check_fits_model

    try:
        check_fits_model(init, model)
    except (ValueError, FileNotFoundError) as exc:
        raise InputError(f"{option} {init}: {exc}") from None
    return init


def available_memory() -> Optional[int]:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``; None where unknown)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(needed: int, what: str, fix: str) -> None:
    """Refuse work that would need more memory than is available (``what`` and ``fix`` go in the message)."""
    free = available_memory()
    if free is not None and needed > free:
        raise InputError(f"{what} needs about {needed / 2**30:.1f} GiB of memory, more than the {free / 2**30:.1f} "
                         f"GiB available; {fix}")


# ---- disk space --------------------------------------------------------------------------------
def format_bytes(count: float) -> str:
    """``2147483648`` -> ``2.0 GiB`` (for messages)."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def existing_folder(path: PathLike) -> Path:
    """``path`` or its nearest existing parent (where a folder to be created will live)."""
    path = Path(path).absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def free_disk_bytes(folder: PathLike) -> Optional[int]:
    """Bytes free for this user on the file system of ``folder`` (or its nearest existing parent); None if
    unknown."""
    try:
        return shutil.disk_usage(existing_folder(folder)).free
    except OSError:
        return None


def is_disk_full(exc: BaseException) -> bool:
    """True for the errors of a write to a full disk or an exhausted quota."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def check_disk_space(folder: PathLike, needed: int, what: str, fix: str) -> None:
    """Refuse work that would write more than the free space of ``folder``'s disk (``what`` says what needs
    ``needed`` bytes, e.g. ``600 images x 2.0 MiB``; ``fix`` what to do)."""
    free = free_disk_bytes(folder)
    if free is not None and needed > free:
        raise InputError(f"not enough disk space in {existing_folder(folder)}: {what} needs {format_bytes(needed)}, "
                         f"only {format_bytes(free)} are free; {fix}")


# ---- prompts -----------------------------------------------------------------------------------
def check_inside_volume(ijk: np.ndarray, shape_zyx: Sequence[int], what: str) -> None:
    """Voxel indices ``(i, j, k)`` (continuous) must lie inside a ``(Z, Y, X)`` volume."""
    z, y, x = shape_zyx
    for point in np.asarray(ijk, float).reshape(-1, 3):
        if not all(-0.5 <= v < n - 0.5 for v, n in zip(point, (x, y, z))):
            shown = ", ".join(f"{v:g}" for v in np.round(point, 2))
            raise InputError(f"{what} at voxel ({shown}) lies outside the {x}x{y}x{z} volume (i in 0..{x - 1}, "
                             f"j in 0..{y - 1}, k in 0..{z - 1}); check the coordinates and their system "
                             "(ijk, lps or ras)")


def check_contrast(region: np.ndarray, low: float, high: float, what: str, minimum: float = 0.02) -> bool:
    """Warn (and return False) when ``region`` has (almost) no contrast in the window ``low..high``: a mask
    drawn there would mean nothing."""
    if region.size == 0:
        return True
    spread = (float(region.max()) - float(region.min())) / max(high - low, 1e-12)
    if spread < minimum:
        warn(f"{what} has no contrast (intensities {float(region.min()):g}..{float(region.max()):g}, "
             f"{100 * spread:.1f}% of the window): the result is unlikely to be meaningful; check the image and "
             "the prompts")
        return False
    return True
