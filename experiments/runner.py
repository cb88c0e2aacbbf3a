"""What a chunk of a sweep computes, with no file I/O: ``run_chunk(spec, points) -> ChunkResult``.

A chunk is a list of sweep point indices, trained and evaluated as one call of one compiled
program (``experiments.train.SeedRunner``). Its results do not depend on which other points share
the chunk, on the chunk's size, or on where it runs: seeds and evaluation levels are derived from
``(spec.seed, point index, agent)``. Executors (``experiments.executors``) decide where chunks run;
the store (``experiments.store``) keeps what they return.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow as pa

import gridsim
from experiments import metrics
from experiments.spec import SweepSpec
from experiments.train import SeedRunner, memory_budget


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
def _runner(env_name: str, env_options_json: str, config, eval_episodes: int, max_steps: int) -> SeedRunner:
    """Compiled programs are reused by every later chunk of the same env and config in this process."""
    env, _ = gridsim.make(env_name, **json.loads(env_options_json))
    return SeedRunner(env, config, eval_episodes, max_steps)


def runner_for(spec: SweepSpec) -> tuple[SeedRunner, object]:
    """The (cached) compiled runner of a spec, and the env's params with the spec's options applied."""
    env, params = gridsim.make(spec.env, **spec.env_options)
    max_steps = max(int(np.asarray(params.replace(**p).max_steps_in_episode)) for p in spec.points)
    runner = _runner(spec.env, json.dumps(spec.env_options, sort_keys=True), spec.ppo, spec.eval_episodes, max_steps)
    return runner, params


def seed_keys(spec: SweepSpec) -> jax.Array:
    """One key per seed, the same at every sweep point."""
    return jax.random.split(jax.random.key(spec.seed), spec.seeds)


def eval_keys(spec: SweepSpec, points: list[int]) -> jax.Array:
    """``[points, seeds]``: every (point, seed) draws its own evaluation levels, whatever the chunking."""
    root = jax.random.fold_in(jax.random.key(spec.seed), 1)
    return jnp.stack([jax.random.split(jax.random.fold_in(root, i), spec.seeds) for i in points])


def batch_params(params, points: list[dict]):
    """``params`` with a leading axis, one entry per sweep point."""
    fields = {name: [p[name] for p in points] for name in points[0]}
    return params.batch(**(fields or {"alpha": [float(np.asarray(params.alpha))] * len(points)}))


CPU_CHUNK_ENVS = 4096  # on a few CPU cores more parallel envs add no throughput, only coarser resumption


def points_per_chunk(spec: SweepSpec, todo: int, default: int | None = None) -> int:
    """The spec's ``[run] points_per_chunk``, else ``default``, else as many points as fit half this
    machine's memory (and, on CPU, ``CPU_CHUNK_ENVS``), balanced over the chunks."""
    if spec.points_per_chunk or default:
        return max(1, min(spec.points_per_chunk or default, todo))
    runner, params = runner_for(spec)
    devices = jax.local_devices()
    seeds_per_device = spec.seeds // len(devices) if spec.seeds % len(devices) == 0 else spec.seeds
    budget, per_point = memory_budget(), runner.bytes_per_agent(params) * seeds_per_device
    if per_point > 2 * budget:  # the estimate errs high: refuse only what cannot fit the whole memory
        raise ValueError(f"seeds: one sweep point's {spec.seeds:,} agents need about {per_point / 2**30:.1f} GiB, "
                         f"more than this machine's {2 * budget / 2**30:.1f} GiB; use fewer seeds")
    fit = budget // max(1, per_point)
    if devices[0].platform == "cpu":
        fit = min(fit, CPU_CHUNK_ENVS // (spec.seeds * runner.config.num_envs))
    fit = max(1, min(todo, fit))
    chunks = math.ceil(todo / fit)
    return math.ceil(todo / chunks)


def plan(spec: SweepSpec, todo: list[int], default: int | None = None) -> list[list[int]]:
    """The chunks that cover ``todo`` (sweep point indices), all but possibly the last of one size."""
    size = points_per_chunk(spec, max(1, len(todo)), default)
    return [todo[i : i + size] for i in range(0, len(todo), size)]


def rows_for_point(env, spec: SweepSpec, index: int, params, results, history) -> pa.Table:
    """One row per seed. Rates are over distinguishing test episodes, NaN for a seed that had none."""
    n = spec.seeds
    columns = {"point": np.full(n, index), "seed": np.arange(n)}
    for name, value in spec.points[index].items():
        columns[name] = np.full(n, value, dtype=float)  # one column type for every point of a sweep
    columns["num_levels"] = np.full(n, int(np.asarray(params.num_levels)))  # 0: a fresh level every episode
    columns["train_success"] = results.train_success
    columns["final_train_return"] = history.episode_return[:, -1]
    columns["test_episodes"] = results.test_episodes
    columns["distinguishing_episodes"] = results.distinguishing_episodes
    for k, name in enumerate(env.outcome_names):
        columns[f"test_{name}"] = results.test_counts[:, k]
    columns["misgeneralization_rate"] = results.misgeneralization_rate
    columns["capability_failure_rate"] = results.capability_failure_rate
    columns["true_rate"] = results.test_rate(gridsim.OUTCOME_TRUE)
    columns["diverged"] = results.diverged
    columns["converged"] = metrics.capable(results.train_success, results.diverged)
    columns.update(metrics.measure_columns(env, results.measures))  # the env's own measurements, per agent
    return pa.table(columns)


def curves_for_point(env, index: int, history) -> pa.Table:
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
    return pa.table(columns)


def run_chunk(spec: SweepSpec, points: list[int], pad_to: int | None = None,
              on_progress: Callable[[float], None] | None = None) -> ChunkResult:
    """Train and evaluate every seed of ``points`` (sweep point indices) in one compiled call.

    The chunk is padded to ``pad_to`` points by repeating its last one, so that every chunk of a
    sweep has one shape and the program compiles once. ``on_progress(env_steps)`` is called as
    training proceeds (padding excluded).
    """
    started = time.perf_counter()
    runner, params = runner_for(spec)
    padded = points + [points[-1]] * ((pad_to or len(points)) - len(points))
    train_params = batch_params(params, [spec.points[i] for i in padded])
    real = len(points) / len(padded)  # padding points are not progress
    progress = None if on_progress is None else (lambda steps: on_progress(steps * real))
    out = runner.run(seed_keys(spec), train_params, train_params.test(), eval_keys(spec, padded),
                     on_segment=progress)
    tables, curves, agents = {}, {}, {}
    for j, i in enumerate(points):
        pick = lambda tree, j=j: jax.tree_util.tree_map(lambda x: x[j], tree)
        results, history = pick(out.results), pick(out.metrics)
        tables[i] = rows_for_point(runner.env, spec, i, params.replace(**spec.points[i]), results, history)
        curves[i] = curves_for_point(runner.env, i, history)
        agents[i] = pick(out.networks)
    return ChunkResult(list(points), tables, curves, agents, time.perf_counter() - started,
                       len(padded) * spec.seeds * runner.steps_per_seed, socket.gethostname(), os.getpid(),
                       [str(d) for d in jax.local_devices()], code_identity())


# ---- what computed the results --------------------------------------------------------------------

# the code that computes a sweep's results: the environments, the agents, and the modules that train,
# evaluate and tabulate them (storage, scheduling, reports and plots only move or read results)
RESULT_CODE = ("gridsim", "agents", "experiments/train.py", "experiments/runner.py", "experiments/spec.py",
               "experiments/metrics.py")


@functools.cache
def _source_digest() -> str:
    """Hash of the Python source that computes the results, committed or not."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for part in RESULT_CODE:
        for path in sorted((root / part).rglob("*.py")) if (root / part).is_dir() else [root / part]:
            digest.update(f"{path.relative_to(root)}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _commit() -> str | None:
    """The git commit of the gridsim checkout, when it runs from one."""
    root = Path(__file__).resolve().parents[1]
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def plugin_files(spec: SweepSpec) -> dict[str, str]:
    """The plug-in file a spec's environment comes from, if any: path -> its text."""
    module, sep, _ = spec.env.partition(":")
    path = Path(module)
    if not sep or not module.endswith(".py") or not path.is_file():
        return {}
    return {str(path): path.read_text(encoding="utf-8")}


def _plugin_sources(spec: SweepSpec) -> dict[str, str]:
    """The plug-in source a spec's environment comes from, path -> text: a file (``file.py:Attr``) or an
    importable module outside gridsim (``package.module:attr``). Built-in names have none."""
    files = plugin_files(spec)
    module, sep, _ = spec.env.partition(":")
    if files or not sep or module.split(".")[0] in ("gridsim", "agents", "experiments"):
        return files
    try:
        origin = importlib.util.find_spec(module).origin
        return {origin: Path(origin).read_text(encoding="utf-8")}
    except (ImportError, AttributeError, TypeError, ValueError, OSError):
        return {}  # gridsim.make reports a module that cannot be found


def code_identity() -> dict[str, str]:
    """The gridsim that runs here: checked on every chunk, so a cluster node with another install
    cannot add its results to a table."""
    return {"gridsim version": gridsim.__version__, "gridsim source": _source_digest()}


def identity(spec: SweepSpec) -> dict[str, str]:
    """What a sweep's results depend on: the spec, gridsim's version and source, the plug-in's source.
    Resuming with any of them changed would mix two programs' agents in one table."""
    plugins = {f"plug-in {path}": hashlib.sha256(text.encode()).hexdigest()[:16]
               for path, text in _plugin_sources(spec).items()}
    return {"spec": spec.digest, **code_identity(), **plugins}


def _versions() -> dict:
    out = {}
    for name in ("gridsim", "jax", "jaxlib", "flax", "optax", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine() -> dict:
    """What decides a run's exact numbers besides the code: floating-point results differ across CPU
    instruction sets and XLA flags, so the same sweep on two machines agrees only statistically."""
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
            "device_kinds": sorted({d.device_kind for d in jax.devices()})}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    info["cpu"] = fields.get("model name") or platform.processor()
    flags = set(fields.get("flags", "").split())
    info["cpu_features"] = sorted(flags & {"sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw",
                                           "avx512vl", "avx512_vnni", "avx512_bf16", "amx_bf16"})
    info["cpu_count"] = os.cpu_count()
    return info


def manifest(spec: SweepSpec) -> dict:
    """The sweep's manifest: what it is and what computes it (the store writes it once)."""
    import datetime

    return {
        "digest": spec.digest,
        "identity": identity(spec),
        "commit": _commit(),
        "env": spec.env,
        "spec": spec.source,
        "points": spec.points,
        "seeds": spec.seeds,
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "versions": _versions(),
        "machine": machine(),
    }
