"""Progress reporting and cancellation shared by the command line and the Slicer modules.

Long-running functions in the core take ``progress: ProgressCallback | None`` and
``cancel: CancelToken | None``.  The command line passes a tqdm-backed callback; Slicer passes one
that updates a progress dialog and a token whose ``cancel()`` is wired to the dialog's button.
"""
from __future__ import annotations

import threading
import weakref
from typing import Callable, Iterable, Iterator, Mapping, Optional, TypeVar

T = TypeVar("T")

#: ``progress(done, total, message)``; ``total`` may be 0 when unknown.
ProgressCallback = Callable[[int, int, str], None]


class Cancelled(RuntimeError):
    """Raised inside long work when the user asked to stop; partial results are discarded safely."""


class CancelToken:
    """A thread-safe flag a user interface sets and long work polls with :meth:`check`."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if cancellation was requested."""
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


def check_cancel(cancel: Optional[CancelToken]) -> None:
    """Raise :class:`Cancelled` if ``cancel`` is set (``None`` never cancels)."""
    if cancel is not None:
        cancel.check()


def report(progress: Optional[ProgressCallback], done: int, total: int, message: str = "") -> None:
    """Call ``progress`` if one was given."""
    if progress is not None:
        progress(done, total, message)


#: The bars :func:`tqdm_progress` has drawn and not yet closed (see :func:`close_progress_bars`).
_OPEN_BARS: "weakref.WeakSet" = weakref.WeakSet()


def tqdm_progress(desc: str = "", unit: str = "it", disable: bool = False,
                  units: Optional[Mapping[str, str]] = None) -> ProgressCallback:
    """A :data:`ProgressCallback` that drives a tqdm bar on stderr, created on first call and again for each phase
    that follows a finished one (a propagation's slices after its adaptation steps, the training images after the
    validation images). ``units``: a phase's unit by how its messages start (``{"adapting": "step"}``), else
    ``unit``."""
    from tqdm.auto import tqdm

    state: dict = {}

    def callback(done: int, total: int, message: str = "") -> None:
        bar = state.get("bar")
        if bar is None:
            phase = next((u for start, u in (units or {}).items() if message.startswith(start)), unit)
            bar = state["bar"] = tqdm(total=total or None, desc=desc, unit=phase, disable=disable)
            _OPEN_BARS.add(bar)
        if total and bar.total != total:
            bar.total = total
        bar.n = done
        if message:
            bar.set_postfix_str(message, refresh=False)
        bar.refresh()
        if total and done >= total:
            _OPEN_BARS.discard(bar)
            state.pop("bar").close()

    return callback


def close_progress_bars() -> None:
    """Close the bars of work that stopped before finishing, so that a message printed next starts its own line."""
    for bar in list(_OPEN_BARS):
        _OPEN_BARS.discard(bar)
        bar.close()


def iterate(items: Iterable[T], total: int, progress: Optional[ProgressCallback] = None,
            cancel: Optional[CancelToken] = None, message: str = "") -> Iterator[T]:
    """Yield ``items`` while reporting progress and honouring cancellation between items."""
    report(progress, 0, total, message)
    for i, item in enumerate(items):
        check_cancel(cancel)
        yield item
        report(progress, i + 1, total, message)
