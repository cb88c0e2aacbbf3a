"""Statistics for misgeneralization rates: Wilson intervals for one proportion,
bootstrap intervals over seeds for a mean."""

from __future__ import annotations

import numpy as np

Z95 = 1.959963984540054


def wilson_interval(successes, trials, z: float = Z95):
    """Wilson score interval for ``successes`` out of ``trials`` (arrays broadcast).

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0
    and n successes. Zero trials give the uninformative (0, 1).
    """
    k = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    safe_n = np.maximum(n, 1.0)
    p = k / safe_n
    denominator = 1.0 + z**2 / safe_n
    centre = (p + z**2 / (2 * safe_n)) / denominator
    half = z * np.sqrt(p * (1 - p) / safe_n + z**2 / (4 * safe_n**2)) / denominator
    low, high = np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)
    return np.where(n > 0, low, 0.0), np.where(n > 0, high, 1.0)


def bootstrap_mean_interval(values, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0):
    """Percentile bootstrap interval of the mean of ``values`` (one value per seed)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.nan, np.nan
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (resamples, values.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))
