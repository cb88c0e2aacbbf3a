"""Properties over random levels and random actions (hypothesis draws seeds and params)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from conftest import (
    ENV_NAMES,
    LABELLED,
    batched_reset,
    labelled_levels,
    labelled_test_levels,
    random_rollout,
    small_env,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from gridsim.layouts import distances, index_layout

SETTINGS = settings(max_examples=8, deadline=None, derandomize=True)
seeds = st.integers(0, 2**31 - 1)
alphas = st.sampled_from([0.0, 0.25, 1.0])


@functools.cache  # the three properties below draw the same examples (derandomized): one rollout serves all
def _rollout(name, seed, alpha):
    env, params = small_env(name)
    before, after, rewards, dones, infos, _ = jax.device_get(random_rollout(name)(jax.random.key(seed),
                                                                                  params.train(alpha)))
    # the level before each step, and after the last: levels[T + 1, N]
    levels = jax.tree_util.tree_map(lambda a, b: np.concatenate([a, b[-1:]]), before, after.level)
    return env, params, levels, np.asarray(rewards), np.asarray(dones), infos


@SETTINGS
@given(name=st.sampled_from(ENV_NAMES), seed=seeds, alpha=alphas)
def test_agent_stays_in_bounds_and_out_of_walls(name, seed, alpha):
    env, _, levels, *_ = _rollout(name, seed, alpha)
    rows, cols = levels.agent[..., 0], levels.agent[..., 1]
    assert (rows >= 0).all() and (rows < env.height).all() and (cols >= 0).all() and (cols < env.width).all()
    t_idx, n_idx = np.indices(rows.shape)
    assert not levels.walls[t_idx, n_idx, rows, cols].any()
    assert levels.walls[..., 0, :].all() and levels.walls[..., -1, :].all()  # border intact
    assert levels.walls[..., :, 0].all() and levels.walls[..., :, -1].all()


@SETTINGS
@given(name=st.sampled_from(ENV_NAMES), seed=seeds, alpha=alphas)
def test_objects_stay_put_and_are_only_consumed(name, seed, alpha):
    env, _, levels, _, dones, _ = _rollout(name, seed, alpha)
    same_episode = ~dones  # level t+1 continues level t
    cells_moved = np.abs(levels.obj_pos[1:] - levels.obj_pos[:-1]).sum(axis=-1) * levels.obj_alive[:-1]
    fixed = ~np.isin(np.array(env.slot_kinds), env.mobile_kinds)  # monsters and leaders walk one cell a step
    assert not ((cells_moved > 0) & fixed & same_episode[..., None]).any()
    assert not ((cells_moved > 1) & same_episode[..., None]).any()
    revived = levels.obj_alive[1:] & ~levels.obj_alive[:-1]
    regrowing = np.isin(np.array(env.slot_kinds), env.regrowing_kinds)  # trees grow back
    assert not (revived & ~regrowing & same_episode[..., None]).any()
    live = levels.obj_pos[levels.obj_alive]
    t, n, k = np.nonzero(levels.obj_alive)
    assert not levels.walls[t, n, live[:, 0], live[:, 1]].any()  # objects on free cells
    if name == "keys-and-chests":
        keys = env.kind_slots["key"]
        chests = env.kind_slots["chest"]
        balance = levels.obj_alive[..., keys].sum(-1) + levels.inventory - levels.obj_alive[..., chests].sum(-1)
        assert (levels.inventory >= 0).all()
        assert not ((balance[1:] != balance[:-1]) & same_episode).any()  # a key is carried or spent, never lost


@SETTINGS
@given(name=st.sampled_from(ENV_NAMES), seed=seeds, alpha=alphas)
def test_reward_bounded_and_episode_bookkeeping(name, seed, alpha):
    env, params, levels, rewards, dones, infos = _rollout(name, seed, alpha)
    weights = np.array(list(params.reward_weights.values()))
    assert rewards.min() >= min(0.0, weights[weights < 0].sum()) and rewards.max() <= weights[weights > 0].sum()
    assert (infos["terminated"] | infos["truncated"] == dones).all()
    assert not (infos["terminated"] & infos["truncated"]).any()
    assert (infos["episode_length"][dones] <= int(params.max_steps_in_episode)).all()
    outcomes = infos["outcome"][dones]
    assert ((outcomes >= 0) & (outcomes < len(env.outcome_names))).all()
    # an episode that hit its true goal event is never labelled a failure
    true_hit = infos["events"][env.true_goal][dones]
    assert (outcomes[true_hit] != 0).all()


@SETTINGS
@given(name=st.sampled_from(ENV_NAMES), seed=seeds)
def test_every_level_is_solvable(name, seed):
    env, params = small_env(name)
    _, states = batched_reset(name)(jax.random.split(jax.random.key(seed), 64), params.test())
    levels = states.level
    dist = np.asarray(jax.vmap(distances)(levels.walls, levels.agent))
    reach = dist < env.height * env.width
    n = np.arange(64)
    for k in range(len(env.slot_kinds)):
        alive = np.asarray(levels.obj_alive[:, k])
        pos = np.asarray(levels.obj_pos[:, k])
        assert reach[n, pos[:, 0], pos[:, 1]][alive].all()
    if name == "coin-at-end":
        assert reach[:, :, env.width - 2].any(axis=1).all()
    if name == "cheese-in-corner":
        assert reach[:, 1, 1].all()


def test_maze_free_cells_form_a_spanning_tree():
    from gridsim.layouts import maze

    walls = np.asarray(jax.jit(jax.vmap(lambda k: maze(k, 9, 11)))(jax.random.split(jax.random.key(3), 32)))
    free = ~walls
    edges = (free[:, 1:, :] & free[:, :-1, :]).sum((1, 2)) + (free[:, :, 1:] & free[:, :, :-1]).sum((1, 2))
    assert (free.sum((1, 2)) == 2 * 4 * 5 - 1).all()
    assert (edges == free.sum((1, 2)) - 1).all()  # connected (below) with n - 1 edges: a tree
    reach = jax.vmap(lambda w: distances(w, jnp.array([1, 1])) < w.size)(jnp.asarray(walls))
    assert (np.asarray(reach) == free).all()
    assert len({w.tobytes() for w in walls}) > 28  # and they differ


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=seeds, density=st.floats(0.0, 0.6))
def test_bfs_matches_a_reference_search(seed, density):
    from collections import deque

    rng = np.random.default_rng(seed)
    walls = rng.random((6, 7)) < density
    source = (int(rng.integers(6)), int(rng.integers(7)))
    walls[source] = False
    got = np.asarray(_jit_distances(jnp.asarray(walls), jnp.asarray(source)))
    expected = np.full(walls.shape, walls.size)
    expected[source] = 0
    queue = deque([source])
    while queue:
        r, c = queue.popleft()
        for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            rr, cc = r + dr, c + dc
            if 0 <= rr < 6 and 0 <= cc < 7 and not walls[rr, cc] and expected[rr, cc] == walls.size:
                expected[rr, cc] = expected[r, c] + 1
                queue.append((rr, cc))
    np.testing.assert_array_equal(got, expected)


_jit_distances = jax.jit(distances)


def test_obstacle_rooms_are_connected_and_fit_their_objects():
    env, params = small_env("keys-and-chests")
    params = params.replace(obstacle_density=0.35)
    layouts = jax.jit(jax.vmap(env.sample_layout, (0, None)))(jax.random.split(jax.random.key(0), 64), params)
    layouts = np.asarray(layouts)
    free = ~layouts
    assert (free.sum((1, 2)) >= env.needed_cells).all()
    assert (layouts.sum((1, 2)) > layouts[0].size - (env.height - 2) * (env.width - 2)).any()  # some obstacles
    for walls in layouts:
        start = np.argwhere(~walls)[0]
        reach = np.asarray(_jit_distances(jnp.asarray(walls), jnp.asarray(start))) < walls.size
        assert (reach == ~walls).all()


def _distinguishing_share(name, params, seed=0):
    _, distinguishing, _ = labelled_levels(name)(jax.random.key(seed), params)
    return float(np.asarray(distinguishing).mean())


def test_alpha_is_the_mixture_fraction(env_name):
    """Biased training levels never distinguish, unless the environment says its goals come apart in
    training too (then some do); at alpha the distinguishing share mixes the test one and the biased
    one in that proportion."""
    env, params = small_env(env_name)
    test_share = labelled_test_levels(env_name)[2].mean()  # the oracle tests' 10,000 levels
    biased_share = _distinguishing_share(env_name, params.train(0.0), seed=2)
    assert biased_share > 0.0 if env.goals_apart_in_training else biased_share == 0.0
    share = _distinguishing_share(env_name, params.train(0.3), seed=1)
    expected = 0.3 * test_share + 0.7 * biased_share
    n = LABELLED
    assert abs(share - expected) <= 4 * np.sqrt(max(expected * (1 - expected), 1e-4) / n), (share, expected)


CORNER_ORDER = np.maximum(*np.indices((7, 7)))  # cheese-in-corner's order: the k x k corner is a prefix
_index_of_walls = jax.jit(lambda walls: index_layout(walls, CORNER_ORDER))


@SETTINGS
@given(seed=seeds)
def test_a_layout_index_lists_free_cells_first_in_the_given_order(seed):
    """Traced walls (a maze) and constant walls (an open room) are indexed by one running count; the
    reference is a plain sort of (wall?, order, row-major position)."""
    walls = np.random.default_rng(seed).random((7, 7)) < 0.4
    expected = sorted(range(49), key=lambda i: (walls.flat[i], CORNER_ORDER.flat[i], i))
    for layout in (index_layout(walls, CORNER_ORDER), _index_of_walls(jnp.asarray(walls))):
        cells, rank = np.asarray(layout.cells), np.asarray(layout.rank)
        assert cells.tolist() == expected and int(layout.n_free) == (~walls).sum()
        assert (rank[cells] == np.arange(49)).all()
        for k in range(-1, 8):  # the k x k corner's free cells, counted by hand
            assert int(layout.count_free(k)) == int((~walls[: k + 1, : k + 1]).sum()), k
