"""Generator version 4: a folded cortex, crescent ventricles, whole-structure targets; version 3 stays the default.

The pins (test_generate_reproducible.assert_pinned) fix version 4's images as they were when the cache of ``Resources/training/gen4/COMMAND.sh v4`` was
encoded (seed 2): a change to version 4 must come as a new version, as version 3's did.
"""
import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull

from synthfm.generate import GENERATOR_VERSION, GeneratorConfig, SyntheticGenerator
from synthfm.generate.anatomy import draw_anatomy
from synthfm.generate.scene import grid, merge_labels, paint, whole_structures
from synthfm.generate.shapes import render
from test_generate_reproducible import assert_pinned  # as version 3: labels and masks exactly, images by sums

V4_HASHES = {
    "2d-mixed": ("fc0e96a3e2eb40c0", 204221.842059, 98843.4131187, -1249.911016),
    "2d-mr": ("b4c486cdac92db18", 239152.094746, 134784.469446, -1698.170455),
    "3d-mixed-64": ("945d4a8ebb5823b0", 107153.235569, 61920.589905, -324.8371706),
}


@pytest.mark.parametrize("preset", ["mixed", "mr"])
def test_version_4_images_are_pinned(preset):
    gen = SyntheticGenerator(GeneratorConfig.from_preset(preset, version=4), 2)
    assert_pinned((gen.sample_2d(i) for i in range(12)), V4_HASHES[f"2d-{preset}"])


def test_version_4_volumes_are_pinned():
    gen = SyntheticGenerator(GeneratorConfig.from_preset("mixed", version=4, size=64, depth=16), 2)
    assert_pinned((gen.sample_3d(i) for i in range(6)), V4_HASHES["3d-mixed-64"])


def test_version_4_is_selectable_and_version_3_stays_the_default():
    cfg = GeneratorConfig.from_preset("mixed", version=4)
    assert cfg.to_dict()["generator_version"] == 4 and GeneratorConfig.from_dict(cfg.to_dict()).version == 4
    assert GENERATOR_VERSION == 3 and GeneratorConfig().version == 3
    with pytest.raises(ValueError, match="version must be one of 2, 3, 4"):
        GeneratorConfig.from_preset("mixed", version=5)


def _heads(version: int, n: int = 10):
    cfg = GeneratorConfig.from_preset("mr", version=version, anatomy_prob=1.0, scene_weights={"head": 1.0})
    xx, yy = grid(256)
    for i in range(n):
        scene = draw_anatomy(np.random.default_rng(i), cfg, 256, "mr")
        yield scene, paint(scene, xx, yy), xx, yy


def _edge(mask: np.ndarray) -> int:
    return int((mask & ~ndi.binary_erosion(mask)).sum())


def test_version_4_folds_the_white_matter_and_lays_a_grey_ribbon_on_it():
    def folding(version):
        ratios, thickness = [], []
        for scene, labels, xx, yy in _heads(version):
            wm = next(s for s in scene.structures if s.tissue == "wm")
            mask = render(wm.shape, xx, yy)
            ratios.append(_edge(mask) / ConvexHull(np.argwhere(mask)).area)  # outline / its convex hull's
            cortex = labels == next(s for s in scene.structures if s.tissue == "gm").label
            thickness.append(cortex.sum() / max(_edge(cortex) / 2, 1))  # area / half its outline
        return np.array(ratios), np.array(thickness)
    ratio3, _ = folding(3)
    ratio4, thick4 = folding(4)
    assert ratio3.max() < 1.1 and ratio4.min() > 1.5  # MNI152's white matter: 2.8-3.6 on axial slices
    assert np.median(thick4) < 9  # a ribbon of a few pixels, not a filled disc


def test_version_4_ventricles_are_two_crescents_kept_apart():
    for scene, _, xx, yy in _heads(4, 20):
        tubes = [s for s in scene.structures if s.tissue == "csf" and s.shape.kind == "tube"]
        assert len(tubes) == 2 and all(abs(t.shape.bend[0]) >= 0.4 for t in tubes)
        assert not (render(tubes[0].shape, xx, yy) & render(tubes[1].shape, xx, yy)).any()


def test_version_4_targets_whole_vertebrae_and_organs_with_their_inner_layers():
    cfg = GeneratorConfig.from_preset("ct", version=4, anatomy_prob=1.0, scene_weights={"trunk": 1.0})
    scene = draw_anatomy(np.random.default_rng(0), cfg, 256, "ct")
    owner = whole_structures(scene)
    body = next(s for s in scene.structures if s.role == "body")
    assert not {label for _, label, _ in body.layers} & set(owner)  # skin, fat and muscle stay apart
    parts = [s for s in scene.structures if s.part_of]
    assert len(parts) == 4 and not any(s.targetable for s in parts)  # arch and three processes
    vertebra = parts[0].part_of
    assert all(owner[s.label] == vertebra for s in parts)
    assert sum(top == vertebra for top in owner.values()) == 6  # + the marrow of the body and of the arch
    xx, yy = grid(256)
    labels = paint(scene, xx, yy)
    merged = merge_labels(labels.copy(), owner)
    whole = merged == vertebra
    assert whole.sum() > 2 * (labels == vertebra).sum()  # rim + marrow + arch + processes
    assert not set(np.unique(merged)) & set(owner)
    # the canal stays a hole of the whole vertebra, as in real vertebra labels
    assert ndi.binary_fill_holes(whole).sum() > whole.sum()

    def hole_share(version):  # layered targets (kidneys, bones) are rings in version 3, whole in version 4
        gen = SyntheticGenerator(GeneratorConfig.from_preset("ct", version=version, size=128, anatomy_prob=1.0,
                                                             scene_weights={"trunk": 1.0}), 4)
        shares = [1 - s.mask.sum() / ndi.binary_fill_holes(s.mask).sum() for s in map(gen.sample_2d, range(120))
                  if s.meta["target_kind"] == "kidney"]
        assert len(shares) >= 3
        return float(np.median(shares))
    assert hole_share(4) < 0.02 < 0.1 < hole_share(3)


def test_merge_labels_maps_only_the_owned_labels():
    labels = np.array([[0, 1, 5], [6, 7, 3]], np.int16)
    assert merge_labels(labels, {6: 5, 7: 5}).tolist() == [[0, 1, 5], [5, 5, 3]]
    assert merge_labels(labels.copy(), {}).tolist() == labels.tolist()
