"""One run per output folder: a lock file naming the run that holds it, and interrupts turned into a clean stop.

``with RunLock(out, "synthfm train"):`` creates ``out/.synthfm.lock`` (pid, host, start time, command)
exclusively; a second run into the same folder is refused with a message naming the first.  A lock
left by a process that died on this host is taken over.  :func:`stop_on_signals` turns SIGINT and
SIGTERM into a :class:`~synthfm.utils.progress.CancelToken` request, so long work stops at its next
check and saves what it has (a second Ctrl-C stops at once).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

from synthfm.io.atomic import PathLike, hostname, pid_alive
from synthfm.io.checks import InputError
from synthfm.utils.progress import CancelToken

LOCK_NAME = ".synthfm.lock"


class RunLock:
    """Exclusive use of an output folder by this process (a context manager)."""

    def __init__(self, folder: PathLike, command: str) -> None:
        self.folder, self.command = Path(folder), command
        self.path = self.folder / LOCK_NAME
        self.taken_over: Optional[dict] = None  # the dead run whose lock was replaced, if any

    def __enter__(self) -> "RunLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": hostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": self.command}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None or holder.get("host") != hostname() or pid_alive(int(holder.get("pid", -1))):
                    raise InputError(self._busy_message(holder)) from None
                self.taken_over = holder  # its process is gone: the lock is stale
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(me, handle)
            return self
        raise InputError(self._busy_message(self._holder()))

    def _holder(self) -> Optional[dict]:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else None
        except (OSError, ValueError):
            return None

    def _busy_message(self, holder: Optional[dict]) -> str:
        if holder is None:
            who = "another run (its lock file cannot be read)"
        else:
            who = (f"'{holder.get('command', 'a run')}' started {holder.get('started', '?')} as pid "
                   f"{holder.get('pid', '?')} on host {holder.get('host', '?')}")
        return (f"{self.folder} is in use by {who}; wait for it to finish or stop it, or choose another --out "
                f"(if that run is gone, delete {self.path})")

    def __exit__(self, *exc) -> None:
        holder = self._holder()
        if holder and holder.get("pid") == os.getpid() and holder.get("host") == hostname():
            with contextlib.suppress(OSError):
                self.path.unlink()


@contextlib.contextmanager
def stop_on_signals(cancel: CancelToken, what: str = "stopping") -> Iterator[CancelToken]:
    """While inside, the first SIGINT/SIGTERM sets ``cancel`` (the work stops at its next check); a second
    SIGINT raises KeyboardInterrupt at once.  The previous handlers are restored on exit."""
    def handler(signum, frame):
        if cancel.cancelled:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        name = signal.Signals(signum).name
        print(f"\n{name} received: {what} (Ctrl-C again stops at once)", file=sys.stderr, flush=True)
        cancel.cancel()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield cancel
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
