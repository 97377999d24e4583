"""Version 3 reproduces bit for bit: speed work on the generator must not change a single sample.

Hashes recorded with the version-3 generator before the speed work of issue 12 (commit f11a951): the
training caches made with version 3 (e.g. ``runs/lite3/cache``) are checked by redrawing items, and old
presets must stay reproducible.  Images, label maps and target masks, 2D at the default 256 px for every
preset and two seeds, 3D (small volumes and one 128x128x64), the ablation switches and a config override.
"""
import hashlib

import pytest

from synthfm.generate import GeneratorConfig, SyntheticGenerator

V3_HASHES = {
    "2d-mixed-0": "ecf928f9636d3e90", "2d-mixed-7": "1b0b8b30b94df6e2",
    "2d-ct-0": "f0018fae123c5346", "2d-ct-7": "c90d66ad63a69af0",
    "2d-mr-0": "491840fb897bb0df", "2d-mr-7": "909132caaa0f4d8f",
    "2d-us-0": "2355332f9b8eef8a", "2d-us-7": "143cbc82ce878c7f",
    "3d-mixed-64-0": "6bf2dd3f035504ce", "3d-mixed-64-3": "c2b074753feff753",
    "3d-mixed-128x64-0": "e83266356bc96f0a",
}


def _hash(samples) -> str:
    h = hashlib.sha256()
    for s in samples:
        h.update(s.image.tobytes())
        h.update(s.labels.tobytes())
        h.update(s.mask.tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("preset", ["mixed", "ct", "mr", "us"])
@pytest.mark.parametrize("seed", [0, 7])
def test_version_3_images_are_unchanged(preset, seed):
    gen = SyntheticGenerator(GeneratorConfig.from_preset(preset), seed)
    count = 12 if preset == "mixed" else 6
    assert _hash(gen.sample_2d(i) for i in range(count)) == V3_HASHES[f"2d-{preset}-{seed}"]


@pytest.mark.parametrize("seed", [0, 3])
def test_version_3_volumes_are_unchanged(seed):
    gen = SyntheticGenerator(GeneratorConfig.from_preset("mixed", size=64, depth=16), seed)
    assert _hash(gen.sample_3d(i) for i in range(6)) == V3_HASHES[f"3d-mixed-64-{seed}"]


def test_version_3_full_size_volumes_are_unchanged():
    gen = SyntheticGenerator(GeneratorConfig.from_preset("mixed", size=128, depth=64), 0)
    assert _hash(gen.sample_3d(i) for i in range(4)) == V3_HASHES["3d-mixed-128x64-0"]


# Ablation switches, a knob override and ultrasound volumes (seed 1; 3D 64x64x16, seed 2).
V3_VARIANT_HASHES = {"shape_aware": "f77e3f8577dff88f", "boundary_aware": "97c741373656b0ea",
                     "low_contrast_prob": "dce2573849ca60b7", "us-3d": "96ae3b6e320d7dc5"}


@pytest.mark.parametrize("knob,value", [("shape_aware", False), ("boundary_aware", False),
                                        ("low_contrast_prob", 0.05)])
def test_version_3_variants_are_unchanged(knob, value):
    gen = SyntheticGenerator(GeneratorConfig.from_preset("mixed", **{knob: value}), 1)
    assert _hash(gen.sample_2d(i) for i in range(6)) == V3_VARIANT_HASHES[knob]


def test_version_3_ultrasound_volumes_are_unchanged():
    gen = SyntheticGenerator(GeneratorConfig.from_preset("us", size=64, depth=16), 2)
    assert _hash(gen.sample_3d(i) for i in range(4)) == V3_VARIANT_HASHES["us-3d"]


def test_volume_fields_are_contiguous_with_the_same_values_and_windows_are_reused():
    import numpy as np

    from synthfm.generate.fields import _along, multiscale_field, smooth_field

    shape = (12, 40, 32)
    lazy = smooth_field(np.random.default_rng(4), shape, 3, lazy=True)
    whole = np.asarray(lazy)
    assert whole.flags.c_contiguous and whole.shape == shape
    strided = lazy.core
    for axis, basis in enumerate(lazy.bases):  # the layout before: one transposed product per axis
        strided = _along(strided, basis, axis)
    assert not strided.flags.c_contiguous and np.array_equal(whole, strided)
    assert multiscale_field(np.random.default_rng(5), shape).flags.c_contiguous

    plane = smooth_field(np.random.default_rng(6), (64, 64), 6, lazy=True)
    window = (slice(3, 40), slice(10, 64))
    first = plane[window]
    assert plane[(slice(3, 40), slice(10, None))] is first  # the same window again: kept, not recomputed
    assert not first.flags.writeable  # shared between slices: nobody may change it
    other = plane[(slice(4, 40), slice(10, 64))]
    assert other is not first and np.allclose(other, first[1:], atol=1e-6)
