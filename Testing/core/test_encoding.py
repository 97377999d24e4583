"""Encoding two slices side by side on a CPU (synthfm.models.encoding): the same bits, used where it pays."""
import threading

import numpy as np
import pytest
import torch

from synthfm.models import encoding, load_model
from synthfm.segment import PropagationOptions, Prompts, SlicePredictor, VolumeSegmenter
from synthfm.segment.predictor import cpu_has_fast_bf16


@pytest.fixture(scope="module")
def lite():
    return load_model("medsam-lite")


def _one_by_one(model, images, bf16):
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        return torch.cat([model.encode(im[None]).float() for im in images])


def test_side_by_side_gives_the_same_bits_as_one_call_in_bf16(lite):
    """In bf16 the light encoder's results do not depend on the thread count or the batch: embeddings made two at a
    time are bit for bit those of one call with every thread (so caches and masks do not depend on the path)."""
    if not cpu_has_fast_bf16():
        pytest.skip("this CPU computes in fp32, where the encoder is not split (emulated bf16 is not the shipped path)")
    images = torch.rand(3, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    together = encoding.encode(lite, images, True, split=False)
    side = encoding.encode(lite, images, True, split=True)
    assert torch.get_num_threads() == threads  # the calling thread's team is given back
    assert torch.equal(side, together)
    assert torch.equal(_one_by_one(lite, images, True), together)


def test_fp32_work_stays_in_one_call():
    """In fp32 one thread and two differ in the last bits, so fp32 batches are never split."""
    assert not encoding.splits("cpu", bf16=False)
    model = _Recording()
    encoding.encode(model, torch.zeros(3, 3, 8, 8), bf16=False)
    assert [(n, b) for _, n, b in model.calls] == [(torch.get_num_threads(), 3)]


class _Recording(torch.nn.Module):
    """An encoder that records the thread and thread count of each call, and fails on request."""

    device = torch.device("cpu")

    def __init__(self, fail_on: float = -1.0) -> None:
        super().__init__()
        self.calls, self.fail_on = [], fail_on

    def encode(self, images):
        self.calls.append((threading.current_thread().name, torch.get_num_threads(), len(images)))
        if (images == self.fail_on).any():
            raise RuntimeError("encoder failed")
        return images[:, :1, :4, :4] * 2


def test_two_threads_one_image_at_a_time_in_order():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = _Recording()
        images = torch.arange(5.0).view(5, 1, 1, 1).expand(5, 3, 8, 8).contiguous()
        out = encoding.encode(model, images, bf16=True)
        assert torch.get_num_threads() == 2
        later = []  # a thread started afterwards begins with the process's count, not the helpers' one
        thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        assert later == [2]
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(out, images[:, :1, :4, :4] * 2)  # each image's embedding in its place
    assert [(n, b) for _, n, b in model.calls] == [(1, 1)] * 5  # one image per call, one thread each
    assert {name for name, _, _ in model.calls} == {"synthfm-encode-0", "synthfm-encode-1"}


def test_one_thread_or_one_image_is_one_call():
    model, threads = _Recording(), torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert not encoding.splits("cpu", bf16=True)
        encoding.encode(model, torch.zeros(4, 3, 8, 8), bf16=True)
        torch.set_num_threads(2)
        encoding.encode(model, torch.zeros(1, 3, 8, 8), bf16=True)
        previous = encoding.set_side_by_side(False)
        assert not encoding.splits("cpu", bf16=True)
        encoding.encode(model, torch.zeros(2, 3, 8, 8), bf16=True)
        encoding.set_side_by_side(previous)
    finally:
        torch.set_num_threads(threads)
    assert [(n, b) for _, n, b in model.calls] == [(1, 4), (2, 1), (2, 2)]
    assert not encoding.splits("meta", bf16=True)  # only CPUs share a batch between threads


def test_a_failure_in_the_helper_thread_reaches_the_caller():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        images = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 8, 8).contiguous()
        with pytest.raises(RuntimeError, match="encoder failed"):
            encoding.encode(_Recording(fail_on=3.0), images, bf16=True, split=True)  # image 3: the helper's
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def encoder_calls(monkeypatch):
    """The number of images of each of the predictor's calls to :func:`encoding.encode`."""
    import synthfm.segment.predictor as predictor_module

    calls, real = [], encoding.encode

    def spy(model, images, bf16, split=None):
        calls.append(len(images))
        return real(model, images, bf16, split)

    monkeypatch.setattr(predictor_module, "encode", spy)
    return calls


def test_a_slice_and_its_mirror_image_are_encoded_together(lite, encoder_calls):
    pred = SlicePredictor(lite)
    pred.mirror = True
    image = np.random.default_rng(0).normal(size=(40, 48)).astype(np.float32)
    pred.predict(image, Prompts.make(box=(10, 10, 30, 30)), key="s")
    pred.predict(image, Prompts.make([(20, 20)]), key="s")
    assert encoder_calls == [2] and pred.encoder_calls == 2  # one call for both views, then none


@pytest.mark.parametrize("every, prompted", [(2, (8,)), (1, (8,)), (2, (3, 12))])
def test_encoding_ahead_changes_which_call_encodes_not_the_masks(lite, encoder_calls, every, prompted):
    """Propagation encodes the next slice a front will read beside the one it needs; the masks are those of
    slices encoded one at a time, and beyond where a front stops at most one slice was encoded in vain."""
    zz, yy, xx = np.mgrid[:16, :64, :64]
    truth = ((xx - 32) / 16.0) ** 2 + ((yy - 30) / 12.0) ** 2 + ((zz - 8) / 5.5) ** 2 < 1
    volume = (100 + 80 * truth + np.random.default_rng(1).normal(0, 8, truth.shape)).astype(np.float32)
    options = PropagationOptions.for_model(lite, encode_every=every)
    prompts = {}
    for i in prompted:
        ys, xs = np.nonzero(truth[i])
        prompts[i] = Prompts.make(box=(xs.min(), ys.min(), xs.max(), ys.max()))
    runs, pairs = {}, {}
    for side_by_side in (False, True):
        previous = encoding.set_side_by_side(side_by_side)
        try:
            seg = VolumeSegmenter(SlicePredictor(lite), volume)
            runs[side_by_side] = (seg.propagate_slices(prompts, options=options), seg)
        finally:
            encoding.set_side_by_side(previous)
        pairs[side_by_side] = sum(n == 2 for n in encoder_calls)
        encoder_calls.clear()
    splits = encoding.splits("cpu", SlicePredictor(lite).bf16)
    assert pairs[False] == 0 and (pairs[True] >= 3) == splits  # bf16, two threads: fronts' slices in pairs
    (alone, seg_alone), (ahead, seg_ahead) = runs[False], runs[True]
    assert np.array_equal(alone.mask, ahead.mask)
    assert [(r.index, r.area, r.stop) for r in alone.records] == [(r.index, r.area, r.stop) for r in ahead.records]

    def encoded(seg):
        return {k[2] for k in seg.predictor._cache if isinstance(k, tuple) and len(k) == 3}

    extra = encoded(seg_ahead) - encoded(seg_alone)
    assert encoded(seg_alone) <= encoded(seg_ahead) and len(extra) <= 2  # one per outward front at most
    looked = [r.index for r in ahead.records]
    assert all(j < min(looked) or j > max(looked) for j in extra)  # beyond where the fronts stopped
    assert seg_ahead.predictor.encoder_calls == len(encoded(seg_ahead))  # each slice encoded once


def test_the_worker_gate_holds_every_call_that_runs_the_model():
    """The Slicer effect's worker runs one model call at a time: each predictor method that encodes or decodes,
    the pairs included, holds the gate."""
    from synthfm.serve.gate import ENCODE, GatedPredictor, PriorityGate

    gate, busy = PriorityGate(quiet_s=0.0), {}
    names = ("embed", "embed_many", "embed_views", "predict", "put_embedding")

    class Recorder:
        pass

    for name in names:
        setattr(Recorder, name, lambda self, *a, _n=name, **k: busy.setdefault(_n, gate.waiting()["busy"]))
    gated = GatedPredictor(Recorder(), gate, ENCODE)
    for name in names:
        getattr(gated, name)()
    assert busy == {name: 1 for name in names} and gate.waiting()["busy"] == 0
