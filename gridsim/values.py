"""Exact values: the best discounted return a level pays, found by planning and then playing the plan.

Goals' oracles (``gridsim.oracles``) pursue one goal each; the best return may need another
route (keys and chests in a good order, a per-step cost that makes a shortcut pay, a reward that
is not the goal's). So values plan for the return itself: a finite-horizon dynamic programme over
every state a level can reach (the agent's cell, which objects of ``GridEnv.consumable_kinds``
are left, what the agent carries), whose transitions and rewards are the environment's own
``transition`` applied to each state once. The plan is then *played* through ``transition`` from
the level's start, and the return the episode actually pays is the level's best return.

A value is ``exact`` when every planned transition stayed inside the model (nothing else about
the level changed: walls, other objects, memory) and the played return equals the planned one;
otherwise it is not used (regret is NaN there). Stochastic environments, and those whose objects
move or grow back, have no exact values (``reason_without_values`` says why).

``regret = best - the agent's discounted return`` is then never negative for any agent: the best
is a maximum over every plan.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gridsim.core import EnvParams, GridEnv, Level, episode_limit

TOLERANCE = 1e-4  # planned and played returns sum the same rewards in another order
URGENCY = 0.99  # the discount, times this, breaks ties between equally good moves


class Best(NamedTuple):
    """A level's best discounted return (``value``), NaN where not ``exact``."""

    value: jax.Array
    exact: jax.Array


def reason_without_values(env: GridEnv) -> str | None:
    """Why ``env`` has no exact values, or None when it has them."""
    if env.stochastic:
        return f"{env.label} is stochastic (what a plan pays depends on draws)"
    if env.mobile_kinds:
        return f"{env.label}'s objects {list(env.mobile_kinds)} move"
    if env.regrowing_kinds:
        return f"{env.label}'s objects {list(env.regrowing_kinds)} grow back"
    return None


def consumable_slots(env: GridEnv) -> np.ndarray:
    """Indices of the object slots an episode can use up and go on (``env.consumable_kinds``)."""
    return np.flatnonzero(np.isin(np.array(env.slot_kinds, dtype=object), list(env.consumable_kinds)))


class Model(NamedTuple):
    """A level's states, ``[M masks of consumables left, H * W cells]`` flattened, and per state and
    move: the reward, whether the episode ends, and the state it leads to."""

    reward: jax.Array  # float32[S, 4]
    ends: jax.Array  # bool[S, 4]: terminated (truncation is the horizon's)
    next: jax.Array  # int32[S, 4]
    faithful: jax.Array  # bool[]: every transition an episode can make stayed inside the model
    start: jax.Array  # int32[]: the level's own state
    horizon: jax.Array  # int32[]: steps an episode may take


def model(env: GridEnv, params: EnvParams, level: Level) -> Model:
    """Apply ``env.transition`` to every state of ``level`` and every move, once.

    What the agent carries is not a dimension of the model: it is learnt per mask from the
    transitions that use objects up, mask by mask in decreasing order of objects left (a mask is
    entered only from masks with more left). Two ways into one mask that leave different amounts
    in hand make the model unfaithful (then no value is exact)."""
    slots = consumable_slots(env)
    masks, cells, width = 1 << len(slots), env.height * env.width, env.width
    bits = (np.arange(masks)[:, None] >> np.arange(len(slots))[None, :]) & 1  # [M, C]
    weights = 1 << np.arange(len(slots))
    kept = np.setdiff1d(np.arange(len(env.slot_kinds)), slots)
    # what every move is compared with, hidden from XLA's constant folding: fixed walls compared with
    # themselves for every state of a large batch of levels took seconds to fold, and an XLA error line
    reference = jax.lax.optimization_barrier(level)
    start_mask = jnp.sum(level.obj_alive[slots] * weights) if len(slots) else jnp.int32(0)
    carried = jnp.full(masks, -1, jnp.int32).at[start_mask].set(level.inventory)  # -1: no way in found
    template = env.start(level)
    groups = []
    for left in range(len(slots), -1, -1):  # static: the masks with ``left`` objects left, together
        group = np.flatnonzero(bits.sum(axis=1) == left)
        m, c = np.repeat(group, cells), np.tile(np.arange(cells), len(group))
        alive = jnp.broadcast_to(level.obj_alive, (m.size, len(env.slot_kinds)))
        alive = alive.at[:, slots].set(jnp.asarray(bits[m], bool)) if len(slots) else alive
        holding = carried[m]
        states = jax.tree_util.tree_map(lambda x, n=m.size: jnp.broadcast_to(x, (n,) + jnp.shape(x)), template)
        states = states.replace(level=states.level.replace(
            agent=jnp.asarray(np.stack([c // width, c % width], axis=-1), jnp.int32), obj_alive=alive,
            inventory=jnp.maximum(holding, 0)))

        def move(action, states=states, alive=alive):
            after, reward, terminated, _, _ = jax.vmap(env.transition, (0, None, None))(states, action, params)
            new = after.level
            new_mask = jnp.sum(new.obj_alive[:, slots] * weights, axis=-1) if len(slots) else jnp.zeros_like(
                new.inventory)
            same = (jnp.all(new.walls == reference.walls, axis=(-2, -1))
                    & jnp.all(new.obj_pos == reference.obj_pos, axis=(-2, -1))
                    & jnp.all(new.obj_alive[:, kept] == reference.obj_alive[kept], axis=-1)
                    & jnp.all(new.memory == reference.memory, axis=-1))
            # a consumed slot stays consumed: the model's masks only shrink
            if len(slots):
                same = same & jnp.all(~new.obj_alive[:, slots] | alive[:, slots], axis=-1)
            index = new_mask * cells + new.agent[:, 0] * width + new.agent[:, 1]
            return reward, terminated, index.astype(jnp.int32), new_mask, new.inventory, same

        reward, ends, nxt, new_mask, inventory, ok = jax.vmap(move, out_axes=1)(jnp.arange(4))
        onward = (holding >= 0)[:, None] & ~ends & ok
        carried = carried.at[new_mask.ravel()].max(jnp.where(onward, inventory, -1).ravel())
        groups.append((m * cells + c, reward, ends, nxt, new_mask, inventory, ok))
    order = np.argsort(np.concatenate([g[0] for g in groups]))  # back to state order
    reward, ends, nxt, new_mask, inventory, ok = (jnp.concatenate([g[k] for g in groups])[order] for k in range(1, 7))
    ok = ends | (ok & (inventory == carried[new_mask]))  # what a move leaves in hand is what its mask carries
    start = start_mask * cells + level.agent[0] * width + level.agent[1]
    horizon = episode_limit(level, params)
    reached = _reachable(start, ends, nxt, horizon)  # only the states an episode can reach must be faithful
    return Model(reward, ends, nxt, jnp.all(ok | ~reached[:, None]), start.astype(jnp.int32), horizon)


def bytes_per_level(env: GridEnv, params: EnvParams) -> int:
    """A rough upper bound on the device memory ``best_return`` of one level needs (its model: every
    state's level and transitions, a few copies); 0 for an environment without values."""
    if reason_without_values(env) is not None:
        return 0
    level = jax.eval_shape(env.sample, jax.random.key(0), params)
    level_bytes = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(level))
    states = (1 << len(consumable_slots(env))) * env.height * env.width
    return 3 * states * (level_bytes + 4 * (4 + 1 + 4 + 4 + 4 + 1 + 4))


def _reachable(start, ends, nxt, horizon) -> jax.Array:
    """``bool[S]``: the states an episode from ``start`` enters within ``horizon`` steps."""

    def body(carry):
        reached, _, t = carry
        onward = reached[:, None] & ~ends
        new = reached.at[nxt.ravel()].max(onward.ravel())
        return new, jnp.any(new != reached), t + 1

    first = jnp.zeros(ends.shape[0], bool).at[start].set(True)
    return jax.lax.while_loop(lambda c: c[1] & (c[2] < horizon), body, (first, jnp.array(True), 0))[0]


def state_values(mdl: Model, discount) -> jax.Array:
    """``float32[S]``: the best discounted return from each state with the whole horizon ahead,
    by backward induction; it stops early once a step changes nothing (every later step is the same)."""

    def backup(values):
        return jnp.max(mdl.reward + discount * jnp.where(mdl.ends, 0.0, values[mdl.next]), axis=-1)

    def body(carry):
        values, _, t = carry
        new = backup(values)
        return new, jnp.any(new != values), t + 1

    zero = jnp.zeros(mdl.reward.shape[0], jnp.float32)
    values, _, _ = jax.lax.while_loop(lambda c: c[1] & (c[2] < mdl.horizon), body, (zero, jnp.array(True), 0))
    return values


def best_return(env: GridEnv, params: EnvParams, level: Level, discount) -> Best:
    """The best discounted return ``level`` pays (``discount`` may be traced): planned over the
    level's states, then played through ``env.transition``; NaN where it is not exact. vmap over levels."""
    if reason_without_values(env) is not None:
        return Best(jnp.float32(jnp.nan), jnp.bool_(False))
    mdl = model(env, params, level)
    values = state_values(mdl, discount)
    # among moves of equal value, the one that pays soonest: undiscounted, every route to a reward ties
    sooner = state_values(mdl, URGENCY * discount)
    after = lambda v, node, d: mdl.reward[node] + d * jnp.where(mdl.ends[node], 0.0, v[mdl.next[node]])

    def body(carry):
        state, node, total, scale, over = carry
        q = after(values, node, discount)
        best = q >= jnp.max(q) - TOLERANCE * jnp.maximum(1.0, jnp.abs(jnp.max(q)))
        action = jnp.argmax(jnp.where(best, after(sooner, node, URGENCY * discount), -jnp.inf))
        moved, reward, terminated, truncated, _ = env.transition(state, action, params)
        # the model's index of where the episode went, to choose the next move from
        node = mdl.next[node, action]
        return moved, node, total + scale * reward, scale * discount, terminated | truncated

    carry = (env.start(level), mdl.start, jnp.float32(0.0), jnp.float32(1.0), jnp.bool_(False))
    _, _, played, _, _ = jax.lax.while_loop(lambda c: ~c[4], body, carry)
    planned = values[mdl.start]
    exact = mdl.faithful & (jnp.abs(played - planned) <= TOLERANCE * jnp.maximum(1.0, jnp.abs(planned)))
    return Best(jnp.where(exact, played, jnp.nan), exact)


def best_returns(env: GridEnv, params: EnvParams, levels: Level, discount) -> Best:
    """``best_return`` of a batch of levels (leading axis)."""
    return jax.vmap(best_return, (None, None, 0, None))(env, params, levels, discount)
