"""One SynthFM training run in its own process, started by the SynthFM Train panel.

    PythonSlicer train_process.py JOB_FOLDER

``JOB_FOLDER/job.json`` holds the :class:`synthfm.train.TrainConfig` settings, ``resume`` and the PID of the Slicer
that started it; the user's labelled volumes (fine-tuning) are ``user_case_<n>.npz`` beside it.  The run appends one
JSON object per line to ``JOB_FOLDER/events.jsonl`` (``progress``, ``data``, ``metrics``, then one of ``done``,
``cancelled``, ``error``), which the panel reads from a QTimer.

It stops, keeping the last checkpoint (the trainer saves on :class:`Cancelled`), when ``JOB_FOLDER/STOP`` appears
(the panel's Cancel), on SIGTERM/SIGINT (the core's ``stop_on_signals``), or when the Slicer that started it is gone
(no orphan training on after a crash).  Like ``synthfm train`` it holds the output folder's run lock.
Only the ``synthfm`` core and the standard library are imported: no Slicer, Qt or VTK.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Optional

JOB, EVENTS, STOP = "job.json", "events.jsonl", "STOP"
PARENT_CHECK_SECONDS = 2.0


def process_alive(pid: int) -> bool:
    """True while process ``pid`` runs.  Windows: its exit code is still STILL_ACTIVE (``os.kill(pid, 0)`` would
    terminate it there); elsewhere the core's signal-0 check."""
    if os.name == "nt":
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        try:
            ok = ctypes.windll.kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        finally:
            ctypes.windll.kernel32.CloseHandle(handle)
        return bool(ok) and code.value == 259  # STILL_ACTIVE
    from synthfm.io.atomic import pid_alive

    return pid_alive(pid)


def stop_token(folder: Path, parent_pid: Optional[int]):
    """A CancelToken that is also set by the STOP file, SIGTERM, or the parent's exit; ``reason`` says which."""
    from synthfm.utils.progress import CancelToken

    class StopToken(CancelToken):
        def __init__(self) -> None:
            super().__init__()
            self.reason, self._checked = "", 0.0

        def cancel(self, reason: str = "cancelled") -> None:
            self.reason = self.reason or reason
            super().cancel()

        @property
        def cancelled(self) -> bool:
            if not super().cancelled:
                if (folder / STOP).exists():
                    self.cancel("cancelled from the SynthFM Train panel")
                elif parent_pid and time.monotonic() - self._checked > PARENT_CHECK_SECONDS:
                    self._checked = time.monotonic()
                    if not process_alive(parent_pid):
                        self.cancel(f"Slicer (process {parent_pid}) exited")
            return super().cancelled

        def check(self) -> None:
            if self.cancelled:
                super().check()

    return StopToken()


def user_cases(folder: Path) -> list:
    """The user's labelled volumes saved by the panel (user_case_0.npz, user_case_1.npz, ...)."""
    import numpy as np

    from synthfm.train import UserCase

    cases = []
    for path in sorted(folder.glob("user_case_*.npz"), key=lambda p: int(p.stem.rsplit("_", 1)[1])):
        with np.load(path) as data:
            labels = [int(v) for v in data["labels"]] or None  # none saved: every non-zero value
            cases.append(UserCase(data["image"], data["label"], labels, str(data["name"])))
    return cases


def main(argv=None) -> int:
    folder = Path((argv if argv is not None else sys.argv[1:])[0])
    job = json.loads((folder / JOB).read_text())
    with open(folder / EVENTS, "a", encoding="utf-8") as events:

        def emit(kind: str, **fields) -> None:
            events.write(json.dumps({"kind": kind, **fields}) + "\n")
            events.flush()

        try:
            from synthfm.train import TrainConfig, train
            from synthfm.utils.progress import Cancelled
            from synthfm.utils.run_lock import RunLock, stop_on_signals

            token = stop_token(folder, job.get("parent_pid"))
            config = TrainConfig(**job["config"], user_data=user_cases(folder))
            emit("started", pid=os.getpid())
            # one run per output folder (a second panel or `synthfm train` into it is refused with a message);
            # SIGTERM/SIGINT set the token like the STOP file
            with RunLock(config.out, "SynthFM Train in 3D Slicer"), stop_on_signals(token, "saving the checkpoint"):
                path = train(config, progress=lambda d, t, m: emit("progress", done=d, total=t, message=m),
                             cancel=token, on_metrics=lambda s, m: emit("metrics", step=s, metrics=m),
                             resume=job.get("resume", True),
                             data_progress=lambda d, t, m: emit("data", done=d, total=t, message=m))
            emit("done", checkpoint=str(path))
        except Cancelled:
            emit("cancelled", reason=token.reason)
        except BaseException as exc:  # noqa: BLE001  reported to the panel, which shows it to the user
            emit("error", message=f"{exc}" or type(exc).__name__, traceback=traceback.format_exc())
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
