"""The files of a slice-embedding cache folder (``--embedding-cache``): listed, sized and cleared without torch.

:class:`synthfm.segment.embedding_store.EmbeddingStore` writes ``<root>/<encoder>-<fingerprint>/<xx>/<hash>.npy``:
one folder per encoder and precision (``tinyvit-`` and 20 hex digits), a subfolder named after the first two hex
digits of each file's name (64 hex digits). The store's size cap and the Slicer effect's panel (how much the folder
holds, *Clear cache*) go through these functions, so both count and delete exactly those files: nothing else in the
folder (the user's files, temporaries of writes in progress, links to other folders, files in wrongly named
subfolders) is ever counted or deleted. No torch here: the panel opens before torch is installed.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import List, Tuple, Union

#: hex digits of an encoder's fingerprint in its folder's name
FINGERPRINT_CHARS = 20
_ENCODER_FOLDER = re.compile(r"^\w+-[0-9a-f]{%d}$" % FINGERPRINT_CHARS)
_NAME = re.compile(r"^[0-9a-f]{64}\.npy$")  # a stored embedding (temporaries of atomic writes start with a dot)

#: one embedding file: (modification time in ns, path, size in bytes)
EmbeddingFile = Tuple[int, Path, int]


def encoder_folder(root: Union[str, Path], encoder_name: str, fingerprint: str) -> Path:
    """The folder in ``root`` that holds the embeddings of one encoder (``encoder_name``, e.g. ``tinyvit``) run at
    one precision (``fingerprint``: :data:`FINGERPRINT_CHARS` hex digits)."""
    name = f"{encoder_name}-{fingerprint}"
    if not _ENCODER_FOLDER.match(name):
        raise ValueError(f"not an encoder folder name: {name!r}")
    return Path(root) / name


def embedding_files(folder: Union[str, Path]) -> List[EmbeddingFile]:
    """The embedding files of one encoder folder: plain files ``xx/<64 hex>.npy`` whose name starts with ``xx``, in
    real subfolders (no links followed, none counted); files deleted while listing are left out; an absent folder
    has none."""
    found = []
    try:
        subfolders = [e for e in os.scandir(folder) if len(e.name) == 2 and e.is_dir(follow_symlinks=False)]
    except OSError:
        return found
    for sub in subfolders:
        try:
            entries = list(os.scandir(sub.path))
        except OSError:
            continue
        for entry in entries:
            if not (_NAME.match(entry.name) and entry.name.startswith(sub.name)
                    and entry.is_file(follow_symlinks=False)):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:  # deleted since the listing
                continue
            found.append((info.st_mtime_ns, Path(entry.path), info.st_size))
    return found


def cache_files(root: Union[str, Path]) -> List[EmbeddingFile]:
    """The embedding files of every encoder folder (``<name>-<20 hex>``, a real folder) directly in ``root``."""
    try:
        folders = [e.path for e in os.scandir(root)
                   if _ENCODER_FOLDER.match(e.name) and e.is_dir(follow_symlinks=False)]
    except OSError:  # absent (nothing stored yet), a file, or unreadable
        return []
    return [f for folder in folders for f in embedding_files(folder)]


def cache_usage(root: Union[str, Path]) -> Tuple[int, int]:
    """``(files, bytes)``: how many embeddings the cache folder ``root`` holds, of every encoder, and their size.
    Only lists folders (no file is read): cheap enough for a panel, about a millisecond per 1000 files."""
    files = cache_files(root)
    return len(files), sum(size for _, _, size in files)


def clear_cache(root: Union[str, Path]) -> Tuple[int, int, List[str]]:
    """Delete every embedding file in the cache folder ``root`` (of every encoder) and nothing else; the folders
    stay (a worker writing meanwhile finds them). Returns the files and bytes deleted, and ``path: reason`` for each
    file that could not be deleted; files deleted meanwhile by someone else are skipped."""
    deleted, freed, problems = 0, 0, []
    for _, path, size in cache_files(root):
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror or exc}")
            continue
        deleted, freed = deleted + 1, freed + size
    return deleted, freed, problems
