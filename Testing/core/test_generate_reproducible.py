"""Version 3 reproduces bit for bit: speed work on the generator must not change a single sample.

Hashes recorded with the version-3 generator before the speed work of issue 12 (commit f11a951): the
training caches made with version 3 (e.g. ``runs/lite3/cache``) are checked by redrawing items, and old
presets must stay reproducible.  Images, label maps and target masks, 2D at the default 256 px for every
preset and two seeds, 3D (small volumes and one 128x128x64), the ablation switches and a config override.

Label maps and target masks are pinned bit for bit; images by their sum and sum of squares to 1e-7 relative and a
sum with fixed random signs to 1e-4 (one pixel moved by 1e-3 fails). The
generator's smooth fields are BLAS matrix products, whose last bits follow the CPU's BLAS kernel: the first pins
(image bytes hashed too) were recorded on an Intel AVX-512 machine (OpenBLAS kernel SkylakeX) and failed on an AMD
EPYC (kernel Zen) with the same code, where images differed by about 1e-10 relative and labels not at all
(2026-12-02: forcing ``OPENBLAS_CORETYPE=SkylakeX`` there reproduced every old hash). A changed draw moves the sums
by far more than that.
"""
import hashlib
from typing import Tuple

import numpy as np
import pytest

from synthfm.generate import GeneratorConfig, SyntheticGenerator

V3_HASHES = {
    "2d-mixed-0": ("8b23d74871dc6559", 208202.499917, 95506.4479693, -1128.406264),
    "2d-mixed-7": ("e5d135c4e70dc15c", 217864.13362, 116896.688062, -1006.988052),
    "2d-ct-0": ("81a05a0d6c073145", 80083.7555007, 35812.3658245, -452.5620943),
    "2d-ct-7": ("f92baa48da05cd31", 118675.942276, 77610.3530584, -854.9890094),
    "2d-mr-0": ("81a05a0d6c073145", 86939.962354, 40093.039636, -362.2639186),
    "2d-mr-7": ("f92baa48da05cd31", 108951.319688, 62374.9285603, -846.2244814),
    "2d-us-0": ("0ca2439b0f2b3bd0", 87256.8359329, 35723.2120349, -452.5828202),
    "2d-us-7": ("f57a4c4545d346f8", 69167.6627046, 25064.8481444, -595.5031678),
    "3d-mixed-64-0": ("cae0a93e75bd056b", 95945.1496252, 49998.3473261, -164.8634613),
    "3d-mixed-64-3": ("eab5104bd74391aa", 133469.513194, 73559.7888064, -334.5657706),
    "3d-mixed-128x64-0": ("0da7ea9b202c0f71", 1149425.02215, 645099.271307, 279.883787),
}


def _pin(samples) -> Tuple[str, float, float, float]:
    """(digest of the label maps and target masks; sum, sum of squares and a sum with fixed random signs of the
    images, in float64). The signed sum cancels the CPU's last-bit noise (under 2e-5 over a 128x128x64 volume) but
    not a change of one pixel by 1e-3."""
    h, sums = hashlib.sha256(), np.zeros(3)
    for s in samples:
        h.update(s.labels.tobytes())
        h.update(s.mask.tobytes())
        image = np.asarray(s.image, np.float64)
        signs = np.random.default_rng(0).integers(0, 2, image.shape) * 2 - 1
        sums += [image.sum(), np.square(image).sum(), (image * signs).sum()]
    return (h.hexdigest()[:16], *map(float, sums))


def assert_pinned(samples, expected: Tuple[str, float, float, float]) -> None:
    """``samples`` match a :func:`_pin` recorded earlier: labels and masks exactly, the images' sums to 1e-7
    relative and their signed sum to 1e-4."""
    digest, total, squares, signed = _pin(samples)
    assert digest == expected[0], "label maps or target masks changed"
    assert np.allclose([total, squares], expected[1:3], rtol=1e-7, atol=0) and abs(signed - expected[3]) <= 1e-4, \
        f"images changed: sums {total!r}, {squares!r}, {signed!r} instead of {expected[1:]}"


@pytest.mark.parametrize("preset", ["mixed", "ct", "mr", "us"])
@pytest.mark.parametrize("seed", [0, 7])
def test_version_3_images_are_unchanged(preset, seed):
    gen = SyntheticGenerator(GeneratorConfig.from_preset(preset), seed)
    count = 12 if preset == "mixed" else 6
    assert_pinned((gen.sample_2d(i) for i in range(count)), V3_HASHES[f"2d-{preset}-{seed}"])


@pytest.mark.parametrize("seed", [0, 3])
def test_version_3_volumes_are_unchanged(seed):
    gen = SyntheticGenerator(GeneratorConfig.from_preset("mixed", size=64, depth=16), seed)
    assert_pinned((gen.sample_3d(i) for i in range(6)), V3_HASHES[f"3d-mixed-64-{seed}"])


def test_version_3_full_size_volumes_are_unchanged():
    gen = SyntheticGenerator(GeneratorConfig.from_preset("mixed", size=128, depth=64), 0)
    assert_pinned((gen.sample_3d(i) for i in range(4)), V3_HASHES["3d-mixed-128x64-0"])


# Ablation switches, a knob override and ultrasound volumes (seed 1; 3D 64x64x16, seed 2).
V3_VARIANT_HASHES = {
    "shape_aware": ("d47d07efdf196a3f", 112909.319089, 50958.841442, -604.6623983),
    "boundary_aware": ("1e1a43b20b428f7b", 137038.026707, 75734.7314319, -673.7654549),
    "low_contrast_prob": ("c598b8a35b0ca79c", 121604.200393, 67446.7124855, -766.2339797),
    "us-3d": ("3087371afb3bf3f3", 37366.5963125, 11501.9457271, -189.1303025),
}


@pytest.mark.parametrize("knob,value", [("shape_aware", False), ("boundary_aware", False),
                                        ("low_contrast_prob", 0.05)])
def test_version_3_variants_are_unchanged(knob, value):
    gen = SyntheticGenerator(GeneratorConfig.from_preset("mixed", **{knob: value}), 1)
    assert_pinned((gen.sample_2d(i) for i in range(6)), V3_VARIANT_HASHES[knob])


def test_version_3_ultrasound_volumes_are_unchanged():
    gen = SyntheticGenerator(GeneratorConfig.from_preset("us", size=64, depth=16), 2)
    assert_pinned((gen.sample_3d(i) for i in range(4)), V3_VARIANT_HASHES["us-3d"])


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
