"""The SynthFM effect's link to its worker process: Slicer's GUI thread only sends requests and applies answers.

:class:`WorkerLink` starts the worker on localhost with Slicer's own Python (``local`` mode, as
SlicerTotalSegmentator starts its processes: ``PythonSlicer`` in Slicer's startup environment) or reaches a
``synthfm serve`` elsewhere (``remote`` mode: URL and token from the settings).  Every method returns at once;
:meth:`WorkerLink.tick`, called from a ``qt.QTimer``, advances the requests (``synthfm.serve.client``: sockets
polled with no wait) and reports through callbacks.  A local worker that crashes is restarted, the volume
uploaded again and the last prompts sent again; what went wrong is always a one-line message.
No Slicer or Qt import here: the effect passes what it needs.
"""
from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import sys
import time
from typing import Any, Callable, Dict, Hashable, Optional, Sequence, Tuple

from synthfm.serve.client import LocalWorker, PendingCall, WorkerClient, WorkerError
from synthfm.serve.protocol import window_text

JOB_POLL_S = 0.1  # propagation progress is asked for this often
ENCODE_POLL_S = 0.5  # ... background encoding progress
MAX_RESTARTS = 3  # a worker that crashes more often than this in one session is left stopped, with the reason


def slicer_python() -> str:
    """Slicer's own Python for the worker: the ``PythonSlicer`` launcher next to Slicer (on Slicer's PATH), else
    the running interpreter."""
    return shutil.which("PythonSlicer") or sys.executable


def core_importable(env: Optional[Dict[str, str]]) -> Dict[str, str]:
    """``env`` (default: this process's) with the folder holding the ``synthfm`` package first on PYTHONPATH: the
    extension installs the core next to its scripted modules, which ``PythonSlicer`` alone does not search."""
    import synthfm

    env = dict(os.environ if env is None else env)
    folder = os.path.dirname(os.path.dirname(os.path.abspath(synthfm.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([folder] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def hidden_console() -> Dict[str, Any]:
    """Popen arguments that keep a console window from opening on Windows (as slicer.util.launchConsoleProcess)."""
    if os.name != "nt":
        return {}
    info = subprocess.STARTUPINFO()
    info.dwFlags, info.wShowWindow = subprocess.STARTF_USESHOWWINDOW, 0
    return {"startupinfo": info}


class WorkerLink:
    """One worker for the effect; callbacks (attributes, set by the effect) receive the answers.

    ``on_status(text)``: the worker's state for the panel; ``on_preview(answer, tag)``: a prompt's answer
    (``synthfm.serve`` predict JSON) with the tag given to :meth:`predict`; ``on_progress(done, total)`` and
    ``on_propagated(result)``: a propagation job; ``on_failed(what, message, tag)``: a request that failed
    (nothing was changed; ``tag``: the failed prediction's, else None); ``on_ready()``: the worker (re)started and
    can take prompts. ``extra_args``: more ``synthfm serve`` options for a local worker (the embedding cache).
    """

    def __init__(self, server_url: str = "", token: str = "", model: str = "synthfm-lite", device: str = "auto",
                 python: Optional[str] = None, env: Optional[Dict[str, str]] = None,
                 local_factory: Callable[..., LocalWorker] = LocalWorker, extra_args: Sequence[str] = ()) -> None:
        self.remote = bool(server_url.strip())
        self.server_url, self.token, self.model, self.device = server_url.strip(), token, model, device
        self.python, self.env, self._local_factory, self.extra_args = python, env, local_factory, list(extra_args)
        self.client_id = secrets.token_hex(4)  # volumes of this Slicer are kept apart from other clients'
        self.local: Optional[LocalWorker] = None
        self.client: Optional[WorkerClient] = None
        self.state, self.message, self.restarts = "stopped", "", 0
        self.on_status = self.on_preview = self.on_progress = self.on_propagated = self.on_failed = None
        self.on_ready = None
        self._health: Optional[PendingCall] = None
        self._volume: Optional[Tuple[Hashable, Callable[[], Any], str, Tuple[float, float, float]]] = None
        self.volume_id: Optional[str] = None
        self._uploaded: Optional[str] = None
        self._upload: Optional[PendingCall] = None
        self._predict: Optional[Tuple[PendingCall, Any]] = None
        self._next_predict: Dict[Hashable, Tuple[Dict[str, Any], Any]] = {}  # per slot, sent in this order
        self.last_predict: Dict[Hashable, Tuple[Dict[str, Any], Any]] = {}  # sent again after a restart
        self._encode_wanted: Optional[Tuple[int, Optional[int]]] = None
        self._encode: Optional[PendingCall] = None
        self.encode_job: Optional[Dict[str, Any]] = None
        self._encode_poll: Tuple[Optional[PendingCall], float] = (None, 0.0)
        self._propagate_wanted: Optional[Dict[str, Any]] = None
        self._propagate: Optional[PendingCall] = None
        self.propagation_job: Optional[str] = None
        self._job_poll: Tuple[Optional[PendingCall], float] = (None, 0.0)
        self._result: Optional[PendingCall] = None

    # ---- what the effect asks ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the local worker or look for the remote one (no wait: :meth:`tick` follows it up)."""
        if self.state in ("starting", "ready"):
            return
        self.state, self.message = "starting", ""
        if self.remote:
            self.client = WorkerClient(self.server_url, self.token)
            self._health = self.client.health()
            self._say(f"Connecting to the SynthFM server {self.server_url} ...")
            return
        self.local = self._local_factory(self.model, self.device, python=self.python or slicer_python(),
                                         env=core_importable(self.env), extra_args=self.extra_args, popen=_popen_hidden)
        self.local.start()
        self._say(f"Starting the SynthFM worker ({self.model}, {self.device}) ...")

    def stop(self) -> None:
        """Stop the local worker (a remote server keeps running; this client's jobs are cancelled)."""
        self.cancel_propagation()
        if self.local is not None:
            self.local.stop()
            self.local = None
        self.client, self.state, self._uploaded = None, "stopped", None
        self._upload = self._predict = self._encode = self._propagate = self._result = None
        self._health, self.encode_job, self.propagation_job, self._next_predict = None, None, None, {}

    def set_volume(self, key: Hashable, array_of: Callable[[], Any], window: Any = "auto",
                   spacing: Tuple[float, float, float] = (1.0, 1.0, 1.0)) -> None:
        """The volume prompts refer to; ``array_of()`` gives its ``(k, j, i)`` array when it must be uploaded
        (again after a worker restart).  ``key`` changes when the volume's voxels do."""
        if self._volume is not None and self._volume[0] == key and self._volume[2] == window_text(window):
            return
        self._volume = (key, array_of, window_text(window), tuple(spacing))
        self.volume_id = f"{self.client_id}:{abs(hash(key)):x}"
        self._uploaded, self._upload, self.encode_job = None, None, None

    def predict(self, axis: int, positive, negative, box, tag: Any = None, slot: Hashable = None,
                candidate: Optional[int] = None, choice_masks: bool = False) -> None:
        """Ask for the preview of these prompts (voxel ijk, one slice); a newer call for the same ``slot`` (e.g. the
        slice) replaces one not sent yet; calls for other slots wait their turn. ``candidate``: the decoder's
        candidate the user chose instead of the model's pick; ``choice_masks``: also the mask each choice gives."""
        request = {"axis": axis, "positive": positive, "negative": negative, "box": box}
        if candidate is not None:  # only when chosen: as any worker version takes the request otherwise
            request["candidate"] = int(candidate)
        if choice_masks:
            request["choice_masks"] = True
        self._next_predict.pop(slot, None)
        self._next_predict[slot] = self.last_predict[slot] = (request, tag)

    def forget(self, slot: Hashable = None) -> None:
        """Drop the prompts of ``slot`` (its prompts were removed): not sent, nor sent again after a restart."""
        self._next_predict.pop(slot, None)
        self.last_predict.pop(slot, None)

    def encode(self, axis: int, around: Optional[int] = None) -> None:
        """Encode the slices along ``axis`` in the worker, nearest to ``around`` first."""
        self._encode_wanted = (axis, around)

    def propagate(self, axis: int, positive, negative, box, direction: str = "both", boxes=(),
                  options: Optional[Dict[str, Any]] = None, candidates: Optional[Dict[int, int]] = None) -> None:
        """Propagation from the prompted slice, or from several (points on several slices, ``boxes`` one per
        slice): the worker fills the slices between them. ``options``: PropagationOptions overrides (none: the
        model's settings); ``candidates``: prompted slice -> the candidate the user chose there."""
        self.cancel_propagation()
        self._propagate_wanted = {"axis": axis, "positive": positive, "negative": negative, "box": box,
                                  "direction": direction, "boxes": list(boxes), "options": dict(options or {})}
        if candidates:  # only when chosen: as any worker version takes the request otherwise
            self._propagate_wanted["candidates"] = {int(k): int(v) for k, v in candidates.items()}

    def cancel_propagation(self) -> None:
        """Stop a running propagation (the worker stops before its next slice); its result is never applied."""
        job, self.propagation_job = self.propagation_job, None
        self._propagate_wanted, self._propagate, self._result = None, None, None
        self._job_poll = (None, 0.0)
        if job is not None and self.client is not None:
            self.client.cancel(job)  # fire and forget: the answer does not matter

    @property
    def busy(self) -> bool:
        """Whether anything is in flight (the effect keeps its timer running while it is); a failed or stopped
        worker has nothing in flight (the next prompt tries again)."""
        if self.state in ("failed", "stopped"):
            return False
        return (self.state == "starting" or any(x is not None for x in (
            self._upload, self._predict, self._next_predict or None, self._encode, self._propagate, self._result,
            self._propagate_wanted, self.propagation_job)) or (self._encode_wanted is not None and self.state == "ready")
            or bool(self.encode_job and self.encode_job.get("state") in ("queued", "running")))

    @property
    def propagating(self) -> bool:
        return any(x is not None for x in (self._propagate_wanted, self._propagate, self.propagation_job, self._result))

    # ---- the timer's work -----------------------------------------------------------------------------------
    def tick(self) -> None:
        """Advance everything without waiting; called by the effect's timer every few tens of milliseconds."""
        if self.state == "starting":
            self._follow_start()
        if self.state != "ready":
            return
        if not self._ensure_volume():
            return
        self._tick_predict()
        self._tick_encode()
        self._tick_propagate()

    def _follow_start(self) -> None:
        if self.remote:
            if self._health is None or not self._health.done():
                return
            call, self._health = self._health, None
            if call.failed:
                return self._give_up(str(call.error))
            return self._ready(f"Connected to the SynthFM server {self.server_url} (model {call.result()['model']}).")
        state = self.local.poll()
        if state == "ready":
            self.client = self.local.client
            return self._ready(f"SynthFM worker ready ({self.model}, {self.device}).")
        if state == "failed":
            self._crashed(self.local.message)

    def _ready(self, text: str) -> None:
        self.state, self._uploaded = "ready", None
        self._say(text)
        if self.last_predict and not self._next_predict and self._predict is None:
            self._next_predict = dict(self.last_predict)  # after a restart: the prompts are kept, previews come back
        if self.on_ready:
            self.on_ready()

    def _give_up(self, message: str) -> None:
        self.state, self.message = "failed", message
        self._say(f"SynthFM worker unavailable: {message}")
        self._fail("the SynthFM worker is unavailable", message)

    def _crashed(self, message: str) -> None:
        """A local worker that stopped: start it again (prompts are kept) unless it keeps failing."""
        was_ready = self.client is not None
        if self.local is not None:
            self.local.stop()
        self.client, self._uploaded, self.state = None, None, "stopped"
        self._upload = self._predict = self._encode = self._propagate = self._result = None
        if self.propagation_job is not None or self._propagate_wanted is not None:
            self.propagation_job = self._propagate_wanted = None
            self._fail("propagation was interrupted", "the worker stopped; press Propagate again")
        self.encode_job = None
        if not was_ready or self.restarts >= MAX_RESTARTS:
            return self._give_up(message)
        self.restarts += 1
        self.start()
        self._say(f"{message}. Restarting the SynthFM worker (your prompts are kept) ...")

    def _ensure_volume(self) -> bool:
        """True once the current volume is on the worker; starts (or follows) its upload otherwise."""
        if self._volume is None:
            return False
        if self._uploaded == self.volume_id:
            return True
        if self._upload is None:
            key, array_of, window, spacing = self._volume
            self._upload = self.client.upload_volume(self.volume_id, array_of(), window, spacing,
                                                     compress=False)
            self._say("Sending the volume to the SynthFM worker ...")
            return False
        if not self._upload.done():
            return False
        call, self._upload = self._upload, None
        if self._check(call, "could not send the volume to the SynthFM worker"):
            self._uploaded = self.volume_id
            self._say(f"SynthFM worker ready ({self.model}, {self.device}).")
            return True
        if self.state == "ready":  # the worker refused it: drop what waited for it (the next request tries again)
            self._next_predict, self._encode_wanted = {}, None
            if self._propagate_wanted is not None:
                self._propagate_wanted = None
                self._fail("propagation failed", "the volume could not be sent")
        return False

    def _tick_predict(self) -> None:
        if self._predict is not None:
            call, tag = self._predict
            if not call.done():
                return
            self._predict = None
            if self._check(call, "could not predict a mask", tag) and self.on_preview:
                self.on_preview(call.result(), tag)
        if self._next_predict and self._predict is None:
            request, tag = self._next_predict.pop(next(iter(self._next_predict)))
            self._predict = (self.client.predict(self.volume_id, **request), tag)

    def _tick_encode(self) -> None:
        if self._encode_wanted is not None and self._encode is None:
            (axis, around), self._encode_wanted = self._encode_wanted, None
            self._encode = self.client.encode(self.volume_id, axis, around)
        if self._encode is not None and self._encode.done():
            call, self._encode = self._encode, None
            if self._check(call, "background encoding did not start"):
                self._encoding(call.result())
        job = self.encode_job
        if job is None or job.get("state") not in ("queued", "running"):
            return
        call, last = self._encode_poll
        if call is None and time.monotonic() - last > ENCODE_POLL_S:
            self._encode_poll = (self.client.job(job["id"]), time.monotonic())
        elif call is not None and call.done():
            self._encode_poll = (None, time.monotonic())
            if not call.failed and self.encode_job is not None and call.result()["id"] == self.encode_job["id"]:
                self._encoding(call.result())

    def _encoding(self, status: Dict[str, Any]) -> None:
        self.encode_job = status
        if status["state"] in ("running", "done"):
            self._say(f"Slices encoded in the background: {status['done']}/{status['total']}"
                      + (" (prompts on them answer fast)." if status["state"] == "done" else " ..."))

    def _tick_propagate(self) -> None:
        if self._propagate_wanted is not None and self._propagate is None and self.propagation_job is None:
            request, self._propagate_wanted = self._propagate_wanted, None
            self._propagate = self.client.propagate(self.volume_id, **request)
        if self._propagate is not None and self._propagate.done():
            call, self._propagate = self._propagate, None
            if self._check(call, "propagation did not start"):
                self.propagation_job = call.result()["id"]
        if self.propagation_job is not None:
            call, last = self._job_poll
            if call is None and time.monotonic() - last > JOB_POLL_S:
                self._job_poll = (self.client.job(self.propagation_job), time.monotonic())
            elif call is not None and call.done():
                self._job_poll = (None, time.monotonic())
                if not self._check(call, "propagation failed"):
                    self.propagation_job = None
                    return
                status = call.result()
                if self.on_progress:
                    self.on_progress(status["done"], status["total"])
                if status["state"] == "done":
                    self._result, self.propagation_job = self.client.job_result(status["id"]), None
                elif status["state"] in ("failed", "cancelled"):
                    self.propagation_job = None
                    if status["state"] == "failed":
                        self._fail("propagation failed", status["error"])
        if self._result is not None and self._result.done():
            call, self._result = self._result, None
            if self._check(call, "could not fetch the propagation result") and self.on_propagated:
                self.on_propagated(call.result())

    def _check(self, call: PendingCall, what: str, tag: Any = None) -> bool:
        """True when ``call`` succeeded; otherwise the failure is reported (and a crashed local worker restarted)."""
        if not call.failed:
            return True
        error = call.error
        if error.status is None and self.local is not None and self.local.poll() == "failed":
            self._crashed(self.local.message)
            return False
        if error.status == 404 and "upload it again" in str(error):  # the server forgot the volume (restarted)
            self._uploaded = None
            self._next_predict.update(self.last_predict)
        self._fail(what, str(error), tag)
        return False

    def _fail(self, what: str, message: str, tag: Any = None) -> None:
        if self.on_failed:
            self.on_failed(what, message, tag)

    def _say(self, text: str) -> None:
        self.message = text
        if self.on_status:
            self.on_status(text)


_LINK: Dict[str, Any] = {"key": None, "link": None}


def shared_link(server_url: str = "", token: str = "", model: str = "synthfm-lite", device: str = "auto",
                env: Optional[Dict[str, str]] = None, python: Optional[str] = None,
                extra_args: Sequence[str] = ()) -> WorkerLink:
    """The one worker link of this Slicer for these settings; a link for other settings stops the previous one
    (its local worker ends: one model in memory).  The local worker also ends when Slicer does."""
    key = (server_url.strip(), token, model, device, tuple(extra_args))
    if _LINK["key"] != key or _LINK["link"] is None:
        if _LINK["link"] is not None:
            _LINK["link"].stop()
        _LINK["key"], _LINK["link"] = key, WorkerLink(server_url, token, model, device, python=python, env=env,
                                                      extra_args=extra_args)
    return _LINK["link"]


def current_link() -> Optional[WorkerLink]:
    return _LINK["link"]


def stop_shared_link() -> None:
    """Stop the worker (Slicer exits; tests)."""
    if _LINK["link"] is not None:
        _LINK["link"].stop()
    _LINK["key"], _LINK["link"] = None, None


atexit.register(stop_shared_link)


def _popen_hidden(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(*args, **kwargs, **hidden_console())
