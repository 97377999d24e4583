"""The synthetic generator: determinism, non-empty targets, knobs that do what they claim, 3D continuity."""
import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from synthfm.cli import main
from synthfm.generate import GeneratorConfig, SyntheticGenerator
from synthfm.generate.appearance import _speckle
from synthfm.generate.dataset import SyntheticDataset, write_dataset


def _samples(preset="mixed", n=40, seed=0, **kw):
    gen = SyntheticGenerator(GeneratorConfig.from_preset(preset, **kw), seed)
    return [gen.sample_2d(i) for i in range(n)]


def test_same_seed_same_output_and_indices_differ():
    a = SyntheticGenerator(GeneratorConfig(), 7).sample_2d(3)
    b = SyntheticGenerator(GeneratorConfig(), 7).sample_2d(3)
    c = SyntheticGenerator(GeneratorConfig(), 7).sample_2d(4)
    d = SyntheticGenerator(GeneratorConfig(), 8).sample_2d(3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.image, c.image) and not np.array_equal(a.image, d.image)


def test_samples_are_valid_and_span_sizes_shapes_modalities():
    samples = _samples(n=80, anatomy_prob=0.0)  # the shape primitives (anatomy scenes: test_generate_v3.py)
    for s in samples:
        assert s.image.dtype == np.float32 and s.image.min() >= 0 and s.image.max() <= 1
        assert s.mask.any() and np.array_equal(s.mask, s.labels == s.target_label)
    fractions = np.array([s.mask.mean() for s in samples])
    assert fractions.min() < 0.01 and fractions.max() > 0.2
    assert {s.meta["modality"] for s in samples} == {"ct", "mr", "us"}
    assert len({s.meta["target_kind"] for s in samples}) == 6


def test_touch_probability_controls_touching_neighbours():
    touching = np.mean([s.meta["touching"] for s in _samples(n=40, touch_prob=1.0, gap_px=(0, 0), crossing_prob=0,
                                                           anatomy_prob=0.0)])
    apart = np.mean([s.meta["touching"] for s in _samples(n=40, touch_prob=0.0, crossing_prob=0, neighbours=(1, 2),
                                                        anatomy_prob=0.0)])
    assert touching > 0.8 and apart < touching - 0.4, (touching, apart)


def test_gap_is_respected():
    checked = 0
    for s in _samples(n=20, touch_prob=1.0, gap_px=(3, 3), crossing_prob=0, neighbours=(2, 2), anatomy_prob=0.0):
        dist = ndi.distance_transform_edt(~s.mask)
        for label in s.meta["touching_labels"]:
            if (s.labels == label).any():
                assert dist[s.labels == label].min() > 3
                checked += 1
    assert checked >= 10


def test_low_contrast_probability_shifts_contrast_distribution():
    low = np.array([s.meta["contrast"] for s in _samples(n=40, low_contrast_prob=1.0, anatomy_prob=0.0, min_cnr=0.0)])
    high = np.array([s.meta["contrast"] for s in _samples(n=40, low_contrast_prob=0.0, anatomy_prob=0.0)])
    assert np.median(low) < 0.09 and np.median(high) > 0.1


def test_speckle_is_unit_variance_multiplicative_noise():
    z = _speckle(np.random.default_rng(0), (256, 256))
    assert abs(z.mean()) < 1e-4 and abs(z.std() - 1) < 1e-3
    # multiplicative: the relative spread of an ultrasound image grows with brightness
    cv = []
    for s in _samples("us", n=6, speckle=(0.4, 0.4), noise=(0, 0), texture=(0, 0), clutter=(0, 0), gamma=(1, 1),
                      bias=(0, 0), attenuation=(0, 0), edge_blur_px=(0, 0), blur_px=(0, 0), shadow_prob=0):
        vals = [s.image[s.labels == lab] for lab in np.unique(s.labels) if lab > 0 and (s.labels == lab).sum() > 300]
        cv += [v.std() / v.mean() for v in vals if 0.05 < v.mean() < 0.35]
    assert cv and all(0.3 < c < 0.5 for c in cv), cv  # relative spread = speckle strength, whatever the mean


def test_rician_noise_biases_dark_regions_upwards():
    s = _samples("mr", n=1, noise=(0.08, 0.08), bias=(0, 0), texture=(0, 0), clutter=(0, 0))[0]
    outside = s.image[s.labels == 0]
    assert outside.min() >= 0 and outside.mean() > 0.05  # magnitude of noise, not zero-mean


def test_ultrasound_fan_is_black_outside():
    s = _samples("us", n=1, fan_prob=1.0)[0]
    assert (s.image[s.labels == 0] == 0).all() and (s.labels == 0).mean() > 0.1


def test_3d_targets_are_continuous_across_slices():
    gen = SyntheticGenerator(GeneratorConfig.from_preset("mixed", size=64, depth=24), 0)
    for i in range(4):
        v = gen.sample_3d(i)
        present = np.nonzero(v.mask.any(axis=(1, 2)))[0]
        assert v.mask[v.mask.shape[0] // 2].any()
        assert np.array_equal(present, np.arange(present[0], present[-1] + 1)), present  # no missing slices
        areas = v.mask.sum(axis=(1, 2))[present]
        assert np.abs(np.diff(areas)).max() <= 0.5 * areas.max() + 20  # smooth growth / shrinkage
        assert v.spacing[2] >= v.spacing[0]  # anisotropic slices by default ranges


@pytest.mark.parametrize("kwargs, message", [
    ({"size": -5}, "size"),
    ({"target_area": (0.5, 0.1)}, "target_area"),
    ({"touch_prob": 1.5}, "touch_prob"),
    ({"shape_weights": {"cube": 1.0}}, "unknown keys"),
])
def test_bad_parameters_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GeneratorConfig(**kwargs)


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ValueError, match="ct, mr, us, mixed"):
        GeneratorConfig.from_preset("xray")


def test_dataset_round_trip_and_refuses_overwrite(tmp_path):
    cfg = GeneratorConfig.from_preset("ct", size=64)
    write_dataset(tmp_path / "d", cfg, 5, seed=3)
    ds = SyntheticDataset(tmp_path / "d")
    ref = SyntheticGenerator(cfg, 3).sample_2d(4)
    assert len(ds) == 5 and np.array_equal(ds[4].mask, ref.mask)
    assert np.allclose(ds[4].image, ref.image, atol=1e-3)
    with pytest.raises(ValueError, match="--overwrite"):
        write_dataset(tmp_path / "d", cfg, 5)
    with pytest.raises(ValueError, match="positive"):
        write_dataset(tmp_path / "e", cfg, 0)


def test_cli_writes_dataset_gallery_and_3d_cases(tmp_path, capsys):
    assert main(["generate", "--preset", "us", "--count", "3", "--size", "64", "--out", str(tmp_path / "a"),
                 "--gallery", str(tmp_path / "g.png"), "--gallery-count", "3"]) == 0
    assert (tmp_path / "g.png").stat().st_size > 1000
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["count"] == 3
    assert main(["generate", "--dim", "3", "--count", "1", "--size", "48", "--depth", "12",
                 "--out", str(tmp_path / "v")]) == 0
    assert (tmp_path / "v" / "cases.csv").read_text().startswith("image,label,label_value,name")
    assert main(["generate", "--preset", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown preset" in capsys.readouterr().err


def test_fast_fields_are_normalised_and_windows_match_the_whole_field():
    from synthfm.generate.fields import gaussian_noise, multiscale_field, smooth_field

    for shape in [(256, 256), (12, 40, 32)]:
        for field in (smooth_field(np.random.default_rng(1), shape, 6), multiscale_field(np.random.default_rng(2), shape)):
            assert field.dtype == np.float32 and field.shape == shape
            assert abs(field.mean()) < 1e-5 and abs(field.std() - 1) < 1e-4
        lazy = smooth_field(np.random.default_rng(3), shape, 6, lazy=True)
        whole = smooth_field(np.random.default_rng(3), shape, 6)
        window = tuple(slice(2, n - 3) for n in shape)
        assert np.allclose(lazy[window], whole[window], atol=1e-5) and np.allclose(np.asarray(lazy), whole, atol=1e-5)
    noise = gaussian_noise(np.random.default_rng(0), (257, 255))
    assert noise.dtype == np.float32 and noise.shape == (257, 255)
    assert abs(noise.mean()) < 0.01 and abs(noise.std() - 1) < 0.01 and abs((noise ** 4).mean() - 3) < 0.1
    assert np.array_equal(noise, gaussian_noise(np.random.default_rng(0), (257, 255)))


def test_tight_render_windows_never_clip_a_shape():
    from synthfm.generate.config import SHAPE_KINDS
    from synthfm.generate.scene import grid
    from synthfm.generate.shapes import _render_window, contour_perturbation, draw_shape, render

    xx, yy = grid(128)
    rng = np.random.default_rng(0)
    for i in range(60):
        shape = draw_shape(rng, SHAPE_KINDS[i % len(SHAPE_KINDS)], tuple(rng.uniform(20, 108, 2)), rng.uniform(30, 3000))
        perturb = np.clip(np.asarray(contour_perturbation(rng, (128, 128))), -4, 4)  # the windows allow 4 std
        scale, split = float(rng.uniform(0.3, 1.2)), float(rng.uniform(1.0, 1.8))
        full = _render_window(shape, xx[0], yy[:, 0], scale, shape.center, perturb, split)
        assert np.array_equal(render(shape, xx, yy, scale, perturb=perturb, split=split), full), (i, shape.kind)
