"""SynthFM effect settings kept between Slicer sessions in ``qt.QSettings`` (Slicer's settings file)."""
from __future__ import annotations

import os
from typing import List

import qt

PREFIX = "SynthFM/"
#: the effect's choices for the slices between prompted slices, and the core's ``between`` each one sends (None: the
#: model's own setting)
BETWEEN_FILLS = {"model": None, "registration": "register", "half-way": "mix"}


def default_between_fill() -> str:
    """'registration' where the check box of the release before (SynthFM/register_between) was ticked, else
    'model': a choice made there is kept."""
    return "registration" if str(qt.QSettings().value(PREFIX + "register_between", "false")) == "true" else "model"


def default_embedding_cache() -> str:
    """Where the local worker keeps slice embeddings unless set: ``SynthFM/embeddings`` in Slicer's per-user cache
    location (``QStandardPaths.CacheLocation``: ~/.cache/slicer.org/Slicer on Linux). Not in ``slicer.app.cachePath``
    (its ``SlicerIO`` subfolder): Slicer 5.12 prunes that folder at startup to its own cache size (1 GB by default),
    whole top-level entries oldest first, so it would delete the embeddings, or sample data to make room for them."""
    return os.path.join(qt.QStandardPaths.writableLocation(qt.QStandardPaths.CacheLocation), "SynthFM", "embeddings")


class Settings:
    """``model`` (default synthfm-lite), ``device`` (auto/cpu/cuda), ``window`` (display: the volume's display
    window/level; auto or a named window of the core), ``keep_slices`` ("true": prompts on another slice add to the
    set), ``server``/``token`` of a remote ``synthfm serve`` (empty server: the effect starts its own worker on
    this machine), the local worker's ``embedding_cache`` (the folder where it keeps slice embeddings between
    sessions, default :func:`default_embedding_cache`; empty: in memory only) and ``embedding_cache_gb`` (its size
    cap, default 2), ``encode_every_slice`` ("true": propagation encodes every slice it segments instead of the
    model's ``encode_every``), ``adapt_decoder`` ("false": propagation never adapts the decoder to the volume,
    whatever the model's ``adapt_steps``) and ``between_fill`` (how the slices between prompted slices are filled, a
    key of :data:`BETWEEN_FILLS`; default :func:`default_between_fill`), read and written through QSettings."""

    defaults = {"model": "synthfm-lite", "device": "auto", "window": "display", "keep_slices": "false", "server": "",
                "token": "", "embedding_cache_gb": "2", "encode_every_slice": "false",
                "adapt_decoder": "true"}
    #: defaults computed when read (a folder of the running Slicer, the choice an older setting made)
    computed = {"embedding_cache": default_embedding_cache, "between_fill": default_between_fill}

    def __getattr__(self, name: str) -> str:
        if name in Settings.computed:
            default = Settings.computed[name]()
        elif name in Settings.defaults:
            default = Settings.defaults[name]
        else:
            raise AttributeError(name)
        return str(qt.QSettings().value(PREFIX + name, default))

    def __setattr__(self, name: str, value: str) -> None:
        qt.QSettings().setValue(PREFIX + name, value)

    def worker_arguments(self) -> List[str]:
        """The local worker's command-line options from these settings (``synthfm serve --embedding-cache DIR
        --embedding-cache-gb GB``; none when the folder is empty). The worker checks them and says what is wrong."""
        folder = self.embedding_cache.strip()
        if not folder:
            return []
        return ["--embedding-cache", folder, "--embedding-cache-gb", self.embedding_cache_gb.strip()]
