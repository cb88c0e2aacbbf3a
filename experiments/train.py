"""Train many seeds in one compiled program, in segments, then evaluate them.

``SeedRunner`` compiles once per environment and config; every sweep point
and every ``gridsim train`` call reuses those programs (params are traced).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np

from agents import ppo
from gridsim import OUTCOME_FAIL, OUTCOME_TRUE


class SeedResults(NamedTuple):
    """Per seed (leading axis): what a summary or a results table needs."""

    train_success: np.ndarray  # greedy success rate on the training distribution
    test_counts: np.ndarray  # [seeds, outcomes]: distinguishing test episodes per outcome
    diverged: np.ndarray

    @property
    def test_episodes(self) -> np.ndarray:
        return self.test_counts.sum(axis=1)

    def test_rate(self, outcome: int) -> np.ndarray:
        return self.test_counts[:, outcome] / np.maximum(self.test_episodes, 1)

    @property
    def misgeneralization_rate(self) -> np.ndarray:
        """Fraction of distinguishing test episodes whose outcome is a proxy."""
        proxies = self.test_counts[:, OUTCOME_TRUE + 1 :].sum(axis=1)
        return proxies / np.maximum(self.test_episodes, 1)

    @property
    def capability_failure_rate(self) -> np.ndarray:
        return self.test_rate(OUTCOME_FAIL)


def segment_sizes(num_updates: int, segments: int) -> list[int]:
    """Split updates into segments of at most two distinct lengths (at most two compilations)."""
    size = math.ceil(num_updates / max(1, min(segments, num_updates)))
    return [size] * (num_updates // size) + ([num_updates % size] if num_updates % size else [])


class SeedRunner:
    def __init__(self, env, config: ppo.Config, eval_episodes: int, eval_max_steps: int):
        self.env = env
        self.config = config
        self.trainer = ppo.make_train(config, env)
        self._init = jax.jit(jax.vmap(self.trainer.init, (0, None)))
        self._segment = jax.jit(jax.vmap(self.trainer.segment, (0, None)), static_argnums=1)

        def evaluate(network, params, key):
            return ppo.evaluate(self.trainer, network, params, key, eval_episodes, eval_max_steps, greedy=True)

        self._evaluate = jax.jit(jax.vmap(evaluate, (0, None, None)))

    @property
    def steps_per_seed(self) -> int:
        return self.config.num_updates * self.config.batch_size

    def run(self, keys, train_params, test_params, eval_key, segments: int = 20,
            on_segment: Callable[[int], None] | None = None):
        """Train one agent per key on ``train_params``, then evaluate them all.

        Seeds are split evenly over the local devices, each group running the same
        single-device program (dispatch is asynchronous, so devices work at once).
        Results equal a one-device run. Not SPMD sharding: with two host-platform
        CPU devices, a sharded program hung in about 1 run of 3 here.
        Returns ``(SeedResults, per-update metrics [seeds, num_updates])``.
        """
        devices = jax.local_devices()
        if len(keys) % len(devices):
            devices = devices[:1]
        size = len(keys) // len(devices)
        states = [
            self._init(jax.device_put(keys[i * size : (i + 1) * size], d), jax.device_put(train_params, d))
            for i, d in enumerate(devices)
        ]
        history = []
        for n in segment_sizes(self.config.num_updates, segments):
            stepped = [self._segment(state, n) for state in states]
            states = [state for state, _ in stepped]
            history.append(_concat([jax.device_get(metrics) for _, metrics in stepped], axis=0))
            if on_segment is not None:
                on_segment(n * self.config.batch_size * len(keys))
        metrics = _concat(history, axis=1)
        k_train, k_test = jax.random.split(eval_key)
        evaluate = lambda params, key: _concat(
            [jax.device_get(self._evaluate(s.network, jax.device_put(params, d), jax.device_put(key, d)))
             for s, d in zip(states, devices)],
            axis=0,
        )
        on_train, on_test = evaluate(train_params, k_train), evaluate(test_params, k_test)
        counts = np.stack(
            [((on_test.outcome == k) & on_test.distinguishing).sum(axis=1) for k in range(len(self.env.outcome_names))],
            axis=1,
        )
        results = SeedResults(
            train_success=(on_train.outcome == OUTCOME_TRUE).mean(axis=1),
            test_counts=counts,
            diverged=np.concatenate([np.asarray(s.diverged) for s in states]),
        )
        return results, metrics


def _concat(trees, axis):
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs, axis=axis), *trees)
