"""benchmarks/bench_domain_gap.py: the label-free distance between real slices and generator images."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

from synthfm.segment.preprocess import SliceTransform

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
spec = importlib.util.spec_from_file_location("bench_domain_gap", BENCH / "bench_domain_gap.py")
gap = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gap)


def _cloud(rng, centre: float, n: int, dim: int = 8) -> np.ndarray:
    return rng.normal(centre, 1.0, size=(n, dim))


def test_separate_domains_are_told_apart_and_mixed_ones_are_not():
    rng = np.random.default_rng(0)
    real, volume = _cloud(rng, 0.0, 60), np.repeat(np.arange(6), 10)
    far = gap.gap_metrics(real, volume, _cloud(rng, 5.0, 60))
    near = gap.gap_metrics(real, volume, _cloud(rng, 0.0, 60))
    assert far["1nn_acc"] > 0.95 and far["real_nn_synth"] < 0.05 and far["gap"] > 3
    assert 0.3 < near["1nn_acc"] < 0.7 and near["real_nn_synth"] > 0.3 and near["gap"] < 0.5
    assert near["real_to_synth"] < far["real_to_synth"]


def test_a_real_slice_is_not_matched_to_its_own_volume():
    """Slices of one volume are near copies: without the rule they would make any generator look far away."""
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 1, size=(6, 8))
    real = np.repeat(centres, 10, axis=0) + rng.normal(0, 0.01, size=(60, 8))  # 6 volumes of 10 near-equal slices
    synth = rng.normal(0, 1, size=(60, 8))  # drawn like the volumes themselves
    one_volume_each = gap.gap_metrics(real, np.arange(60), synth)  # every slice its own volume: copies match
    grouped = gap.gap_metrics(real, np.repeat(np.arange(6), 10), synth)
    assert one_volume_each["real_nn_synth"] < 0.1
    assert grouped["real_nn_synth"] > 0.5


def test_channel_means_leave_the_padding_out():
    emb = torch.zeros(1, 256, 64, 64)
    emb[0, :, :32, :] = 1.0  # the slice's half of the grid; the rest is padding
    wide = SliceTransform(height=128, width=256, size=256)  # a 1:2 slice fills the top half of the input
    assert np.allclose(gap.channel_means(emb, wide), 1.0)
    assert np.allclose(gap.channel_means(emb, SliceTransform(256, 256, 256)), 0.5)


def test_the_plot_is_written(tmp_path):
    rng = np.random.default_rng(2)
    saved = {"real": _cloud(rng, 0.0, 20), "volume": np.repeat(np.array(["a.nii.gz", "b.nii.gz"]), 10),
             "v3": _cloud(rng, 3.0, 20), "quiet": _cloud(rng, 2.0, 20)}
    out = tmp_path / "gap.png"
    gap.plot_descriptors(saved, str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_bad_variant_is_refused_before_any_encoding(monkeypatch, capsys):
    import pytest

    for variant in (["v", "{not json"], ["v", '{"no_such_knob": 1}'], ["real", "{}"]):
        monkeypatch.setattr(sys, "argv", ["bench_domain_gap.py", "--pairs", "x.csv", "--variant", *variant])
        monkeypatch.setattr(gap, "load_model", lambda *a, **k: pytest.fail("encoded before the check"))
        with pytest.raises(SystemExit):
            gap.main()
        assert f"--variant {variant[0]}" in capsys.readouterr().err
