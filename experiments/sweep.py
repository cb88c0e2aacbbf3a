"""Resumable seed sweeps: one compiled training program, results streamed to Parquet.

A sweep directory holds one ``point-NNNN.parquet`` per sweep point (one row per
seed), written atomically (temporary file, then rename), training curves in
``_curves/``, trained weights in ``_agents/``, figures in ``_figures/`` and
``_manifest.json``; ``pandas.read_parquet(directory)`` loads the rows as one
table (files starting with ``_`` or ``.`` are skipped). A rerun skips points
already written, so a crash or Ctrl-C loses at most the chunk in progress.
"""

from __future__ import annotations

import datetime
import functools
import importlib.metadata
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import flax.serialization
import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import gridsim
from experiments.spec import SpecError, SweepSpec
from experiments.train import SeedRunner, memory_budget

MANIFEST = "_manifest.json"
CURVES = "_curves"
AGENTS = "_agents"
FIGURES = "_figures"
CONVERGED = 0.8  # greedy training success at or above which an agent counts as capable
MISGENERALIZES = 0.5  # a capable agent whose misgeneralization rate exceeds this "misgeneralizes"


def _atomic_write(path: Path, write) -> None:
    """Write via a temporary file in the same directory and rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _versions() -> dict:
    names = ("gridsim", "jax", "jaxlib", "flax", "optax", "numpy")
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def point_path(out: Path, index: int) -> Path:
    return out / f"point-{index:04d}.parquet"


def prepare(spec: SweepSpec, force: bool = False) -> dict:
    """Create or check the sweep directory; refuse another sweep's results unless ``force``."""
    out = spec.out
    manifest_path = out / MANIFEST
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("digest") == spec.digest:
            return manifest
        if not force:
            raise SpecError(
                f"{out} holds results of a different sweep (digest {manifest.get('digest')}, this one "
                f"{spec.digest}); choose another 'out', or pass --force to delete them and start again"
            )
        for old in out.glob("point-*.parquet"):
            old.unlink()
        for derived in (CURVES, AGENTS, FIGURES):
            shutil.rmtree(out / derived, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    for derived in (CURVES, AGENTS):
        (out / derived).mkdir(exist_ok=True)
    manifest = {
        "digest": spec.digest,
        "env": spec.env,
        "spec": spec.source,
        "points": spec.points,
        "seeds": spec.seeds,
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "versions": _versions(),
        "devices": [str(d) for d in jax.devices()],
        "chunks": [],  # one entry per chunk run: its points, seconds and env-steps/s
    }
    _write_manifest(out, manifest)
    return manifest


def _write_manifest(out: Path, manifest: dict) -> None:
    _atomic_write(out / MANIFEST, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=2)))


def rows_for_point(env, spec: SweepSpec, index: int, point: dict, results, metrics) -> pa.Table:
    n = spec.seeds
    columns = {"point": np.full(n, index), "seed": np.arange(n)}
    for name, value in point.items():
        columns[name] = np.full(n, value)
    columns["train_success"] = results.train_success
    columns["final_train_return"] = metrics.episode_return[:, -1]
    columns["test_episodes"] = results.test_episodes
    for k, name in enumerate(env.outcome_names):
        columns[f"test_{name}"] = results.test_counts[:, k]
    columns["misgeneralization_rate"] = results.misgeneralization_rate
    columns["capability_failure_rate"] = results.capability_failure_rate
    columns["true_rate"] = results.test_rate(gridsim.OUTCOME_TRUE)
    columns["diverged"] = results.diverged
    columns["converged"] = (results.train_success >= CONVERGED) & ~results.diverged
    return pa.table(columns)


def curves_for_point(index: int, metrics) -> pa.Table:
    seeds, updates = metrics.loss.shape
    return pa.table(
        {
            "point": np.full(seeds * updates, index),
            "seed": np.repeat(np.arange(seeds), updates),
            "update": np.tile(np.arange(updates), seeds),
            "success_rate": metrics.success_rate.ravel(),
            "episode_return": metrics.episode_return.ravel(),
            "loss": metrics.loss.ravel(),
        }
    )


@functools.lru_cache(maxsize=8)
def _runner(env_name: str, env_options_json: str, config, eval_episodes: int, max_steps: int) -> SeedRunner:
    """Compiled programs are reused by every later sweep of the same env and config in this process."""
    env, _ = gridsim.make(env_name, **json.loads(env_options_json))
    return SeedRunner(env, config, eval_episodes, max_steps)


def runner_for(spec: SweepSpec) -> tuple[SeedRunner, object]:
    """The (cached) compiled runner of a spec, and the env's params with the spec's options applied."""
    env, params = gridsim.make(spec.env, **spec.env_options)
    max_steps = max(int(np.asarray(params.replace(**p).max_steps_in_episode)) for p in spec.points)
    runner = _runner(spec.env, json.dumps(spec.env_options, sort_keys=True), spec.ppo, spec.eval_episodes, max_steps)
    return runner, params


def read_manifest(directory) -> dict:
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise ValueError(f"{directory} is not a sweep directory (no {MANIFEST})")
    return json.loads(path.read_text())


CPU_CHUNK_ENVS = 4096  # on a few CPU cores more parallel envs add no throughput, only coarser resumption


def points_per_chunk(runner: SeedRunner, params, seeds: int, todo: int) -> int:
    """As many points as fit half the memory (and, on CPU, CPU_CHUNK_ENVS), balanced over the chunks."""
    devices = jax.local_devices()
    seeds_per_device = seeds // len(devices) if seeds % len(devices) == 0 else seeds
    fit = memory_budget() // max(1, runner.bytes_per_agent(params) * seeds_per_device)
    if devices[0].platform == "cpu":
        fit = min(fit, CPU_CHUNK_ENVS // (seeds * runner.config.num_envs))
    fit = max(1, min(todo, fit))
    chunks = math.ceil(todo / fit)
    return math.ceil(todo / chunks)


def batch_params(params, points: list[dict]):
    """``params`` with a leading axis, one entry per sweep point."""
    fields = {name: [p[name] for p in points] for name in points[0]}
    return params.batch(**(fields or {"alpha": [float(np.asarray(params.alpha))] * len(points)}))


def save_agents(out: Path, index: int, networks) -> None:
    data = flax.serialization.msgpack_serialize(jax.tree_util.tree_map(np.asarray, networks))
    _atomic_write(out / AGENTS / f"point-{index:04d}.msgpack", lambda tmp: Path(tmp).write_bytes(data))


def load_agents(out: Path, index: int):
    """Trained weights of one sweep point, leaves ``[seeds, ...]``."""
    path = Path(out) / AGENTS / f"point-{index:04d}.msgpack"
    if not path.exists():
        raise ValueError(f"no saved agents for sweep point {index} in {out}")
    return flax.serialization.msgpack_restore(path.read_bytes())


def run(spec: SweepSpec, force: bool = False, progress: bool = True) -> Path:
    """Run (or resume) a sweep; returns its directory.

    Points run in chunks, each chunk one call of the compiled (points x seeds)
    program; a chunk's points are written as soon as it ends.
    """
    from tqdm import tqdm

    manifest = prepare(spec, force)
    points = spec.points
    todo = [i for i in range(len(points)) if not point_path(spec.out, i).exists()]
    runner, params = runner_for(spec)
    env = runner.env
    keys = jax.random.split(jax.random.key(spec.seed), spec.seeds)
    eval_key = jax.random.fold_in(jax.random.key(spec.seed), 1)
    todo_count = max(1, len(todo))
    per_chunk = min(spec.points_per_chunk or points_per_chunk(runner, params, spec.seeds, todo_count), todo_count)
    chunks = [todo[i : i + per_chunk] for i in range(0, len(todo), per_chunk)]

    total = len(todo) * spec.seeds * runner.steps_per_seed
    label = f"{spec.name}: {len(todo)} of {len(points)} points x {spec.seeds} seeds"
    with tqdm(total=total, unit="step", unit_scale=True, desc=label, disable=not progress) as bar:
        for number, chunk in enumerate(chunks, 1):
            bar.set_postfix_str(f"chunk {number}/{len(chunks)}")
            started = time.perf_counter()
            padded = chunk + [chunk[-1]] * (per_chunk - len(chunk))  # every chunk is one program shape
            train_params = batch_params(params, [points[i] for i in padded])
            real = len(chunk) / len(padded)  # padding points are not progress
            out = runner.run(keys, train_params, train_params.test(), eval_key,
                             on_segment=lambda steps, real=real: bar.update(steps * real))
            for j, i in enumerate(chunk):
                pick = lambda tree, j=j: jax.tree_util.tree_map(lambda x: x[j], tree)
                results, metrics = pick(out.results), pick(out.metrics)
                curves = curves_for_point(i, metrics)
                _atomic_write(spec.out / CURVES / f"point-{i:04d}.parquet",
                              lambda tmp, t=curves: pq.write_table(t, tmp))
                save_agents(spec.out, i, pick(out.networks))
                table = rows_for_point(env, spec, i, points[i], results, metrics)
                # the point's table last: its presence marks the point done
                _atomic_write(point_path(spec.out, i), lambda tmp, t=table: pq.write_table(t, tmp))
            seconds = time.perf_counter() - started
            manifest.setdefault("chunks", []).append({
                "points": chunk, "padded_to": per_chunk, "seconds": round(seconds, 3),
                "env_steps_per_s": round(len(padded) * spec.seeds * runner.steps_per_seed / seconds),
            })
            _write_manifest(spec.out, manifest)
    return spec.out
