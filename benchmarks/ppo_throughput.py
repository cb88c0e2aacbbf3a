"""PPO training throughput on coin-at-end: gridsim's PPO beside rejax's, beside the engine's own
env steps, and where one update's time goes.

    python benchmarks/ppo_throughput.py                  # 1, 64, 1024, 4096 seeds (~40 min on 2 CPU cores)
    python benchmarks/ppo_throughput.py --seeds 64       # one seed count
    python benchmarks/ppo_throughput.py --quick          # 1 and 4 seeds with a profile, a few minutes
    python benchmarks/ppo_throughput.py --smoke --out-dir /tmp/bench  # seconds: 1 seed, one update each

Every (implementation, seeds) runs in its own subprocess, so peak memory is per configuration
and no compilation cache is shared. Writes
``benchmarks/results/ppo_throughput-<platform>-<time>.{json,md}`` and prints the Markdown
tables. The method is described in ``benchmarks/README.md``.
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

# gridsim sets its XLA_FLAGS defaults on import (one host device per core among them). Importing jax
# starts no backend, so the flags apply as long as gridsim is imported before any computation; the
# workers inherit them from this process's environment and import gridsim before rejax, so rejax
# runs under the same flags.
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
# "-devices": the seeds split evenly over the local devices by jax.pmap, as gridsim's sweeps run them
IMPLS = ("gridsim", "gridsim-devices", "rejax", "rejax-devices", "rejax-eval", "engine", "profile")


# ---- worker: one configuration, in its own process -------------------------------------------


def _config(timesteps: int, epochs: int = PPO["update_epochs"]):
    from agents import ppo

    return ppo.Config(
        num_envs=PPO["num_envs"], num_steps=PPO["num_steps"], total_timesteps=timesteps, update_epochs=epochs,
        num_minibatches=PPO["num_minibatches"], hidden=PPO["hidden"], encoder="mlp", **HYPER,
    )


def _over_devices(vmapped, keys, broadcast=()):
    """``vmapped(keys, *broadcast)`` with the seeds split evenly over the local devices (``jax.pmap``)."""
    devices = jax.local_device_count()
    if keys.shape[0] % devices:
        raise SystemExit(f"{keys.shape[0]} seeds do not split evenly over {devices} devices")
    program = jax.pmap(vmapped, in_axes=(0,) + (None,) * len(broadcast))
    return program, (keys.reshape((devices, -1) + keys.shape[1:]), *broadcast)


def gridsim_train(seeds: int, timesteps: int, epochs: int, devices: bool):
    from agents import ppo

    env, params = gridsim.make(ENV)
    config = _config(timesteps, epochs)
    train = jax.vmap(ppo.make_train(config, env), (0, None))
    keys, params = jax.random.split(jax.random.key(0), seeds), params.train(alpha=0.0)
    program, args = _over_devices(train, keys, (params,)) if devices else (jax.jit(train), (keys, params))
    env_steps = lambda out: int(out.state.update.sum()) * config.batch_size
    return program, args, env_steps, {"devices": jax.local_device_count() if devices else 1}


def rejax_train(seeds: int, timesteps: int, epochs: int, default_eval: bool, devices: bool):
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
    keys = jax.random.split(jax.random.key(0), seeds)
    train = jax.vmap(algo.train)  # rejax's documented way to train many seeds, under jax.jit
    program, args = _over_devices(train, keys) if devices else (jax.jit(train), (keys,))
    env_steps = lambda out: int(out[0].global_step.sum())
    # What rejax's networks see: the env's observations as stored in its trajectories.
    obs = jax.eval_shape(algo.init_state, keys[0]).last_obs
    info = {"network_input": f"{tuple(obs.shape[1:])} {obs.dtype}, flattened; its first Dense casts to float32",
            "eval": "rejax default (128 episodes every 4096 steps)" if default_eval else "none",
            "devices": jax.local_device_count() if devices else 1}
    return program, args, env_steps, info


def engine(seeds: int, timesteps: int, epochs: int):
    """The env steps of gridsim's PPO rollout without the network, on one device: the trainer's own
    step (``Trainer.step_all``: optimistic resets, a bank of walls per update), the same key splits,
    uniformly random actions instead of sampled ones; ``seeds * num_envs`` environments in all."""
    from agents import ppo

    env, params = gridsim.make(ENV)
    trainer = ppo.make_train(_config(timesteps), env)
    n, steps = PPO["num_envs"], PPO["num_steps"]

    def one_seed(key):
        state = trainer.init(key, params.train(alpha=0.0))

        def update(carry, _):
            env_state, key, checksum = carry
            step_all = trainer.step_all(state.replace(key=key))

            def step(carry, _):
                env_state, key, checksum = carry
                key, k_act, k_env = jax.random.split(key, 3)
                action = jax.random.randint(k_act, (n,), 0, env.num_actions)
                obs, env_state, reward, done, info = step_all(k_env, env_state, action, state.env_params)
                # consuming what PPO reads keeps XLA from dropping the observation code
                used = jnp.sum(obs, dtype=jnp.int32) + jnp.sum(info["final_observation"], dtype=jnp.int32)
                return (env_state, key, checksum + used + jnp.sum(reward).astype(jnp.int32)), None

            return jax.lax.scan(step, (env_state, key, checksum), None, length=steps)[0], None

        updates = timesteps // (n * steps)
        (_, _, checksum), _ = jax.lax.scan(update, (state.env_state, state.key, jnp.int32(0)), None, length=updates)
        return checksum

    info = {"resets_per_step": trainer.resets, "devices": 1}
    keys = jax.random.split(jax.random.key(0), seeds)
    return jax.jit(jax.vmap(one_seed)), (keys,), lambda out: seeds * timesteps, info


def busy_cpu_s() -> float | None:
    """CPU seconds all processes together have used since boot (Linux), including steal."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def timed_calls(call, repeats: int) -> tuple[list[dict], bool, object]:
    """A warm-up call, then calls until ``repeats`` quiet ones (others used at most OTHERS_MAX cores),
    at most ``1 + 3 * repeats`` in all; ``(calls, quiet, last output)``."""
    calls = []
    while True:
        wall, cpu, busy = time.perf_counter(), time.process_time(), busy_cpu_s()
        out = jax.block_until_ready(call())
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        others = max(0.0, busy_cpu_s() - busy - cpu) if busy is not None else 0.0
        calls.append({"s": wall, "cores": cpu / wall, "others_cores": others / wall})
        quiet = [c for c in calls[1:] if c["others_cores"] <= OTHERS_MAX]
        if len(quiet) >= repeats or len(calls) >= 1 + 3 * repeats:
            return calls, len(quiet) >= repeats, out


def worker(args) -> dict:
    impl, seeds, timesteps = args.worker, args.seeds[0], args.timesteps
    if impl == "profile":
        return profile_update(seeds, args.repeats)
    rss_after_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if impl.startswith("gridsim"):
        train, inputs, env_steps, info = gridsim_train(seeds, timesteps, args.epochs, impl.endswith("-devices"))
    elif impl.startswith("rejax"):
        train, inputs, env_steps, info = rejax_train(seeds, timesteps, args.epochs, impl == "rejax-eval",
                                                     impl.endswith("-devices"))
    else:
        train, inputs, env_steps, info = engine(seeds, timesteps, args.epochs)

    start = time.perf_counter()
    compiled = train.lower(*inputs).compile()
    compile_s = time.perf_counter() - start
    # The machine may be shared: calls during which other processes used more than OTHERS_MAX cores
    # are set aside (if quiet calls never come, all calls count and `quiet` is false).
    calls, quiet, out = timed_calls(lambda: compiled(*inputs), args.repeats)
    timed = [c for c in calls[1:] if c["others_cores"] <= OTHERS_MAX] if quiet else calls[1:]
    seconds = [c["s"] for c in timed]
    steps = env_steps(out)
    if steps != seeds * timesteps:
        raise RuntimeError(f"{impl} did {steps} env steps, expected {seeds * timesteps}")
    memory = jax.devices()[0].memory_stats() or {}  # None on CPU; on GPU the device's own peak
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
        "quiet": quiet,
        "calls": calls,  # each: wall seconds, cores this process used, cores other processes used
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_import_mb": rss_after_import,
        "device_peak_mb": memory.get("peak_bytes_in_use", 0) / 2**20 or None,
        "loadavg_end": os.getloadavg(),  # this run's own threads count too
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "modules": {name: sys.modules[name].__file__ for name in ("gridsim", "agents.ppo") if name in sys.modules},
        **info,
    }


# ---- the profile of one update ---------------------------------------------------------------


def profile_update(seeds: int, repeats: int) -> dict:
    """Milliseconds of one PPO update of ``seeds`` seeds (vmapped, one device), whole and by part, each
    part compiled on its own and run on the state after one update: the rollout (its env steps, the
    network's forward pass and sampling, the values of the observations after each step), the
    advantages, and per epoch the shuffle, the minibatches' gradients and the optimizer. Parts run
    alone lose the fusion across their borders, so they need not add up to the whole."""
    import optax

    from agents import ppo

    env, params = gridsim.make(ENV)
    config = _config(UPDATE_STEPS)
    trainer = ppo.make_train(config, env)
    c = config
    keys = jax.random.split(jax.random.key(0), seeds)
    state = jax.jit(jax.vmap(lambda k: trainer.segment(trainer.init(k, params.train(alpha=0.0)), 1)[0]))(keys)
    _, transitions, _ = jax.jit(jax.vmap(trainer._rollout))(state)

    def env_steps(s, actions):  # the rollout's env steps alone, on the actions it took
        step_all = trainer.step_all(s)

        def step(carry, action):
            env_state, key = carry
            key, k_env = jax.random.split(key)
            obs, env_state, reward, done, info = step_all(k_env, env_state, action, s.env_params)
            return (env_state, key), (obs, info["final_observation"], reward, done)

        return jax.lax.scan(step, (s.env_state, s.key), actions)[1]

    def forward(s, obs):  # the rollout's network calls: one per step, then sampling
        def step(key, o):
            key, k = jax.random.split(key)
            _, logits, value = trainer.network.apply(s.network, s.hidden, o, s.reset)
            action = jax.random.categorical(k, logits)
            return key, (action, ppo._log_prob(logits, action), value)

        return jax.lax.scan(step, s.key, obs)[1]

    def final_values(s, obs):  # the rollout's values of the observations after each step
        return trainer._values_after(s.network, jnp.broadcast_to(s.hidden, obs.shape[:2] + s.hidden.shape[1:]), obs)

    advantages = lambda t: trainer._advantages(t, t.value[-1])
    adv, targets = jax.jit(jax.vmap(advantages))(transitions)
    shuffle = lambda key, s, t, a, tg: trainer._minibatches(key, t, a, tg, s.hidden)
    batches = jax.jit(jax.vmap(shuffle))(keys, state, transitions, adv, targets)
    first = jax.tree_util.tree_map(lambda x: x[:, 0], batches)  # each seed's first minibatch
    gradient = lambda net, b: jax.grad(lambda p: trainer._loss(p, *b)[0])(net)
    grads = jax.jit(jax.vmap(gradient))(state.network, first)

    def optimizer(g, opt_state, net):
        updates, opt_state = trainer.optimizer.update(g, opt_state, net)
        return optax.apply_updates(net, updates), opt_state

    per_update = c.update_epochs * c.num_minibatches
    parts = {  # name: (program, its inputs, how many times one update runs it)
        "update (whole)": (jax.vmap(lambda s: trainer._update(s)[0]), (state,), 1),
        "rollout (whole)": (jax.vmap(trainer._rollout), (state,), 1),
        "rollout: env steps": (jax.vmap(env_steps), (state, transitions.action), 1),
        "rollout: network forward and sampling": (jax.vmap(forward), (state, transitions.obs), 1),
        "rollout: values after each step": (jax.vmap(final_values), (state, transitions.obs), 1),
        "advantages": (jax.vmap(advantages), (transitions,), 1),
        "shuffle": (jax.vmap(shuffle), (keys, state, transitions, adv, targets), c.update_epochs),
        "minibatch gradients": (jax.vmap(gradient), (state.network, first), per_update),
        "optimizer": (jax.vmap(optimizer), (grads, state.opt_state, state.network), per_update),
    }
    timings = {}
    for name, (program, inputs, count) in parts.items():
        compiled = jax.jit(program).lower(*inputs).compile()
        calls, quiet, _ = timed_calls(lambda compiled=compiled, inputs=inputs: compiled(*inputs), repeats)
        ms = 1e3 * statistics.median(c_["s"] for c_ in calls[1:])
        timings[name] = {"ms_per_call": ms, "calls_per_update": count, "ms_per_update": ms * count, "quiet": quiet}
    whole = timings["update (whole)"]["ms_per_update"]
    return {"impl": "profile", "seeds": seeds, "env_steps_per_update": seeds * UPDATE_STEPS,
            "steps_per_s": seeds * UPDATE_STEPS / (whole / 1e3), "parts": timings,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# ---- driver -----------------------------------------------------------------------------------


def run_config(impl: str, seeds: int, timesteps: int, epochs: int, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", impl, "--seeds", str(seeds), "--timesteps", str(timesteps),
           "--epochs", str(epochs), "--repeats", str(repeats)]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)  # stderr passes through
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if impl == "profile":
        print(f"profile     seeds={seeds:<5d} one update {result['parts']['update (whole)']['ms_per_update']:,.1f} ms",
              file=sys.stderr)
        return result
    calls = " ".join(f"{c['s']:.1f}s/{c['others_cores']:.2f}" for c in result["calls"])
    print(f"{impl:15s} seeds={seeds:<5d} epochs={epochs} T={timesteps:<8d} {result['steps_per_s']:>13,.0f} "
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
    """The checkout's commit and every uncommitted change in it (not only gridsim's package)."""
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


def markdown(results: dict) -> str:
    runs, devices = results["runs"], results["device"]["local_devices"]
    by = {(r["impl"], r["seeds"]): r["steps_per_s"] for r in runs}
    ratio = lambda a, b: fmt(a / b) if a and b else ""
    cell = lambda x: fmt(x) if x else ""
    lines = [f"| seeds | gridsim | gridsim, seeds over {devices} devices | engine, same batch "
             f"| gridsim ÷ engine, one device | rejax | rejax, seeds over {devices} devices | gridsim ÷ rejax "
             f"| on {devices} devices: gridsim ÷ rejax |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for seeds in sorted({r["seeds"] for r in runs}):
        g, gd, e = by.get(("gridsim", seeds)), by.get(("gridsim-devices", seeds)), by.get(("engine", seeds))
        r, rd = by.get(("rejax", seeds)), by.get(("rejax-devices", seeds))
        lines.append(f"| {seeds} | {cell(g)} | {cell(gd)} | {cell(e)} | {ratio(g, e)} | {cell(r)} "
                     f"| {cell(rd)} | {ratio(g, r)} | {ratio(gd, rd)} |")
    lines += ["", "env-steps/s (median of the timed calls); the engine's row steps seeds x num_envs environments "
              "with random actions through PPO's own step, on one device.", ""]
    for r in runs:
        if not r["quiet"]:
            lines.append(f"- {r['impl']} at {r['seeds']} seeds: other processes were running during its timed calls")
        if r["impl"] == "rejax-eval":
            plain = by.get(("rejax", r["seeds"]))
            lines.append(f"- rejax with its default evaluation at {r['seeds']} seeds: {fmt(r['steps_per_s'])} "
                         f"env-steps/s" + (f" ({r['steps_per_s'] / plain:.2f}x of rejax without it)" if plain else ""))
    for r in runs:
        if r["impl"] in ("gridsim", "rejax") and r["seeds"] == max(x["seeds"] for x in runs if x["impl"] == r["impl"]):
            device = f", device peak {r['device_peak_mb']:,.0f} MB" if r["device_peak_mb"] else ""
            lines.append(f"- peak RSS at {r['seeds']} seeds, {r['impl']}: {r['peak_rss_mb']:,.0f} MB{device}")
    for p in results["profile"]:
        whole = p["parts"]["update (whole)"]["ms_per_update"]
        lines += ["", f"One update at {p['seeds']} seeds ({p['env_steps_per_update']:,} env steps, "
                      f"{fmt(p['steps_per_s'])} env-steps/s), each part compiled alone:", "",
                  "| part | ms per call | calls per update | ms per update | share of the whole |",
                  "|---|---:|---:|---:|---:|"]
        for name, t in p["parts"].items():
            lines.append(f"| {name} | {t['ms_per_call']:,.2f} | {t['calls_per_update']} | {t['ms_per_update']:,.1f} "
                         f"| {t['ms_per_update'] / whole:.0%} |")
    return "\n".join(lines)


def parse_args(argv=None):
    ints = lambda s: [int(x) for x in s.split(",") if x]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=ints, default=[1, 64, 1024, 4096], help="comma-separated seed counts")
    p.add_argument("--rejax-seeds", type=ints, default=[1, 64, 1024], help="seed counts rejax also runs at")
    p.add_argument("--impls", default="gridsim,gridsim-devices,rejax,rejax-devices,engine",
                   help="comma-separated: gridsim, gridsim-devices, rejax, rejax-devices, engine")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed calls per configuration, the median reported (on CPU, 1 above 64 seeds)")
    # ~70k env-steps/s on 2 CPU cores: 2^18 keeps a call near 4 s up to 64 seeds (1024: one update, 30 s)
    p.add_argument("--target-steps", type=int, default=2**18, help="env steps per timed call, over all seeds")
    p.add_argument("--timesteps", type=int, default=0, help="fixed env steps per seed (default: from --target-steps)")
    p.add_argument("--profile-seeds", type=ints, default=[64, 1024, 4096],
                   help="seed counts of the profile of one update (empty: none)")
    p.add_argument("--max-load", type=float, default=0.8, help="wait (up to 10 min) for a lower 1-minute load")
    p.add_argument("--quick", action="store_true", help="1 and 4 seeds, 8192 steps, 1 repeat, profile at 4 seeds")
    p.add_argument("--smoke", action="store_true",
                   help="seconds, for the tests: 1 seed, one PPO update, 1 repeat, no profile, no waiting for load")
    p.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=int, default=PPO["update_epochs"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.rejax_seeds, args.timesteps, args.repeats, args.profile_seeds = [1, 4], [1, 4], 8192, 1, [4]
    if args.smoke:
        args.seeds, args.rejax_seeds, args.timesteps, args.repeats, args.profile_seeds = [1], [1], UPDATE_STEPS, 1, []
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    impls = args.impls.split(",")
    if importlib.util.find_spec("rejax") is None:
        # not installed: skipped (installed but broken, it fails loudly in its worker)
        print("rejax is not installed: skipping its runs", file=sys.stderr)
        impls = [i for i in impls if not i.startswith("rejax")]
    loads = wait_for_quiet(args.max_load, 0 if args.smoke else 600)
    info = device_info()
    info["local_devices"] = jax.local_device_count()
    info["loadavg_waited"] = loads
    info["versions"] = {name: _version(name) for name in ("jaxlib", "flax", "optax", "gymnax", "rejax", "distrax")}
    info["gridsim_git"] = git_state()
    print(f"# {info['platform']} {info['device_kind']} ({info['cpu_model']}, {info['cpus_usable']} cores, "
          f"{info['local_devices']} devices), jax {info['jax']}, XLA_FLAGS={info['xla_flags']!r}, "
          f"load {info['loadavg_start']}", file=sys.stderr)

    # the biggest programs run once after a warm-up: one update of 4096 seeds is minutes on 2 CPU cores
    repeats = lambda n: args.repeats if n <= 64 or info["platform"] != "cpu" else 1
    runs = []
    for n in args.seeds:
        for impl in impls:
            splits = n % info["local_devices"] == 0 and info["local_devices"] > 1
            if impl.startswith("rejax") and n not in args.rejax_seeds or impl.endswith("-devices") and not splits:
                continue
            runs.append(run_config(impl, n, timesteps_for(n, args), PPO["update_epochs"], repeats(n)))
    if "rejax" in impls and args.rejax_seeds and not args.smoke:  # what rejax's default evaluation costs
        n = min(64, max(args.rejax_seeds))
        runs.append(run_config("rejax-eval", n, timesteps_for(n, args, EVAL_FREQ), PPO["update_epochs"], args.repeats))
    profile = [run_config("profile", n, UPDATE_STEPS, PPO["update_epochs"], repeats(n)) for n in args.profile_seeds]

    info["loadavg_end"] = os.getloadavg()
    results = {
        "device": info,
        "env": ENV,
        "ppo": {**PPO, **HYPER},
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "argv": sys.argv,
        "runs": runs,
        "profile": profile,
    }
    table = markdown(results)
    print(table)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / f"ppo_throughput-{info['platform']}-{stamp}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    header = (f"Device: {info['devices']} {info['cpu_model']} ({info['cpus_usable']} cores), jax {info['jax']}, "
              f"XLA_FLAGS {info['xla_flags']!r}")
    stem.with_suffix(".md").write_text(f"{header}\n\n{table}\n")
    print(f"wrote {stem}.json and .md", file=sys.stderr)


if __name__ == "__main__":
    main()
