"""Oracles: for each goal, a policy that pursues exactly that goal, optimally, on any level.

A goal is a target the engine can plan for (``GridEnv.goal_targets``): the
cells whose entering triggers the goal's event, or, for a goal of several
steps, a cost map built with ``cost_to_go``. Moves are deterministic, so a
shortest-path search on the level gives each goal's optimal policy.

Among its shortest paths an oracle takes one that enters as many cells that
trigger *other* goals as it can (it is indifferent to them, and we assume the
worst). So a level on which the true-goal oracle still reaches the true goal
first, and each proxy oracle its proxy first, separates the goals for every
optimal pursuer: that is what ``distinguishing`` means, and the misgeneralization
metric counts only such levels. The same oracles calibrate the metric (the
true oracle scores 0%, a proxy oracle 100%) and, run for many candidate goals,
tell which goal an agent pursues.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gridsim.core import MOVES, OUTCOME_TRUE, EnvParams, GridEnv, Level, outcome_of
from gridsim.policy import Policy

UNREACHABLE = 2**30  # cost of a cell from which the target cannot be reached


def step_cost(walls: jax.Array) -> int:
    """Cost of one move in ``cost_to_go`` units: more than any number of cells a path can enter,
    so a shorter path always wins and entering a sought cell only breaks ties."""
    return walls.size + 1


def _neighbour_min(values: jax.Array) -> jax.Array:
    padded = jnp.pad(values, 1, constant_values=UNREACHABLE)
    return jnp.minimum(jnp.minimum(padded[:-2, 1:-1], padded[2:, 1:-1]),
                       jnp.minimum(padded[1:-1, :-2], padded[1:-1, 2:]))


def cost_to_go(walls: jax.Array, target: jax.Array, seek: jax.Array | None = None) -> jax.Array:
    """``int32[H, W]``: from each cell, the cost of reaching ``target``, lexicographically
    (fewest steps, then most ``seek`` cells entered), in units of ``step_cost(walls)``.

    ``target`` is ``bool[H, W]`` (cost 0 on arrival) or a cost map in the same units (a goal of
    several steps: e.g. a key's cost is what remains from it to a chest). Walls and cells that
    cannot reach the target get ``UNREACHABLE``.
    """
    unit = step_cost(walls)
    if target.dtype == jnp.bool_:
        target = jnp.where(target, 0, UNREACHABLE)
    enter = unit - (0 if seek is None else seek.astype(jnp.int32))  # cost of moving into each cell
    start = jnp.where(walls, UNREACHABLE, jnp.minimum(target, UNREACHABLE)).astype(jnp.int32)

    def relax(carry):
        cost, _ = carry
        through = _neighbour_min(jnp.minimum(cost + enter, UNREACHABLE))
        new = jnp.where(walls, UNREACHABLE, jnp.minimum(cost, through))
        return new, jnp.any(new != cost)

    return jax.lax.while_loop(lambda c: c[1], relax, (start, jnp.array(True)))[0]


def steps_to_go(cost: jax.Array, walls: jax.Array) -> jax.Array:
    """Moves in a ``cost_to_go`` cost (``UNREACHABLE`` stays unreachable as ``H * W``)."""
    unit = step_cost(walls)
    return jnp.where(cost >= UNREACHABLE, walls.size, -(-cost // unit)).astype(jnp.int32)


def target_costs(env: GridEnv, level: Level, params: EnvParams) -> jax.Array:
    """``int32[G, H, W]``: each goal's target (``env.goal_names`` order) as a cost map."""
    targets = env.goal_targets(level, params)
    costs = []
    for goal in env.goal_names:
        target = targets[goal]
        costs.append(jnp.where(target, 0, UNREACHABLE) if target.dtype == jnp.bool_ else target)
    return jnp.stack(costs).astype(jnp.int32)


def move_targets(env: GridEnv, level: Level) -> tuple[jax.Array, jax.Array]:
    """``(cells, blocked)``: ``int32[4, 2]``, the cell each move (``MOVES`` order) heads for, and
    ``bool[4]``, whether a wall there leaves the agent where it is."""
    cells = jnp.clip(level.agent + jnp.asarray(MOVES), 0, jnp.array([env.height - 1, env.width - 1]))
    return cells, level.walls[cells[:, 0], cells[:, 1]]


def plan(env: GridEnv, level: Level, params: EnvParams, goal: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(action, reachable)``: the move of goal ``goal``'s oracle (an index into ``env.goal_names``,
    may be traced), and whether its goal can still be reached. With nothing left to reach, the
    oracle stays put against a wall where it can (its goal has failed; it seeks nothing else)."""
    costs = target_costs(env, level, params)
    others = jnp.arange(costs.shape[0]) != goal
    seek = jnp.any((costs == 0) & others[:, None, None], axis=0)  # cells that trigger another goal now
    avoids = env.goal_avoids(level, params)
    if avoids:  # avoided cells are walls, unless the goal cannot be reached without them
        avoid = jnp.stack([avoids.get(g, jnp.zeros_like(level.walls)) for g in env.goal_names])[goal]
        cost = cost_to_go(level.walls | avoid, costs[goal], seek)
        around = cost[level.agent[0], level.agent[1]] < UNREACHABLE
        walls = jnp.where(around, level.walls | avoid, level.walls)
        cost = jnp.where(around, cost, cost_to_go(level.walls, costs[goal], seek))
    else:
        walls = level.walls
        cost = cost_to_go(walls, costs[goal], seek)
    unit = step_cost(walls)
    dest, blocked = move_targets(env, level)
    avoided = walls[dest[:, 0], dest[:, 1]] & ~blocked
    enter = unit - seek[dest[:, 0], dest[:, 1]]
    here = cost[level.agent[0], level.agent[1]]
    moved = jnp.where(avoided, UNREACHABLE + 2 * unit, enter + cost[dest[:, 0], dest[:, 1]])
    value = jnp.where(blocked, unit + here, moved)
    reachable = here < UNREACHABLE
    action = jnp.where(reachable, jnp.argmin(value), jnp.argmax(blocked))
    return action.astype(jnp.int32), reachable


def oracle_action(env: GridEnv, level: Level, params: EnvParams, goal: jax.Array) -> jax.Array:
    """The move of goal ``goal``'s oracle (see ``plan``)."""
    return plan(env, level, params, goal)[0]


def policy(env: GridEnv, goal: str) -> Policy:
    """The oracle of ``goal`` (the true goal or a proxy) as a policy: it reads the env state."""
    if goal not in env.goal_names:
        raise ValueError(f"{goal!r} is not a goal of {env.name}; goals: {env.goal_names}")
    return indexed_policy(env, jnp.int32(env.goal_names.index(goal)))


def indexed_policy(env: GridEnv, goal: jax.Array) -> Policy:
    """The oracle of goal index ``goal`` (into ``env.goal_names``; may be traced, so one program can
    play every goal's oracle under ``vmap``)."""

    def act(key, obs, state, params, carry, first):
        return oracle_action(env, state.level, params, goal), carry

    return Policy(act=act, carry=())


def outcomes(env: GridEnv, params: EnvParams, level: Level) -> jax.Array:
    """``int32[G]``: the outcome of each goal's oracle (``env.goal_names`` order) playing ``level``.

    Each oracle plays until the outcome is decided (a goal reached; the first one wins), the
    episode ends, or its own goal can no longer be reached (then it has failed, unless another
    goal was reached on the way). vmap it over levels.
    """
    goals = len(env.goal_names)
    states = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (goals,) + jnp.shape(x)), env.start(level))

    def decided(states):
        return jnp.any(states.first_reached >= 0, axis=-1)

    def body(carry):
        states, over = carry
        actions, reachable = jax.vmap(plan, (None, 0, None, 0))(env, states.level, params, jnp.arange(goals))
        over = over | ~reachable
        moved, _, terminated, truncated, _ = jax.vmap(env.transition, (0, 0, None))(states, actions, params)
        states = jax.tree_util.tree_map(lambda old, new: where_rows(over, old, new), states, moved)
        return states, over | terminated | truncated | decided(moved)

    states, _ = jax.lax.while_loop(lambda c: ~jnp.all(c[1]), body, (states, decided(states)))
    return jax.vmap(outcome_of)(states.first_reached)


def where_rows(mask, old, new):
    """``old`` where ``mask`` (one flag per leading row), else ``new``; the other axes broadcast."""
    return jnp.where(mask.reshape(mask.shape + (1,) * (new.ndim - mask.ndim)), old, new)


def separated(env: GridEnv, oracle_outcome: jax.Array) -> jax.Array:
    """``bool[..., P]``: per proxy, the true oracle reaches the true goal and that proxy's oracle the
    proxy (``oracle_outcome``: ``[..., G]`` from ``outcomes``)."""
    proxies = np.arange(len(env.proxies))
    true_first = oracle_outcome[..., :1] == OUTCOME_TRUE
    return true_first & (oracle_outcome[..., 1 + proxies] == OUTCOME_TRUE + 1 + proxies)


def distinguishing(env: GridEnv, oracle_outcome: jax.Array) -> jax.Array:
    """``bool[...]``: the level separates the true goal from every proxy (never, without proxies)."""
    if not env.proxies:
        return jnp.zeros(oracle_outcome.shape[:-1], bool)
    return jnp.all(separated(env, oracle_outcome), axis=-1)


def telling(env: GridEnv, distinguishing):
    """The levels whose episodes show which goal an agent pursues: the distinguishing ones; every
    level where the environment declares no proxy (nothing to tell apart: what an agent goes for
    is then for ``gridsim.discover`` to find)."""
    return distinguishing if env.proxies else distinguishing | True


def label(env: GridEnv, params: EnvParams, levels: Level) -> tuple[jax.Array, jax.Array]:
    """``(distinguishing[N], oracle_outcome[N, G])`` for a batch of levels (jit it)."""
    oracle_outcome = jax.vmap(outcomes, (None, None, 0))(env, params, levels)
    return distinguishing(env, oracle_outcome), oracle_outcome
