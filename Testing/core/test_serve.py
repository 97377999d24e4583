"""The interactive-segmentation worker (synthfm.serve) over real HTTP on 127.0.0.1, and its stdlib client.

Servers run in this process (uvicorn in a thread, ``BackgroundServer``) with the tiny test model, or as the real
``synthfm serve`` subprocess where the process itself is what is tested (start, faults, exit with Slicer).
"""
import dataclasses
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from synthfm.models import load_model
from synthfm.segment import PropagationOptions, SlicePredictor, VolumeSegmenter
from synthfm.segment.volume_prompts import prompts_by_slice, slice_prompts
from synthfm.serve import protocol
from synthfm.serve.app import BackgroundServer, create_app, openapi_schema
from synthfm.serve.client import LocalWorker, WorkerClient, WorkerError
from synthfm.serve.gate import ENCODE, PROMPT, PROPAGATE, PriorityGate
from synthfm.serve.worker import Worker

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token"


@pytest.fixture(scope="module")
def tiny_predictor():
    return SlicePredictor(load_model("tiny-test"), "cpu")


def blob_volume(shape=(9, 40, 48)) -> np.ndarray:
    zz, yy, xx = np.mgrid[:shape[0], :shape[1], :shape[2]]
    inside = ((xx - 24) / 10) ** 2 + ((yy - 20) / 8) ** 2 + ((zz - 4) / 3.5) ** 2 < 1
    return (100 + 80 * inside + np.random.default_rng(0).normal(0, 2, shape)).astype(np.float32)


@pytest.fixture()
def served(tiny_predictor):
    """A worker (tiny model, built once per test: counts its loads) served on 127.0.0.1."""
    loads = []

    def factory(model, device):
        loads.append(model)
        return SlicePredictor(tiny_predictor.model, "cpu")

    worker = Worker("tiny-test", "cpu", predictor_factory=factory, quiet_s=0.0)
    server = BackgroundServer(create_app(worker, TOKEN)).wait_ready()
    yield worker, WorkerClient(server.url, TOKEN), loads
    server.stop()


def finish(client, job, timeout=60.0):
    """Poll a job as the effect does (bounded loop) until it ends."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status = client.job(job["id"]).wait()
        if status["state"] in ("done", "failed", "cancelled"):
            return status
        time.sleep(0.02)
    raise AssertionError(f"job {job} did not finish")


# ---- wire format -------------------------------------------------------------------------------------------
def test_masks_and_volumes_survive_the_wire():
    mask = np.zeros((7, 30, 20), bool)
    mask[2:4, 5:9, 11:13] = True
    packed = protocol.encode_mask(mask, crop=True)
    assert packed["shape"] == [2, 4, 2] and packed["offset"] == [2, 5, 11]
    assert np.array_equal(protocol.decode_mask(json.loads(json.dumps(packed))), mask)
    assert np.array_equal(protocol.decode_mask(protocol.encode_mask(np.zeros((3, 5), bool), crop=True)), np.zeros((3, 5)))
    volume = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    for compress in (False, True):
        body, query = protocol.volume_bytes(volume, compress)
        assert np.array_equal(protocol.volume_from_bytes(body, **query), volume)
    with pytest.raises(ValueError, match="needs 120"):
        protocol.volume_from_bytes(b"\0" * 10, "3,4,5", "int16")
    with pytest.raises(ValueError, match="dtype 'complex64'"):
        protocol.volume_from_bytes(b"", "3,4,5", "complex64")
    assert protocol.parse_window("-160,240") == (-160.0, 240.0) and protocol.parse_window(None) == "auto"
    assert protocol.parse_window(protocol.window_text((-1.5, 2.0))) == (-1.5, 2.0)


# ---- one model user at a time, prompts first ------------------------------------------------------------------
def test_gate_serves_prompts_before_propagation_before_encoding():
    gate, order, threads = PriorityGate(quiet_s=0.0), [], []

    def user(priority):
        with gate.hold(priority):
            order.append(priority)

    with gate.hold(PROMPT):  # the model is busy while the three wait
        for priority in (ENCODE, PROPAGATE, PROMPT):
            threads.append(threading.Thread(target=user, args=(priority,)))
            threads[-1].start()
            while gate.waiting()[{ENCODE: "encoding", PROPAGATE: "propagation", PROMPT: "prompts"}[priority]] != 1:
                time.sleep(0.001)
    for t in threads:
        t.join(5)
    assert order == [PROMPT, PROPAGATE, ENCODE]


def test_encoding_waits_for_a_quiet_moment_after_a_prompt():
    gate = PriorityGate(quiet_s=0.3)
    with gate.hold(PROMPT):
        pass
    start = time.monotonic()
    with gate.hold(ENCODE):
        waited = time.monotonic() - start
    with gate.hold(PROPAGATE):  # only encoding gives way to the user
        pass
    assert 0.25 <= waited < 2.0


# ---- HTTP ----------------------------------------------------------------------------------------------------
def test_requests_without_the_right_token_are_refused(served):
    worker, client, _ = served
    for token, words in (("", "needs an access token"), ("wrong", "wrong access token")):
        with pytest.raises(WorkerError, match=words) as err:
            WorkerClient(client.url, token).info().wait()
        assert err.value.status == 401
    with pytest.raises(WorkerError, match="wrong access token"):
        WorkerClient(client.url, "wrong").upload_volume("v", np.zeros((2, 3, 4), np.float32)).wait()
    assert worker.info()["volumes"] == []  # nothing was stored
    assert client.health().wait()["status"] == "ok"
    with pytest.raises(ValueError, match="access token"):
        create_app(worker, "")


def test_predict_over_http_matches_the_core_on_the_same_slice(served, tiny_predictor):
    worker, client, loads = served
    volume = blob_volume()
    stored = client.upload_volume("case1", volume, spacing=(0.8, 0.8, 2.5)).wait()
    assert stored["shape"] == [9, 40, 48] and stored["spacing"] == [0.8, 0.8, 2.5]
    answer = client.predict("case1", 0, positive=[[24, 20, 4]], negative=[[40, 35, 4]], candidates=True).wait()
    index, prompts = slice_prompts([[24, 20, 4]], [[40, 35, 4]], None, 0)
    expected = VolumeSegmenter(SlicePredictor(tiny_predictor.model, "cpu"), volume, 0).segment_slice(index, prompts)
    assert answer["index"] == 4 and not answer["encoded_before"]
    assert np.array_equal(protocol.decode_mask(answer["mask"]), expected.mask)
    assert answer["score"] == pytest.approx(expected.score, abs=1e-6)
    coronal = client.predict("case1", 1, box=[[10, 20, 1], [30, 20, 7]]).wait()  # any axis: j = 20
    assert coronal["index"] == 20 and protocol.decode_mask(coronal["mask"]).shape == (9, 48)
    again = client.predict("case1", 0, positive=[[25, 20, 4]]).wait()
    assert again["encoded_before"] and loads == ["tiny-test"]  # one model, loaded once


def test_a_chosen_candidate_over_http_is_the_cores_and_propagation_starts_from_it(served, tiny_predictor):
    """``candidate`` on a predict request and ``candidates`` (prompted slice -> candidate) on a propagation job give
    what the core gives with the same choice; the answer says which candidate it holds."""
    worker, client, _ = served
    volume = blob_volume()
    client.upload_volume("c", volume).wait()
    core = VolumeSegmenter(SlicePredictor(tiny_predictor.model, "cpu"), volume, 0)
    index, prompts = slice_prompts([[24, 20, 4]], (), None, 0)
    picked = client.predict("c", 0, positive=[[24, 20, 4]]).wait()["candidate"]
    other = (picked + 1) % 3
    answer = client.predict("c", 0, positive=[[24, 20, 4]], candidate=other).wait()
    assert answer["candidate"] == other and answer["choices"] == 3
    at_once = client.predict("c", 0, positive=[[24, 20, 4], [27, 21, 4]]).wait()  # tiny-test: points at once
    assert at_once["choices"] == 1 and len(at_once["scores"]) == 1  # one mask: nothing to choose
    assert np.array_equal(protocol.decode_mask(answer["mask"]), core.segment_slice(index, prompts, candidate=other).mask)
    every = client.predict("c", 0, positive=[[24, 20, 4]], candidate=other, choice_masks=True).wait()
    for k in range(3):  # what each choice gives (the effect's mask buttons), the one shown among them
        assert np.array_equal(protocol.decode_mask(every["choice_masks"][k]),
                              core.segment_slice(index, prompts, candidate=k).mask)
        assert every["choice_scores"][k] == pytest.approx(core.segment_slice(index, prompts, candidate=k).score)
    assert np.array_equal(protocol.decode_mask(every["choice_masks"][other]), protocol.decode_mask(every["mask"]))
    assert "choice_masks" not in client.predict("c", 0, positive=[[24, 20, 4], [27, 21, 4]],
                                                choice_masks=True).wait()  # one mask: no choices to show
    options = {"min_score": 0.0, "min_area_px": 0}
    job = client.propagate("c", 0, positive=[[24, 20, 4]], options=options, candidates={4: other}).wait()
    assert finish(client, job)["state"] == "done"
    expected = core.propagate_slices({4: prompts}, options=PropagationOptions.for_model(
        tiny_predictor.model, **options), candidates={4: other})
    assert np.array_equal(protocol.decode_mask(client.job_result(job["id"]).wait()["mask"]), expected.mask)
    with pytest.raises(WorkerError, match="candidate"):
        client.predict("c", 0, positive=[[24, 20, 4]], candidate=3).wait()
    with pytest.raises(WorkerError, match="candidates"):  # refused by the request's check, before any job
        client.propagate("c", 0, positive=[[24, 20, 4]], candidates={4: 3}).wait()
    with pytest.raises(WorkerError, match=r"slices \[7\] that hold no prompts"):  # refused before the job starts
        client.propagate("c", 0, positive=[[24, 20, 4]], candidates={7: 1}).wait()


def test_bad_requests_get_one_clear_message(served):
    worker, client, _ = served
    with pytest.raises(WorkerError, match="volume 'ghost' is not on this worker.*upload it again") as err:
        client.predict("ghost", 0, positive=[[1, 1, 1]]).wait()
    assert err.value.status == 404
    client.upload_volume("v", blob_volume()).wait()
    cases = [(dict(positive=[[60, 1, 1]]), "outside the 48x40 slice"),
             (dict(positive=[[1, 1, 1]], negative=[[2, 2, 3]]), "different slices"),
             (dict(), "no prompts given")]
    for prompts, words in cases:
        with pytest.raises(WorkerError, match=words) as err:
            client.predict("v", 0, **prompts).wait()
        assert err.value.status == 400
    with pytest.raises(WorkerError, match="axis") as err:
        client.predict("v", 3, positive=[[1, 1, 1]]).wait()
    assert err.value.status == 422
    with pytest.raises(WorkerError, match="needs 4"):
        client.call("PUT", "/volumes/x", body=b"\0", query={"shape": "1,1,1", "dtype": "float32"}).wait()
    with pytest.raises(WorkerError, match="unknown window"):
        client.upload_volume("w", blob_volume(), window="ct-kidney").wait()
    with pytest.raises(WorkerError, match="--allow-paths"):
        client.volume_from_path("p", "/etc/hostname").wait()
    with pytest.raises(WorkerError, match="job 'nope' is not known"):
        client.job("nope").wait()


def test_background_encoding_reports_progress_and_fills_the_cache(served):
    worker, client, _ = served
    client.upload_volume("v", blob_volume()).wait()
    job = client.encode("v", 2, around=10).wait()
    assert job["kind"] == "encode" and job["total"] == 48
    status = finish(client, job)
    assert status["state"] == "done" and status["done"] == status["total"] == 48
    assert client.volume("v").wait()["encoded"] == {"0": 0, "1": 0, "2": 48}
    assert client.predict("v", 2, positive=[[10, 20, 4]]).wait()["encoded_before"]


def test_background_encoding_takes_the_slices_propagation_encodes_first(served, monkeypatch):
    """With a model whose propagation encodes every other slice, the background job encodes the slice in view, then
    those slices outward, then the interpolated ones (for prompts placed on them)."""
    worker, client, _ = served
    monkeypatch.setattr(PropagationOptions, "for_model",
                        classmethod(lambda cls, model, **overrides: cls(**{"encode_every": 2, **overrides})))
    client.upload_volume("v", blob_volume()).wait()  # 48 slices along axis 2
    predictor, order = worker.predictor, []
    embed = predictor.embed
    monkeypatch.setattr(predictor, "embed", lambda image, key=None, value_range=None:
                        order.append(key[2]) or embed(image, key, value_range))
    assert finish(client, client.encode("v", 2, around=11).wait())["state"] == "done"
    grid = [i for i in range(48) if i % 2 == 0 or i == 47]  # 47: no multiple of 2 after it, so it is encoded
    assert order[0] == 11 and sorted(order) == list(range(48))
    assert sorted(order[1:len(grid) + 1]) == grid and order[1:3] in ([10, 12], [12, 10])
    assert [abs(i - 11) for i in order[len(grid) + 1:]] == sorted(abs(i - 11) for i in order[len(grid) + 1:])


def test_propagation_job_matches_the_core_and_can_be_cancelled(served, tiny_predictor):
    worker, client, _ = served
    volume = blob_volume()
    client.upload_volume("v", volume).wait()
    box = [[14, 12, 4], [34, 28, 4]]
    job = client.propagate("v", 0, box=box, options={"min_score": 0.0}).wait()
    status = finish(client, job)
    assert status["state"] == "done" and status["total"] == 8
    result = client.job_result(job["id"]).wait()
    index, prompts = slice_prompts((), (), box, 0)
    options = PropagationOptions.for_model(tiny_predictor.model, min_score=0.0)
    expected = VolumeSegmenter(SlicePredictor(tiny_predictor.model, "cpu"), volume, 0).propagate(
        index, prompts, "both", options=options)
    assert np.array_equal(protocol.decode_mask(result["mask"]), expected.mask)
    assert result["slices"] == expected.slices and result["describe"] == expected.describe()

    slow = worker.predictor.predict  # make each slice take long enough to cancel mid-way

    def predict_slowly(*args, **kwargs):  # ... and never stop by itself (the tiny model's scores are ~0)
        time.sleep(0.2)
        return dataclasses.replace(slow(*args, **kwargs), score=1.0)

    worker.predictor.predict = predict_slowly
    never_stop = {"min_score": 0.0, "min_area_px": 0, "max_growth": 1e9}
    job = client.propagate("v", 0, box=box, options=never_stop).wait()
    while client.job(job["id"]).wait()["done"] < 1:
        time.sleep(0.01)
    client.cancel(job["id"]).wait()
    status = finish(client, job)
    assert status["state"] == "cancelled" and status["done"] < status["total"]
    with pytest.raises(WorkerError, match="cancelled: it has no result"):
        client.job_result(job["id"]).wait()


def test_propagation_with_several_prompted_slices_fills_between_them_as_the_core_does(served, tiny_predictor):
    """Boxes on slices 2 and 6 (and a point joining slice 6): the job is the core's propagate_slices on those
    slices, and its records say which slices were prompted and which were filled between them."""
    worker, client, _ = served
    volume = blob_volume()
    client.upload_volume("v", volume).wait()
    boxes, positive = [[[16, 14, 2], [32, 26, 2]], [[14, 12, 6], [34, 28, 6]]], [[24, 20, 6]]
    options = {"min_score": 0.0, "min_area_px": 0}  # the tiny model's masks may be empty: no refusal for that
    job = client.propagate("v", 0, positive=positive, boxes=boxes, options=options).wait()
    assert job["prompted"] == [2, 6] and job["index"] == 2
    status = finish(client, job)
    assert status["state"] == "done", status
    result = client.job_result(job["id"]).wait()
    prompted = prompts_by_slice(positive, (), boxes, 0)
    assert sorted(prompted) == [2, 6] and len(prompted[6].labels) == 1
    expected = VolumeSegmenter(SlicePredictor(tiny_predictor.model, "cpu"), volume, 0).propagate_slices(
        prompted, "both", options=PropagationOptions.for_model(tiny_predictor.model, min_score=0.0, min_area_px=0))
    assert np.array_equal(protocol.decode_mask(result["mask"]), expected.mask)
    assert result["slices"] == expected.slices and result["describe"] == expected.describe()
    assert result["prompted"] == [2, 6] and result["notes"] == expected.notes
    sources = {r["index"]: r["source"] for r in result["records"] if r["stop"] is None}
    assert [sources[i] for i in range(2, 7)] == ["prompt", "between", "between", "between", "prompt"]


class BrightInBox:
    """A stand-in predictor: the bright voxels (> 140) inside the box; so a box on background gives nothing."""

    window, model = "auto", None

    def is_cached(self, key) -> bool:
        return True

    def embed(self, image, key=None, value_range=None) -> None:
        pass

    def predict(self, image, prompts, key=None, value_range=None, multimask="auto"):
        from synthfm.segment import Prediction

        x0, y0, x1, y1 = np.round(prompts.box).astype(int)
        mask = np.zeros(image.shape, bool)
        mask[y0:y1 + 1, x0:x1 + 1] = image[y0:y1 + 1, x0:x1 + 1] > 140
        return Prediction(mask, 0.9, np.where(mask, 5.0, -5.0).astype(np.float32), np.array([0.9]))


def test_prompted_slices_that_disagree_or_bad_slices_end_in_one_message():
    """A box where the structure is not (slice 8 of a blob on slices 1..7): the job fails with the core's message
    naming the slice; prompts that cannot be used are refused before any work, naming their slice."""
    worker = Worker("fake", "cpu", predictor_factory=lambda model, device: BrightInBox(), quiet_s=0.0)
    worker.add_volume("v", blob_volume())
    job = worker.start_propagation("v", 0, boxes=[[[14, 12, 4], [34, 28, 4]], [[14, 12, 8], [34, 28, 8]]])
    end = time.monotonic() + 30
    while not job.finished and time.monotonic() < end:
        time.sleep(0.01)
    assert job.state == "failed" and job.error == ("the prompts give an empty mask on slice 8; move or add prompts "
                                                   "there first (or leave that slice out)")
    with pytest.raises(ValueError, match="slice 6: only negative points given"):
        worker.start_propagation("v", 0, negative=[[24, 20, 6]], boxes=[[[14, 12, 4], [34, 28, 4]]])
    with pytest.raises(ValueError, match="two boxes on slice 4"):
        worker.start_propagation("v", 0, box=[[14, 12, 4], [34, 28, 4]], boxes=[[[15, 12, 4], [34, 28, 4]]])
    with pytest.raises(ValueError, match="slice 12 is outside the volume"):
        worker.start_propagation("v", 0, boxes=[[[14, 12, 4], [34, 28, 4]], [[14, 12, 12], [34, 28, 12]]])
    single = Worker("fake", "cpu", predictor_factory=lambda model, device: BrightInBox(), quiet_s=0.0)
    single.add_volume("one", blob_volume()[4:5])  # a single-slice volume: the prompted slice is the result
    job = single.start_propagation("one", 0, box=[[14, 12, 0], [34, 28, 0]])
    while not job.finished and time.monotonic() < end:
        time.sleep(0.01)
    assert job.state == "done" and job.result["slices"] == [0]
    assert job.result["describe"] == "1 slice (0..0), up to the volume's ends"


def test_a_volume_of_thick_slices_reaches_the_model_with_square_pixels_in_every_view():
    """The effect uploads the voxel size; a coronal (axis 1) or sagittal (axis 2) prompt on 4 mm slices of 0.5 mm
    pixels reaches the predictor with the slice's pixel aspect (rows are k, 8x taller), an axial one with 1."""
    seen = []

    class Recording(BrightInBox):
        def predict(self, image, prompts, key=None, value_range=None, multimask="auto", aspect=None):
            seen.append(aspect)
            return super().predict(image, prompts, key, value_range, multimask)

    worker = Worker("fake", "cpu", predictor_factory=lambda model, device: Recording(), quiet_s=0.0)
    worker.add_volume("v", blob_volume(), spacing=(0.5, 0.5, 4.0))
    worker.predict("v", 1, box=[[14, 20, 2], [34, 20, 6]])  # coronal: slice j = 20, box over i and k
    worker.predict("v", 2, box=[[24, 12, 2], [24, 28, 6]])  # sagittal: slice i = 24, box over j and k
    worker.predict("v", 0, box=[[14, 12, 4], [34, 28, 4]])
    assert seen == [8.0, 8.0, None]


def test_several_clients_share_one_model_with_their_own_volumes(served):
    worker, client, loads = served
    other = WorkerClient(client.url, TOKEN)
    a, b = blob_volume(), blob_volume()[:, ::-1].copy()
    client.upload_volume("slicer-A:vol1", a).wait()
    other.upload_volume("slicer-B:vol1", b).wait()
    calls = [c.predict(v, 0, positive=[[24, 20, 4]]) for c, v in ((client, "slicer-A:vol1"), (other, "slicer-B:vol1"))
             for _ in range(3)]
    answers = [call.wait() for call in calls]
    assert all(a["score"] == answers[0]["score"] for a in answers[:3])
    assert all(a["score"] == answers[3]["score"] for a in answers[3:])
    assert not np.array_equal(protocol.decode_mask(answers[0]["mask"]), protocol.decode_mask(answers[3]["mask"])) or \
        answers[0]["score"] != answers[3]["score"]
    assert loads == ["tiny-test"] and sorted(client.info().wait()["volumes"]) == ["slicer-A:vol1", "slicer-B:vol1"]


def test_the_workers_predictors_keep_embeddings_on_disk_also_after_a_model_switch(tmp_path, tiny_predictor):
    """--embedding-cache: every predictor the worker makes (at start, after a model switch) gets the capped store, and
    a worker started again (Slicer restarted, the volume opened again) reads the slices instead of encoding them."""
    made = []

    def factory(model, device):
        made.append(SlicePredictor(tiny_predictor.model, "cpu", bf16=False))
        return made[-1]

    def worker():
        return Worker("tiny-test", "cpu", predictor_factory=factory, quiet_s=0.0, embedding_cache=str(tmp_path),
                      embedding_cache_bytes=50_000_000)

    first = worker()
    first.add_volume("v", blob_volume())
    first.predict("v", 0, positive=[[24, 20, 4]])
    store = first.predictor.store
    assert store is not None and store.folder.parent == tmp_path and store.max_bytes == 50_000_000
    assert store.misses >= 1 and list(store.folder.rglob("*.npy"))
    first.use_model("tiny-test-again")  # another model: a new predictor, with the store too
    assert first.predictor is made[-1] and len(made) == 2 and made[-1].store is not None
    assert made[-1].store.max_bytes == 50_000_000 and "embedding cache" in first.info()["embedding_cache"]
    again = worker()  # the worker started again: nothing in memory
    again.add_volume("v2", blob_volume())
    answer = again.predict("v2", 0, positive=[[24, 20, 4]])
    assert again.predictor.encoder_calls == 0 and again.predictor.store.hits >= 1 and not answer["encoded_before"]
    assert Worker("tiny-test", "cpu", predictor_factory=factory).predictor.store is None  # off by default


def test_an_unreachable_worker_is_a_message_not_a_hang():
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    call = WorkerClient(f"http://127.0.0.1:{port}", TOKEN).health()
    start = time.monotonic()
    with pytest.raises(WorkerError, match="cannot reach the SynthFM worker"):
        call.wait(5)
    assert time.monotonic() - start < 1.0
    with pytest.raises(WorkerError, match="not http://host:port"):
        WorkerClient("ftp://example", TOKEN).health()


def test_pending_calls_never_block(served):
    """done() returns at once while the worker is still busy; the answer arrives later."""
    worker, client, _ = served
    client.upload_volume("v", blob_volume()).wait()
    release = threading.Event()
    original = worker.predictor.predict
    worker.predictor.predict = lambda *a, **k: (release.wait(5), original(*a, **k))[1]
    call = client.predict("v", 0, positive=[[24, 20, 4]])
    start = time.monotonic()
    polls = [call.done() for _ in range(20)]
    assert not any(polls) and time.monotonic() - start < 0.05
    release.set()
    assert call.wait()["index"] == 4


def test_openapi_document_in_docs_matches_the_code():
    committed = json.loads((ROOT / "docs" / "serve_openapi.json").read_text())
    current = openapi_schema()
    routes = lambda doc: {p: sorted(v) for p, v in doc["paths"].items()}  # noqa: E731
    assert routes(committed) == routes(current), "run: python -m synthfm.serve.openapi"
    fields = lambda doc: {n: sorted(v.get("properties", {})) for n, v in doc["components"]["schemas"].items()}  # noqa
    assert fields(committed) == fields(current), "run: python -m synthfm.serve.openapi"  # every request field too
    assert committed["components"]["securitySchemes"]["APIKeyHeader"]["name"] == protocol.TOKEN_HEADER
    assert "/volumes/{volume_id}/predict" in committed["paths"]


# ---- the real `synthfm serve` process ------------------------------------------------------------------------
def _env(tmp_path, block_torch=False):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + ([str(tmp_path)] if block_torch else [])),
               OMP_NUM_THREADS="1")
    if block_torch:  # a Python without torch, as Slicer before the install prompt
        (tmp_path / "sitecustomize.py").write_text(
            "import sys\nclass _NoTorch:\n    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'torch' or name.startswith('torch.'):\n"
            "            raise ModuleNotFoundError(\"No module named 'torch'\")\n"
            "sys.meta_path.insert(0, _NoTorch())\n")
    return env


def _started(worker, timeout=120.0):
    worker.start()
    end = time.monotonic() + timeout
    while worker.poll() == "starting" and time.monotonic() < end:
        time.sleep(0.05)
    return worker.state


def test_serve_process_starts_answers_and_ends_with_its_parent(tmp_path):
    worker = LocalWorker("tiny-test", "cpu", python=sys.executable, env=_env(tmp_path))
    try:
        assert _started(worker) == "ready", worker.message
        info = worker.client.info().wait()
        assert info["model"] == "tiny-test" and info["model_loaded"] and info["device"] == "cpu"
        npy = tmp_path / "v.npy"
        np.save(npy, blob_volume())
        assert worker.client.volume_from_path("v", str(npy)).wait()["shape"] == [9, 40, 48]  # local mode
        assert str(worker.token) not in " ".join(worker.command)  # the token is not on the command line
        with pytest.raises(WorkerError, match="wrong access token"):
            WorkerClient(worker.client.url, "guess").info().wait()
        worker.process.stdin.close()  # Slicer ended (even when killed, its end of the pipe closes)
        worker.process.wait(20)
        assert worker.poll() == "failed" and "exit code 0" in worker.message
    finally:
        worker.stop()


def test_serve_process_faults_end_in_one_clear_message(tmp_path):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        worker = LocalWorker("tiny-test", "cpu", python=sys.executable, env=_env(tmp_path),
                             extra_args=["--port", str(port)])
        assert _started(worker) == "failed"
        assert f"cannot listen on 127.0.0.1:{port}" in worker.message and "choose another --port" in worker.message
    finally:
        taken.close()
    worker = LocalWorker("tiny-test", "cpu", python=sys.executable, env=_env(tmp_path, block_torch=True))
    assert _started(worker) == "failed"
    assert "torch" in worker.message and "not installed" in worker.message and "Traceback" not in worker.message
    worker = LocalWorker("tiny-test", "cpu", python=str(tmp_path / "no-python"), env=_env(tmp_path))
    assert _started(worker) == "failed" and "could not start the SynthFM worker" in worker.message


def test_a_crashed_worker_is_reported(tmp_path):
    worker = LocalWorker("tiny-test", "cpu", python=sys.executable, env=_env(tmp_path))
    try:
        assert _started(worker) == "ready", worker.message
        client = worker.client
        worker.process.kill()
        worker.process.wait(10)
        assert worker.poll() == "failed" and "stopped (exit code" in worker.message
        with pytest.raises(WorkerError, match="cannot reach"):
            client.health().wait(5)
    finally:
        worker.stop()
