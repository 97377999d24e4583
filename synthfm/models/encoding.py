"""Running the frozen image encoder on several images: on a CPU in bf16, two at a time, one per thread.

On a 2-core CPU the light encoder scales only about 1.7x from one thread to two (small matrices, norms, softmax and
copies between them), while two images encoded side by side, each on one thread, keep both cores busy: in most runs
5-10 % less time per image in bf16 (``benchmarks/bench_models.py``, row "... 2 side by side"; docs/segment.md
"Speed (CPU)").
In bf16 each thread computes exactly what a call with all threads would: the results do not depend on the thread
count or the batch size (Testing/core/test_encoding.py compares the bits), so an embedding is the same whichever way
it was made. In fp32 a thread count changes the last bits (relative 6e-7, from the neck's first convolution on), so
fp32 work stays in one call: a mask must not depend on whether a background job or propagation encoded its slice.
"""
from __future__ import annotations

import threading
from typing import List, Optional, Union

import torch


_state = {"side_by_side": True}


def set_side_by_side(enabled: bool) -> bool:
    """Allow or forbid encoding two images side by side in this process (benchmarks time both); returns the
    previous setting."""
    previous, _state["side_by_side"] = _state["side_by_side"], bool(enabled)
    return previous


def splits(device: Union[str, torch.device], bf16: bool) -> bool:
    """Whether :func:`encode` shares a batch between two threads on ``device``: a CPU computing in ``bf16``, with two
    or more torch threads in the calling thread (and not forbidden: :func:`set_side_by_side`)."""
    return (_state["side_by_side"] and bool(bf16) and torch.device(device).type == "cpu"
            and torch.get_num_threads() >= 2)


def encode(model, images: torch.Tensor, bf16: bool, split: Optional[bool] = None) -> torch.Tensor:
    """``(B, 3, S, S)`` images in [0, 1] -> float32 ``(B, 256, h, w)`` embeddings (inference mode, bf16 autocast when
    ``bf16``). ``split`` None (:func:`splits`): on a CPU in bf16 with at least two torch threads, a batch of two or
    more is shared between two threads that encode one image at a time with half the threads each; False: one call."""
    images = images.to(model.device)
    threads = torch.get_num_threads()
    if split is None:
        split = splits(images.device, bf16)
    if not split or len(images) < 2:
        return _encode(model, images, bf16)
    parts: List[Optional[torch.Tensor]] = [None, None]
    errors: List[BaseException] = []
    ready = [threading.Event(), threading.Event()]
    go = threading.Event()

    def run(k: int, n: int) -> None:
        try:
            torch.get_num_threads()  # PyTorch sets a new thread's count from its process-wide one at first use
            torch.set_num_threads(n)  # this thread's own OpenMP team (also written process-wide: put back below)
            ready[k].set()
            go.wait()
            parts[k] = torch.cat([_encode(model, image[None], bf16) for image in images[k::2]])
        except BaseException as exc:  # re-raised in the calling thread
            errors.append(exc)
        finally:
            ready[k].set()

    helpers = [threading.Thread(target=run, args=(k, n), name=f"synthfm-encode-{k}", daemon=True)
               for k, n in enumerate((max(1, threads - threads // 2), max(1, threads // 2)))]
    for helper in helpers:
        helper.start()
    for event in ready:
        event.wait()
    torch.set_num_threads(threads)  # the process-wide count, which threads started later begin with
    go.set()
    for helper in helpers:
        helper.join()
    if errors:
        raise errors[0]
    out = parts[0].new_empty((len(images), *parts[0].shape[1:]))
    out[0::2], out[1::2] = parts[0], parts[1]
    return out


def _encode(model, images: torch.Tensor, bf16: bool) -> torch.Tensor:
    with torch.inference_mode(), torch.autocast(images.device.type, torch.bfloat16, enabled=bf16):
        return model.encode(images).float()
