"""What a curriculum costs: PPO with PLR and ACCEL against domain randomization, exact regret per level,
and PLR's overhead beside jaxued's.

    python benchmarks/curriculum_cost.py                 # 8 seeds, 5 rounds (about 10 min on 2 CPU cores)
    python benchmarks/curriculum_cost.py --seeds 64      # on a GPU: more seeds per program
    python benchmarks/curriculum_cost.py --parts values  # one part: training, values or rollouts
    python benchmarks/curriculum_cost.py --quick         # 2 seeds, 2 rounds, 64-level batches: a few minutes
    python benchmarks/curriculum_cost.py --smoke --out-dir /tmp/bench  # seconds, for the tests

Three parts, each compiled first and then timed in interleaved rounds (``env_throughput.time_rounds``):

1. **training**: PPO env-steps/s of ``jax.jit(jax.vmap(trainer.segment, (0, None)), static_argnums=1)``
   over ``--seeds`` seeds, a segment of ``--updates`` updates per timed call, for DR, PLR (regret, pvl,
   maxmc) and ACCEL (regret) on cheese-in-corner 7x7, and DR and PLR (regret) on keys-and-chests 7x7;
   the cost of a curriculum per env step is DR's steps/s over its own (the goal: at most 1.5x).
2. **values**: levels/s of ``jax.jit(values.best_returns)`` on batches of ``--values-batch`` test levels,
   for every environment that has exact values, at its default size and, for cheese-in-corner and
   keys-and-chests, at 13x13.
3. **rollouts**: PLR's overhead on a random-policy rollout (32 envs x 64 steps), gridsim on
   cheese-in-corner 13x13 and jaxued on its own 13x13 maze: fresh levels every episode (DR) against
   levels drawn from a level buffer, replayed, scored and the buffer updated (PLR). The mazes differ:
   compare the PLR / DR ratios, not the steps/s.

Writes ``benchmarks/results/curriculum_cost-<platform>-<time>.{json,md}`` and prints the Markdown
tables. The method is described in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmark this checkout's gridsim and agents, whatever is installed

# env_throughput imports gridsim before any computation, so gridsim's XLA_FLAGS default applies to
# everything here, jaxued included.
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from env_throughput import _version, device_info, fmt, prepare_call, time_rounds  # noqa: E402
from ppo_throughput import busy_cpu_s, git_state  # noqa: E402

import gridsim  # noqa: E402
from agents import curriculum as curricula  # noqa: E402
from agents import ppo  # noqa: E402
from gridsim import values  # noqa: E402

GOAL = 1.5  # the most a curriculum may cost per env step, as a multiple of DR's cost
GAMMA = 0.99
ALPHA = 0.01  # params.train(ALPHA): the training distribution of every training and rollout row
PPO = dict(num_envs=32, num_steps=64, lr=1e-3, ent_coef=0.02)
# only the learning-rate schedule reads total_timesteps: this many updates keep the rate at lr for any run
# here (and the schedule's step count, updates x epochs x minibatches, within int32)
TOTAL_UPDATES = 1 << 20
TRAINING_ENVS = {
    "cheese-in-corner 7x7": ("cheese-in-corner", dict(height=7, width=7, max_steps_in_episode=64)),
    "keys-and-chests 7x7": ("keys-and-chests", dict(height=7, width=7)),
}
TRAINING = [  # (env, method, score); score None for DR
    ("cheese-in-corner 7x7", "dr", None),
    ("cheese-in-corner 7x7", "plr", "regret"),
    ("cheese-in-corner 7x7", "plr", "pvl"),
    ("cheese-in-corner 7x7", "plr", "maxmc"),
    ("cheese-in-corner 7x7", "accel", "regret"),
    # keys-and-chests has the most expensive exact values: its model tracks which keys and chests are left
    ("keys-and-chests 7x7", "dr", None),
    ("keys-and-chests 7x7", "plr", "regret"),
]
SMOKE_TRAINING = [TRAINING[i] for i in (0, 4)]  # DR and ACCEL+regret (PLR's code and exact values with it)
VALUES_LARGE = ("cheese-in-corner", "keys-and-chests")  # also timed at 13x13
ROLLOUT_ENV = ("cheese-in-corner", dict(height=13, width=13))
JAXUED_MAZE = dict(max_height=13, max_width=13, agent_view_size=5, normalize_obs=True)  # its maze_plr example's
JAXUED_WALLS = 25  # its examples' --n_walls
# PLR's settings, for both libraries: gridsim's defaults (jaxued's LevelSampler takes the same three)
PLR = dict(replay_prob=curricula.Config.replay_prob, temperature=curricula.Config.temperature,
           staleness=curricula.Config.staleness)


def label(method: str, score: str | None) -> str:
    return method if score is None else f"{method}+{score}"


def sample(env, key, params, n: int):
    """``n`` levels of ``env`` drawn from ``params``, in one compiled call."""
    return jax.jit(lambda key: jax.vmap(env.sample, (0, None))(jax.random.split(key, n), params))(key)


# ---- 1. training ------------------------------------------------------------------------------


def training_case(env_name: str, method: str, score: str | None, args) -> dict:
    """One PPO configuration, its seeds initialised, its segment compiled and called once."""
    name, overrides = TRAINING_ENVS[env_name]
    env, params = gridsim.make(name, **overrides)
    config = ppo.Config(num_envs=args.num_envs, num_steps=args.num_steps,
                        total_timesteps=TOTAL_UPDATES * args.num_envs * args.num_steps,
                        lr=PPO["lr"], ent_coef=PPO["ent_coef"])
    curriculum = curricula.Config(method=method, score=score or "regret", buffer_size=args.buffer_size)
    trainer = ppo.make_train(config, env, curriculum)
    init = jax.jit(jax.vmap(trainer.init, (0, None)))
    segment = jax.jit(jax.vmap(trainer.segment, (0, None)), static_argnums=1)
    state = jax.block_until_ready(init(jax.random.split(jax.random.key(0), args.seeds), params.train(ALPHA)))
    n = args.updates

    # the carry also holds the last call's per-update ``trained`` flags (a curriculum's new and edited
    # levels are only scored); the segment inside is the same program, inlined
    @jax.jit
    def call(carry):
        state, metrics = segment(carry[0], n)
        return (state, metrics.trained), None

    prepared = prepare_call(call, (state, jnp.zeros((args.seeds, n), bool)))
    print(f"training {env_name:22s} {label(method, score):14s} compiled in {prepared['compile_s']:.1f}s",
          file=sys.stderr)
    return {"env": env_name, "method": method, "score": score, "curriculum": label(method, score),
            "env_steps_per_call": args.seeds * n * config.batch_size, "prepared": prepared}


def time_training(args) -> tuple[list[dict], dict]:
    cases = [training_case(*row, args) for row in (SMOKE_TRAINING if args.smoke else TRAINING)]
    timings, others = timed_rounds([c["prepared"] for c in cases], args.repeats)
    rows = []
    for case, timing in zip(cases, timings):
        trained = case["prepared"]["carry"][1]
        rows.append({k: v for k, v in case.items() if k != "prepared"} | timing | {
            "seeds": args.seeds, "updates_per_call": args.updates,
            "steps_per_s": case["env_steps_per_call"] / timing["median_s"],
            "trained_share": float(jnp.mean(trained)),  # of the last timed call's updates
        })
    dr = {r["env"]: r["steps_per_s"] for r in rows if r["method"] == "dr"}
    for r in rows:
        r["cost_vs_dr"] = dr[r["env"]] / r["steps_per_s"] if r["env"] in dr else None
    return rows, others


# ---- 2. exact values --------------------------------------------------------------------------


def values_cases(args) -> list[tuple[str, dict]]:
    """(name, overrides) of every registered environment with exact values, at its default size, and
    13x13 of VALUES_LARGE."""
    if args.smoke:  # the one with the largest model, at the size the tests use
        return [(VALUES_LARGE[1], gridsim.registered()[VALUES_LARGE[1]].small_options)]
    cases = [(name, {}) for name in gridsim.registered()
             if values.reason_without_values(gridsim.make(name)[0]) is None]
    return cases + [(name, dict(height=13, width=13)) for name in VALUES_LARGE]


def time_values(args) -> tuple[list[dict], dict]:
    prepared, rows = [], []
    for name, overrides in values_cases(args):
        env, params = gridsim.make(name, **overrides)
        test = params.test()
        levels = sample(env, jax.random.key(2), test, args.values_batch)

        # the carry keeps the last call's share of exact values
        @jax.jit
        def call(carry, env=env):
            levels, params, _ = carry
            best = values.best_returns(env, params, levels, GAMMA)
            return (levels, params, jnp.mean(best.exact)), None

        prepared.append(prepare_call(call, (levels, test, jnp.float32(0))))
        first = jax.tree_util.tree_map(lambda x: x[0], levels)
        model = jax.eval_shape(lambda level, env=env, test=test: values.model(env, test, level), first)
        rows.append({"env": f"{name} {env.height}x{env.width}", "batch": args.values_batch,
                     "model_states": model.reward.shape[0]})  # each level's model: states x 4 moves
        print(f"values   {rows[-1]['env']:22s} compiled in {prepared[-1]['compile_s']:.1f}s", file=sys.stderr)
    timings, others = timed_rounds(prepared, args.repeats)
    for row, call, timing in zip(rows, prepared, timings):
        row |= timing | {"levels_per_s": row["batch"] / timing["median_s"], "exact_share": float(call["carry"][2])}
    return rows, others


# ---- 3. PLR's overhead on a rollout, gridsim and jaxued -----------------------------------------


def _advantages(reward, done):
    """GAE with a value of 0 everywhere (the random policy has no critic): what PPO computes anyway,
    in both variants, and what the pvl scores read."""

    def backward(gae, t):
        r, d = t
        gae = r + GAMMA * 0.95 * (1.0 - d) * gae
        return gae, gae

    return jax.lax.scan(backward, jnp.zeros(reward.shape[1]), (reward, done.astype(jnp.float32)), reverse=True)[1]


def _checksum(obs):
    """Every observation summed, so that XLA keeps the observation code (a policy would read it)."""
    return sum(jnp.sum(x, dtype=jnp.float32) for x in jax.tree_util.tree_leaves(obs))


def _actions(key, args, num_actions):
    """The rollout's actions, drawn up front; the same key gives DR and PLR the same actions."""
    key, k_actions, k_rest = jax.random.split(key, 3)
    return key, jax.random.randint(k_actions, (args.rollout_steps, args.rollout_envs), 0, num_actions), k_rest


def gridsim_rollouts(args) -> list[dict]:
    """gridsim's DR rollout (as PPO's: a bank of walls per update, ``env.step`` auto-resetting to fresh
    levels) and its PLR rollout (``curricula.plan``, ``env.step_on`` replaying each environment's level,
    ``curricula.scores``, ``curricula.record``), for the scores pvl and regret."""
    name, overrides = ROLLOUT_ENV
    env, params = gridsim.make(name, **overrides)
    params = params.train(ALPHA)
    b = args.rollout_envs

    def dr(carry):
        state, key = carry
        key, actions, k_rest = _actions(key, args, env.num_actions)
        k_bank, k_steps = jax.random.split(k_rest)
        bank = env.sample_layouts(k_bank, params, b)

        def body(state, xs):
            keys, action = xs
            obs, state, reward, done, _ = jax.vmap(env.step, (0, 0, 0, None, None))(keys, state, action, params, bank)
            return state, (reward, done, _checksum(obs))

        state, (reward, done, checksum) = jax.lax.scan(body, state, (jax.random.split(k_steps, actions.shape), actions))
        return (state, key), jnp.sum(checksum) + jnp.sum(_advantages(reward, done))

    cases = []
    _, states = jax.jit(jax.vmap(env.reset, (0, None)))(jax.random.split(jax.random.key(3), b), params)
    cases.append(("dr", jax.jit(dr), (states, jax.random.key(4))))
    for score in ("pvl",) if args.smoke else ("pvl", "regret"):  # the smoke run's training has regret
        config = curricula.Config(method="plr", score=score, buffer_size=args.buffer_size, **PLR).validate(b, env)

        def plr(carry, config=config):
            state, now, key = carry
            key, actions, k_plan = _actions(key, args, env.num_actions)
            plan = curricula.plan(config, env, state, params, k_plan, now)

            def body(env_state, action):
                obs, env_state, reward, done, info = jax.vmap(env.step_on, (0, 0, None, 0))(
                    env_state, action, params, plan.levels)
                return env_state, (reward, done, info["success"], _checksum(obs))

            first = _checksum(jax.vmap(env.observe)(plan.levels))
            _, (reward, done, success, checksum) = jax.lax.scan(body, jax.vmap(env.start)(plan.levels), actions)
            advantage = _advantages(reward, done)
            rollout = {"reward": reward, "done": done, "success": success, "value": jnp.zeros_like(reward),
                       "advantage": advantage}
            score, best = curricula.scores(config, env, params, plan.levels, rollout, GAMMA)
            state = curricula.record(config, state, plan, score, best, jnp.zeros(b), now + 1)
            return (state, now + 1, key), first + jnp.sum(checksum) + jnp.sum(advantage)

        state = fill_gridsim_buffer(config, env, params, args)
        cases.append((f"plr+{score}", jax.jit(plr), (state, jnp.int32(args.buffer_size), jax.random.key(4))))
    return [rollout_case("gridsim", variant, fn, carry, args) for variant, fn, carry in cases]


def fill_gridsim_buffer(config, env, params, args):
    """A full buffer of fresh levels with random scores, as after a while of training (not timed)."""
    b, n = args.rollout_envs, args.buffer_size
    state = curricula.init(config, config.params(), sample(env, jax.random.key(5), params, b))

    @jax.jit
    def insert(state, key):
        k_levels, k_scores = jax.random.split(key)
        levels = jax.vmap(env.sample, (0, None))(jax.random.split(k_levels, b), params)
        plan = curricula.Plan(levels=levels, kind=jnp.int32(curricula.NEW), index=jnp.zeros(b, jnp.int32))
        score = jax.random.uniform(k_scores, (b,))
        return curricula.record(config, state, plan, score, jnp.zeros(b), jnp.zeros(b), jnp.int32(0))

    for key in jax.random.split(jax.random.key(6), -(-n // b)):
        state = insert(state, key)
    return state


def jaxued_rollouts(args) -> list[dict]:
    """jaxued's DR rollout (its AutoResetWrapper drawing from its level generator) and its PLR rollout:
    ``LevelSampler.sample_replay_levels``, its AutoReplayWrapper, its positive value loss as the score,
    ``update_batch`` and ``insert_batch`` of as many new levels; on its maze, its own defaults."""
    if not hasattr(jax, "tree_map"):
        # jaxued 0.0.1 calls jax.tree_map, which jax removed (0.6); it was jax.tree_util.tree_map
        jax.tree_map = jax.tree_util.tree_map
    from jaxued.environments.maze import Maze, make_level_generator
    from jaxued.level_sampler import LevelSampler
    from jaxued.utils import positive_value_loss
    from jaxued.wrappers.autoreplay import AutoReplayWrapper
    from jaxued.wrappers.autoreset import AutoResetWrapper

    env = Maze(**JAXUED_MAZE)
    generate = make_level_generator(JAXUED_MAZE["max_height"], JAXUED_MAZE["max_width"], JAXUED_WALLS)
    params = env.default_params
    num_actions = env.action_space(params).n
    dr_env, replay_env = AutoResetWrapper(env, generate), AutoReplayWrapper(env)
    sampler = LevelSampler(args.buffer_size, replay_prob=PLR["replay_prob"], staleness_coeff=PLR["staleness"],
                           prioritization="rank", prioritization_params={"temperature": PLR["temperature"]})
    b = args.rollout_envs
    key = jax.random.PRNGKey  # jaxued's wrappers hold raw uint32 keys

    def dr(carry):
        state, k = carry
        k, actions, k_steps = _actions(k, args, num_actions)

        def body(state, xs):
            keys, action = xs
            obs, state, reward, done, _ = jax.vmap(dr_env.step, (0, 0, 0, None))(keys, state, action, params)
            return state, (reward, done, _checksum(obs))

        state, (reward, done, checksum) = jax.lax.scan(body, state, (jax.random.split(k_steps, actions.shape), actions))
        return (state, k), jnp.sum(checksum) + jnp.sum(_advantages(reward, done))

    def plr(carry):
        buffer, k = carry
        k, actions, k_rest = _actions(k, args, num_actions)
        k_replay, k_reset, k_steps, k_new = jax.random.split(k_rest, 4)
        buffer, (index, levels) = sampler.sample_replay_levels(buffer, k_replay, b)
        obs, state = jax.vmap(replay_env.reset_to_level, (0, 0, None))(jax.random.split(k_reset, b), levels, params)

        def body(state, xs):
            keys, action = xs
            obs, state, reward, done, _ = jax.vmap(replay_env.step, (0, 0, 0, None))(keys, state, action, params)
            return state, (reward, done, _checksum(obs))

        _, (reward, done, checksum) = jax.lax.scan(body, state, (jax.random.split(k_steps, actions.shape), actions))
        advantage = _advantages(reward, done)
        scores = positive_value_loss(done, advantage)
        buffer = sampler.update_batch(buffer, index, scores)
        buffer, _ = sampler.insert_batch(buffer, jax.vmap(generate)(jax.random.split(k_new, b)), scores)
        return (buffer, k), _checksum(obs) + jnp.sum(checksum) + jnp.sum(advantage)

    generate_batch = jax.jit(lambda k, n: jax.vmap(generate)(jax.random.split(k, n)), static_argnums=1)
    levels = generate_batch(key(3), b)
    _, states = jax.jit(jax.vmap(dr_env.reset_to_level, (0, 0, None)))(jax.random.split(key(3), b), levels, params)
    # a full buffer of generated levels with random scores, as after a while of training (not timed)
    buffer = sampler.initialize(jax.tree_util.tree_map(lambda x: x[0], levels))
    buffer |= {"size": jnp.int32(0), "episode_count": jnp.int32(0)}  # jitted calls keep their type
    n = args.buffer_size
    buffer, _ = jax.jit(sampler.insert_batch)(buffer, generate_batch(key(5), n), jax.random.uniform(key(6), (n,)))
    return [rollout_case("jaxued", "dr", jax.jit(dr), (states, key(4)), args),
            rollout_case("jaxued", "plr+pvl", jax.jit(plr), (buffer, key(4)), args)]


def rollout_case(impl, variant, fn, carry, args) -> dict:
    prepared = prepare_call(fn, carry)
    print(f"rollouts {impl:8s} {variant:11s} compiled in {prepared['compile_s']:.1f}s", file=sys.stderr)
    return {"impl": impl, "variant": variant, "prepared": prepared}


def time_rollouts(args, peers: list[str]) -> tuple[list[dict], dict]:
    cases = gridsim_rollouts(args) + (jaxued_rollouts(args) if "jaxued" in peers else [])
    timings, others = timed_rounds([c["prepared"] for c in cases], args.repeats)
    steps = args.rollout_envs * args.rollout_steps
    rows = [{"impl": c["impl"], "variant": c["variant"], "envs": args.rollout_envs, "steps": args.rollout_steps,
             **t, "steps_per_s": steps / t["median_s"]} for c, t in zip(cases, timings)]
    dr = {r["impl"]: r["median_s"] for r in rows if r["variant"] == "dr"}
    for r in rows:
        r["vs_dr"] = r["median_s"] / dr[r["impl"]]
    return rows, others


# ---- driver -----------------------------------------------------------------------------------


def timed_rounds(prepared: list[dict], repeats: int) -> tuple[list[dict], dict]:
    """``time_rounds``, and the cores other processes used meanwhile (a shared machine's noise)."""
    wall, cpu, busy = time.perf_counter(), time.process_time(), busy_cpu_s()
    timings = time_rounds(prepared, repeats)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    others = max(0.0, busy_cpu_s() - busy - cpu) / wall if busy is not None else None
    return timings, {"timed_s": wall, "cores": cpu / wall, "others_cores": others}


def markdown(results: dict) -> str:
    lines = []
    if results["training"]:
        t = results["training"][0]
        lines += [f"PPO training, {t['seeds']} seeds x {results['ppo']['num_envs']} envs x "
                  f"{results['ppo']['num_steps']} steps, {t['updates_per_call']} updates per timed call; "
                  f"cost per env step as a multiple of DR's on the same env (goal: at most {GOAL}x).", "",
                  "| env | curriculum | env-steps/s (median) | cost ÷ DR | within goal | updates that trained | "
                  "compile s |", "|---|---|---:|---:|:---:|---:|---:|"]
        for r in results["training"]:
            cost = r["cost_vs_dr"]
            ok = "" if r["method"] == "dr" or cost is None else "yes" if cost <= GOAL else "no"
            lines.append(f"| {r['env']} | {r['curriculum']} | {fmt(r['steps_per_s'])} | "
                         f"{'' if cost is None else f'{cost:.2f}x'} | {ok} | {r['trained_share']:.0%} | "
                         f"{r['compile_s']:.1f} |")
        lines.append("")
    if results["values"]:
        lines += [f"Exact values (`values.best_returns`, discount {GAMMA}) of a batch of test levels.", "",
                  "| env | batch | model states per level | levels/s (median) | exact | compile s |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in results["values"]:
            lines.append(f"| {r['env']} | {r['batch']} | {r['model_states']:,} | {fmt(r['levels_per_s'])} | "
                         f"{r['exact_share']:.0%} | {r['compile_s']:.1f} |")
        lines.append("")
    if results["rollouts"]:
        r0 = results["rollouts"][0]
        lines += [f"PLR's overhead on a random-policy rollout of {r0['envs']} envs x {r0['steps']} steps: gridsim on "
                  "cheese-in-corner 13x13, jaxued on its own 13x13 maze. The mazes and their steps differ: the "
                  "PLR ÷ DR ratio compares, not the steps/s.", "",
                  "| impl | variant | env-steps/s (median) | time ÷ its DR | compile s |",
                  "|---|---|---:|---:|---:|"]
        for r in results["rollouts"]:
            lines.append(f"| {r['impl']} | {r['variant']} | {fmt(r['steps_per_s'])} | {r['vs_dr']:.2f}x | "
                         f"{r['compile_s']:.1f} |")
        lines.append("")
    for part, others in results["others_cores"].items():
        if others["others_cores"] is not None and others["others_cores"] > 0.2:
            lines.append(f"- {part}: other processes used {others['others_cores']:.2f} cores while it was timed")
    return "\n".join(lines).rstrip()


PARTS = ("training", "values", "rollouts")
SMOKE_XLA_FLAG = "--xla_backend_optimization_level=0"  # known to every jaxlib gridsim supports


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=8, help="seeds per training program (vmapped)")
    p.add_argument("--updates", type=int, default=4, help="PPO updates per timed training call")
    p.add_argument("--repeats", type=int, default=5, help="interleaved timed rounds; the median is reported")
    p.add_argument("--values-batch", type=int, default=256, help="levels per values call")
    p.add_argument("--buffer-size", type=int, default=curricula.Config.buffer_size,
                   help="levels a curriculum keeps (gridsim's and jaxued's)")
    p.add_argument("--parts", type=lambda s: s.split(","), default=list(PARTS), help="comma-separated: " +
                   ", ".join(PARTS))
    p.add_argument("--quick", action="store_true", help="2 seeds, 2 updates, 2 rounds, 64-level values batches")
    p.add_argument("--smoke", action="store_true",
                   help="seconds, for the tests: 1 seed, 1 update, 8 envs x 8 steps, 4-level batches, 1 round; "
                        "DR and ACCEL only, values of a 6x6 keys-and-chests only; compiled at "
                        "XLA's lowest optimization level")
    p.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args(argv)
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        p.error(f"--parts: unknown {sorted(unknown)}; choose from {list(PARTS)}")
    args.num_envs, args.num_steps = PPO["num_envs"], PPO["num_steps"]
    args.rollout_envs, args.rollout_steps = 32, 64
    if args.quick:
        args.seeds, args.updates, args.repeats, args.values_batch = 2, 2, 2, 64
    if args.smoke:
        args.seeds, args.updates, args.repeats, args.values_batch, args.buffer_size = 1, 1, 1, 4, 16
        args.num_envs = args.num_steps = args.rollout_envs = args.rollout_steps = 8
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.smoke and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
        # compiling is most of a smoke run: at XLA's lowest level, as the test suite compiles (the
        # backend starts below, in device_info, so the flag still applies)
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {SMOKE_XLA_FLAG}".strip()
    peers = []
    if "rollouts" in args.parts:
        if importlib.util.find_spec("jaxued") is None:
            # not installed: skipped (installed but broken, it fails loudly)
            print("jaxued is not installed: skipping its rollouts", file=sys.stderr)
        else:
            peers.append("jaxued")
    info = device_info()
    info["versions"] |= {name: _version(name) for name in ("flax", "optax", "gymnax", "jaxued")}
    info["git"] = git_state()  # the whole checkout's status, beside device_info's gridsim-only dirty flag
    print(f"# {info['platform']} {info['device_kind']} ({info['cpu_model']}, {info['cpus_usable']} cores), "
          f"jax {info['jax']}, XLA_FLAGS={info['xla_flags']!r}, load {info['loadavg_start']}", file=sys.stderr)

    results = {"device": info, "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "argv": sys.argv, "ppo": {**PPO, "num_envs": args.num_envs, "num_steps": args.num_steps},
               "plr": {**PLR, "buffer_size": args.buffer_size}, "goal": GOAL, "peers": peers,
               "training": [], "values": [], "rollouts": [], "others_cores": {}}
    started = time.perf_counter()
    if "training" in args.parts:
        results["training"], results["others_cores"]["training"] = time_training(args)
    if "values" in args.parts:
        results["values"], results["others_cores"]["values"] = time_values(args)
    if "rollouts" in args.parts:
        results["rollouts"], results["others_cores"]["rollouts"] = time_rollouts(args, peers)
    info["wall_s"] = time.perf_counter() - started
    info["loadavg_end"] = os.getloadavg()

    table = markdown(results)
    print(table)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / f"curriculum_cost-{info['platform']}-{stamp}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    header = (f"Device: {info['devices']} {info['cpu_model']} ({info['cpus_usable']} cores), jax {info['jax']}; "
              f"load average {info['loadavg_start']} at start, {info['loadavg_end']} at end")
    stem.with_suffix(".md").write_text(f"{header}\n\n{table}\n")
    print(f"wrote {stem}.json and .md ({info['wall_s']:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
