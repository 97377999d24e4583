"""Atomic file writes: write to a temporary file in the same folder, then rename over the target.

A crash or a cancel never leaves a half-written checkpoint, segmentation or cache behind, and an
existing file is replaced only once its successor is complete.  Temporary names carry the host and
process id (``.label.nii.gz.synthfm-HOST-PID-XXXX.nii.gz``), so :func:`clean_stale_temps` can remove those
left behind by a killed process without touching the ones of a process still writing.
"""
from __future__ import annotations

import contextlib
import glob
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Union

PathLike = Union[str, os.PathLike]
_TEMP = re.compile(r"^\..+\.synthfm-(?P<host>[^-]+)-(?P<pid>\d+)-[^.]+")


def hostname() -> str:
    return socket.gethostname().replace("-", "_") or "host"


def pid_alive(pid: int) -> bool:
    """True if a process with this id runs on this machine (or exists but belongs to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_if_stale(path: Path) -> bool:
    """Delete ``path`` if it is an atomic-write temporary of a process on this host that has died."""
    match = _TEMP.match(path.name)
    if not match or match["host"] != hostname() or pid_alive(int(match["pid"])) or not path.is_file():
        return False
    try:
        path.unlink()
    except OSError:
        return False
    return True


def clean_stale_temps(folder: PathLike, target: Optional[str] = None) -> list:
    """Remove the temporary files of atomic writes in ``folder`` (only those of file ``target`` if given) whose
    process on this host has died, i.e. what killed runs left; returns the removed paths."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    paths = folder.glob(f".{glob.escape(target)}.synthfm-*") if target else folder.iterdir()
    return [p for p in paths if _remove_if_stale(p)]


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
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.synthfm-{hostname()}-{os.getpid()}-", suffix=suffix,
                                    dir=parent)
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
