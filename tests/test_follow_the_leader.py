"""follow-the-leader: the leader's walk and the two orders, on hand-built levels stepped move by move."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import small_env
from test_handbuilt import DOWN, LEFT, RIGHT, UP, outcome, play

import gridsim
from gridsim.layouts import open_room

BEACONS = [(1, 3), (3, 3), (3, 1)]  # beacons 0, 1, 2 in the 5x5 room's corners but (1, 1)


@pytest.fixture(scope="module")
def leader_env():
    return small_env("follow-the-leader")  # 5x5, 3 beacons


def level(env, route, rule=(0, 1, 2)):
    return env.make_level(open_room(5, 5), (1, 1), [*BEACONS, (1, 1)], [True] * 4, memory=[*rule, *route, 3, 0])


def test_the_rewarded_order_pays_each_beacon_and_the_leader_leads_it_in_training(leader_env):
    """The leader heads for the next beacon of its route and waits there until the agent has been on it."""
    env, params = leader_env
    steps = play(env, params, level(env, [0, 1, 2]), [RIGHT, RIGHT, DOWN, DOWN, LEFT, LEFT])
    leader = [s[2]["final_state"].level.obj_pos[3].tolist() for s in steps]
    assert leader == [[1, 2], [2, 2], [3, 2], [3, 1], [3, 1], [3, 1]]
    assert [s[0] for s in steps] == [0, 1, 0, 1, 0, 1]
    assert [s[1] for s in steps] == [False] * 5 + [True]
    events = steps[-1][2]["events"]
    assert events["rule_done"] and events["followed_leader"]  # the same order: the goals coincide
    assert outcome(env, steps[-1][2]) == "true"


def test_following_a_wrong_leader_finishes_its_order_with_the_rule_undone(leader_env):
    env, params = leader_env
    steps = play(env, params, level(env, [2, 1, 0]), [DOWN, DOWN, RIGHT, RIGHT, UP, UP])
    leader = [s[2]["final_state"].level.obj_pos[3].tolist() for s in steps]
    assert leader == [[2, 1], [3, 1], [3, 2], [2, 2], [1, 2], [1, 2]]
    # out of turn, entering beacons 2 and 1 costs 0.2 each; beacon 0, first in the rewarded order, pays
    assert np.allclose([s[0] for s in steps], [0, -0.2, 0, -0.2, 0, 1])
    assert outcome(env, steps[-1][2]) == "proxy:followed_leader"
    assert int(steps[-1][2]["final_state"].level.inventory) == 1
    hud = steps[-1][2]["final_observation"][0, :, env.channel_names.index("inventory")]
    assert hud.sum() == 1  # the top row counts beacons done in the rewarded order


def test_the_order_is_the_levels_own(leader_env):
    """Beacon 2 first pays where the level's order starts with it, and does nothing where it does not."""
    env, params = leader_env
    paid = play(env, params, level(env, [2, 0, 1], rule=(2, 0, 1)), [DOWN, DOWN])
    unpaid = play(env, params, level(env, [0, 1, 2]), [DOWN, DOWN, LEFT, RIGHT])
    assert paid[-1][0] == 1.0 and np.allclose([s[0] for s in unpaid], [0, -0.2, 0, 0])  # standing on it: once


def test_training_leaders_walk_the_rewarded_order_and_test_leaders_never_do(leader_env):
    env, params = leader_env
    keys = jax.random.split(jax.random.key(0), 1000)
    for case, same in ((params.train(0.0), True), (params.test(), False)):
        memory = np.asarray(jax.jit(jax.vmap(env.sample, (0, None)))(keys, case).memory)
        rules, routes = memory[:, :3], memory[:, 3:6]
        assert (np.sort(rules, axis=1) == [0, 1, 2]).all() and (np.sort(routes, axis=1) == [0, 1, 2]).all()
        assert ((routes == rules).all(axis=1) == same).all()
        assert len(np.unique(rules, axis=0)) == 6  # every order is some level's
    assert len(np.unique(np.concatenate([rules, routes], axis=1), axis=0)) == 30  # and every other leader


@pytest.mark.parametrize("options, field", [(dict(beacons=1), "beacons"), (dict(width=4, beacons=3), "narrow"),
                                            (dict(height=3, width=5, beacons=4), "grid too")])
def test_impossible_sizes_are_refused(options, field):
    with pytest.raises(ValueError, match=field):
        gridsim.make("follow-the-leader", **({"height": 5, "width": 5} | options))
