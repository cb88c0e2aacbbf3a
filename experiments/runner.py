"""What a chunk of a sweep computes, with no file I/O: ``run_chunk(spec, points) -> ChunkResult``.

A chunk is a list of sweep point indices, trained and evaluated as one call of one compiled
program (``experiments.train.SeedRunner``). A point's results do not depend on which other points
share its chunk or on where it runs: seeds and evaluation levels are derived from
``(spec.seed, point index, agent)``, and every chunk of a sweep has one size. ``experiments.plan``
decides which points share a chunk, executors (``experiments.executors``) where chunks run, and the
store (``experiments.store``) keeps what they return.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow as pa

import gridsim
from experiments import metrics
from experiments.provenance import code_identity
from experiments.spec import SweepSpec, from_manifest, split_point
from experiments.train import SeedRunner, devices_for


class ChunkResult(NamedTuple):
    points: list[int]
    tables: dict[int, pa.Table]  # per point: one row per seed
    curves: dict[int, pa.Table]  # per point: training curves
    agents: dict[int, Any]  # per point: trained weights, leaves [seeds, ...] (numpy)
    seconds: float
    env_steps: int  # including padding points: what the hardware did
    host: str
    pid: int
    devices: list[str]
    code: dict[str, str]  # gridsim version and source where the chunk ran (a cluster node may differ)

    def record(self, executor: str) -> dict:
        """What the store keeps of the chunk besides its results."""
        return {"points": self.points, "seconds": round(self.seconds, 3), "executor": executor,
                "env_steps_per_s": round(self.env_steps / self.seconds), "host": self.host, "pid": self.pid,
                "devices": self.devices}


@functools.lru_cache(maxsize=8)
def _runner(env_name: str, env_options_json: str, config, eval_episodes: int, max_steps: int,
            curriculum) -> SeedRunner:
    """Compiled programs are reused by every later chunk of the same env and config in this process."""
    env, _ = gridsim.make(env_name, **json.loads(env_options_json))
    return SeedRunner(env, config, eval_episodes, max_steps, curriculum)


def runner_for(spec: SweepSpec) -> tuple[SeedRunner, object]:
    """The (cached) compiled runner of a spec, and the env's params with the spec's options applied."""
    env, params = gridsim.make(spec.env_reference, **spec.env_options)
    max_steps = max(int(np.asarray(params.replace(**env_point(params, p)).max_steps_in_episode))
                    for p in spec.points)
    options = json.dumps(spec.env_options, sort_keys=True)
    runner = _runner(spec.env_reference, options, spec.ppo, spec.eval_episodes, max_steps, spec.curriculum)
    return runner, params


def open_sweep(directory):
    """``(store, spec, runner, params)`` of the sweep in ``directory``, from its manifest."""
    from pathlib import Path

    from experiments.store import MANIFEST, Store

    store = Store(directory)
    spec = from_manifest(store.manifest(), Path(directory) / MANIFEST)
    return store, spec, *runner_for(spec)


def env_point(params, point: dict) -> dict:
    """The env params of a sweep point (its curriculum settings left out)."""
    return split_point(point, params)[0]


def seed_keys(spec: SweepSpec) -> jax.Array:
    """One key per seed, the same at every sweep point."""
    return jax.random.split(jax.random.key(spec.seed), spec.seeds)


def eval_keys(spec: SweepSpec, points: list[int]) -> jax.Array:
    """``[points, seeds]``: every (point, seed) draws its own evaluation levels, whatever the chunking."""
    root = jax.random.fold_in(jax.random.key(spec.seed), 1)
    return jnp.stack([jax.random.split(jax.random.fold_in(root, i), spec.seeds) for i in points])


def batch_params(params, points: list[dict]):
    """``params`` with a leading axis, one entry per sweep point (env params only)."""
    fields = {name: [p[name] for p in points] for name in points[0]}
    return params.batch(**(fields or {"alpha": [float(np.asarray(params.alpha))] * len(points)}))


def batch_settings(spec: SweepSpec, params, points: list[dict]):
    """The curriculum's traced settings, a leading axis of one entry per sweep point."""
    each = [spec.curriculum.params(**split_point(p, params)[1]) for p in points]
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *each)


def rows_for_point(env, spec: SweepSpec, index: int, params, results, history) -> pa.Table:
    """One row per seed. Rates are over distinguishing test episodes, NaN for a seed that had none."""
    n = spec.seeds
    columns = {"point": np.full(n, index), "seed": np.arange(n)}
    for name, value in spec.points[index].items():
        columns[name] = np.full(n, value, dtype=float)  # one column type for every point of a sweep
    columns["num_levels"] = np.full(n, int(np.asarray(params.num_levels)))  # 0: a fresh level every episode
    columns["train_success"] = results.train_success
    # a curriculum's last update may only have scored levels it never trained on: its last training update's
    last = history.trained.shape[-1] - 1 - np.argmax(np.asarray(history.trained)[:, ::-1], axis=-1) if (
        spec.curriculum.active) else np.full(n, -1)
    columns["final_train_return"] = np.asarray(history.episode_return)[np.arange(n), last]
    columns["test_episodes"] = results.test_episodes
    columns["distinguishing_episodes"] = results.distinguishing_episodes
    for k, name in enumerate(env.outcome_names):
        columns[f"test_{name}"] = results.test_counts[:, k]
    columns["misgeneralization_rate"] = results.misgeneralization_rate
    columns["capability_failure_rate"] = results.capability_failure_rate
    columns["true_rate"] = results.test_rate(gridsim.OUTCOME_TRUE)
    columns["diverged"] = results.diverged
    columns["capable"] = metrics.capable(results.train_success, results.diverged)
    for name in ("train_regret", "test_regret", "distinguishing_regret", "exact_value_share"):
        value = getattr(results, name)
        columns[name] = np.full(n, np.nan) if value is None else value
    columns.update(metrics.measure_columns(env, results.measures))  # the env's own measurements, per agent
    return pa.table(columns)


def curves_for_point(env, index: int, history, curriculum: bool = False) -> pa.Table:
    """One row per seed and update: training success, return, reward per step, and the share of the
    update's steps that fired each of the env's ``curve_events`` (``rate_<event>``)."""
    seeds, updates = history.loss.shape
    columns = {
        "point": np.full(seeds * updates, index),
        "seed": np.repeat(np.arange(seeds), updates),
        "update": np.tile(np.arange(updates), seeds),
        "success_rate": history.success_rate.ravel(),
        "episode_return": history.episode_return.ravel(),
        "reward_per_step": history.reward_per_step.ravel(),
        "loss": history.loss.ravel(),
    }
    for name in env.curve_events:
        columns[f"rate_{name}"] = history.event_rate[..., env.event_names.index(name)].ravel()
    if curriculum:  # whether each update trained (replayed levels) or only scored levels, and the buffer's mean
        columns["trained"] = history.trained.ravel()
        columns["buffer_score"] = history.buffer_score.ravel()
    return pa.table(columns)


def run_chunk(spec: SweepSpec, points: list[int], pad_to: int | None = None,
              on_progress: Callable[[float], None] | None = None, segments: int = 20) -> ChunkResult:
    """Train and evaluate every seed of ``points`` (sweep point indices) in one compiled call.

    The chunk is padded to ``pad_to`` points by repeating its last one, so that every chunk of a
    sweep has one shape and the program compiles once. ``on_progress(env_steps)`` is called after
    each of the ``segments`` parts of training (padding excluded); segments do not change results.
    """
    started = time.perf_counter()
    runner, params = runner_for(spec)
    padded = points + [points[-1]] * ((pad_to or len(points)) - len(points))
    env_points = [env_point(params, spec.points[i]) for i in padded]
    train_params = batch_params(params, env_points)
    real = len(points) / len(padded)  # padding points are not progress
    progress = None if on_progress is None else (lambda steps: on_progress(steps * real))
    out = runner.run(seed_keys(spec), train_params, train_params.test(), eval_keys(spec, padded),
                     segments, on_segment=progress,
                     settings=batch_settings(spec, params, [spec.points[i] for i in padded]))
    tables, curves, agents = {}, {}, {}
    for j, i in enumerate(points):
        pick = lambda tree, j=j: jax.tree_util.tree_map(lambda x: x[j], tree)
        results, history = pick(out.results), pick(out.metrics)
        tables[i] = rows_for_point(runner.env, spec, i, params.replace(**env_point(params, spec.points[i])),
                                   results, history)
        curves[i] = curves_for_point(runner.env, i, history, spec.curriculum.active)
        agents[i] = pick(out.networks)
    return ChunkResult(list(points), tables, curves, agents, time.perf_counter() - started,
                       len(padded) * spec.seeds * runner.steps_per_seed, socket.gethostname(), os.getpid(),
                       [str(d) for d in devices_for(spec.seeds)], code_identity())
