"""The slice and its left-right mirror image averaged (ModelSpec.mirror_average, SlicePredictor.mirror): prompts and
low-res logits mirrored exactly (also on non-square slices, whose logits cover part of the 256 columns), the result
mirror-equivariant, the mirror image encoded once, and propagated slices taking one view unless asked."""
import numpy as np
import pytest
import torch

from synthfm.models import load_model
from synthfm.models.registry import MODEL_REGISTRY
from synthfm.models.sam import LOW_RES, DecoderOutput
from synthfm.segment import Prompts, SlicePredictor, VolumeSegmenter
from synthfm.segment.predictor import _agreement, _mirror_lowres, _mirror_prompts
from synthfm.segment.preprocess import SliceTransform
from synthfm.segment.propagate import PropagationOptions

TALL = np.random.default_rng(1).normal(size=(56, 40)).astype(np.float32)  # non-square: padded on the right


@pytest.fixture(scope="module")
def predictor():
    p = SlicePredictor(load_model("tiny-test"))
    p.calibrator, p.consistency = None, False
    return p


def test_prompts_and_logits_mirror_exactly_and_twice_is_the_identity():
    transform = SliceTransform(56, 40, 128)  # tiny-test's 128 input: 40 columns -> 91 input -> 182 low-res columns
    logits = np.random.default_rng(2).normal(size=(LOW_RES, LOW_RES)).astype(np.float32)
    prompts = Prompts(np.array([[3.0, 7.0], [39.0, 0.0]]), np.array([1, 0]), np.array([2.0, 5.0, 30.0, 50.0]), logits)
    m = _mirror_prompts(prompts, transform)
    np.testing.assert_array_equal(m.points, [[36.0, 7.0], [0.0, 0.0]])
    np.testing.assert_array_equal(m.box, [9.0, 5.0, 37.0, 50.0])  # still x0 <= x1
    np.testing.assert_array_equal(m.mask_logits[:, :182], logits[:, 181::-1])  # the slice's columns reversed
    np.testing.assert_array_equal(m.mask_logits[:, 182:], logits[:, 182:])  # the padding's stay
    back = _mirror_prompts(m, transform)
    np.testing.assert_array_equal(back.points, prompts.points)
    np.testing.assert_array_equal(back.box, prompts.box)
    np.testing.assert_array_equal(back.mask_logits, logits)
    np.testing.assert_array_equal(m.labels, prompts.labels)


@pytest.mark.parametrize("prompts", [Prompts.make([[12, 20]]), Prompts.make([[12, 20], [20, 30]], [[35, 5]]),
                                     Prompts.make(box=[4, 10, 25, 40])])
def test_the_average_is_mirror_equivariant(predictor, prompts):
    """Averaging the two views makes the answer on the mirrored slice with mirrored prompts the mirror of the
    answer: it fails if prompts, logits or candidates were mirrored wrongly."""
    transform = SliceTransform(*TALL.shape, predictor.model.image_size)
    a = predictor.predict(TALL, prompts, mirror=True, multimask=True)
    b = predictor.predict(np.ascontiguousarray(TALL[:, ::-1]), _mirror_prompts(prompts, transform), mirror=True,
                          multimask=True)
    for mine, theirs in ((a.logits, b.logits), (a.candidate_logits, b.candidate_logits)):
        theirs = _mirror_lowres(theirs, transform)
        # a box's low-res clip (<= -20 outside it) rounds its edges to whole low-res pixels, not symmetrically
        kept = (mine > -20) & (theirs > -20) if prompts.box is not None else np.ones(mine.shape, bool)
        assert kept.mean() > 0.1
        np.testing.assert_allclose(theirs[kept], mine[kept], atol=1e-5)
    # the masks too, but for pixels whose upsampled logit is within float rounding of 0: bilinear resizing of a
    # mirrored array is its mirror only up to ~1e-6, which can flip a pixel at 1e-7 (seen on torch 2.14.1)
    sure = np.abs(transform.logits_to_slice(torch.as_tensor(a.logits)).numpy()) > 1e-4
    assert sure.mean() > 0.99
    np.testing.assert_array_equal(b.mask[:, ::-1][sure], a.mask[sure])
    np.testing.assert_allclose(b.all_scores, a.all_scores, atol=1e-6)
    one = predictor.predict(TALL, prompts, mirror=False, multimask=True)
    assert not np.allclose(one.logits, a.logits)  # a real second view, not the first one twice


def test_the_average_is_the_mean_of_the_two_views(predictor):
    transform = SliceTransform(*TALL.shape, predictor.model.image_size)
    prompts = Prompts.make([[12, 20]])
    seen = predictor.predict(TALL, prompts, mirror=False)
    mirrored = predictor.predict(np.ascontiguousarray(TALL[:, ::-1]), _mirror_prompts(prompts, transform), mirror=False)
    both = predictor.predict(TALL, prompts, mirror=True)
    np.testing.assert_allclose(both.logits, (seen.logits + _mirror_lowres(mirrored.logits, transform)) / 2, atol=1e-5)
    np.testing.assert_allclose(both.all_signals["iou_head"], (seen.all_signals["iou_head"]
                                                              + mirrored.all_signals["iou_head"]) / 2)
    agreement = both.all_signals["mirror_agreement"]
    assert agreement.shape == both.all_scores.shape and ((agreement >= 0) & (agreement <= 1)).all()
    assert agreement[both.index] == pytest.approx(_agreement(seen.logits[None], _mirror_lowres(
        mirrored.logits, transform)[None], transform)[0])  # the two views' chosen masks
    assert both.score == both.all_scores[both.index]  # scored from the averaged signals (no calibrator: the head)
    assert "mirror_agreement" not in seen.all_signals  # one view has no such signal
    assert both.mask.shape == TALL.shape


def test_agreement_is_the_iou_of_the_two_views_masks_on_the_slice():
    transform = SliceTransform(56, 40, 128)  # 182 low-res columns cover the slice
    a = np.full((3, LOW_RES, LOW_RES), -1.0, np.float32)
    b = a.copy()
    a[0, :10, :10] = b[0, :10, :10] = 1  # the same mask
    a[1, :10, :10], b[1, 20:30, 20:30] = 1, 1  # disjoint
    b[2, :10, 200:] = 1  # only in the padding: nothing on the slice for either -> 0
    np.testing.assert_allclose(_agreement(a, b, transform), [1.0, 0.0, 0.0])


def test_a_box_keeps_the_averaged_mask_inside_it(predictor):
    box = [4, 10, 25, 40]
    pred = predictor.predict(TALL, Prompts.make(box=box), mirror=True)
    outside = np.ones(TALL.shape, bool)
    outside[10:41, 4:26] = False
    assert not pred.mask[outside].any()


def test_the_mirror_image_is_encoded_once_per_slice():
    p = SlicePredictor(load_model("tiny-test"))
    p.mirror = True
    assert p.mirrors
    for point in ([12, 20], [20, 30], [5, 5]):
        p.predict(TALL, Prompts.make([point]), key="slice")
    assert p.encoder_calls == 2  # the slice and its mirror image, then only decoder calls
    p.predict(TALL, Prompts.make([[12, 20]]), key="slice", mirror=False)
    assert p.encoder_calls == 2


def _square(emb, coords, labels, boxes, masks, multimask=False, **kw):
    """A decoder that finds a square in the middle of every slice."""
    logits = torch.full((1, 3 if multimask else 1, LOW_RES, LOW_RES), -10.0)
    logits[..., 80:180, 80:180] = 10.0
    return DecoderOutput(logits, torch.full((1, logits.shape[1]), 0.9))


def test_propagated_slices_take_one_view_unless_asked():
    volume = np.random.default_rng(3).normal(size=(5, 48, 48)).astype(np.float32)
    volume[:, 15:35, 15:35] += 4.0
    opts = dict(min_score=0.0, max_growth=1e9, min_area_px=1)
    for steps in (False, True):
        p = SlicePredictor(load_model("tiny-test"))
        p.model.decode, p.mirror = _square, True
        seg = VolumeSegmenter(p, volume)
        result = seg.propagate(2, Prompts.make(box=[15, 15, 34, 34]),
                               options=PropagationOptions(**opts, mirror_steps=steps))
        n = len(result.records)
        assert n == 5  # the prompted slice and all four others
        assert p.encoder_calls == (2 * n if steps else n + 1)  # only the prompted slice's mirror image, or all


def test_mirror_steps_auto_means_on_a_gpu_only():
    assert PropagationOptions().mirror_steps is False  # the default: one view on every device
    auto = PropagationOptions(mirror_steps=None)
    assert not auto.mirrors_steps("cpu") and not auto.mirrors_steps(torch.device("cpu"))
    assert auto.mirrors_steps("cuda:0") and auto.mirrors_steps("mps")
    assert not PropagationOptions(mirror_steps=False).mirrors_steps("cuda")
    assert PropagationOptions(mirror_steps=True).mirrors_steps("cpu")
    parse = PropagationOptions.parse_overrides
    assert parse(["mirror_steps=auto"]) == {"mirror_steps": None}
    assert parse(["mirror_steps=true"]) == {"mirror_steps": True}
    assert parse(["mirror-steps=no"]) == {"mirror_steps": False}
    assert parse(["mirror_steps=1"]) == {"mirror_steps": True}
    with pytest.raises(ValueError, match="mirror_steps"):
        parse(["mirror_steps=sometimes"])


class _SaysDevice:
    """A CPU predictor that reports another device (what the step rule reads) and records each call's ``mirror``."""

    def __init__(self, predictor: SlicePredictor, device: str) -> None:
        self._predictor, self.device, self.asked = predictor, torch.device(device), []

    def __getattr__(self, name):
        return getattr(self._predictor, name)

    def predict(self, *args, **kwargs):
        self.asked.append(kwargs.get("mirror"))
        return self._predictor.predict(*args, **kwargs)


def test_auto_mirror_steps_follow_the_predictors_device():
    """The same propagation on a predictor that says it runs on a GPU mirrors every propagated slice."""
    volume = np.random.default_rng(3).normal(size=(4, 40, 40)).astype(np.float32)
    volume[:, 12:30, 12:30] += 4.0
    opts = PropagationOptions(min_score=0.0, max_growth=1e9, min_area_px=1, mirror_steps=None)  # auto
    calls = {}
    for device in ("cpu", "cuda"):
        p = SlicePredictor(load_model("tiny-test"))
        p.model.decode, p.mirror = _square, True
        says = _SaysDevice(p, device)
        VolumeSegmenter(says, volume).propagate(1, Prompts.make(box=[12, 12, 29, 29]), options=opts)
        calls[device] = (says.asked, p.encoder_calls)
    (cpu, cpu_encoded), (gpu, gpu_encoded) = calls["cpu"], calls["cuda"]
    assert cpu[0] is None and gpu[0] is None  # the prompted slice: the predictor's own default (both views)
    assert len(cpu) == len(gpu) == 4 and set(cpu[1:]) == {False} and set(gpu[1:]) == {True}
    assert (cpu_encoded, gpu_encoded) == (5, 8)


def test_synthfm_decoders_average_the_mirror_and_published_ones_do_not():
    assert MODEL_REGISTRY["synthfm-lite"].mirror_average
    assert not MODEL_REGISTRY["medsam-lite"].mirror_average  # the baseline as published
    assert load_model("synthfm-lite").mirror_average and not load_model("tiny-test").mirror_average


def test_pre_encoding_adds_the_mirror_image_of_the_slice_in_view_only():
    volume = np.random.default_rng(4).normal(size=(6, 32, 32)).astype(np.float32)
    p = SlicePredictor(load_model("tiny-test"))
    p.mirror = True
    seg = VolumeSegmenter(p, volume)
    seg.encode_all(order=[4, 3, 5, 2, 1, 0])
    assert p.encoder_calls == 6 + 1
    p.predict(seg.slice(4), Prompts.make([[10, 10]]), key=seg.key(4))  # both views of slice 4 ready: no encoding
    assert p.encoder_calls == 7
    p.predict(seg.slice(3), Prompts.make([[10, 10]]), key=seg.key(3))  # slice 3's mirror image: one encoding
    assert p.encoder_calls == 8


def test_the_worker_gate_holds_the_mirror_encoding_too():
    """The Slicer effect's worker runs one model call at a time: encoding a slice with its mirror image ahead holds
    the gate."""
    from synthfm.serve.gate import ENCODE, GatedPredictor, PriorityGate

    gate, busy = PriorityGate(quiet_s=0.0), []

    class Recorder:
        mirrors = True

        def embed_views(self, image, key, value_range=None):
            busy.append(gate.waiting()["busy"])

    gated = GatedPredictor(Recorder(), gate, ENCODE)
    gated.embed_views(np.zeros((4, 4), np.float32), "k")
    assert busy == [1] and gated.mirrors and gate.waiting()["busy"] == 0


def test_the_worker_encodes_the_slice_in_view_with_its_mirror_image():
    """The effect's background encoding: every slice, and the mirror image of the slice in view, so that the first
    prompt there is decoded at once ("encoded_before"); elsewhere the mirror image is encoded by the prompt."""
    import time

    from synthfm.serve.worker import Worker

    def factory(model, device):
        p = SlicePredictor(load_model("tiny-test"))
        p.mirror = True
        return p

    worker = Worker("fake", "cpu", predictor_factory=factory, quiet_s=0.0)
    worker.add_volume("v", np.random.default_rng(5).normal(size=(6, 32, 32)).astype(np.float32))
    job = worker.start_encoding("v", 0, around=3)
    end = time.monotonic() + 60
    while not job.finished and time.monotonic() < end:
        time.sleep(0.01)
    assert job.state == "done"
    assert worker.predict("v", 0, positive=[[10, 12, 3]])["encoded_before"]
    assert not worker.predict("v", 0, positive=[[10, 12, 5]])["encoded_before"]  # its mirror image was not ready
    assert worker.predict("v", 0, positive=[[11, 12, 5]])["encoded_before"]

