"""PPO training throughput: gridsim's PPO against rejax's PPO on coin-at-end, many seeds at once.

    python benchmarks/ppo_throughput.py                  # 1, 8, 64, 512 seeds (~10 min on 2 CPU cores)
    python benchmarks/ppo_throughput.py --seeds 64       # one seed count
    python benchmarks/ppo_throughput.py --quick          # 1 and 4 seeds with the profile, a minute or two
    python benchmarks/ppo_throughput.py --smoke --out-dir /tmp/bench  # seconds: 1 seed, one update each

Every (implementation, seeds) runs in its own subprocess, so peak RSS is per configuration
and no compilation cache is shared. Writes
``benchmarks/results/ppo_throughput-<platform>-<time>.{json,md}`` and prints the Markdown
table. The method is described in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmark this checkout's gridsim and agents, whatever is installed

# gridsim sets its XLA_FLAGS default on import. Importing jax starts no backend, so the flags
# apply as long as gridsim is imported before any computation; the workers inherit them from
# this process's environment and import gridsim before rejax, so rejax runs under the same flags.
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from env_throughput import device_info, fmt  # noqa: E402

import gridsim  # noqa: E402

ENV = "coin-at-end"
# One set of PPO settings for both implementations (agents.ppo.Config's defaults).
PPO = dict(num_envs=64, num_steps=32, update_epochs=4, num_minibatches=4, hidden=64)
HYPER = dict(lr=5e-4, gamma=0.99, gae_lambda=0.95, clip_eps=0.2, ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5)
UPDATE_STEPS = PPO["num_envs"] * PPO["num_steps"]  # env steps per PPO update, per seed
# rejax trains in blocks of eval_freq env steps, rounding up; with its default eval_freq (4096)
# only a multiple of two updates gives it exactly the env steps gridsim does.
EVAL_FREQ = 4096
OTHERS_MAX = 0.2  # cores other processes may use during a timed call (see worker)


# ---- worker: one configuration, in its own process -------------------------------------------


def gridsim_train(seeds: int, timesteps: int, epochs: int):
    from agents import ppo

    env, params = gridsim.make(ENV)
    config = ppo.Config(
        num_envs=PPO["num_envs"], num_steps=PPO["num_steps"], total_timesteps=timesteps, update_epochs=epochs,
        num_minibatches=PPO["num_minibatches"], hidden=PPO["hidden"], encoder="mlp", **HYPER,
    )
    train = jax.jit(jax.vmap(ppo.make_train(config, env), (0, None)))
    args = (jax.random.split(jax.random.key(0), seeds), params.train(alpha=0.0))
    env_steps = lambda out: int(out.state.update.sum()) * config.batch_size
    return train, args, env_steps, {}


def rejax_train(seeds: int, timesteps: int, epochs: int, default_eval: bool):
    import rejax

    # rejax calls the five-value step (obs, state, reward, done, info) of PureJaxRL and gymnax
    # before 1.0; GymnaxEnv's six-value step (gymnax 1.0) does not unpack there.
    from gridsim.gymnax_adapter import PureJaxRLEnv

    env, params = gridsim.make(ENV)
    params = params.train(alpha=0.0)
    genv = PureJaxRLEnv(env, params)
    h = HYPER
    eval_args = {} if default_eval else {"eval_freq": timesteps, "skip_initial_evaluation": True}
    algo = rejax.PPO.create(
        env=genv, env_params=params, total_timesteps=timesteps, num_envs=PPO["num_envs"],
        num_steps=PPO["num_steps"], num_epochs=epochs, num_minibatches=PPO["num_minibatches"],
        agent_kwargs={"activation": "tanh", "hidden_layer_sizes": (PPO["hidden"],) * 2},
        learning_rate=h["lr"], gamma=h["gamma"], gae_lambda=h["gae_lambda"], clip_eps=h["clip_eps"],
        ent_coef=h["ent_coef"], vf_coef=h["vf_coef"], max_grad_norm=h["max_grad_norm"], **eval_args,
    )
    if not default_eval:
        # create() installs a 128-episode evaluation that train() runs every eval_freq steps
        # and cannot switch off; a no-op callback removes it from the compiled program.
        algo = algo.replace(eval_callback=lambda algo, ts, rng: ())
    train = jax.jit(jax.vmap(algo.train))  # rejax's documented way to train many seeds
    keys = jax.random.split(jax.random.key(0), seeds)
    env_steps = lambda out: int(out[0].global_step.sum())
    # What rejax's networks see: the env's observations as stored in its trajectories.
    obs = jax.eval_shape(algo.init_state, keys[0]).last_obs
    info = {"network_input": f"{tuple(obs.shape[1:])} {obs.dtype}, flattened; its first Dense casts to float32",
            "eval": "rejax default (128 episodes every 4096 steps)" if default_eval else "none"}
    return train, (keys,), env_steps, info


def env_only(seeds: int, timesteps: int, epochs: int):
    """The env steps of gridsim's PPO rollout without the network: the same key splits and
    vmapped ``env.step`` per step, uniformly random actions instead of sampled ones."""
    env, params = gridsim.make(ENV)
    params = params.train(alpha=0.0)
    n, steps = PPO["num_envs"], PPO["num_steps"]

    def one_seed(key):
        obs, state = jax.vmap(env.reset, (0, None))(jax.random.split(key, n), params)

        def step(carry, _):
            state, key, checksum = carry
            key, k_act, k_env = jax.random.split(key, 3)
            action = jax.random.randint(k_act, (n,), 0, env.num_actions)
            obs, state, reward, done, _ = jax.vmap(env.step, (0, 0, 0, None))(
                jax.random.split(k_env, n), state, action, params
            )
            # consuming obs and reward keeps XLA from dropping the observation code
            return (state, key, checksum + jnp.sum(obs, dtype=jnp.int32) + jnp.sum(reward).astype(jnp.int32)), None

        updates = timesteps // (n * steps)
        rollout = lambda carry, _: jax.lax.scan(step, carry, None, length=steps)
        (_, _, checksum), _ = jax.lax.scan(rollout, (state, key, jnp.int32(0)), None, length=updates)
        return checksum

    train = jax.jit(jax.vmap(one_seed))
    return train, (jax.random.split(jax.random.key(0), seeds),), lambda out: seeds * timesteps, {}


def busy_cpu_s() -> float | None:
    """CPU seconds all processes together have used since boot (Linux), including steal."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def worker(args) -> dict:
    impl, seeds, timesteps = args.worker, args.seeds[0], args.timesteps
    rss_after_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if impl == "gridsim":
        train, inputs, env_steps, info = gridsim_train(seeds, timesteps, args.epochs)
    elif impl in ("rejax", "rejax-eval"):
        train, inputs, env_steps, info = rejax_train(seeds, timesteps, args.epochs, impl == "rejax-eval")
    else:
        train, inputs, env_steps, info = env_only(seeds, timesteps, args.epochs)

    start = time.perf_counter()
    compiled = train.lower(*inputs).compile()
    compile_s = time.perf_counter() - start
    # The machine may be shared: a call during which other processes used more than
    # OTHERS_MAX cores is set aside, and up to 3 * repeats calls are made to get `repeats`
    # quiet ones (if they never come, all calls count and `quiet` is false).
    calls = []
    while len(calls) < 1 + 3 * args.repeats:  # the first call is a warm-up
        wall, cpu, busy = time.perf_counter(), time.process_time(), busy_cpu_s()
        out = jax.block_until_ready(compiled(*inputs))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        others = max(0.0, busy_cpu_s() - busy - cpu) if busy is not None else 0.0
        calls.append({"s": wall, "cores": cpu / wall, "others_cores": others / wall})
        quiet = [c for c in calls[1:] if c["others_cores"] <= OTHERS_MAX]
        if len(quiet) >= args.repeats:
            break
    timed = quiet if len(quiet) >= args.repeats else calls[1:]
    seconds = [c["s"] for c in timed]
    steps = env_steps(out)
    if steps != seeds * timesteps:
        raise RuntimeError(f"{impl} did {steps} env steps, expected {seeds * timesteps}")
    device = jax.devices()[0]
    memory = device.memory_stats() or {}  # None on CPU; on GPU the device's own peak
    return {
        "impl": impl,
        "seeds": seeds,
        "timesteps_per_seed": timesteps,
        "update_epochs": args.epochs,
        "env_steps_per_call": steps,
        "compile_s": compile_s,
        "first_call_s": calls[0]["s"],
        "seconds": seconds,
        "median_s": statistics.median(seconds),
        "steps_per_s": steps / statistics.median(seconds),
        "quiet": timed is quiet,
        "calls": calls,  # each: wall seconds, cores this process used, cores other processes used
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_import_mb": rss_after_import,
        "device_peak_mb": memory.get("peak_bytes_in_use", 0) / 2**20 or None,
        "loadavg_end": os.getloadavg(),  # this run's own threads count too
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "modules": {name: sys.modules[name].__file__ for name in ("gridsim", "agents.ppo") if name in sys.modules},
        **info,
    }


# ---- driver -----------------------------------------------------------------------------------


def run_config(impl: str, seeds: int, timesteps: int, epochs: int, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", impl, "--seeds", str(seeds), "--timesteps", str(timesteps),
           "--epochs", str(epochs), "--repeats", str(repeats)]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)  # stderr passes through
    result = json.loads(done.stdout.strip().splitlines()[-1])
    calls = " ".join(f"{c['s']:.1f}s/{c['others_cores']:.2f}" for c in result["calls"])
    print(f"{impl:11s} seeds={seeds:<5d} epochs={epochs} T={timesteps:<8d} {result['steps_per_s']:>12,.0f} "
          f"env-steps/s  compile {result['compile_s']:.1f}s  peak RSS {result['peak_rss_mb']:,.0f} MB  "
          f"calls (s/other processes' cores) {calls}", file=sys.stderr)
    return result


def timesteps_for(seeds: int, args, quantum: int = UPDATE_STEPS) -> int:
    """Per-seed steps: about ``target_steps`` env steps per timed call, a multiple of ``quantum``."""
    steps = args.timesteps or args.target_steps // seeds
    return max(quantum, steps // quantum * quantum)


def wait_for_quiet(max_load: float, timeout_s: float) -> list:
    """Sleep while the 1-minute load says something else is running; returns the loads seen."""
    seen, deadline = [os.getloadavg()[0]], time.monotonic() + timeout_s
    while seen[-1] > max_load and time.monotonic() < deadline:
        print(f"load {seen[-1]:.2f} > {max_load}: waiting 60 s", file=sys.stderr)
        time.sleep(60)
        seen.append(os.getloadavg()[0])
    return seen


def git_state() -> dict | None:
    try:
        run = lambda *cmd: subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        return {"commit": run("rev-parse", "HEAD").strip(), "status": run("status", "--porcelain").splitlines()}
    except (OSError, subprocess.CalledProcessError):
        return None


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def profile(results: dict) -> dict:
    """Where training time goes, from runs that differ in one part, as seconds per env step:
    4 epochs - 1 epoch = 3 epochs of minibatch updates; the rest is the rollout (env, network
    forward, sampling), advantages and init; "env" is the rollout's env steps alone."""
    seeds = results["profile"][0]["seeds"]
    cost = {(r["impl"], r["update_epochs"]): 1 / r["steps_per_s"]
            for r in results["runs"] + results["profile"] if r["seeds"] == seeds}
    epochs = PPO["update_epochs"]
    out = {}
    for impl in ("gridsim", "rejax"):
        if (impl, 1) in cost and (impl, epochs) in cost:
            total, one = cost[impl, epochs], cost[impl, 1]
            update = epochs * (total - one) / (epochs - 1) / total
            out[impl] = {"seeds": seeds, "update": update, "rollout_and_rest": 1 - update}
    if "gridsim" in out and ("env", 1) in cost:
        out["gridsim"]["env_steps"] = cost["env", 1] / cost["gridsim", epochs]
    return out


def markdown(results: dict) -> str:
    runs = results["runs"]
    rejax = {r["seeds"]: r["steps_per_s"] for r in runs if r["impl"] == "rejax"}
    lines = ["| impl | seeds | steps/seed | env-steps/s (median) | compile s | peak RSS MB | gridsim ÷ rejax |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        ratio = fmt(r["steps_per_s"] / rejax[r["seeds"]]) if r["impl"] == "gridsim" and r["seeds"] in rejax else ""
        lines.append(f"| {r['impl']} | {r['seeds']} | {r['timesteps_per_seed']:,} | {fmt(r['steps_per_s'])} | "
                     f"{r['compile_s']:.1f} | {r['peak_rss_mb']:,.0f} | {ratio} |")
    lines.append("")
    for r in runs + results["profile"]:
        if not r["quiet"]:
            lines.append(f"- {r['impl']} at {r['seeds']} seeds ({r['update_epochs']} epochs): other processes "
                         "were running during its timed calls")
    for impl in ("gridsim", "rejax"):
        sps = {r["seeds"]: r["steps_per_s"] for r in runs if r["impl"] == impl}
        if 1 in sps and 64 in sps:
            lines.append(f"- {impl}: 64 seeds vs 1 seed, total env-steps/s: {sps[64] / sps[1]:.1f}x")
    largest = max(r["seeds"] for r in runs)
    for r in runs:
        if r["seeds"] == largest:
            device = f", device peak {r['device_peak_mb']:,.0f} MB" if r["device_peak_mb"] else ""
            lines.append(f"- peak RSS at {largest} seeds, {r['impl']}: {r['peak_rss_mb']:,.0f} MB "
                         f"(after imports: {r['rss_after_import_mb']:,.0f} MB){device}")
    for impl, p in results["breakdown"].items():
        parts = [f"minibatch updates {p['update']:.0%}", f"rollout, advantages and init {p['rollout_and_rest']:.0%}"]
        if "env_steps" in p:
            parts.append(f"of which env steps alone {p['env_steps']:.0%}")
        lines.append(f"- {impl} at {p['seeds']} seeds, share of training time: " + ", ".join(parts))
    for r in results["profile"]:
        if r["impl"] == "rejax-eval":
            plain = next(x for x in runs if x["impl"] == "rejax" and x["seeds"] == r["seeds"])
            lines.append(f"- rejax with its default evaluation at {r['seeds']} seeds: {fmt(r['steps_per_s'])} "
                         f"env-steps/s ({r['steps_per_s'] / plain['steps_per_s']:.2f}x of rejax without it)")
    return "\n".join(lines)


def parse_args(argv=None):
    ints = lambda s: [int(x) for x in s.split(",") if x]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=ints, default=[1, 8, 64, 512], help="comma-separated seed counts")
    p.add_argument("--gpu-seeds", type=ints, default=[1024, 4096], help="added when the platform is gpu")
    p.add_argument("--impls", default="gridsim,rejax", help="comma-separated: gridsim, rejax")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per configuration; the median is reported")
    # ~50k env-steps/s on 2 CPU cores: 2^18 keeps a call near 5 s up to 64 seeds (512: one update, 20 s)
    p.add_argument("--target-steps", type=int, default=2**18, help="env steps per timed call, over all seeds")
    p.add_argument("--timesteps", type=int, default=0, help="fixed env steps per seed (default: from --target-steps)")
    p.add_argument("--profile-seeds", type=int, default=64, help="seed count of the profile runs (0: none)")
    p.add_argument("--max-load", type=float, default=0.8, help="wait (up to 10 min) for a lower 1-minute load")
    p.add_argument("--quick", action="store_true", help="1 and 4 seeds, 8192 steps, 1 repeat, profile at 4 seeds")
    p.add_argument("--smoke", action="store_true",
                   help="seconds, for the tests: 1 seed, one PPO update, 1 repeat, no profile, no waiting for load")
    p.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=int, default=PPO["update_epochs"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.gpu_seeds, args.timesteps, args.repeats, args.profile_seeds = [1, 4], [], 8192, 1, 4
    if args.smoke:
        args.seeds, args.gpu_seeds, args.timesteps, args.repeats, args.profile_seeds = [1], [], UPDATE_STEPS, 1, 0
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    impls = args.impls.split(",")
    if "rejax" in impls and importlib.util.find_spec("rejax") is None:
        # not installed: skipped (installed but broken, it fails loudly in its worker)
        print("rejax is not installed: skipping its runs", file=sys.stderr)
        impls.remove("rejax")
    loads = wait_for_quiet(args.max_load, 0 if args.smoke else 600)
    info = device_info()
    info["loadavg_waited"] = loads
    info["versions"] = {name: _version(name) for name in ("jaxlib", "flax", "optax", "gymnax", "rejax", "distrax")}
    info["gridsim_git"] = git_state()
    seeds = args.seeds + (args.gpu_seeds if info["platform"] == "gpu" else [])
    print(f"# {info['platform']} {info['device_kind']} ({info['cpu_model']}, {info['cpus_usable']} cores), "
          f"jax {info['jax']}, XLA_FLAGS={info['xla_flags']!r}, load {info['loadavg_start']}", file=sys.stderr)

    runs = [run_config(impl, n, timesteps_for(n, args), PPO["update_epochs"], args.repeats)
            for n in seeds for impl in impls]
    extra = []
    if args.profile_seeds:
        n = args.profile_seeds
        t = timesteps_for(n, args, EVAL_FREQ)  # rejax-eval needs whole eval blocks
        # env steps alone run ~40x faster than training: 16x as many make a call long enough to time
        extra = [run_config("env", n, 16 * t, 1, args.repeats)]
        extra += [run_config(impl, n, t, 1, args.repeats) for impl in impls]
        if n not in seeds:  # the 4-epoch runs to compare with
            extra += [run_config(impl, n, t, PPO["update_epochs"], args.repeats) for impl in impls]
        if "rejax" in impls:
            extra.append(run_config("rejax-eval", n, t, PPO["update_epochs"], args.repeats))

    info["loadavg_end"] = os.getloadavg()
    results = {
        "device": info,
        "env": ENV,
        "ppo": {**PPO, **HYPER},
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "argv": sys.argv,
        "runs": runs,
        "profile": extra,
    }
    results["breakdown"] = profile(results) if extra else {}
    table = markdown(results)
    print(table)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / f"ppo_throughput-{info['platform']}-{stamp}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    header = f"Device: {info['devices']} {info['cpu_model']} ({info['cpus_usable']} cores), jax {info['jax']}"
    stem.with_suffix(".md").write_text(f"{header}\n\n{table}\n")
    print(f"wrote {stem}.json and .md", file=sys.stderr)


if __name__ == "__main__":
    main()
