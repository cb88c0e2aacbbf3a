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
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import gridsim
from experiments import metrics
from experiments.spec import SpecError, SweepSpec
from experiments.train import SeedRunner, memory_budget

MANIFEST = "_manifest.json"
CURVES = "_curves"
AGENTS = "_agents"
FIGURES = "_figures"


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


# the code that computes a sweep's results: the environments, the agents, and the modules that train,
# evaluate and write them (reports, plots and the command line only read results)
RESULT_CODE = ("gridsim", "agents", "experiments/train.py", "experiments/sweep.py", "experiments/spec.py",
               "experiments/metrics.py")


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
    return done.stdout.strip() or None if done.returncode == 0 else None


def _plugin_files(spec: SweepSpec) -> dict[str, str]:
    """Content hash of the plug-in file a spec's environment comes from, if any."""
    module, sep, _ = spec.env.partition(":")
    if not sep or not module.endswith(".py"):
        return {}
    path = Path(module)
    return {f"plug-in {path}": hashlib.sha256(path.read_bytes()).hexdigest()[:16]} if path.is_file() else {}


def identity(spec: SweepSpec) -> dict[str, str]:
    """What a sweep's results depend on: the spec, gridsim's version and source, the plug-in file.
    Resuming with any of them changed would mix two programs' agents in one table."""
    return {"spec": spec.digest, "gridsim version": gridsim.__version__, "gridsim source": _source_digest(),
            **_plugin_files(spec)}


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


def point_path(out: Path, index: int) -> Path:
    return out / f"point-{index:04d}.parquet"


def prepare(spec: SweepSpec, force: bool = False) -> dict:
    """Create or check the sweep directory; refuse another sweep's results, or results of other code,
    unless ``force``."""
    out = spec.out
    manifest_path = out / MANIFEST
    this = identity(spec)
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        before = manifest.get("identity", {"spec": manifest.get("digest")})
        changed = [name for name in sorted(set(before) | set(this)) if before.get(name) != this.get(name)]
        if not changed:
            return manifest
        if not force:
            what = "a different sweep" if "spec" in changed else "this sweep, run by other code"
            raise SpecError(
                f"{out} holds results of {what} (changed: {', '.join(changed)}); resuming would mix the two "
                "in one table. Choose another 'out', or pass --force to delete them and start again"
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
        "identity": this,
        "commit": _commit(),
        "env": spec.env,
        "spec": spec.source,
        "points": spec.points,
        "seeds": spec.seeds,
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "versions": _versions(),
        "machine": machine(),
        "devices": [str(d) for d in jax.devices()],
        "chunks": [],  # one entry per chunk run: its points, seconds and env-steps/s
    }
    _write_manifest(out, manifest)
    return manifest


def _write_manifest(out: Path, manifest: dict) -> None:
    _atomic_write(out / MANIFEST, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=2)))


def rows_for_point(env, spec: SweepSpec, index: int, point: dict, params, results, history) -> pa.Table:
    """One row per seed. Rates are over distinguishing test episodes, NaN for a seed that had none."""
    n = spec.seeds
    columns = {"point": np.full(n, index), "seed": np.arange(n)}
    for name, value in point.items():
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
    columns["converged"] = (results.train_success >= metrics.CONVERGED) & ~results.diverged
    return pa.table(columns)


def curves_for_point(index: int, history) -> pa.Table:
    seeds, updates = history.loss.shape
    return pa.table(
        {
            "point": np.full(seeds * updates, index),
            "seed": np.repeat(np.arange(seeds), updates),
            "update": np.tile(np.arange(updates), seeds),
            "success_rate": history.success_rate.ravel(),
            "episode_return": history.episode_return.ravel(),
            "loss": history.loss.ravel(),
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


def seed_keys(spec: SweepSpec) -> jax.Array:
    """One key per seed, the same at every sweep point."""
    return jax.random.split(jax.random.key(spec.seed), spec.seeds)


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
    keys = seed_keys(spec)
    eval_root = jax.random.fold_in(jax.random.key(spec.seed), 1)
    # every (point, seed) draws its own evaluation levels, the same whatever the chunking
    eval_keys = lambda indices: jnp.stack([jax.random.split(jax.random.fold_in(eval_root, i), spec.seeds)
                                           for i in indices])
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
            out = runner.run(keys, train_params, train_params.test(), eval_keys(padded),
                             on_segment=lambda steps, real=real: bar.update(steps * real))
            for j, i in enumerate(chunk):
                pick = lambda tree, j=j: jax.tree_util.tree_map(lambda x: x[j], tree)
                results, history = pick(out.results), pick(out.metrics)
                curves = curves_for_point(i, history)
                _atomic_write(spec.out / CURVES / f"point-{i:04d}.parquet",
                              lambda tmp, t=curves: pq.write_table(t, tmp))
                save_agents(spec.out, i, pick(out.networks))
                table = rows_for_point(env, spec, i, points[i], params.replace(**points[i]), results, history)
                # the point's table last: its presence marks the point done
                _atomic_write(point_path(spec.out, i), lambda tmp, t=table: pq.write_table(t, tmp))
            seconds = time.perf_counter() - started
            manifest.setdefault("chunks", []).append({
                "points": chunk, "padded_to": per_chunk, "seconds": round(seconds, 3),
                "env_steps_per_s": round(len(padded) * spec.seeds * runner.steps_per_seed / seconds),
            })
            _write_manifest(spec.out, manifest)
    return spec.out
