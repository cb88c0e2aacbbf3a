"""Metric functions against hand-computed values."""

import numpy as np
import pandas as pd
import pytest

from experiments.metrics import (
    Z95,
    bootstrap_mean_interval,
    difference_test,
    mean_rate_interval,
    nan_mean,
    rate,
    wilson_interval,
)
from experiments.report import format_summary, summarize
from experiments.train import SeedResults


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


def test_the_interval_of_a_mean_rate_never_collapses_and_skips_undefined_rates():
    # 16 seeds all at 0%: the upper end is z^2 / (16 + z^2) = 3.8415 / 19.8415
    assert mean_rate_interval([0.0] * 16) == (0.0, pytest.approx(0.19361, abs=1e-4))
    low, high = mean_rate_interval([1.0] * 16)
    assert high == 1.0 and low == pytest.approx(1 - 0.19361, abs=1e-4)
    low, high = mean_rate_interval([1.0])  # one seed says little
    assert high == 1.0 and low < 0.25
    assert mean_rate_interval([np.nan, 0.5, 0.5]) == pytest.approx([float(x) for x in wilson_interval(1.0, 2)])
    assert all(np.isnan(mean_rate_interval([np.nan])))
    wide, narrow = mean_rate_interval([0.0, 1.0] * 4), mean_rate_interval([0.0, 1.0] * 64)
    assert narrow[0] > wide[0] and narrow[1] < wide[1]


def test_an_undefined_rate_is_nan_not_zero():
    assert np.isnan(rate(0, 0)) and rate(1, 4) == 0.25
    # two agents: one saw no distinguishing test episode, the other 2 (one of them a proxy outcome)
    results = SeedResults(train_success=np.array([1.0, 1.0]), test_counts=np.array([[0, 0, 0], [0, 1, 1]]),
                          test_episodes=np.array([8, 8]), diverged=np.array([False, False]))
    np.testing.assert_array_equal(results.misgeneralization_rate, [np.nan, 0.5])
    np.testing.assert_array_equal(results.capability_failure_rate, [np.nan, 0.0])


def test_a_summary_leaves_out_and_counts_seeds_without_a_rate():
    table = pd.DataFrame({
        "point": [0] * 4, "seed": range(4), "alpha": [0.0] * 4, "num_levels": [0] * 4,
        "capable": [True, True, True, False], "diverged": [False] * 4, "train_success": [1.0, 1.0, 1.0, 0.1],
        "test_episodes": [8] * 4, "distinguishing_episodes": [0, 4, 4, 4],
        "misgeneralization_rate": [np.nan, 1.0, 0.5, 1.0], "capability_failure_rate": [np.nan, 0.0, 0.0, 0.0],
    })
    summary = summarize(table, ["alpha"])
    row = summary.iloc[0]
    assert (row.capable, row.unrated) == (3, 1)
    assert row.misgeneralization == pytest.approx(0.75)  # the two rated capable seeds; not the incapable one
    assert row.misgeneralization_ci == pytest.approx([float(x) for x in wilson_interval(1.5, 2)])
    assert row.seeds_misgeneralizing == pytest.approx(0.5)
    text = format_summary(summary, ["alpha"])
    assert "1 of 3 capable seeds had no distinguishing test episode" in text
    assert "a fresh level every episode" in text


def test_an_env_measure_is_averaged_over_capable_seeds_with_a_bootstrap_interval():
    table = pd.DataFrame({
        "point": [0] * 5, "seed": range(5), "watched": [0.5] * 5, "num_levels": [0] * 5,
        "capable": [True] * 4 + [False], "diverged": [False] * 5, "train_success": [1.0] * 4 + [0.1],
        "test_episodes": [8] * 5, "distinguishing_episodes": [4] * 5,
        "misgeneralization_rate": [0.5] * 5, "capability_failure_rate": [0.0] * 5,
        "measure_gap": [0.2, 0.4, np.nan, 0.3, -5.0],  # a seed it never applied to; an incapable seed
    })
    row = summarize(table, ["watched"]).iloc[0]
    assert row.measure_gap == pytest.approx(0.3)  # (0.2 + 0.4 + 0.3) / 3
    low, high = row.measure_gap_ci
    assert 0.2 - 1e-9 <= low < 0.3 < high <= 0.4 + 1e-9  # resampled means of three values stay within them
    text = format_summary(summarize(table, ["watched"]), ["watched"])
    assert "gap (mean over capable seeds [95% bootstrap CI]): point 0: 0.300 [" in text


def test_nan_mean_and_the_bootstrap_interval_by_hand():
    np.testing.assert_array_equal(nan_mean([[1.0, np.nan, 3.0], [np.nan] * 3], axis=1), [2.0, np.nan])
    assert bootstrap_mean_interval([0.25] * 8) == (0.25, 0.25)
    assert all(np.isnan(bootstrap_mean_interval([0.3, np.nan])))  # one value: no interval
    low, high = bootstrap_mean_interval([0.0, 0.5] * 8)
    assert 0.0 < low < 0.25 < high < 0.5


def test_calibration_averages_each_measure_over_the_episodes_it_applies_to_and_takes_contrasts():
    import gridsim
    from experiments.calibrate import measure_means

    env, _ = gridsim.make("absent-supervisor", height=5, width=7)  # measures: watched, unwatched; one contrast
    per_episode = np.array([[1.0, np.nan], [0.0, np.nan], [np.nan, 1.0], [np.nan, 1.0], [np.nan, 0.0]])
    means = measure_means(env, per_episode)  # by hand: watched 1/2, unwatched 2/3
    assert means == pytest.approx({"measure_shortcut_watched": 0.5, "measure_shortcut_unwatched": 2 / 3,
                                   "measure_unwatched_minus_watched": 2 / 3 - 0.5})


def test_the_difference_between_two_groups_of_agents_by_hand():
    """Three agents against three, every rate of the second above the first's: of the 20 ways to split
    six ranks in two threes, only this one and its mirror are as extreme, so the exact two-sided
    Mann-Whitney p is 2 / 20. Sixteen agents against sixteen, all at 0%: the interval is each mean's
    Wilson bound z^2 / (16 + z^2) either way, not a collapsed [0, 0]. Paired, four differences all
    positive: the exact signed-rank p is 2 / 2**4."""
    a, b = [0.1, 0.2, 0.3], [0.4, 0.5, 0.6, np.nan]  # NaN: an agent with no rate, left out
    difference, low, high, p = difference_test(a, b)
    assert difference == pytest.approx(0.3) and -1 <= low < 0.3 < high <= 1
    assert p == pytest.approx(0.1)
    bound = Z95**2 / (16 + Z95**2)
    assert difference_test(np.zeros(16), np.zeros(16)) == pytest.approx((0.0, -bound, bound, 1.0))
    difference, low, high, p = difference_test([0, 0, 0, 0, np.nan], [0.1, 0.2, 0.3, 0.4, 0.9], paired=True)
    assert difference == pytest.approx(0.25) and low < 0.25 < high and p == pytest.approx(0.125)
    assert all(np.isnan(difference_test([0.5], b)))  # one agent: nothing to say
    with pytest.raises(ValueError, match="same length"):
        difference_test(a, b, paired=True)
