"""Atomic file writes: write to a temporary file in the same folder, then rename over the target.

A crash or a cancel never leaves a half-written checkpoint, segmentation or cache behind, and an
existing file is replaced only once its successor is complete.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_path(target: PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is renamed to ``target``.

    The temporary name keeps the target's suffixes (e.g. ``.nii.gz``) so writers that pick a
    format from the extension (SimpleITK, PIL, torch) behave as for the real name.
    Raises ``FileExistsError`` when ``overwrite`` is False and ``target`` exists.
    """
    target = Path(target)
    if not overwrite and target.exists():
        raise FileExistsError(f"{target} already exists; choose another path or allow overwriting")
    parent = target.parent if str(target.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes) or ".tmp"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(target: PathLike, data: bytes, overwrite: bool = True) -> Path:
    """Write ``data`` to ``target`` atomically and return the target path."""
    with atomic_path(target, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: PathLike, text: str, overwrite: bool = True) -> Path:
    """Write UTF-8 ``text`` to ``target`` atomically and return the target path."""
    return atomic_write_bytes(target, text.encode("utf-8"), overwrite=overwrite)
