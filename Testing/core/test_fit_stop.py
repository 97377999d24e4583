"""benchmarks/fit_stop.py: stop rules replayed on recorded propagation chains, and the best place to stop."""
import importlib.util
import sys
from pathlib import Path

import pytest

from synthfm.segment import PropagationOptions

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
spec = importlib.util.spec_from_file_location("fit_stop", BENCH / "fit_stop.py")
fit_stop = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fit_stop)


def _slice(area, inter, truth, drift=0.0):
    return {"area": area, "inter": inter, "truth": truth, "score": 0.9, "shift": 0.0, "drift": drift,
            "toward": drift, "growth": 0.0, "size": 0.0, "overlap": 0.8, "contrast": 1.0}


def _volume():
    """Prompted slice 10 px all right; up: two good slices then a leak of 10 px outside; down: one good slice."""
    return {"truth": 40, "start": [10, 10],
            "up": [_slice(10, 10, 10), _slice(10, 8, 10, drift=0.2), _slice(10, 0, 0, drift=0.9)],
            "down": [_slice(10, 9, 10, drift=0.1), _slice(10, 0, 0, drift=1.2)]}


def test_replay_keeps_each_direction_up_to_the_rules_first_stop():
    v = _volume()
    assert fit_stop.replay([v], None) == pytest.approx((2 * 37 / (60 + 40), 6))  # no stop: every slice
    rule = fit_stop.options_rule(PropagationOptions(max_intensity_drift=0.5, intensity_scale="spread"))
    assert fit_stop.replay([v], rule) == pytest.approx((2 * 37 / (40 + 40), 4))  # both leaks cut
    assert fit_stop.replay([v], None, oracle=True) == pytest.approx((2 * 37 / (40 + 40), 4))
    assert fit_stop.best_cut([v]) == pytest.approx((2 * 37 / (40 + 40), 4))
    with pytest.raises(ValueError, match="spread units"):
        fit_stop.options_rule(PropagationOptions(max_intensity_drift=0.5, intensity_scale="contrast"))


def test_fitted_keep_rule_is_in_raw_units_and_follows_the_signs():
    volumes = [_volume() for _ in range(4)]
    rule = dict(fit_stop.fit_rule(volumes, ["drift", "score"]))
    assert rule.get("drift", 0.0) < 0  # the leaked slices drift: a drift lowers the keep probability
    assert "bias" in rule


def test_records_made_with_an_embedding_cache_are_the_records_without(tmp_path):
    """--embedding-cache: the volumes' slices are encoded into the store once, and the chains recorded from it are
    exactly those recorded without it."""
    cache = tmp_path / "embeddings"
    plain = fit_stop.record_set("synthfm-lite", 777, 1, tmp_path / "plain", depth=8)
    cached = fit_stop.record_set("synthfm-lite", 777, 1, tmp_path / "cached", depth=8, embedding_cache=cache)
    assert sorted(p.name for p in cache.rglob("*") if p.is_file())  # the store was filled
    assert cached == plain
    again = fit_stop.record_set("synthfm-lite", 777, 1, tmp_path / "again", depth=8, embedding_cache=cache)
    assert again == plain
