"""Train many seeds of one environment in one compiled program, in segments, then evaluate.

Used by ``gridsim train``; the sweep runner builds on the same pieces.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np

from agents import ppo


class SeedResults(NamedTuple):
    """Per seed (leading axis): what a summary or a results table needs."""

    train_success: np.ndarray  # greedy success rate on the training distribution
    test_outcomes: np.ndarray  # [seeds, outcomes]: fraction of distinguishing test episodes per outcome
    test_distinguishing: np.ndarray  # distinguishing test episodes evaluated per seed
    diverged: np.ndarray


def segment_sizes(num_updates: int, segments: int) -> list[int]:
    """Split updates into at most two distinct segment lengths (so at most two compilations)."""
    size = math.ceil(num_updates / max(1, min(segments, num_updates)))
    sizes = [size] * (num_updates // size)
    return sizes + ([num_updates % size] if num_updates % size else [])


def train_seeds(
    env,
    params,
    config: ppo.Config,
    seeds: int,
    key: jax.Array,
    segments: int = 20,
    on_segment: Callable[[int], None] | None = None,
):
    """Train ``seeds`` agents on ``params``; returns the vmapped ``TrainState`` and per-update metrics."""
    trainer = ppo.make_train(config, env)
    state = jax.jit(jax.vmap(trainer.init, (0, None)))(jax.random.split(key, seeds), params)
    segment = jax.jit(jax.vmap(trainer.segment, (0, None)), static_argnums=1)
    history = []
    for n in segment_sizes(config.num_updates, segments):
        state, metrics = segment(state, n)
        history.append(jax.device_get(metrics))
        if on_segment is not None:
            on_segment(n)
    metrics = jax.tree_util.tree_map(lambda *xs: np.concatenate(xs, axis=1), *history)
    return trainer, state, metrics


def evaluate_seeds(trainer, state, train_params, test_params, key, episodes: int) -> SeedResults:
    env = trainer.env
    max_steps = int(np.max(np.asarray(test_params.max_steps_in_episode)))

    @jax.jit
    def run(networks, params, key):
        evaluate = lambda network: ppo.evaluate(trainer, network, params, key, episodes, max_steps, greedy=True)
        return jax.vmap(evaluate)(networks)

    k_train, k_test = jax.random.split(key)
    on_train = jax.device_get(run(state.network, train_params, k_train))
    on_test = jax.device_get(run(state.network, test_params, k_test))
    # every episode ends within max_steps_in_episode (truncation is an outcome: fail)
    counted = on_test.distinguishing
    n = np.maximum(counted.sum(axis=1), 1)
    fractions = np.stack(
        [((on_test.outcome == k) & counted).sum(axis=1) / n for k in range(len(env.outcome_names))], axis=1
    )
    return SeedResults(
        train_success=(on_train.outcome == 1).mean(axis=1),
        test_outcomes=fractions,
        test_distinguishing=counted.sum(axis=1),
        diverged=np.asarray(state.diverged),
    )


def config_with(config: ppo.Config, **overrides) -> ppo.Config:
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
