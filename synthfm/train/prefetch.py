"""On-the-fly training on a GPU: draw the next steps' batches in worker processes while the GPU trains.

What step ``s`` trains on (which images, which target structures, which prompts) depends only on the
run's seed and ``s`` (and the DDP rank): :func:`draw_synthetic` computes it from the step's random key,
in this process or in a worker, with the same result.  :class:`BatchPrefetcher` keeps the next
``depth`` steps in flight on ``workers`` spawned processes, so generation and prompt simulation (about
15-20 ms per sample on one core) overlap the GPU's encoding and decoder steps.  Workers are spawned, not
forked: forking a process that holds a CUDA context is unsafe.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

from synthfm.segment.preprocess import SliceTransform
from synthfm.train.batches import MULTIMASK_MODES, Batch, make_batch
from synthfm.train.embed_cache import SyntheticItems, stack_items

Draw = Tuple[np.random.Generator, List[np.ndarray], Batch]  # the step's generator (state after the draw), images, batch
_WORKER: dict = {}
WAIT_S = 600  # a worker that died (killed for memory) loses its task: give up instead of waiting forever


def draw_indices(rng: np.random.Generator, count: int, k: int, modes: Sequence[str]) -> Tuple[np.ndarray, str]:
    """A step's ``k`` distinct item indices of ``count`` (sorted) and its first-round prompt kind."""
    idx = np.sort(rng.choice(count, k, replace=False))
    return idx, str(rng.choice(modes))


def draw_synthetic(key: Sequence[int], items: SyntheticItems, count: int, batch_size: int, modes: Sequence[str],
                   transform: SliceTransform, multimask_modes: Sequence[str] = MULTIMASK_MODES) -> Draw:
    """Step ``key``'s synthetic batch: images in [0, 1] (to encode) and the prompted batch (CPU tensors)."""
    rng = np.random.default_rng(list(key))
    idx, mode = draw_indices(rng, count, batch_size, modes)
    drawn = items(idx)
    labels, targets = stack_items(drawn)
    return rng, [it[0] for it in drawn], make_batch(rng, labels, targets, idx, transform, mode, multimask_modes)


def _init_worker(args: tuple) -> None:
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the trainer stops
    torch.set_num_threads(1)                       # at the end of its step, then ends the workers
    _WORKER["args"] = args


def _draw_in_worker(key: Sequence[int]) -> Draw:
    return draw_synthetic(key, *_WORKER["args"])


@contextlib.contextmanager
def _single_threaded_children():
    """Children inherit one BLAS/OpenMP thread each (set before they import numpy/torch)."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {n: os.environ.get(n) for n in names}
    os.environ.update({n: "1" for n in names})
    try:
        yield
    finally:
        for n, v in saved.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v


class BatchPrefetcher:
    """``get(step)`` returns :func:`draw_synthetic` for ``key_of(step)``, made ahead by a pool of processes."""

    def __init__(self, workers: int, depth: int, key_of, items: SyntheticItems, count: int, batch_size: int,
                 modes: Sequence[str], transform: SliceTransform,
                 multimask_modes: Sequence[str] = MULTIMASK_MODES) -> None:
        if workers < 1 or depth < 1:
            raise ValueError(f"workers and depth must be at least 1, got {workers} and {depth}")
        self.key_of, self.depth = key_of, depth
        self.pending: Dict[int, multiprocessing.pool.AsyncResult] = {}
        with _single_threaded_children():
            self.pool = multiprocessing.get_context("spawn").Pool(
                workers, _init_worker, ((items, count, batch_size, tuple(modes), transform, tuple(multimask_modes)),))

    def get(self, step: int, end: int) -> Draw:
        """Step ``step``'s draw; steps up to ``step + depth`` (before ``end``) are queued meanwhile."""
        for s in range(step, max(step + 1, min(step + self.depth, end))):
            if s not in self.pending:
                self.pending[s] = self.pool.apply_async(_draw_in_worker, (list(self.key_of(s)),))
        for s in [s for s in self.pending if s < step]:  # a step was skipped (resume): drop its draw
            del self.pending[s]
        try:
            return self.pending.pop(step).get(timeout=WAIT_S)
        except multiprocessing.TimeoutError:
            raise RuntimeError(f"no batch from the drawing workers in {WAIT_S} s (a worker was killed?); run again, "
                               "with fewer --workers if memory is short") from None

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()
        self.pending.clear()
