"""One model user at a time, in priority order: prompts first, then propagation, then background encoding.

Every model call of the worker (a prompt's decode, one slice of a propagation, one slice of background
encoding) holds the gate.  Waiting prompts go before waiting propagation steps, which go before encoding;
encoding also waits until no prompt came for ``quiet_s`` seconds, so a user adjusting a box is not slowed
down by slices being encoded between two of their prompts.
"""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Dict, Iterator

PROMPT, PROPAGATE, ENCODE = 0, 1, 2


class PriorityGate:
    """A lock whose waiters are served by priority (lower first); FIFO is not promised within a priority."""

    def __init__(self, quiet_s: float = 0.5, clock: Callable[[], float] = time.monotonic) -> None:
        self.quiet_s, self._clock = quiet_s, clock
        self._cond = threading.Condition()
        self._busy = False
        self._waiting: Dict[int, int] = {PROMPT: 0, PROPAGATE: 0, ENCODE: 0}
        self._last_prompt = float("-inf")

    def _blocked(self, priority: int) -> float:
        """0 when ``priority`` may go now; otherwise how long to wait before looking again (seconds)."""
        if self._busy or any(self._waiting[p] for p in self._waiting if p < priority):
            return 1.0
        if priority == ENCODE:
            return max(0.0, self._last_prompt + self.quiet_s - self._clock())
        return 0.0

    @contextlib.contextmanager
    def hold(self, priority: int) -> Iterator[None]:
        with self._cond:
            self._waiting[priority] += 1
            try:
                while True:
                    wait = self._blocked(priority)
                    if not wait:
                        break
                    self._cond.wait(timeout=wait)
            finally:
                self._waiting[priority] -= 1
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                if priority == PROMPT:
                    self._last_prompt = self._clock()
                self._cond.notify_all()

    def waiting(self) -> Dict[str, int]:
        """How many model calls wait, by kind (for the info endpoint)."""
        with self._cond:
            return {"prompts": self._waiting[PROMPT], "propagation": self._waiting[PROPAGATE],
                    "encoding": self._waiting[ENCODE], "busy": int(self._busy)}


class GatedPredictor:
    """A SlicePredictor whose model calls (``embed``, ``embed_views``, ``embed_many``, ``predict``)
    and cache writes (``put_embedding``) hold ``gate`` at ``priority`` (one call per slice or pair of slices);
    everything else is the predictor's."""

    def __init__(self, predictor, gate: PriorityGate, priority: int) -> None:
        self._predictor, self._gate, self._priority = predictor, gate, priority

    def __getattr__(self, name: str):
        return getattr(self._predictor, name)

    def embed(self, *args, **kwargs):
        with self._gate.hold(self._priority):
            return self._predictor.embed(*args, **kwargs)

    def predict(self, *args, **kwargs):
        with self._gate.hold(self._priority):
            return self._predictor.predict(*args, **kwargs)

    def put_embedding(self, *args, **kwargs):  # propagation's interpolated embeddings: the cache is shared
        with self._gate.hold(self._priority):
            return self._predictor.put_embedding(*args, **kwargs)

    def embed_views(self, *args, **kwargs):  # a slice and its mirror image: one hold for both
        with self._gate.hold(self._priority):
            return self._predictor.embed_views(*args, **kwargs)

    def embed_many(self, *args, **kwargs):  # propagation's slices ahead, two at a time: one hold for both
        with self._gate.hold(self._priority):
            return self._predictor.embed_many(*args, **kwargs)
