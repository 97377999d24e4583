"""SynthFM effect settings kept between Slicer sessions in ``qt.QSettings`` (Slicer's settings file)."""
from __future__ import annotations

import qt

PREFIX = "SynthFM/"


class Settings:
    """``model`` (default synthfm-lite), ``device`` (auto/cpu/cuda), ``window`` (display: the volume's display
    window/level; auto or a named window of the core), ``keep_slices`` ("true": prompts on another slice add to the
    set), and ``server``/``token`` of a remote ``synthfm serve`` (empty server: the effect starts its own worker on
    this machine), read and written through QSettings."""

    defaults = {"model": "synthfm-lite", "device": "auto", "window": "display", "keep_slices": "false", "server": "",
                "token": ""}

    def __getattr__(self, name: str) -> str:
        if name not in Settings.defaults:
            raise AttributeError(name)
        return str(qt.QSettings().value(PREFIX + name, Settings.defaults[name]))

    def __setattr__(self, name: str, value: str) -> None:
        qt.QSettings().setValue(PREFIX + name, value)
