"""Metric functions against hand-computed values."""

import numpy as np
import pytest

from experiments.metrics import bootstrap_mean_interval, wilson_interval


def test_wilson_matches_hand_computed_values():
    # 8 of 10: centre (0.8 + 1.92/10) / 1.384 = 0.7168, half-width 0.2264
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and high == pytest.approx(0.1611, abs=1e-4)
    low, high = wilson_interval(20, 20)
    assert high == 1.0 and low == pytest.approx(0.8389, abs=1e-4)


def test_wilson_is_vectorised_and_handles_no_trials():
    low, high = wilson_interval(np.array([0, 5]), np.array([0, 10]))
    assert (low[0], high[0]) == (0.0, 1.0)
    assert low[1] < 0.5 < high[1]


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_seeds():
    rng = np.random.default_rng(1)
    few, many = rng.random(8), rng.random(512)
    lo_few, hi_few = bootstrap_mean_interval(few)
    lo_many, hi_many = bootstrap_mean_interval(many)
    assert lo_few <= few.mean() <= hi_few and lo_many <= many.mean() <= hi_many
    assert hi_many - lo_many < hi_few - lo_few
    assert bootstrap_mean_interval([0.3, 0.3, 0.3]) == (pytest.approx(0.3), pytest.approx(0.3))
    assert np.isnan(bootstrap_mean_interval([np.nan])[0])
