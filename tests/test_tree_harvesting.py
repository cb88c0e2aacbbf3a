"""tree-harvesting: hand-built levels stepped move by move, regrowth against its formula, the oracles'
waiting, level distributions and bad input."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import small_env
from test_handbuilt import DOWN, LEFT, RIGHT, UP, outcome, play

import gridsim
from gridsim import oracles
from gridsim.core import episode_limit
from gridsim.layouts import open_room

# the small instance: 6x6 (interior rows and columns 1-4), 4 trees at the start, 8 tree slots


@pytest.fixture(scope="module")
def trees():
    return small_env("tree-harvesting")


def level(env, standing, agent=(1, 1), seed=0):
    pos = list(standing) + [(0, 0)] * (8 - len(standing))
    return env.make_level(open_room(6, 6), agent, pos, [True] * len(standing) + [False] * (8 - len(standing)),
                          seed=seed)


def fired(step):
    return sorted(name for name, on in step[2]["events"].items() if on)


def test_chopping_pays_and_the_last_tree_strips_the_world_bare(trees):
    env, params = trees
    params = params.replace(regrowth=0.0)  # 1e-6 a step: nothing grows in these few steps
    steps = play(env, params, level(env, [(1, 2), (3, 2)]), [RIGHT, DOWN, DOWN, UP])
    assert [s[0] for s in steps] == [1.0, 0.0, 1.0, 0.0]
    assert fired(steps[0]) == ["chop", "harvest"] and outcome(env, steps[0][2]) == "true"
    assert fired(steps[2]) == ["bare", "chop", "last_tree"] and fired(steps[3]) == ["bare"]
    assert not any(s[1] for s in steps)  # nothing ends a world but its time
    alone = play(env, params, level(env, [(1, 2)]), [RIGHT])
    assert fired(alone[0]) == ["bare", "chop", "last_tree"] and outcome(env, alone[0][2]) == "proxy:last_tree"


def test_measures_are_chops_and_bare_steps_per_step_apart_for_full_and_thinned_worlds(trees):
    """Against counts made by hand from the moves of the test above, over the world's 60 steps (the
    small instance's); a world that starts with fewer than 4 trees is a thinned one."""
    env, params = trees
    params = params.replace(regrowth=0.0)
    thinned = level(env, [(1, 2), (3, 2)])
    full = level(env, [(1, 2), (3, 2), (4, 4), (4, 3)])
    for start, actions, expected in (
        (thinned, [RIGHT, DOWN, DOWN, UP, UP], [np.nan, 2 / 60, np.nan]),
        (full, [RIGHT, DOWN, DOWN, UP, UP], [2 / 60, np.nan, 0.0]),
        (level(env, [(1, 2), (4, 4), (4, 3), (4, 2)]), [RIGHT, DOWN, DOWN, DOWN, RIGHT, RIGHT, UP],
         [4 / 60, np.nan, 2 / 60]),
    ):
        steps = play(env, params, start, actions)
        counts = np.sum([[s[2]["events"][name] for name in env.event_names] for s in steps], axis=0)
        measured = np.asarray(env.measure_episode(start, counts.astype(np.int32), params))
        np.testing.assert_allclose(measured, expected, rtol=1e-6)


@jax.jit
def _growth(env_params, seeds):
    """One bump into the top wall from (1, 1) with trees on (3, 3) and (4, 4), for many level seeds."""
    env, _ = small_env("tree-harvesting")
    start = env.start(level(env, [(3, 3), (4, 4)]))

    def once(seed):
        state = start.replace(level=start.level.replace(seed=seed))
        after, _, _, _, info = env.transition(state, UP, env_params)
        return info["events"]["grow"], after.level.obj_pos[2]

    return jax.vmap(once)(seeds)


def test_trees_grow_at_the_published_rate_on_free_cells_drawn_uniformly(trees):
    """r(n) = max(1e-6, regrowth * log(1 + n) / log(1 + trees)), here n = 2 and trees = 4 (the small
    instance's start), over 40,000 seeds; the new tree lands on each of the 13 cells that hold neither
    the agent nor a tree about equally often, and never elsewhere."""
    env, params = trees
    seeds = jnp.arange(40_000, dtype=jnp.uint32) * jnp.uint32(2654435761)
    for regrowth in (0.3, 0.9):
        grew, where = map(np.asarray, _growth(params.replace(regrowth=regrowth), seeds))
        expected = regrowth * math.log(3) / math.log(5)
        assert abs(grew.mean() - expected) < 4 * math.sqrt(expected * (1 - expected) / grew.size), regrowth
    cells = {tuple(c) for c in where[grew]}
    assert cells == {(r, c) for r in range(1, 5) for c in range(1, 5)} - {(1, 1), (3, 3), (4, 4)}
    counts = np.unique(where[grew], axis=0, return_counts=True)[1]
    chi2 = ((counts - counts.mean()) ** 2 / counts.mean()).sum()
    assert chi2 < 32.9  # the 0.999 quantile of chi-square with 12 degrees of freedom


def test_a_bare_world_stays_bare(trees):
    env, params = trees
    steps = play(env, params.replace(regrowth=1.0), level(env, []), [UP, LEFT] * 30)
    assert all(fired(s) == ["bare"] for s in steps)


def test_the_true_oracle_waits_beside_the_last_tree_and_the_proxy_oracle_chops_it(trees):
    """One tree, nothing growing: the harvest oracle never enters it; the last-tree oracle walks the
    two moves to it. Once a second tree stands, the harvest oracle goes for the nearer one."""
    env, params = trees
    params = params.replace(regrowth=0.0)
    start = level(env, [(2, 2)], agent=(1, 1))
    step = jax.jit(env.step)
    for goal, expected in (("harvest", None), ("last_tree", 2)):
        act = jax.jit(oracles.policy(env, goal).act)
        _, state = env.reset_to_level(start, params)
        chopped_at = None
        for t in range(30):
            action, _ = act(None, None, state, params, (), True)
            _, state, _, _, info = step(jax.random.key(t), state, action, params)
            if bool(info["events"]["chop"]):
                chopped_at = t + 1
                break
        assert chopped_at == expected, goal
    two = level(env, [(2, 2), (4, 3)], agent=(4, 1))
    action, _ = jax.jit(oracles.policy(env, "harvest").act)(None, None, env.start(two), params, (), True)
    assert int(action) == RIGHT  # (4, 3) is two moves away, (2, 2) three
    assert int(oracles.oracle_action(env, two.replace(agent=jnp.array([1, 2])), params, 0)) == DOWN


def test_training_worlds_start_full_and_test_worlds_thinned(trees):
    env, params = trees
    keys = jax.random.split(jax.random.key(0), 256)
    for case, standing, limit in ((params.train(0.0), 4, 60), (params.test(), 1, 40),
                                  (params.test().replace(test_trees=3, test_steps=25), 3, 25)):
        levels = jax.jit(jax.vmap(env.sample, (0, None)))(keys, case)
        assert (np.asarray(levels.obj_alive.sum(-1)) == standing).all()
        assert (np.asarray(jax.vmap(episode_limit, (0, None))(levels, case)) == limit).all()
        on_agent = np.all(np.asarray(levels.obj_pos) == np.asarray(levels.agent)[:, None], axis=-1)
        assert not (on_agent & np.asarray(levels.obj_alive)).any()


@pytest.mark.parametrize("options, field", [
    (dict(trees=0), "trees"),
    (dict(trees=6, capacity=5), "capacity"),
    (dict(height=4, width=4, trees=3, capacity=4), "grid too small"),
    (dict(test_trees=0), "test_trees"),
    (dict(test_trees=11), "test_trees"),  # more than the 10 of a full world
    (dict(regrowth=1.5), "regrowth"),
    (dict(test_steps=0), "test_steps"),
])
def test_bad_counts_and_rates_are_refused_naming_the_field(options, field):
    with pytest.raises(ValueError, match=field):
        env, params = gridsim.make("tree-harvesting", **options)
        env.check_params(params)
