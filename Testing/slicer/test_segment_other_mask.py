""""Other mask" in the SynthFM effect: for one point (or a box) the decoder proposes three candidates and the model
shows the one it rates best; the button shows the next one for the current slice, cycling, and Propagate starts from
the one shown. With several points (decoded in rounds) it cycles through the first round's candidates. New prompts on that slice go back to the model's choice; prompts with one mask only say so.

The worker is the real ``synthfm serve`` app; its predictor is test_segment_effect's fake with three candidates:
bright voxels within 8 px of the first point (the pick), within 4 px, within 12 px.
"""
import numpy as np
import slicer

from synthfm.segment import Prediction
from test_segment_effect import SliceWidget, click, display_xy, fake_worker, scene, settle  # noqa: F401  (fixtures)
from test_segment_slices import keep, prompt

RADII = (8, 4, 12)  # candidate 0 (the model's pick), 1, 2


def three_candidates(fake, asked):
    def predict(image, prompts, key=None, value_range=None, multimask="auto", candidate=None, aspect=None):
        asked.append(candidate)
        fake.embed(image, key)
        cx, cy = prompts.points[0] if len(prompts.points) else np.reshape(prompts.box, (2, 2)).mean(0)  # or the box's
        yy, xx = np.mgrid[:image.shape[0], :image.shape[1]]
        masks = np.stack([(image > 140) & ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r) for r in RADII])
        k = 0 if candidate is None else candidate
        logits = np.where(masks, 5.0, -5.0).astype(np.float32)
        if len(prompts.points) > 1:  # points in rounds: one mask, grown from the first round's candidate k
            return Prediction(masks[k], 0.9 - 0.1 * k, logits[k], np.array([0.9 - 0.1 * k]), choice=k)
        return Prediction(masks[k], 0.9 - 0.1 * k, logits[k], np.array([0.9, 0.8, 0.7]), masks, logits, None, k,
                          choice=k)
    return predict


def disc_radius(mask) -> float:
    return float(np.sqrt(mask.sum() / np.pi))


def test_other_mask_cycles_the_candidates_and_propagation_starts_from_the_one_shown(scene, fake_worker, monkeypatch):
    effect, wrapper, node, geometry, segmentation, truth, existing = scene
    worker, fake, _ = fake_worker
    asked, sent = [], []
    monkeypatch.setattr(fake, "predict", three_candidates(fake, asked))
    start = worker.start_propagation
    monkeypatch.setattr(worker, "start_propagation", lambda *a, **k: sent.append(a) or start(*a, **k))
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    keep(effect)
    prompt(effect, view, geometry, [24, 20, 5])
    settle(effect)
    sizes = [int(effect.sliceMasks[5][0].sum())]
    assert asked == [None, None, 1, 2] and effect._shown[5] == (0, 3)  # the preview, then the three mask buttons'
    # pictures behind it (the pick again, then the other two)
    assert effect.qualityLabel.text.endswith("Mask 1 of 3, the model's pick (Other mask: the next).")
    for expected in (1, 2, 0):  # the next candidate each time, back to the first after the third ...
        effect.otherMaskButton.click()
        settle(effect)
        assert asked[-1] == (None if expected == 0 else expected) and effect._shown[5] == (expected, 3)
        whose = ", the model's pick" if expected == 0 else ""  # ... which is the model's own answer again
        assert effect.qualityLabel.text.endswith(f"Mask {expected + 1} of 3{whose} (Other mask: the next).")
        sizes.append(int(effect.sliceMasks[5][0].sum()))
    assert sizes[1] < sizes[0] < sizes[2] and sizes[3] == sizes[0]  # radii 8, 4, 12, 8: what was shown changed
    assert np.array_equal(effect.preview.any(axis=(1, 2)), np.arange(12) == 5)
    effect.otherMaskButton.click()  # candidate 1 (the small one) ...
    settle(effect)
    before = len(asked)
    effect.onPropagate()  # ... is where propagation starts
    settle(effect)
    assert sent[-1][8] == {5: 1} and asked[before] == 1  # the prompted slice first, with the chosen candidate
    assert len(asked) > before + 1 and all(c is None for c in asked[before + 1:])  # steps: the model's own choice
    prompt(effect, view, geometry, [29, 22, 5])  # new prompts on the slice: the model's choice again
    settle(effect)
    assert asked[-4:] == [None, None, 1, 2]  # the model's choice, then the new prompts' three masks for the buttons
    assert effect._shown[5] == (0, 3) and "the model's pick" in effect.qualityLabel.text


def test_other_mask_says_so_when_the_prompts_give_one_mask(scene):
    effect, wrapper, node, geometry, segmentation, truth, existing = scene
    effect.otherMaskButton.click()  # nothing prompted yet
    assert effect.qualityLabel.text.startswith("Add prompts on a slice first")
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    prompt(effect, view, geometry, [24, 20, 5])  # the plain fake: one mask, no candidates
    settle(effect)
    before = effect.sliceMasks[5][0].copy()
    calls = len(effect.logic.predictor.prompts)
    effect.otherMaskButton.click()
    settle(effect)
    assert effect.qualityLabel.text.startswith("These prompts give one mask only")
    assert len(effect.logic.predictor.prompts) == calls and np.array_equal(effect.sliceMasks[5][0], before)


def test_other_mask_with_several_points_cycles_the_first_rounds_candidates(scene, fake_worker, monkeypatch):
    """Several points are decoded in rounds: one mask comes back, grown from the first point's candidate, and the
    worker says there are three to choose among; Other mask cycles through them."""
    effect, wrapper, node, geometry, segmentation, truth, existing = scene
    worker, fake, _ = fake_worker
    asked = []
    monkeypatch.setattr(fake, "predict", three_candidates(fake, asked))
    view = SliceWidget(slicer.SliceNode("Red", "Axial"))
    keep(effect)
    prompt(effect, view, geometry, [24, 20, 5])
    prompt(effect, view, geometry, [29, 22, 5])
    settle(effect)
    assert asked[-4:] == [None, None, 1, 2] and effect._shown[5] == (0, 3)  # the preview, then the buttons' masks
    sizes = [int(effect.sliceMasks[5][0].sum())]
    for expected in (1, 2):
        effect.otherMaskButton.click()
        settle(effect)
        assert asked[-1] == expected and effect._shown[5] == (expected, 3)
        assert effect.qualityLabel.text.endswith(f"Mask {expected + 1} of 3 (Other mask: the next).")
        sizes.append(int(effect.sliceMasks[5][0].sum()))
    assert sizes[1] < sizes[0] < sizes[2]
