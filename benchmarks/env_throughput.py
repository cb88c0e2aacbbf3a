"""Environment throughput: random-policy rollouts of gridsim and its peers (navix, xminigrid, jaxgmg).

    python benchmarks/env_throughput.py                      # B = 1, 64, 1024, 8192 (~10 min on 2 CPU cores)
    python benchmarks/env_throughput.py --batch-sizes 1024   # one batch size
    python benchmarks/env_throughput.py --quick              # every environment at B = 8, a minute or two
    python benchmarks/env_throughput.py --smoke --out-dir /tmp/bench  # seconds: a few environments, one peer each

Writes ``benchmarks/results/env_throughput-<platform>-<time>.{json,md}`` and prints
the Markdown tables. The method is described in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

XLA_FLAGS_AT_LAUNCH = os.environ.get("XLA_FLAGS")

# gridsim adds its XLA_FLAGS default on import. Importing jax starts no backend, so
# importing gridsim here, before any computation, puts the peers under the same flags.
import gridsim  # noqa: E402
from gridsim import layouts  # noqa: E402


@dataclasses.dataclass
class Case:
    """One environment behind a common interface: ``reset(key) -> state`` and
    ``step(key, state, action, shared) -> (state, obs)``, auto-resetting when an episode ends.
    ``prepare(key, batch) -> shared``, when given, runs once per timed call (inside the timing)
    and its result reaches every step of that call: gridsim's bank of maze walls."""

    name: str
    family: str
    num_actions: int
    reset: Callable
    step: Callable
    info: dict = dataclasses.field(default_factory=dict)
    prepare: Callable | None = None
    # ``(keys, states, actions, shared) -> (states, obs)`` over the whole batch; default: vmap of ``step``
    step_batch: Callable | None = None

    def batched(self, keys, states, actions, shared):
        if self.step_batch is not None:
            return self.step_batch(keys, states, actions, shared)
        return jax.vmap(self.step, (0, 0, 0, None))(keys, states, actions, shared)


class FixedMazeCheese(gridsim.CheeseInCorner):
    """cheese-in-corner on one maze drawn in advance: the difference to the real env is what drawing
    fresh walls at every reset costs."""

    def __init__(self, height: int = 9, width: int = 9, **kwargs):
        super().__init__(height, width, **kwargs)
        self.fixed_walls = jax.device_get(layouts.maze(jax.random.key(0), self.height, self.width))

    def sample_layout(self, key, params):
        return jnp.asarray(self.fixed_walls)


# gridsim draws this share of the batch's new levels per step and hands them to the environments
# that finished (``GridEnv.step_batch``'s optimistic resets); "exact resets" cases draw one each
RESETS_PER_ENV = 1 / 64


def gridsim_case(name, label: str = "", exact_resets: bool = False, **overrides) -> Case:
    env, params = gridsim.make(name, **overrides) if isinstance(name, str) else (name, name.default_params())
    name = env.name

    def step(key, state, action, bank):
        obs, state, *_ = env.step(key, state, action, params, bank)
        return state, obs

    def step_batch(keys, states, actions, bank):
        resets = None if exact_resets else max(1, int(keys.shape[0] * RESETS_PER_ENV))
        obs, states, *_ = env.step_batch(keys[0], states, actions, params, bank, resets=resets)
        return states, obs

    suffix = f" {label}" if label else ""
    return Case(
        f"{name} {env.height}x{env.width}{suffix}",
        "gridsim",
        env.num_actions,
        lambda key: env.reset(key, params)[1],
        step,
        {"observation": env.observation, "max_steps_in_episode": int(params.max_steps_in_episode),
         "new_levels_per_env_step": 1.0 if exact_resets else RESETS_PER_ENV},
        # as in PPO, a new bank of maze walls per call (one rollout), one entry per environment (None
        # for walls that never change)
        prepare=lambda key, batch: env.sample_layouts(key, params, batch),
        step_batch=step_batch,
    )


def navix_cases(names) -> list[Case]:
    try:
        import navix
    except ImportError as err:
        print(f"navix is not installed ({err}): skipping its environments", file=sys.stderr)
        return []
    cases = []
    for name in names:
        env = navix.make(name)

        def step(key, timestep, action, shared, env=env):
            # navix resets inside step (dm_env style: the step after the last one is a reset)
            timestep = env.step(timestep, action)
            return timestep, timestep.observation

        info = {"max_steps": int(env.max_steps)}
        cases.append(Case(name, "navix", len(env.action_set), env.reset, step, info))
    return cases


def xminigrid_cases(names) -> list[Case]:
    try:
        import xminigrid
        from xminigrid.wrappers import GymAutoResetWrapper
    except ImportError as err:
        print(f"xminigrid is not installed ({err}): skipping its environments", file=sys.stderr)
        return []
    cases = []
    for name in names:
        env, params = xminigrid.make(name)
        env = GymAutoResetWrapper(env)  # xminigrid's step does not reset by itself

        def step(key, timestep, action, shared, env=env, params=params):
            timestep = env.step(params, timestep, action)
            return timestep, timestep.observation

        info = {"max_steps": int(params.max_steps), "view_size": params.view_size}
        reset = lambda key, env=env, params=params: env.reset(params, key)
        cases.append(Case(name, "xminigrid", env.num_actions(params), reset, step, info))
    return cases


def jaxgmg_cases(sizes) -> list[Case]:
    """jaxgmg's cheese_in_the_corner and keys_and_chests (its defaults: corner size 1; 1-4 keys, 4 chests)
    at each size, and its monster_world and follow_me on gridsim's default 7x7 open rooms with gridsim's
    default counts. Its auto-reset restarts the same level, so each environment replays the level it was
    reset to: compare with gridsim on fixed levels as well as with fresh ones."""
    try:
        from jaxgmg.environments import cheese_in_the_corner, follow_me, keys_and_chests, monster_world
        from jaxgmg.procgen import maze_generation
    except ImportError as err:
        print(f"jaxgmg is not installed ({err}; it is not on the package registry: pip install --no-deps from "
              "its source, plus einops, jaxtyping, imageio): skipping its environments", file=sys.stderr)
        return []
    open_room = maze_generation.OpenMazeGenerator()
    settings = [(module, size, {}) for module in (cheese_in_the_corner, keys_and_chests) for size in sizes]
    settings += [(monster_world, 7, dict(maze_generator=open_room, num_apples=3, num_shields=4, num_monsters=2)),
                 (follow_me, 7, dict(maze_generator=open_room, num_beacons=3))]
    cases = []
    for module, size, options in settings:
        env, generator = module.Env(), module.LevelGenerator(height=size, width=size, **options)

        def reset(key, env=env, generator=generator):
            return env.reset_to_level(generator.sample(key))[1]

        def step(key, state, action, shared, env=env):
            obs, state, *_ = env.step(key, state, action)
            return state, obs

        name = f"jaxgmg {module.__name__.rsplit('.', 1)[1]} {size}x{size}"
        cases.append(Case(name, "jaxgmg", env.num_actions, reset, step, {"max_steps": int(env.max_steps_in_episode)}))
    return cases


def make_rollout(case: Case, steps: int):
    """``(states, key) -> ((states, key), checksum)`` over a batch: ``steps`` random actions per env."""

    def rollout(carry):
        states, key = carry
        batch = jax.tree_util.tree_leaves(states)[0].shape[0]
        key, k_shared, k_actions, k_steps = jax.random.split(key, 4)
        shared = case.prepare(k_shared, batch) if case.prepare else None
        # All T x B actions and step keys in one vectorised draw, laid out step-major as the scan
        # reads them: threefry inside the scan body would cost about as much as a gridsim step.
        actions = jax.random.randint(k_actions, (steps, batch), 0, case.num_actions)
        step_keys = jax.random.split(k_steps, (steps, batch))

        def body(carry, xs):
            states, checksum = carry
            step_keys, actions = xs
            states, obs = case.batched(step_keys, states, actions, shared)
            # Summing each observation into the carry keeps XLA from dropping the observation code.
            return (states, checksum + jnp.sum(obs, axis=tuple(range(1, obs.ndim)), dtype=jnp.int32)), None

        (states, checksum), _ = jax.lax.scan(body, (states, jnp.zeros(batch, jnp.int32)), (step_keys, actions))
        return (states, key), checksum

    return jax.jit(rollout)


def prepare_call(fn, carry) -> dict[str, Any]:
    """Compile jitted ``fn: carry -> (carry, out)`` and make a first (warm-up) call."""
    start = time.perf_counter()
    fn = fn.lower(carry).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    carry, _ = jax.block_until_ready(fn(carry))
    return {"fn": fn, "carry": carry, "compile_s": compile_s, "first_call_s": time.perf_counter() - start}


def time_rounds(prepared: list[dict], repeats: int) -> list[dict[str, Any]]:
    """``repeats`` rounds, each timing one call of every prepared function in turn (each continuing
    from the carry its last call returned): a machine that speeds up or slows down during the run
    (on a shared 2-core machine, by up to 2x) then moves every entry alike, not only the later ones."""
    seconds = [[] for _ in prepared]
    for _ in range(repeats):
        for call, timed in zip(prepared, seconds):
            start = time.perf_counter()
            call["carry"], _ = jax.block_until_ready(call["fn"](call["carry"]))
            timed.append(time.perf_counter() - start)
    return [{"compile_s": call["compile_s"], "first_call_s": call["first_call_s"], "seconds": timed,
             "median_s": statistics.median(timed)} for call, timed in zip(prepared, seconds)]


def time_rollouts(cases: list[Case], batch: int, steps: int, repeats: int) -> list[dict[str, Any]]:
    """Every case's rollout at one batch size, compiled first and then timed in interleaved rounds."""
    keys = jax.random.split(jax.random.key(0), batch)
    prepared, shapes = [], []
    for case in cases:
        states = jax.block_until_ready(jax.jit(jax.vmap(case.reset))(keys))
        _, obs = jax.eval_shape(case.step, keys[0], jax.tree.map(lambda x: x[0], states), jnp.int32(0), None)
        prepared.append(prepare_call(make_rollout(case, steps), (states, jax.random.key(1))))
        shapes.append(obs)
        print(f"{case.name:36s} B={batch:<6d} T={steps:<6d} compiled in {prepared[-1]['compile_s']:.1f}s",
              file=sys.stderr)
    results = []
    for case, obs, timing in zip(cases, shapes, time_rounds(prepared, repeats)):
        results.append({
            "env": case.name,
            "family": case.family,
            "batch": batch,
            "steps": steps,
            **timing,
            "steps_per_s": batch * steps / timing["median_s"],
            "obs_shape": list(obs.shape),
            "obs_dtype": str(obs.dtype),
            "num_actions": case.num_actions,
            **case.info,
        })
        print(f"{case.name:36s} B={batch:<6d} T={steps:<6d} {results[-1]['steps_per_s']:>14,.0f} steps/s",
              file=sys.stderr)
    return results


def time_batched(fn, batch: int, repeats: int) -> dict[str, float]:
    """Calls per second of ``vmap(fn)`` over ``batch`` keys (maze generation, resets)."""
    keys = jax.random.split(jax.random.key(1), batch)
    batched = jax.jit(lambda keys: (keys, jax.vmap(fn)(keys)))
    (timing,) = time_rounds([prepare_call(batched, keys)], repeats)
    return {"batch": batch, **timing, "per_s": batch / timing["median_s"]}


def steps_for(batch: int, args) -> int:
    """Scan length: about ``target_steps`` env steps per timed call, within [min, max]."""
    if args.steps:
        return args.steps
    return max(args.min_steps, min(args.max_steps, args.target_steps // batch))


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return models[0] if models else platform.processor()


def _git_state() -> dict[str, Any] | None:
    """The commit of the gridsim checkout, and whether it has uncommitted changes."""
    root = Path(gridsim.__file__).parent
    try:
        run = lambda *cmd: subprocess.run(["git", *cmd], cwd=root, capture_output=True, text=True, check=True).stdout
        dirty = bool(run("status", "--porcelain", "--", ".").strip())  # this package's files only
        return {"commit": run("rev-parse", "HEAD").strip(), "dirty": dirty}
    except (OSError, subprocess.CalledProcessError):
        return None


def time_runs(run, repeats: int) -> tuple[list[float], Any, float]:
    """``run()`` ``repeats`` times: the seconds of each, the last result, and the median of the runs
    after the first (which compiles), or the first's alone."""
    seconds, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - started)
    return seconds, result, statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]


def write_results(out_dir: Path, name: str, result: dict, lines: list[str]) -> Path:
    """``<out_dir>/<name>-<platform>-<time>.json`` (``result``) and ``.md`` (``lines``); prints the lines."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{name}-{result['device']['platform']}-{stamp}"
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return out


def device_info() -> dict[str, Any]:
    device = jax.devices()[0]
    return {
        "platform": device.platform,
        "devices": [str(d) for d in jax.devices()],
        "device_kind": device.device_kind,
        "jax": jax.__version__,
        "versions": {name: _version(name) for name in ("jaxlib", "gridsim", "navix", "xminigrid")},
        "gridsim_git": _git_state(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "xla_flags_at_launch": XLA_FLAGS_AT_LAUNCH,
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "gridsim_imported_first": True,
        "loadavg_start": os.getloadavg(),
    }


def fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def markdown(results: dict[str, Any]) -> str:
    rows, peers = results["rollouts"], results["peers"]
    lines = [
        "| env | B | T | steps/s (median) | compile s |" + "".join(f" × {p} |" for p in peers),
        "|---|---:|---:|---:|---:|" + "---:|" * len(peers),
    ]
    for r in rows:
        ratios = [fmt(r["ratios"][p]) if p in r.get("ratios", {}) else "" for p in peers]
        lines.append(f"| {r['env']} | {r['batch']} | {r['steps']} | {fmt(r['steps_per_s'])} | {r['compile_s']:.1f} |"
                     + "".join(f" {ratio} |" for ratio in ratios))
    lines += ["", "| env | observation (shape, dtype) | actions |", "|---|---|---:|"]
    seen = {}
    for r in rows:
        seen.setdefault(r["env"], f"| {r['env']} | {tuple(r['obs_shape'])} {r['obs_dtype']} | {r['num_actions']} |")
    lines += seen.values()
    lines += ["", "| measurement | B | per second (median) | compile s |", "|---|---:|---:|---:|"]
    for name, m in results["batched"].items():
        lines.append(f"| {name} | {m['batch']} | {fmt(m['per_s'])} | {m['compile_s']:.1f} |")
    lines += ["", "| B | reset cost: coin-at-end steps/s, max_steps_in_episode=4 ÷ default |", "|---:|---:|"]
    lines += [f"| {b} | {ratio:.2f} |" for b, ratio in results["reset_cost"].items()]
    return "\n".join(lines)


def parse_args(argv=None):
    ints = lambda s: [int(x) for x in s.split(",") if x]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", type=ints, default=[1, 64, 1024, 8192], help="comma-separated B")
    p.add_argument("--gpu-batch-sizes", type=ints, default=[16384, 65536], help="added when the platform is gpu")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per (env, B); the median is reported")
    p.add_argument("--steps", type=int, default=0, help="fixed scan length T (default: from --target-steps)")
    # 2^18 steps per call keeps the default run near 10 minutes on 2 CPU cores (T = 256 at B = 1024).
    p.add_argument("--target-steps", type=int, default=2**18, help="env steps per timed call, B * T")
    p.add_argument("--min-steps", type=int, default=32, help="smallest T")
    p.add_argument("--max-steps", type=int, default=4096, help="largest T (bounds the small-B calls)")
    p.add_argument("--quick", action="store_true", help="every environment at B = 8, T = 16, 2 repeats")
    p.add_argument("--smoke", action="store_true",
                   help="seconds, for the tests: B = 8, T = 16, 1 repeat; four gridsim environments, the first "
                        "environment of each installed peer, maze 9x9 and coin-at-end resets only")
    p.add_argument("--only", type=lambda s: s.split(","), default=None,
                   help="comma-separated names: run only these environments (as the tables name them)")
    p.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.gpu_batch_sizes, args.steps, args.repeats = [8], [], 16, 2
    if args.smoke:
        args.batch_sizes, args.gpu_batch_sizes, args.steps, args.repeats = [8], [], 16, 1
    return args


def main(argv=None):
    args = parse_args(argv)
    info = device_info()
    batch_sizes = args.batch_sizes + (args.gpu_batch_sizes if info["platform"] == "gpu" else [])
    print(f"# {info['platform']} {info['device_kind']} ({info['cpu_model']}, {info['cpus_usable']} cores), "
          f"jax {info['jax']}, XLA_FLAGS={info['xla_flags']!r}", file=sys.stderr)

    coin = gridsim_case("coin-at-end")
    short = gridsim_case("coin-at-end", "max_steps=4", max_steps_in_episode=4)
    cheese = gridsim_case("cheese-in-corner", height=9, width=9)  # the default size, named to be explicit
    cheese_exact = gridsim_case("cheese-in-corner", "exact resets", exact_resets=True)
    keys_exact = gridsim_case("keys-and-chests", "exact resets", exact_resets=True)
    fixed_maze = gridsim_case(FixedMazeCheese(), "one fixed maze")
    level_set = gridsim_case("cheese-in-corner", "num_levels=256", num_levels=256)
    egocentric = gridsim_case("cheese-in-corner", "egocentric", observation="egocentric")
    keys = gridsim_case("keys-and-chests")
    obstacles = gridsim_case("keys-and-chests", "obstacle_density=0.2", obstacle_density=0.2)
    cheese13 = gridsim_case("cheese-in-corner", height=13, width=13)
    keys13 = gridsim_case("keys-and-chests", height=13, width=13)
    lava = gridsim_case("lava-shift")
    colour = gridsim_case("colour-vs-shape")
    supervisor = gridsim_case("absent-supervisor")
    dish = gridsim_case("cheese-on-dish")
    monsters = gridsim_case("monster-world")
    leader = gridsim_case("follow-the-leader")
    trees = gridsim_case("tree-harvesting")  # 12x12 as published; no peer has it
    ours = [coin, short, cheese, cheese_exact, fixed_maze, level_set, egocentric, cheese13, keys, keys_exact, obstacles,
            keys13, lava, colour, supervisor, dish, monsters, leader, trees]
    peers = navix_cases(["Navix-Empty-8x8-v0", "Navix-DoorKey-8x8-v0"])
    peers += xminigrid_cases(["MiniGrid-Empty-8x8", "MiniGrid-DoorKey-8x8"])
    peers += jaxgmg_cases([9, 13])

    if args.only:
        ours = [c for c in ours if c.name in args.only]
        peers = [c for c in peers if c.name in args.only]
    elif args.smoke:
        # every case above is built (so a renamed option fails here too), but only these are compiled:
        # the two the reset cost needs, one with exact resets and the subclassed env; of each peer, its first
        ours = [coin, short, cheese_exact, fixed_maze]
        peers = [next(c for c in peers if c.family == family) for family in dict.fromkeys(c.family for c in peers)]
    rollouts = []
    for batch in batch_sizes:
        steps = steps_for(batch, args)
        rollouts += time_rollouts(ours + peers, batch, steps, args.repeats)

    by_key = {(r["env"], r["batch"]): r for r in rollouts}
    for r in rollouts:
        if r["family"] == "gridsim":
            r["ratios"] = {p.name: r["steps_per_s"] / by_key[p.name, r["batch"]]["steps_per_s"] for p in peers}
    reset_cost = {b: by_key[short.name, b]["steps_per_s"] / by_key[coin.name, b]["steps_per_s"]
                  for b in batch_sizes if (short.name, b) in by_key and (coin.name, b) in by_key}

    reset_batch = 8 if args.smoke else 64 if args.quick else 1024
    batched = {}
    for n in (9,) if args.smoke else (9, 13):
        maze = lambda key, n=n: layouts.maze(key, n, n)
        batched[f"maze {n}x{n} levels"] = time_batched(maze, reset_batch, args.repeats)
    for case in (coin,) if args.smoke else (coin, cheese, keys):
        batched[f"{case.name} resets"] = time_batched(case.reset, reset_batch, args.repeats)

    info["loadavg_end"] = os.getloadavg()
    results = {
        "device": info,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "argv": sys.argv,
        "peers": [p.name for p in peers],
        "rollouts": rollouts,
        "reset_cost": reset_cost,
        "batched": batched,
    }
    table = markdown(results)
    print(table)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / f"env_throughput-{info['platform']}-{stamp}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    stem.with_suffix(".md").write_text(f"Device: {info['devices']} {info['cpu_model']}, jax {info['jax']}\n\n{table}\n")
    print(f"wrote {stem}.json and .md", file=sys.stderr)


if __name__ == "__main__":
    main()
