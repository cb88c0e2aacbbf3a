"""Level edits, as ACCEL makes them: small random changes to a level that keep it valid.

Every environment gets three without code: move an object (every live
slot on its cell together, so a coloured shape stays one object), move the agent's start, and,
where the walls vary between levels, add or remove an inner wall. An edit never puts the agent or
an object in a wall or on another object, and never opens the border; where it has no room (no
free cell left) it leaves the level as it was. An environment adds its own in ``GridEnv.level_edits``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from gridsim import rng
from gridsim.core import EnvParams, GridEnv, Level, known_value

EditFn = Callable[[jax.Array, Level, EnvParams], Level]  # (key, level, params) -> level


def occupied(env: GridEnv, level: Level) -> jax.Array:
    """``bool[H, W]``: walls, the agent's cell and cells holding a live object."""
    objects = level.walls.at[level.obj_pos[:, 0], level.obj_pos[:, 1]].max(level.obj_alive)
    return objects.at[level.agent[0], level.agent[1]].set(True)


def random_cell(key: jax.Array, allowed: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(cell int32[2], found)``: a cell drawn uniformly from ``allowed``; found is False when none is."""
    width = allowed.shape[1]
    flat = jnp.argmax(jnp.where(allowed, rng.uniform(key, allowed.shape), -1.0).ravel())
    return jnp.stack([flat // width, flat % width]).astype(jnp.int32), jnp.any(allowed)


def inner(env: GridEnv) -> jax.Array:
    """``bool[H, W]``: every cell but the border."""
    return jnp.zeros((env.height, env.width), bool).at[1:-1, 1:-1].set(True)


def move_agent(env: GridEnv, key, level: Level, params: EnvParams) -> Level:
    """The agent starts on another free, empty cell."""
    cell, found = random_cell(key, ~occupied(env, level))
    return level.replace(agent=jnp.where(found, cell, level.agent))


def move_object(env: GridEnv, key, level: Level, params: EnvParams) -> Level:
    """A live object (every live slot on its cell) moves to a free, empty cell."""
    k_slot, k_cell = rng.split(key)
    slots = level.obj_alive.shape[0]
    pick = jnp.argmax(jnp.where(level.obj_alive, rng.uniform(k_slot, (slots,)), -1.0))
    cell, found = random_cell(k_cell, ~occupied(env, level))
    group = jnp.all(level.obj_pos == level.obj_pos[pick], axis=-1) & level.obj_alive
    moving = group & found & level.obj_alive.any()
    return level.replace(obj_pos=jnp.where(moving[:, None], cell, level.obj_pos))


def toggle_wall(env: GridEnv, key, level: Level, params: EnvParams) -> Level:
    """An inner cell that neither the agent nor an object stands on becomes a wall, or stops being one;
    only on a level that has inner walls (an obstacle room drawn with no obstacles gets none)."""
    empty = inner(env) & ~(occupied(env, level) & ~level.walls)
    cell, found = random_cell(key, empty)
    found = found & jnp.any(level.walls & inner(env))
    flipped = level.walls.at[cell[0], cell[1]].set(~level.walls[cell[0], cell[1]])
    return level.replace(walls=jnp.where(found, flipped, level.walls))


def walls_vary(env: GridEnv) -> bool:
    """Whether ``env.sample_layout`` draws different walls for different levels (or params)."""
    found = []
    jax.eval_shape(lambda key: found.append(known_value(env.sample_layout(key, env.default_params()))),
                   jax.random.key(0))
    return found[0] is None


def level_edits(env: GridEnv) -> dict[str, EditFn]:
    """The edits ``env``'s levels take: the three every environment gets, then its own."""
    edits = {"move_object": move_object, "move_agent": move_agent}
    if walls_vary(env):
        edits["toggle_wall"] = toggle_wall
    edits = {name: (lambda key, level, params, fn=fn: fn(env, key, level, params)) for name, fn in edits.items()}
    return {**edits, **env.level_edits()}


def chosen_edits(env: GridEnv, names=None) -> dict[str, EditFn]:
    """``level_edits(env)``, or those of them that ``names`` lists (an unknown name is refused)."""
    available = level_edits(env)
    if names is None:
        return available
    unknown = [n for n in names if n not in available]
    if unknown or not names:
        raise ValueError(f"{env.name} has no edit {', '.join(map(repr, unknown)) or '(none named)'}; "
                         f"its edits: {', '.join(available)}")
    return {n: available[n] for n in names}


def edit(env: GridEnv, key, level: Level, params: EnvParams, count, names=None) -> Level:
    """``count`` (may be traced) edits in a row, each drawn uniformly from ``level_edits(env)``, or
    from those of its edits that ``names`` (static) lists."""
    edits = list(chosen_edits(env, names).values())

    def one(i, level):
        k_which, k_edit = rng.split(jax.random.fold_in(key, i))
        which = rng.randint(k_which, (), 0, len(edits))
        return jax.lax.switch(which, [lambda k, lv, fn=fn: fn(k, lv, params) for fn in edits], k_edit, level)

    return jax.lax.fori_loop(0, count, one, level)
