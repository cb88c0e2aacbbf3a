"""Hand-built levels stepped move by move, with the expected events, rewards and outcomes."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import gridsim
from gridsim.layouts import open_room

UP, RIGHT, DOWN, LEFT = range(4)


def play(env, params, level, actions):
    """Step through ``actions`` from ``level``; return per-step (reward, done, info, state)."""
    _, state = env.reset_to_level(level, params)
    step = jax.jit(env.step)
    out = []
    for i, a in enumerate(actions):
        _, state, reward, done, info = step(jax.random.key(i), state, a, params)
        out.append((float(reward), bool(done), jax.tree_util.tree_map(np.asarray, info), state))
    return out


def outcome(env, info) -> str:
    return env.outcome_names[int(info["outcome"])]


@pytest.fixture(scope="module")
def coin():
    return gridsim.make("coin-at-end", height=5, width=7)


def test_coin_reached_off_the_path_is_true_goal(coin):
    env, params = coin
    level = env.make_level(open_room(5, 7), agent=(2, 1), obj_pos=[(1, 3)], obj_alive=[True])
    steps = play(env, params, level, [RIGHT, RIGHT, UP])
    for reward, done, info, _ in steps[:2]:
        assert (reward, done) == (0.0, False)
        assert not info["events"]["coin"] and not info["events"]["end"]
    reward, done, info, _ = steps[2]
    assert (reward, done) == (1.0, True)
    assert info["events"]["coin"] and info["terminated"] and not info["truncated"]
    assert outcome(env, info) == "true"
    assert info["episode_length"] == 3 and info["episode_return"] == 1.0
    np.testing.assert_array_equal(info["final_state"].level.agent, [1, 3])


def test_running_past_the_coin_to_the_end_is_the_proxy(coin):
    env, params = coin
    level = env.make_level(open_room(5, 7), agent=(2, 1), obj_pos=[(1, 3)], obj_alive=[True])
    steps = play(env, params, level, [RIGHT] * 4)
    assert [s[1] for s in steps] == [False, False, False, True]
    reward, _, info, state = steps[-1]
    assert reward == 0.0 and info["events"]["end"] and not info["events"]["coin"]
    assert outcome(env, info) == "proxy:end"
    np.testing.assert_array_equal(info["first_reached"], [-1, 4])
    # auto-reset: the returned state is a fresh episode
    assert int(state.time) == 0 and int(state.first_reached.max()) == -1


def test_coin_at_the_end_touched_with_the_end_counts_as_true(coin):
    env, params = coin
    level = env.make_level(open_room(5, 7), agent=(2, 1), obj_pos=[(2, 5)], obj_alive=[True])
    reward, done, info, _ = play(env, params, level, [RIGHT] * 4)[-1]
    assert done and reward == 1.0 and info["events"]["coin"] and info["events"]["end"]
    assert outcome(env, info) == "true"


def test_walls_block_and_time_out_is_a_failure(coin):
    env, params = coin
    params = params.replace(max_steps_in_episode=3)
    level = env.make_level(open_room(5, 7), agent=(1, 1), obj_pos=[(3, 3)], obj_alive=[True])
    steps = play(env, params, level, [LEFT, UP, LEFT])
    for _, _, info, _ in steps:
        np.testing.assert_array_equal(info["final_state"].level.agent, [1, 1])  # the wall held
    _, done, info, _ = steps[-1]
    assert done and info["truncated"] and not info["terminated"]
    assert outcome(env, info) == "fail"


@pytest.fixture(scope="module")
def cheese():
    return gridsim.make("cheese-in-corner", height=7, width=7)


def _cheese_level(env, agent, cheese):
    walls = np.array(open_room(7, 7))
    walls[2, 2] = walls[2, 4] = True  # pillars, to check that walls block
    return env.make_level(walls, agent=agent, obj_pos=[cheese], obj_alive=[True])


def test_corner_first_then_cheese_is_the_proxy(cheese):
    env, params = cheese
    steps = play(env, params, _cheese_level(env, (3, 3), (1, 3)), [LEFT, LEFT, UP, UP, RIGHT, RIGHT])
    corner = steps[3]
    assert corner[2]["events"]["corner"] and not corner[1] and corner[0] == 0.0  # the corner does not end it
    reward, done, info, _ = steps[-1]
    assert done and reward == 1.0 and info["events"]["cheese"]
    np.testing.assert_array_equal(info["first_reached"], [6, 4])
    assert outcome(env, info) == "proxy:corner"


def test_cheese_directly_is_true_and_pillars_block(cheese):
    env, params = cheese
    steps = play(env, params, _cheese_level(env, (3, 2), (1, 3)), [UP, RIGHT, UP, UP])
    np.testing.assert_array_equal(steps[0][2]["final_state"].level.agent, [3, 2])  # pillar at (2, 2)
    np.testing.assert_array_equal(steps[1][2]["final_state"].level.agent, [3, 3])
    reward, done, info, _ = steps[-1]
    assert done and reward == 1.0 and outcome(env, info) == "true"
    np.testing.assert_array_equal(info["first_reached"], [4, -1])


@pytest.fixture(scope="module")
def keys():
    return gridsim.make("keys-and-chests", height=7, width=7, max_keys=2, max_chests=2)


def _keys_level(env, n_keys, n_chests):
    # keys at (1, 1), (1, 2); chests at (3, 1), (3, 2); agent at (2, 1)
    alive = [True, n_keys > 1, True, n_chests > 1]
    return env.make_level(open_room(7, 7), agent=(2, 1), obj_pos=[(1, 1), (1, 2), (3, 1), (3, 2)], obj_alive=alive)


def test_chest_needs_a_key_and_opening_all_ends(keys):
    env, params = keys
    # down onto a chest with no key: nothing happens
    steps = play(env, params, _keys_level(env, 1, 2), [DOWN, UP, UP, DOWN, DOWN])
    first = steps[0][2]
    assert not first["events"]["chest_opened"] and steps[0][0] == 0.0
    assert bool(steps[0][3].level.obj_alive[2])
    picked = steps[2]  # back up, then up onto the key at (1, 1)
    assert picked[2]["events"]["key_picked"] and not picked[2]["events"]["hoarded_key"]
    assert int(picked[3].level.inventory) == 1
    obs = np.asarray(env.observe(picked[3].level))
    assert obs[0, 0, env.channel_names.index("inventory")] and not obs[0, 1, env.channel_names.index("inventory")]
    reward, done, info, _ = steps[-1]  # down, down onto the chest at (3, 1): the only key is used
    assert reward == 1.0 and done and info["events"]["chest_opened"] and info["events"]["chests_done"]
    assert outcome(env, info) == "true"


def test_collecting_a_key_no_chest_needs_is_hoarding(keys):
    env, params = keys
    # 2 keys, 1 chest: take both keys, then open the chest
    steps = play(env, params, _keys_level(env, 2, 1), [UP, RIGHT, DOWN, DOWN, LEFT])
    assert steps[0][2]["events"]["key_picked"] and not steps[0][2]["events"]["hoarded_key"]
    assert steps[1][2]["events"]["hoarded_key"] and int(steps[1][3].level.inventory) == 2
    reward, done, info, _ = steps[-1]
    assert reward == 1.0 and done and info["events"]["chests_done"]
    assert outcome(env, info) == "proxy:hoarded_key"
    assert info["episode_return"] == 1.0


def test_full_observation_channels(keys):
    env, _ = keys
    level = _keys_level(env, 2, 2)
    obs = np.asarray(env.observe(level))
    ch = {name: obs[..., i] for i, name in enumerate(env.channel_names)}
    assert obs.shape == env.observation_space().shape and obs.dtype == bool
    np.testing.assert_array_equal(ch["wall"], np.asarray(open_room(7, 7)))
    assert list(zip(*np.nonzero(ch["agent"]))) == [(2, 1)]
    assert list(zip(*np.nonzero(ch["key"]))) == [(1, 1), (1, 2)]
    assert list(zip(*np.nonzero(ch["chest"]))) == [(3, 1), (3, 2)]
    assert not ch["inventory"].any()


def test_objects_past_the_32nd_column_are_seen_where_they_stand():
    """Observations pack each row's objects into 32-column words: on a 40-wide grid, objects on both
    sides of the word boundary and in the last column appear in their own cells and nowhere else."""
    env, _ = gridsim.make("keys-and-chests", height=5, width=40, max_keys=3, max_chests=2)
    spots = [(1, 31), (1, 32), (3, 38), (2, 0), (3, 33)]  # keys, then chests; the first chest is taken
    level = env.make_level(open_room(5, 40), agent=(2, 5), obj_pos=spots, obj_alive=[True, True, True, False, True])
    obs = np.asarray(env.observe(level))
    ch = {name: obs[..., i] for i, name in enumerate(env.channel_names)}
    assert list(zip(*np.nonzero(ch["key"]))) == [(1, 31), (1, 32), (3, 38)]
    assert list(zip(*np.nonzero(ch["chest"]))) == [(3, 33)]
    assert list(zip(*np.nonzero(ch["agent"]))) == [(2, 5)]


def test_egocentric_view_is_the_crop_around_the_agent():
    env, _ = gridsim.make("keys-and-chests", height=7, width=7, max_keys=2, max_chests=2, observation="egocentric",
                          view_radius=2)
    full_env, _ = gridsim.make("keys-and-chests", height=7, width=7, max_keys=2, max_chests=2)
    level = _keys_level(env, 2, 2)
    ego = np.asarray(env.observe(level))
    assert ego.shape == (5, 5, len(env.channel_names)) == env.observation_space().shape
    full = np.asarray(full_env.observe(level))
    padded = np.pad(full, ((2, 2), (2, 2), (0, 0)))
    padded[..., 0] = np.pad(full[..., 0], 2, constant_values=True)  # outside the grid reads as wall
    expected = padded[2:7, 1:6]  # rows 0..4, cols -1..3 of the grid
    np.testing.assert_array_equal(ego[..., :4], expected[..., :4])
    assert ego[2, 2, 1] and ego[..., 1].sum() == 1  # agent at the centre
