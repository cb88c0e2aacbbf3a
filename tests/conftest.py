"""Shared, compiled-once fixtures: small grids keep the suite fast on 2 cores."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

USER_XLA_FLAGS = os.environ.get("XLA_FLAGS", "")  # before gridsim adds its own

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import gridsim  # noqa: E402
from gridsim import oracles, testing  # noqa: E402

LOWEST_OPTIMIZATION = "--xla_backend_optimization_level=0"  # known to every jaxlib gridsim supports
# XLA:CPU's fusion emitters took half of the suite's compile time (jaxlib 0.10, 2 cores): without them
# a test program compiles about twice as fast and runs up to twice as slow, which is a gain here.
# jaxlib 0.4.35 does not know the flag.
NO_FUSION_EMITTERS = "--xla_cpu_use_fusion_emitters=false"
# pytest-xdist's workers already keep every core busy, and a program split over host devices compiles
# once more; the tests that split seeds over devices ask for them
ONE_HOST_DEVICE = "--xla_force_host_platform_device_count=1"


def _xla_knows(flag: str) -> bool:
    """XLA aborts the process on a flag it does not know (older jaxlibs lack some), so a throwaway
    process tries it first."""
    probe = [sys.executable, "-c", "import jax.numpy as jnp; jnp.zeros(1).block_until_ready()"]
    return subprocess.run(probe, env=dict(os.environ, XLA_FLAGS=flag), capture_output=True).returncode == 0


def with_xla_flag(flags: str, flag: str) -> str:
    """``flags`` with ``flag`` (``--name=value``) in place of any setting of the same name."""
    name = flag.split("=")[0]
    return " ".join([f for f in flags.split() if f.split("=")[0] != name] + [flag])


def pytest_configure(config):
    """The suite is compile-bound: XLA compiles at its lowest backend optimization level and, where
    the jaxlib knows the flag, without its fusion emitters (the same programs, only slower machine
    code), and one compilation cache serves the session and the sweeps the tests start as
    subprocesses, so a program compiled once is loaded, not compiled again. Both reach subprocesses
    (and pytest-xdist's workers, which then skip the probe) through the environment; a flag the
    user set either way is left as it is."""
    flags = os.environ.get("XLA_FLAGS", "")
    if LOWEST_OPTIMIZATION.split("=")[0] not in flags:
        flags += " " + LOWEST_OPTIMIZATION
    if NO_FUSION_EMITTERS.split("=")[0] not in flags and _xla_knows(NO_FUSION_EMITTERS):
        flags += " " + NO_FUSION_EMITTERS
    if ONE_HOST_DEVICE.split("=")[0] not in USER_XLA_FLAGS:
        flags = with_xla_flag(flags, ONE_HOST_DEVICE)
    os.environ["XLA_FLAGS"] = flags.strip()
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="gridsim-test-jax-cache-")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def jit_run_heavy(fun, **kwargs):
    """``jax.jit`` at XLA's default optimization level, for the few programs whose running outlasts
    their compiling (10,000 labelled levels): level 0 (``pytest_configure``) ran them
    up to 10x slower, more than it saved in compiling. PPO on the MLP gained nothing from it."""
    return jax.jit(fun, compiler_options={"xla_backend_optimization_level": 2}, **kwargs)


def pytest_collection_modifyitems(config, items):
    """Under ``pytest -n`` with ``--dist loadgroup`` (the Makefile's), every test that reads the
    session's finished sweep runs in one worker, which computes it once instead of once per worker,
    and so do the tests parametrised by one environment, and the property tests, which share
    their rollouts through an in-process cache."""
    # modules whose tests share results through in-process caches
    shared = {"test_properties.py": "properties"}
    for item in items:
        if item.path.name in shared and "env_name" not in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group(shared[item.path.name]))
            continue
        if "finished" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("finished_sweep"))
            continue
        # an environment's parametrised tests share its compiled programs and labelled levels in one worker
        params = getattr(getattr(item, "callspec", None), "params", {})
        name = params.get("name", params.get("env_name"))
        if isinstance(name, str) and (name in REGISTERED or name == PLUGIN):
            item.add_marker(pytest.mark.xdist_group(f"env-{name}"))
    # the longest runs first (the finished sweep's group, the subprocesses, PPO), so that the short
    # tests fill in the end and neither worker finishes long after the other
    first = ("test_ray.py", "test_sweep.py", "test_store.py", "test_ppo.py", "test_discover.py", "test_benchmarks.py",
             "test_docs.py")
    items.sort(key=lambda item: first.index(item.path.name) if item.path.name in first else len(first))


REGISTERED = tuple(sorted(gridsim.registered()))  # the built-ins (before any test loads a plug-in file)
# small versions of each environment (its ``small_options``), shared by every test module
SMALL = {name: gridsim.registered()[name].small_options for name in REGISTERED}
ENV_NAMES = tuple(SMALL)


@functools.cache
def small_env(name: str, **extra):
    return gridsim.make(name, **SMALL[name], **extra)


@functools.cache
def batched_reset(name: str):
    env, _ = small_env(name)
    return jax.jit(jax.vmap(env.reset, (0, None)))


@functools.cache
def random_rollout(name: str):
    """Compiled: ``(key, params) -> gridsim.testing.random_rollout(...)`` with 32 environments under a
    random policy. It is the very program ``check_env`` compiles for the same environment (same name,
    shapes and length), so the compilation cache serves whichever of the two runs second."""
    env, params = small_env(name)
    steps = 2 * int(params.max_steps_in_episode) + 2  # check_env's default length

    def rollout(key, params):
        return testing.random_rollout(env, params, key, 32, steps)

    return jax.jit(rollout)


PLUGIN = "examples/plugins.py:FlagOnTop"
LABELLED = 10_000  # levels per labelled batch


@functools.cache
def env_for(name: str):
    """The small version of a built-in env, or the example plug-in at 7x7."""
    return small_env(name) if name in SMALL else gridsim.make(name, height=7, width=7)


@functools.cache
def labelled_levels(name: str):
    """Compiled: ``(key, params) -> (levels, distinguishing, oracle_outcome)`` for 10,000 levels."""
    env, _ = env_for(name)

    def run(key, params):
        _, states = jax.vmap(env.reset, (0, None))(jax.random.split(key, LABELLED), params)
        return (states.level, *oracles.label(env, params, states.level))

    return jit_run_heavy(run)


@functools.cache
def labelled_test_levels(name):
    """10,000 test levels with each goal's oracle outcome, as numpy: ``(env, levels, distinguishing,
    outcomes)``, computed once per worker for every test that reads them."""
    env, params = env_for(name)
    levels, distinguishing, outcomes = jax.device_get(labelled_levels(name)(jax.random.key(0), params.test()))
    return env, levels, np.asarray(distinguishing), np.asarray(outcomes)


@pytest.fixture(params=ENV_NAMES)
def env_name(request):
    return request.param


# ---- the tiny sweep, shared by the sweep, store and Ray tests -------------------------------------

REPO = Path(__file__).resolve().parents[1]

TINY = """
name = "tiny"
env = "{env}"
seeds = 4
out = "{out}"

[env_options]
height = 5
width = 7

[sweep]
alpha = [0.0, 0.5, 1.0]

[ppo]
num_envs = 16
num_steps = 16
total_timesteps = 2048
update_epochs = 2
num_minibatches = 2

[eval]
episodes = 32
"""


def through_numpy(tree):
    """A checkpoint as a file holds it: every array round-tripped through numpy (keys stay keys)."""
    import jax.numpy as jnp

    return jax.tree_util.tree_map(lambda x: x if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else
                                  jnp.asarray(np.asarray(x)), tree)


def write_spec(tmp_path, name="tiny.toml", env="coin-at-end", out=None, text=TINY, **replace) -> Path:
    body = text.format(env=env, out=out or tmp_path / "run")
    for old, new in replace.items():
        body = body.replace(old, new)
    path = tmp_path / name
    path.write_text(body)
    return path


def results(directory) -> pd.DataFrame:
    return pd.read_parquet(directory).sort_values(["point", "seed"]).reset_index(drop=True)


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """The tiny sweep, uninterrupted, in this process (all three points in one chunk)."""
    from experiments import spec as sweep_spec
    from experiments import sweep

    tmp = tmp_path_factory.mktemp("finished")
    return sweep.run(sweep_spec.load(write_spec(tmp)), progress=False)
