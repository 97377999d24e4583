"""Generator knob ``organ_vessels_prob``: small vessels inside a liver, spleen or kidney that belong to its mask, as
real organ labels include them; at its default (0) version 3 and every cache key stay as they were."""
from dataclasses import replace

import numpy as np
import pytest

from synthfm.generate import GeneratorConfig, SyntheticGenerator
from synthfm.generate.anatomy import VASCULAR_ORGANS
from synthfm.generate.scene import grid, paint

SIZE = 128


def _config(prob: float, modality: str = "ct") -> GeneratorConfig:
    return GeneratorConfig.from_preset(modality, size=SIZE, anatomy_prob=1.0, organ_vessels_prob=prob,
                                       scene_weights={"trunk": 1.0, "head": 0.0, "organs": 1.0})


def test_the_default_adds_no_key_and_version_2_refuses_the_knob():
    assert "organ_vessels_prob" not in GeneratorConfig().to_dict()  # embedding caches key on this dict
    assert GeneratorConfig(organ_vessels_prob=0.0).to_json() == GeneratorConfig().to_json()
    assert GeneratorConfig(organ_vessels_prob=0.5).to_dict()["organ_vessels_prob"] == 0.5
    assert GeneratorConfig.from_dict(GeneratorConfig(organ_vessels_prob=0.5).to_dict()).organ_vessels_prob == 0.5
    with pytest.raises(ValueError, match="organ_vessels_prob"):
        GeneratorConfig.from_preset("ct", version=2, organ_vessels_prob=0.5)
    with pytest.raises(ValueError, match="organ_vessels_prob"):
        GeneratorConfig(organ_vessels_prob=1.5)


def test_off_draws_no_vessel_part_and_on_draws_them_inside_their_organ_only():
    rng_off, rng_on = np.random.default_rng(3), np.random.default_rng(3)
    off = SyntheticGenerator(_config(0.0), 0)._layout(rng_off, SIZE)[0]
    assert not [s for s in off.structures if s.part_of or s.inside]
    xx, yy = grid(SIZE)
    organs_seen = 0
    for seed in range(6):
        scene, perturb = SyntheticGenerator(_config(1.0), 0)._layout(np.random.default_rng(seed), SIZE)
        parts = [s for s in scene.structures if s.part_of]
        owners = {s.label: s for s in scene.structures}
        organs = [s for s in scene.structures if s.tissue in VASCULAR_ORGANS and s.role != "body"]
        organs_seen += len(organs)
        assert {p.part_of for p in parts} == {o.label for o in organs}  # probability 1: every such organ has some
        assert all(p.tissue == "vessel" and p.inside == p.part_of and not p.targetable for p in parts)
        assert all(owners[p.part_of].tissue in VASCULAR_ORGANS for p in parts)
        labels = paint(scene, xx, yy, perturb=perturb)
        without = paint(replace(scene, structures=[s for s in scene.structures if not s.part_of]), xx, yy,
                        perturb=perturb)
        for p in parts:  # a vessel is painted only where its organ was
            assert np.all(without[labels == p.label] == p.part_of)
    assert organs_seen >= 6


def test_an_organ_target_holds_its_vessels():
    gen = SyntheticGenerator(_config(1.0, "mr"), 0)
    checked = 0
    for i in range(40):
        sample = gen.sample_2d(i)
        if sample.meta["target_kind"] not in VASCULAR_ORGANS:
            continue
        rng = gen._rng(i, 2)  # the sample's own stream: its first layout is the scene it kept (attempts == 1)
        if sample.meta["attempts"] != 1:
            continue
        scene, perturb = gen._layout(rng, SIZE)
        labels = paint(scene, *grid(SIZE), perturb=perturb)
        vessel_px = np.isin(labels, [s.label for s in scene.structures if s.part_of == scene.target_label])
        if vessel_px.any():
            assert sample.mask[vessel_px].all()  # the vessels are part of the organ's mask
            assert np.array_equal(sample.mask, (labels == scene.target_label) | vessel_px)
            checked += 1
    assert checked >= 2
