"""Background jobs of the worker (slice encoding, propagation): progress, result, error and cancel.

Each job runs in its own thread of the worker process (never in Slicer); its model calls go through the
worker's :class:`~synthfm.serve.gate.PriorityGate`, so jobs and prompts take turns on the one model.
"""
from __future__ import annotations

import threading
import time
import traceback
import uuid
from collections import OrderedDict
from typing import Any, Callable, Dict, Optional

from synthfm.utils.progress import CancelToken, Cancelled

KEEP_FINISHED = 64  # finished jobs kept for their clients to read the result


class Job:
    """One background task: ``state`` is queued, running, done, failed or cancelled."""

    def __init__(self, kind: str, volume_id: str, details: Optional[Dict[str, Any]] = None) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.kind, self.volume_id, self.details = kind, volume_id, dict(details or {})
        self.state, self.done, self.total, self.message, self.error = "queued", 0, 0, "", ""
        self.result: Optional[Dict[str, Any]] = None
        self.cancel_token = CancelToken()
        self.started = time.monotonic()
        self.seconds = 0.0

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    def progress(self, done: int, total: int, message: str = "") -> None:
        self.done, self.total, self.message = done, total, message

    def status(self) -> Dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "volume_id": self.volume_id, "state": self.state,
                "done": self.done, "total": self.total, "message": self.message, "error": self.error,
                "seconds": round(self.seconds if self.finished else time.monotonic() - self.started, 3),
                "has_result": self.result is not None, **self.details}


class JobTable:
    """Start, look up and cancel jobs; keeps the last :data:`KEEP_FINISHED` finished ones."""

    def __init__(self) -> None:
        self._jobs: "OrderedDict[str, Job]" = OrderedDict()
        self._lock = threading.Lock()

    def start(self, job: Job, work: Callable[[Job], Optional[Dict[str, Any]]]) -> Job:
        """Run ``work(job)`` in a daemon thread; its return value becomes ``job.result``."""
        with self._lock:
            self._jobs[job.id] = job
            finished = [k for k, j in self._jobs.items() if j.finished]
            for key in finished[:max(0, len(finished) - KEEP_FINISHED)]:
                del self._jobs[key]
        threading.Thread(target=self._run, args=(job, work), name=f"synthfm-{job.kind}-{job.id}", daemon=True).start()
        return job

    @staticmethod
    def _run(job: Job, work: Callable[[Job], Optional[Dict[str, Any]]]) -> None:
        job.state = "running"
        try:
            job.result = work(job)
            job.state = "done"
        except Cancelled:
            job.state = "cancelled"
        except (ValueError, FileNotFoundError) as exc:  # bad input: the message says what to change
            job.error, job.state = str(exc), "failed"
        except Exception as exc:  # noqa: BLE001  a worker bug must reach the client as a message, not vanish
            traceback.print_exc()
            job.error, job.state = f"{type(exc).__name__}: {exc}", "failed"
        job.seconds = time.monotonic() - job.started

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise LookupError(f"job '{job_id}' is not known to this worker (finished long ago, or the worker "
                              "restarted): start it again")
        return job

    def cancel_matching(self, volume_id: str, *kinds: str) -> None:
        """Cancel the unfinished jobs of these kinds on a volume (it was replaced, removed, or re-encoded)."""
        with self._lock:
            jobs = [j for j in self._jobs.values() if j.volume_id == volume_id and j.kind in kinds and not j.finished]
        for job in jobs:
            job.cancel_token.cancel()

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        job.cancel_token.cancel()
        return job

    def cancel_all(self) -> None:
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel_token.cancel()
