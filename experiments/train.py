"""Train many seeds at many sweep points in one compiled program, in segments, then evaluate them.

``SeedRunner`` compiles once per environment and config; every sweep chunk
and every ``gridsim train`` call reuses those programs (params are traced).
Arrays carry two leading axes: sweep points, then seeds.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from agents import curriculum as curricula
from agents import ppo
from experiments import memory, metrics
from gridsim import OUTCOME_FAIL, OUTCOME_TRUE, values


class SeedResults(NamedTuple):
    """Per agent (leading axes ``[points, seeds]``): what a summary or a results table needs."""

    # greedy success rate (``env.succeeded``) on the agent's training distribution (its level set, if any)
    train_success: np.ndarray
    test_counts: np.ndarray  # [..., outcomes]: distinguishing test episodes per outcome
    test_episodes: np.ndarray  # test episodes played, distinguishing or not
    diverged: np.ndarray
    # [..., env.measure_names]: each measure's mean over the agent's evaluation episodes, training and
    # test distributions pooled, where it applies (NaN: it applied to none); None without measures
    measures: np.ndarray | None = None
    # mean regret (``gridsim.values``, the agent's discount) over the training, test and distinguishing test
    # episodes whose level has an exact value (NaN: none has), and the share of episodes that have one
    train_regret: np.ndarray | None = None
    test_regret: np.ndarray | None = None
    distinguishing_regret: np.ndarray | None = None
    exact_value_share: np.ndarray | None = None

    @property
    def distinguishing_episodes(self) -> np.ndarray:
        return self.test_counts.sum(axis=-1)

    def test_rate(self, outcome: int) -> np.ndarray:
        """Share of distinguishing test episodes with ``outcome``; NaN for an agent that had none."""
        return metrics.rate(self.test_counts[..., outcome], self.distinguishing_episodes)

    @property
    def misgeneralization_rate(self) -> np.ndarray:
        """Share of distinguishing test episodes whose outcome is a proxy (NaN: none to count)."""
        return metrics.rate(self.test_counts[..., OUTCOME_TRUE + 1 :].sum(axis=-1), self.distinguishing_episodes)

    @property
    def capability_failure_rate(self) -> np.ndarray:
        return self.test_rate(OUTCOME_FAIL)


class RunOutput(NamedTuple):
    results: SeedResults
    metrics: ppo.Metrics  # per update, each [points, seeds, num_updates]
    networks: object  # trained weights, leaves [points, seeds, ...] (numpy)


def segment_sizes(num_updates: int, segments: int) -> list[int]:
    """Split updates into segments of at most two distinct lengths (at most two compilations)."""
    size = math.ceil(num_updates / max(1, min(segments, num_updates)))
    return [size] * (num_updates // size) + ([num_updates % size] if num_updates % size else [])


def _over_points_and_seeds(fn, seed_axes, point_axes):
    return jax.vmap(jax.vmap(fn, seed_axes), point_axes)


def level_seed(key: jax.Array) -> jax.Array:
    """Each agent's own training level set (``params.level_seed``), derived from its seed's key."""
    return jax.lax.bitcast_convert_type(jax.random.bits(jax.random.fold_in(key, 0x1E7E15)), jnp.int32)


class SeedRunner:
    def __init__(self, env, config: ppo.Config, eval_episodes: int, eval_max_steps: int,
                 curriculum: curricula.Config | None = None):
        self.env = env
        self.config = config
        self.eval_episodes = eval_episodes
        self.trainer = ppo.make_train(config, env, curriculum)
        self.curriculum = self.trainer.curriculum

        def init(key, params, settings):
            return self.trainer.init(key, params.replace(level_seed=level_seed(key)), settings)

        self._init_settings = jax.jit(_over_points_and_seeds(init, (0, None, None), (None, 0, 0)))
        self._segment = jax.jit(_over_points_and_seeds(self.trainer.segment, (0, None), (0, None)),
                                static_argnums=1)

        def evaluate(network, params, key, label):
            return ppo.evaluate(self.trainer, network, params, key, eval_episodes, eval_max_steps, greedy=True,
                                label=label, regret=True)

        # training success on each agent's own training params; test episodes labelled by the oracles
        self._evaluate_train = jax.jit(_over_points_and_seeds(functools.partial(evaluate, label=False),
                                                              (0, 0, 0), (0, 0, 0)))
        self._evaluate_test = jax.jit(_over_points_and_seeds(functools.partial(evaluate, label=True),
                                                             (0, None, 0), (0, 0, 0)))
        self._by_devices = {}  # device count -> _Programs

    def _init(self, keys, train_params, settings=None):
        """Every agent's state before training, ``[points, seeds]``; ``settings`` as ``run`` takes them."""
        if settings is None:
            points = len(jax.tree_util.tree_leaves(train_params)[0])
            settings = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (points,)), self.curriculum.params())
        return self._init_settings(keys, train_params, settings)

    @property
    def steps_per_seed(self) -> int:
        return self.config.steps_per_seed

    def bytes_per_agent(self, params) -> dict[str, int]:
        """A rough upper bound on one agent's device memory, by the setting that drives it:
        ``training`` (its state and rollouts) and ``evaluation`` (its test episodes)."""
        c = self.config
        state_bytes = memory.tree_bytes(jax.eval_shape(self.trainer.init, jax.random.key(0), params))
        obs_elems = int(np.prod(self.env.observation_space().shape))
        # rollout transitions (obs as bool, then float in the network) and activations, a few copies
        rollout = c.batch_size * (obs_elems * 5 + 4 * (9 + 6 * c.hidden))
        per_env = state_bytes / c.num_envs
        # every evaluation episode's level gets its exact value, and a regret curriculum's levels each update
        level_values = values.bytes_per_level(self.env, params)
        evaluation = self.eval_episodes * (per_env + obs_elems * 5 + 4 * 6 * c.hidden + level_values)
        scored = c.num_envs * level_values if self.curriculum.active and self.curriculum.score == "regret" else 0
        return {"training": int(2 * state_bytes + 3 * rollout + scored), "evaluation": int(2 * evaluation)}

    def run(self, keys, train_params, test_params, eval_keys, segments: int = 20,
            on_segment: Callable[[int], None] | None = None, settings=None) -> RunOutput:
        """Train one agent per (point, key) on ``train_params`` (leading point axis), then evaluate all.
        ``settings``: the curriculum's traced settings per point (``curricula.Params``, leading point
        axis; default the curriculum's own).

        ``eval_keys`` (``[points, seeds]``) draw each agent's own evaluation levels. Each agent
        trains on its own level set when ``num_levels > 0`` (``level_seed`` from its key).

        Seeds are split evenly over as many local devices as divide their number
        (``devices_for``), by ``jax.pmap`` of the one-device program: on CPU, gridsim makes one
        host device per core (``gridsim._xla_flags``), whose programs run at once. Like the
        machine, the split is part of what fixes the numbers bit for bit: XLA's floating-point
        order follows the program's batch shape, so the same seeds split otherwise train to
        slightly different weights (docs/performance.md, "Several devices").
        """
        programs = self._programs(len(devices_for(len(keys))))
        states = programs.init(keys, train_params, settings)
        points = len(jax.tree_util.tree_leaves(train_params)[0])
        history = []
        for n in segment_sizes(self.config.num_updates, segments):
            states, metrics_ = programs.segment(states, n)
            history.append(programs.gather(metrics_))
            if on_segment is not None:
                on_segment(n * self.config.batch_size * len(keys) * points)
        history = _concat(history, axis=2)
        split = jax.vmap(jax.vmap(jax.random.split))(eval_keys)  # [points, seeds, 2]: train, test
        on_train = programs.gather(programs.evaluate_train(states.network, states.env_params,
                                                           programs.spread(split[..., 0])))
        on_test = programs.gather(programs.evaluate_test(states.network, test_params, programs.spread(split[..., 1])))
        outcomes = np.arange(len(self.env.outcome_names))
        counts = ((on_test.outcome[..., None] == outcomes) & on_test.distinguishing[..., None]).sum(axis=-2)
        results = SeedResults(
            train_success=on_train.success.mean(axis=-1),
            test_counts=counts,
            test_episodes=np.full(counts.shape[:-1], self.eval_episodes),
            diverged=programs.gather(states.diverged),
            measures=metrics.nan_mean(np.concatenate([on_train.measures, on_test.measures], axis=-2), axis=-2),
            train_regret=metrics.nan_mean(on_train.regret, axis=-1),
            test_regret=metrics.nan_mean(on_test.regret, axis=-1),
            distinguishing_regret=metrics.nan_mean(np.where(on_test.distinguishing, on_test.regret, np.nan), axis=-1),
            exact_value_share=np.isfinite(np.concatenate([on_train.best_return, on_test.best_return], -1)).mean(-1),
        )
        return RunOutput(results, history, programs.gather(states.network))

    def _programs(self, devices: int) -> _Programs:
        """The runner's programs for seeds split over ``devices`` devices. Their arrays are laid out
        ``[points, seeds, ...]`` on one device, ``[devices, points, seeds / devices, ...]`` on more;
        ``spread`` and ``gather`` move between that layout and ``[points, seeds, ...]`` (numpy)."""
        if devices not in self._by_devices:
            self._by_devices[devices] = self._programs_over(devices)
        return self._by_devices[devices]

    def _programs_over(self, devices: int) -> _Programs:
        if devices == 1:
            return _Programs(self._init, self._segment, self._evaluate_train, self._evaluate_test,
                             spread=lambda x: x, gather=jax.device_get)

        def spread(tree):
            return jax.tree_util.tree_map(
                lambda x: jnp.moveaxis(x.reshape((x.shape[0], devices, x.shape[1] // devices) + x.shape[2:]), 1, 0),
                tree)

        def gather(tree):
            return jax.tree_util.tree_map(
                lambda x: np.moveaxis(x, 0, 1).reshape((x.shape[1], x.shape[0] * x.shape[2]) + x.shape[3:]),
                jax.device_get(tree))

        init = jax.pmap(self._init, in_axes=(0, None, None))
        return _Programs(
            # keys [seeds] -> [devices, seeds / devices]: each device initialises every point for its seeds
            init=lambda keys, params, settings: init(keys.reshape(devices, -1), params, settings),
            segment=jax.pmap(self._segment, static_broadcasted_argnums=1),
            evaluate_train=jax.pmap(self._evaluate_train),
            evaluate_test=jax.pmap(self._evaluate_test, in_axes=(0, None, 0)),
            spread=spread, gather=gather)


class _Programs(NamedTuple):
    init: Callable
    segment: Callable
    evaluate_train: Callable
    evaluate_test: Callable
    spread: Callable
    gather: Callable


def devices_for(seeds: int) -> list:
    """The local devices a run of ``seeds`` agents splits its seeds over: the most that divide them evenly
    (64 seeds on 6 devices: 4)."""
    devices = jax.local_devices()
    return devices[: max(k for k in range(1, len(devices) + 1) if seeds % k == 0)]


def _concat(trees, axis):
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs, axis=axis), *trees)
