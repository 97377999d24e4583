"""Talk to a SynthFM worker (``synthfm serve``) without ever blocking, with the standard library only.

Written for Slicer's GUI thread (SynthFMSegmentLib.worker_client drives it from a ``qt.QTimer``), usable anywhere:

* :class:`PendingCall`: one HTTP request that never blocks: the socket connects without waiting, and
  :meth:`PendingCall.done` looks (``select`` with no timeout) whether the answer has arrived.  The effect polls
  it from a ``qt.QTimer``; scripts and tests may wait with :meth:`PendingCall.wait`.
* :class:`WorkerClient`: the worker's routes (docs/serve.md) as methods returning pending calls.
* :class:`LocalWorker`: starts ``python -m synthfm.cli serve`` on localhost with a given Python (Slicer's own), a random
  token and a free port, tells when it is ready (by polling, never by waiting), explains why it could not start,
  and stops it.  The worker also stops by itself when Slicer ends (its standard input closes).

No Slicer, Qt or torch import here (only ``synthfm.serve.protocol``, which needs numpy): the same code runs in
tests, benchmarks and a Slicer without torch (remote mode).
"""
from __future__ import annotations

import errno
import http.client
import json
import os
import secrets
import select
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from typing import Any, Callable, Dict, List, Optional, Sequence

from synthfm.serve.protocol import TOKEN_ENV, TOKEN_HEADER, volume_bytes

CONNECT_S = 5.0  # give up connecting after this long (an unreachable remote server)
READ_S = 10.0  # once the answer has started to arrive, reading it may take at most this long
PUMP_BYTES = 8 << 20  # bytes of a request body sent per poll (a few ms on a local socket)
_IN_PROGRESS = {errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN, errno.EALREADY, 10035}  # 10035: Windows' WSAEWOULDBLOCK


class WorkerError(RuntimeError):
    """A request failed; ``str(error)`` is a message for people, ``status`` the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.status = status


class PendingCall:
    """An HTTP request in flight.  ``done()`` never blocks; ``result()`` gives the JSON answer or raises WorkerError."""

    def __init__(self, url: str, method: str, path: str, token: str, payload: Any = None, body: bytes = b"",
                 query: Optional[Dict[str, str]] = None, deadline_s: float = 60.0,
                 content_type: str = "application/json") -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise WorkerError(f"worker address '{url}' is not http://host:port; check the SynthFM server settings")
        self.url, self.method, self.token = url.rstrip("/"), method, token
        self.path = path + ("?" + urllib.parse.urlencode(query) if query else "")
        if payload is not None:
            body = json.dumps(payload).encode()
        self._body, self._offset, self.content_type = memoryview(body).cast("B"), 0, content_type
        self.host, self.port = parts.hostname, parts.port or 80
        self.started = time.monotonic()
        self.deadline = self.started + deadline_s
        self._result: Any = None
        self._error: Optional[WorkerError] = None
        self._finished = False
        self._sent = False
        self._conn: Optional[http.client.HTTPConnection] = None
        self._sock: Optional[socket.socket] = None
        try:
            self._connect()
        except OSError as exc:
            self._fail(self._unreachable(exc))

    # ---- steps ---------------------------------------------------------------------------------------
    def _connect(self) -> None:
        family, kind, proto, _, address = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)[0]
        self._sock = socket.socket(family, kind, proto)
        self._sock.setblocking(False)
        code = self._sock.connect_ex(address)
        if code and code not in _IN_PROGRESS:
            raise OSError(code, os.strerror(code))

    def _send(self) -> None:
        """Connected: send the request line and headers; the body follows in :meth:`_pump` as the socket takes it."""
        conn = self._conn = http.client.HTTPConnection(self.host, self.port, timeout=READ_S)
        conn.sock = self._sock
        conn.putrequest(self.method, self.path, skip_accept_encoding=True)
        for key, value in ((TOKEN_HEADER, self.token), ("Content-Type", self.content_type),
                           ("Content-Length", str(len(self._body)))):
            conn.putheader(key, value)
        self._sock.settimeout(READ_S)  # headers are small: sent at once
        conn.endheaders()
        self._sock.setblocking(False)
        self._sent = True

    def _pump(self) -> None:
        """Send what the socket takes now (at most :data:`PUMP_BYTES` per call: a large upload never blocks)."""
        budget = PUMP_BYTES
        while self._offset < len(self._body) and budget > 0:
            try:
                n = self._sock.send(self._body[self._offset:self._offset + min(budget, 1 << 20)])
            except (BlockingIOError, InterruptedError):
                return
            self._offset += n
            budget -= n

    def _receive(self) -> None:
        self._sock.settimeout(READ_S)  # the answer has started to arrive: read it whole
        response = self._conn.getresponse()
        data = response.read()
        self._close()
        try:
            answer = json.loads(data.decode() or "null")
        except ValueError:
            answer = None
        if response.status >= 400:
            detail = answer.get("detail") if isinstance(answer, dict) else None
            if isinstance(detail, list):  # FastAPI's validation errors: say which field
                detail = "; ".join(f"{'.'.join(str(v) for v in d.get('loc', [])[1:])}: {d.get('msg')}" for d in detail)
            self._fail(WorkerError(f"{detail or data[:200].decode(errors='replace') or response.reason}",
                                   response.status))
            return
        self._result, self._finished = answer, True

    # ---- polling -------------------------------------------------------------------------------------
    def done(self) -> bool:
        """Advance without blocking; True once the answer (or a failure) is there."""
        if self._finished:
            return True
        try:
            if not self._sent:
                _, writable, failed = select.select([], [self._sock], [self._sock], 0)
                if failed or writable:
                    code = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if code:
                        raise OSError(code, os.strerror(code))
                    self._send()
            if self._sent and self._offset < len(self._body):
                self._pump()
            if self._sent and self._offset >= len(self._body):
                readable, _, _ = select.select([self._sock], [], [], 0)
                if readable:
                    self._receive()
        except (OSError, http.client.HTTPException) as exc:
            self._fail(self._unreachable(exc) if not self._sent else
                       WorkerError(f"the SynthFM worker at {self.url} stopped answering ({exc}); it may have crashed"))
        if not self._finished and time.monotonic() > self.deadline:
            self._fail(WorkerError(f"the SynthFM worker at {self.url} did not answer {self.method} {self.path} within "
                                   f"{self.deadline - self.started:.0f} s" if self._sent else
                                   f"cannot reach the SynthFM worker at {self.url} (no connection within "
                                   f"{self.deadline - self.started:.0f} s): check the address and that it runs"))
        return self._finished

    def wait(self, timeout: float = 30.0) -> Any:
        """Block until the answer is there (scripts, tests, benchmarks; never from Slicer's GUI thread)."""
        end = time.monotonic() + timeout
        while not self.done():
            if time.monotonic() > end:
                self.close()
                raise WorkerError(f"no answer from the SynthFM worker at {self.url} within {timeout} s")
            if self._sock is not None:
                sending = not self._sent or self._offset < len(self._body)
                select.select([] if sending else [self._sock], [self._sock] if sending else [], [], 0.005)
        return self.result()

    def result(self) -> Any:
        if not self._finished:
            raise WorkerError("the answer has not arrived yet")
        if self._error is not None:
            raise self._error
        return self._result

    @property
    def failed(self) -> bool:
        return self._finished and self._error is not None

    @property
    def error(self) -> Optional[WorkerError]:
        return self._error

    def close(self) -> None:
        """Give up on the answer (the worker still finishes what it started)."""
        self._close()
        if not self._finished:
            self._fail(WorkerError("the request was abandoned"))

    def _close(self) -> None:
        for thing in (self._conn, self._sock):
            if thing is not None:
                try:
                    thing.close()
                except OSError:
                    pass
        self._conn = self._sock = None

    def _fail(self, error: WorkerError) -> None:
        self._close()
        self._error, self._finished = error, True

    def _unreachable(self, exc: Exception) -> WorkerError:
        return WorkerError(f"cannot reach the SynthFM worker at {self.url} ({getattr(exc, 'strerror', None) or exc}): "
                           "check the address and that the worker runs")


class WorkerClient:
    """The worker's routes (see docs/serve.md); every method returns a :class:`PendingCall`."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url.rstrip("/"), token

    def call(self, method: str, path: str, payload: Any = None, **kwargs) -> PendingCall:
        return PendingCall(self.url, method, path, self.token, payload, **kwargs)

    def health(self) -> PendingCall:
        return self.call("GET", "/health", deadline_s=CONNECT_S)

    def info(self) -> PendingCall:
        return self.call("GET", "/info")

    def use_model(self, name: str) -> PendingCall:
        return self.call("POST", "/model", {"name": name}, deadline_s=300.0)

    def upload_volume(self, volume_id: str, array, window: str = "auto", spacing: Sequence[float] = (1, 1, 1),
                      compress: bool = False) -> PendingCall:
        """Send a ``(Z, Y, X)`` numpy array: its bytes stream out while :meth:`PendingCall.done` is polled
        (zlib-compressed first if ``compress``, for slow networks)."""
        body, query = volume_bytes(array, compress)
        query.update(window=window, spacing=",".join(str(float(s)) for s in spacing))
        return self.call("PUT", f"/volumes/{_quote(volume_id)}", body=body, query=query, deadline_s=300.0,
                         content_type="application/octet-stream")

    def volume_from_path(self, volume_id: str, path: str, window: str = "auto",
                         spacing: Optional[Sequence[float]] = None) -> PendingCall:
        payload = {"path": path, "window": window, "spacing": list(spacing) if spacing is not None else None}
        return self.call("POST", f"/volumes/{_quote(volume_id)}/from-path", payload, deadline_s=300.0)

    def volume(self, volume_id: str) -> PendingCall:
        return self.call("GET", f"/volumes/{_quote(volume_id)}")

    def remove_volume(self, volume_id: str) -> PendingCall:
        return self.call("DELETE", f"/volumes/{_quote(volume_id)}")

    def predict(self, volume_id: str, axis: int, positive=(), negative=(), box=None, candidates: bool = False,
                candidate: Optional[int] = None, choice_masks: bool = False) -> PendingCall:
        request = dict(_prompts(axis, positive, negative, box), candidates=candidates)
        if candidate is not None:
            request["candidate"] = int(candidate)
        if choice_masks:  # only when asked: as any worker version takes the request otherwise
            request["choice_masks"] = True
        return self.call("POST", f"/volumes/{_quote(volume_id)}/predict", request, deadline_s=120.0)

    def encode(self, volume_id: str, axis: int, around: Optional[int] = None) -> PendingCall:
        return self.call("POST", f"/volumes/{_quote(volume_id)}/encode", {"axis": axis, "around": around})

    def propagate(self, volume_id: str, axis: int, positive=(), negative=(), box=None, direction: str = "both",
                  options: Optional[Dict[str, Any]] = None, boxes: Sequence = (),
                  candidates: Optional[Dict[int, int]] = None) -> PendingCall:
        """Propagation job; points (and ``boxes``, one per slice) on several slices: the slices between are filled;
        ``candidates``: prompted slice -> the candidate chosen there."""
        request = dict(_prompts(axis, positive, negative, box), direction=direction, options=options or {})
        if candidates:
            request["candidates"] = {str(k): int(v) for k, v in candidates.items()}
        if boxes:
            request["boxes"] = [[[float(v) for v in corner] for corner in b] for b in boxes]
        return self.call("POST", f"/volumes/{_quote(volume_id)}/propagate", request)

    def job(self, job_id: str) -> PendingCall:
        return self.call("GET", f"/jobs/{_quote(job_id)}")

    def job_result(self, job_id: str) -> PendingCall:
        return self.call("GET", f"/jobs/{_quote(job_id)}/result", deadline_s=120.0)

    def cancel(self, job_id: str) -> PendingCall:
        return self.call("DELETE", f"/jobs/{_quote(job_id)}")


def _quote(part: str) -> str:
    return urllib.parse.quote(str(part), safe="")


def _prompts(axis: int, positive, negative, box) -> Dict[str, Any]:
    as_list = lambda pts: [[float(v) for v in p] for p in pts]  # noqa: E731
    return {"axis": int(axis), "positive": as_list(positive), "negative": as_list(negative),
            "box": as_list(box) if box is not None else None}


class LocalWorker:
    """``synthfm serve`` on localhost, started by the effect; ``poll()`` says starting / ready / failed."""

    STARTUP_S = 180.0  # torch's first import on a cold disk can take a minute

    def __init__(self, model: str = "synthfm-lite", device: str = "auto", python: Optional[str] = None,
                 env: Optional[Dict[str, str]] = None, extra_args: Sequence[str] = (),
                 popen: Callable[..., subprocess.Popen] = subprocess.Popen) -> None:
        self.model, self.device = model, device
        self.python = python or sys.executable
        self.env, self.extra_args, self._popen = env, list(extra_args), popen
        self.token = secrets.token_urlsafe(24)
        self.folder = tempfile.mkdtemp(prefix="synthfm-worker-")
        self.port_file = os.path.join(self.folder, "port.json")
        self.log_path = os.path.join(self.folder, "worker.log")
        self.process: Optional[subprocess.Popen] = None
        self.client: Optional[WorkerClient] = None
        self.state, self.message, self.started_at = "stopped", "", 0.0

    @property
    def command(self) -> List[str]:
        return [self.python, "-m", "synthfm.cli", "serve", "--host", "127.0.0.1", "--port", "0",
                "--model", self.model, "--device", self.device, "--allow-paths", "--exit-with-stdin",
                "--port-file", self.port_file, *self.extra_args]

    def start(self) -> None:
        """Start the process (returns at once); the token travels in the environment, not on the command line."""
        self.stop()
        for path in (self.port_file,):
            if os.path.exists(path):
                os.remove(path)
        env = dict(self.env if self.env is not None else os.environ)
        env[TOKEN_ENV] = self.token
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.client, self.state, self.message, self.started_at = None, "starting", "", time.monotonic()
        log = open(self.log_path, "ab")
        try:
            self.process = self._popen(self.command, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                       env=env, cwd=self.folder)
        except OSError as exc:
            self.state = "failed"
            self.message = f"could not start the SynthFM worker with {self.python}: {exc}"
        finally:
            log.close()

    def poll(self) -> str:
        """Look (without waiting) whether the worker is ready, still starting, or failed (``message`` says why)."""
        if self.state in ("failed", "stopped"):
            return self.state
        code = self.process.poll() if self.process is not None else None
        if code is not None:
            self.state = "failed"
            self.message = f"the SynthFM worker stopped (exit code {code}): {self.log_reason()}"
            return self.state
        if self.state == "starting":
            if os.path.exists(self.port_file):
                with open(self.port_file) as f:
                    port = json.load(f)["port"]
                self.client, self.state = WorkerClient(f"http://127.0.0.1:{port}", self.token), "ready"
            elif time.monotonic() - self.started_at > self.STARTUP_S:
                self.stop()
                self.state = "failed"
                self.message = (f"the SynthFM worker did not start within {self.STARTUP_S:.0f} s: "
                                f"{self.log_reason() or 'no message'} (log: {self.log_path})")
        return self.state

    def log_reason(self) -> str:
        """The worker's own error line (``synthfm serve: error: ...``), else the last line of its log."""
        try:
            with open(self.log_path, errors="replace") as f:
                lines = [line.strip() for line in f if line.strip()]
        except OSError:
            return ""
        for line in reversed(lines):
            if line.startswith("synthfm serve: error:"):
                return line[len("synthfm serve: error:"):].strip()
        return lines[-1] if lines else ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, wait_s: float = 1.0) -> None:
        """Terminate the worker (then kill it if it has not ended after ``wait_s``: the caller may be a GUI)."""
        process, self.process = self.process, None
        self.state, self.client = "stopped", None
        if process is None:
            return
        if process.stdin is not None:
            try:
                process.stdin.close()
            except OSError:
                pass
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(wait_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(wait_s)
