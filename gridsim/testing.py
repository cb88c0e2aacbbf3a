"""A conformance check for environments: ``check_env(env, params)`` raises ``AssertionError`` naming
the first invariant an environment breaks. The test suite runs it over every registered
environment and the example plug-in; run it on your own before you trust its labels.

First, what ``gridsim.make`` checks, as assertions: each goal has a target, ``interact`` returns
exactly the declared events, the environment's functions trace without raising (an exception in them
is named with its function), and the default reward pays the true goal (``GridEnv.reward_problem``).
Then, on training (``alpha`` 0 and 1) levels, test levels and edited test levels (ACCEL's,
``gridsim.edits``) under random actions: the agent stays in bounds and out of walls and the border
stays whole; objects never move (those of ``mobile_kinds`` move one cell a step at most), are only
consumed (those of ``regrowing_kinds`` may come back, not under the agent), and sit on free cells
(one in a wall is named with its kind, slot, cell and level); rewards stay within what
``reward_weights`` allow; the episode bookkeeping (``terminated``, ``truncated``, lengths, outcomes,
``final_observation``) agrees with itself; a fixed key gives the same episodes; changing traced
params does not recompile; and each goal's oracle, played as a policy, reaches its own goal on every
level the labels call distinguishing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gridsim import edits, oracles
from gridsim.core import OUTCOME_FAIL, OUTCOME_TRUE, EnvParams, GridEnv
from gridsim.plugin_errors import user_errors
from gridsim.rollout import evaluate

EDITS_CHECKED = 8  # edits in a row on each level of the edited case


def check_env(env: GridEnv, params: EnvParams | None = None, *, seed: int = 0, num_envs: int = 32,
              num_steps: int | None = None, oracle_levels: int = 256) -> None:
    params = env.default_params() if params is None else params
    try:  # the mistakes gridsim.make names, named here too for an environment built directly
        with user_errors(env.label, env):
            env.check_goals()
            env.check_functions(params)
    except ValueError as err:
        raise AssertionError(str(err)) from err
    problem = env.reward_problem(params)
    assert problem is None, problem
    num_steps = num_steps or 2 * int(params.max_steps_in_episode) + 2  # every env ends at least one episode
    traces = []

    def rollout(key, params, edited):
        traces.append(None)  # counted when traced: one trace serves every value of the params
        k_levels, k_edit, k_run = jax.random.split(key, 3)
        levels = jax.vmap(env.sample, (0, None))(jax.random.split(k_levels, num_envs), params)
        # ACCEL's levels: each edited a few times (gridsim.edits); they must keep every invariant
        changed = jax.vmap(edits.edit, (None, 0, 0, None, None))(env, jax.random.split(k_edit, num_envs), levels,
                                                                 params, EDITS_CHECKED)
        levels = jax.tree_util.tree_map(lambda a, b: jnp.where(edited, a, b), changed, levels)
        return random_rollout(env, params, k_run, num_envs, num_steps, levels)

    run = jax.jit(rollout)
    key = jax.random.key(seed)
    cases = (("training levels, alpha=0", params.train(0.0), False), ("training levels, alpha=1", params.train(1.0),
             False), ("edited test levels", params.test(), True), ("test levels", params.test(), False))
    for case, case_params, edited in cases:
        out = jax.tree_util.tree_map(np.asarray, run(key, case_params, edited))
        _check_rollout(env, case_params, out, case)
    assert len(traces) == 1, f"changing traced params recompiled the step ({len(traces)} traces)"
    again = jax.tree_util.tree_map(np.asarray, run(key, params.test(), False))
    for a, b in zip(jax.tree_util.tree_leaves(again), jax.tree_util.tree_leaves(out)):
        assert np.array_equal(a, b), "the same key gave different episodes"
    other = jax.tree_util.tree_map(np.asarray, run(jax.random.key(seed + 1), params.test(), False)[0])
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(other),
                                                        jax.tree_util.tree_leaves(out[0]))), \
        "different keys gave the same levels"
    _check_oracles(env, params.test(), jax.random.key(seed + 2), oracle_levels)


def check_levels(env: GridEnv, params: EnvParams, levels, case: str = "given levels", seed: int = 0) -> None:
    """Raise ``AssertionError`` naming the first invariant that random episodes started on ``levels``
    (``[N]``: a search's, an edit's, a hand-built batch) break, as ``check_env`` checks sampled ones."""
    count = levels.agent.shape[0]
    steps = 2 * int(np.max(params.max_steps_in_episode)) + 2
    out = jax.jit(random_rollout, static_argnums=(0, 3, 4))(env, params, jax.random.key(seed), count, steps, levels)
    _check_rollout(env, params, jax.tree_util.tree_map(np.asarray, out), case)


def random_rollout(env, params, key, num_envs: int, num_steps: int, levels=None):
    """Uniformly random actions in ``num_envs`` environments for ``num_steps`` steps (jittable):
    per step ``[num_steps, num_envs, ...]``, the level it started from, the state after it, reward,
    done, info, and whether its observations equal ``observe`` of their states. The first episodes
    start on ``levels`` when given (``[num_envs]``), else on levels drawn from ``params``."""
    k_reset, k_run = jax.random.split(key)
    if levels is None:
        _, states = jax.vmap(env.reset, (0, None))(jax.random.split(k_reset, num_envs), params)
    else:
        states = jax.vmap(env.start)(levels)

    def one_step(states, k):
        k_act, k_step = jax.random.split(k)
        actions = jax.random.randint(k_act, (num_envs,), 0, env.num_actions)
        obs, after, reward, done, info = jax.vmap(env.step, (0, 0, 0, None))(
            jax.random.split(k_step, num_envs), states, actions, params)
        final_seen = jax.vmap(env.observe)(info["final_state"].level)
        checks = (obs == jax.vmap(env.observe)(after.level)).all(), (info["final_observation"] == final_seen).all()
        return after, (states.level, after, reward, done, info, jnp.stack(checks))

    _, steps = jax.lax.scan(one_step, states, jax.random.split(k_run, num_steps))
    return steps


def _check_rollout(env, params, out, case):
    before, after, rewards, dones, info, observed = out
    levels = after.level
    where = f"{env.label} ({case})"
    assert observed.all(), f"{where}: an observation differs from observe(level) of its state"
    rows, cols = levels.agent[..., 0], levels.agent[..., 1]
    assert ((rows >= 0) & (rows < env.height) & (cols >= 0) & (cols < env.width)).all(), f"{where}: agent out of bounds"
    t, n = np.indices(rows.shape)
    assert not levels.walls[t, n, rows, cols].any(), f"{where}: the agent stands in a wall"
    ended = info["final_state"].level
    assert not ended.walls[t, n, ended.agent[..., 0], ended.agent[..., 1]].any(), f"{where}: the agent ended in a wall"
    border = np.concatenate([levels.walls[..., 0, :], levels.walls[..., -1, :], levels.walls[..., :, 0],
                             levels.walls[..., :, -1]], axis=-1)
    assert border.all(), f"{where}: the border wall has a gap"
    # ``ended``: the step's own outcome, before any auto-reset
    fixed = ~np.isin(np.array(env.slot_kinds), env.mobile_kinds)
    moved = np.abs(ended.obj_pos - before.obj_pos).sum(axis=-1) * before.obj_alive
    assert not ((moved > 0) & fixed).any(), f"{where}: a live object moved"
    assert not (moved > 1).any(), f"{where}: an object moved more than one cell in a step"
    regrowing = np.isin(np.array(env.slot_kinds), env.regrowing_kinds)
    revived = ended.obj_alive & ~before.obj_alive
    assert not (revived & ~regrowing).any(), f"{where}: a consumed object came back"
    on_agent = np.all(ended.obj_pos == ended.agent[..., None, :], axis=-1)
    assert not (revived & on_agent).any(), f"{where}: an object grew under the agent"
    _check_objects_off_walls(env, where, before, after)
    if env.reward_fn is None:
        weights = np.array([float(w) for w in params.reward_weights.values()] or [0.0])
        low, high = weights[weights < 0].sum(), weights[weights > 0].sum()
        assert (rewards >= low - 1e-6).all() and (rewards <= high + 1e-6).all(), \
            f"{where}: a reward outside [{low}, {high}], the sums of the reward weights"
    terminated, truncated = info["terminated"], info["truncated"]
    assert ((terminated | truncated) == dones).all(), f"{where}: done is not terminated or truncated"
    assert not (terminated & truncated).any(), f"{where}: a step both terminated and truncated"
    lengths = info["episode_length"][dones]
    assert ((lengths >= 1) & (lengths <= int(np.max(params.max_steps_in_episode)))).all(), \
        f"{where}: an episode longer than max_steps_in_episode"
    assert (after.time[dones] == 0).all(), f"{where}: a new episode does not start at time 0"
    assert (info["final_state"].time[dones] == info["episode_length"][dones]).all(), \
        f"{where}: info['final_state'] is not where the episode ended (its time is not the episode's length)"
    assert dones.any(axis=0).all(), f"{where}: an environment never ended an episode"
    outcomes = info["outcome"][dones]
    assert ((outcomes >= 0) & (outcomes < len(env.outcome_names))).all(), f"{where}: an outcome out of range"
    assert (outcomes[info["events"][env.true_goal][dones]] != OUTCOME_FAIL).all(), \
        f"{where}: an episode that reached its true goal is labelled a failure"


def _check_objects_off_walls(env, where, before, after):
    """Name the first live object in a wall: its kind, slot and cell, and the level (which of the
    rollout's environments, at which step, drawn so or moved there)."""
    n_envs = before.walls.shape[1]
    # the levels the rollout's environments reset to first, then each step's level, with the step it followed
    cases = [(before.walls[:1], before.obj_pos[:1], before.obj_alive[:1], None),
             (after.level.walls, after.level.obj_pos, after.level.obj_alive, after.time)]
    for walls, pos, alive, time in cases:
        t, n, k = np.indices(alive.shape)
        inside = walls[t, n, pos[..., 0], pos[..., 1]] & alive
        if not inside.any():
            continue
        t, n, k = (int(i[0]) for i in np.nonzero(inside))
        r, c = (int(i) for i in pos[t, n, k])
        if time is None:
            level = f"on the level environment {n} of {n_envs} was reset to (sample_level drew it so)"
        elif time[t, n] == 0:
            level = (f"on the level environment {n} of {n_envs} drew when its episode ended at step {t + 1} "
                     "(sample_level drew it so)")
        else:
            level = f"in environment {n} of {n_envs} after step {t + 1} (interact moved it there)"
        raise AssertionError(f"{where}: a {env.slot_kinds[k]!r} object (slot {k}) sits in a wall at ({r}, {c}), "
                             f"{level}")


def _check_oracles(env, params, key, levels):
    """Each goal's oracle, played through the env as a policy, reaches its own goal on every level
    the labels call distinguishing (the labels come from the oracles' planned outcomes, which define
    distinguishing; this checks the plan against the episode the env actually plays)."""
    max_steps = int(np.max(params.max_steps_in_episode))

    def play(goal):  # one program for every goal's oracle: the goal index is traced
        result = evaluate(env, params, oracles.indexed_policy(env, goal), key, levels, max_steps)
        return result.distinguishing, result.outcome

    distinguishing, outcome = map(np.asarray, jax.jit(jax.vmap(play))(jnp.arange(len(env.goal_names))))
    for g, goal in enumerate(env.goal_names):
        assert (outcome[g][distinguishing[g]] == OUTCOME_TRUE + g).all(), \
            f"{env.label}: the {goal!r} oracle, played, missed its goal on a distinguishing level"
