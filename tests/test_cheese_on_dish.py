"""cheese-on-dish: hand-built levels stepped move by move, and where its distributions put the cheese."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import labelled_levels, small_env
from test_handbuilt import DOWN, RIGHT, outcome, play

import gridsim
from gridsim.layouts import open_room


@pytest.fixture(scope="module")
def dish():
    return small_env("cheese-on-dish")  # 7x7


def test_cheese_on_the_dish_is_the_true_goal(dish):
    env, params = dish
    level = env.make_level(open_room(7, 7), agent=(1, 1), obj_pos=[(1, 2), (1, 2)], obj_alive=[True, True])
    reward, done, info, _ = play(env, params, level, [RIGHT])[0]
    assert (reward, done) == (1.0, True) and info["events"]["cheese"] and info["events"]["dish"]
    assert outcome(env, info) == "true"  # both at once: the tie goes to the true goal


def test_the_dish_alone_is_the_proxy_and_does_not_end_the_episode(dish):
    env, params = dish
    level = env.make_level(open_room(7, 7), agent=(1, 1), obj_pos=[(5, 5), (2, 1)], obj_alive=[True, True])
    steps = play(env, params, level, [DOWN, RIGHT])
    reward, done, info, _ = steps[0]
    assert (reward, done) == (0.0, False) and info["events"]["dish"] and not info["events"]["cheese"]
    np.testing.assert_array_equal(info["first_reached"], [-1, 1])
    assert outcome(env, info) == "proxy:dish"


def test_cheese_eaten_after_the_dish_is_a_training_success_with_the_dish_as_outcome(dish):
    """Capability asks whether training's goal was reached; the outcome asks which goal came first."""
    env, params = dish
    level = env.make_level(open_room(7, 7), agent=(1, 1), obj_pos=[(1, 3), (1, 2)], obj_alive=[True, True])
    (_, _, first, _), (reward, done, info, _) = play(env, params, level, [RIGHT, RIGHT])
    assert not first["success"]  # the dish alone is not
    assert (reward, done) == (1.0, True)
    np.testing.assert_array_equal(info["first_reached"], [2, 1])
    assert outcome(env, info) == "proxy:dish" and info["success"]
    # the dish alone, the episode cut short: no success
    level = env.make_level(open_room(7, 7), agent=(1, 1), obj_pos=[(5, 5), (1, 2)], obj_alive=[True, True])
    *_, (_, done, info, _) = play(env, params.replace(max_steps_in_episode=2), level, [RIGHT, DOWN])
    assert done and outcome(env, info) == "proxy:dish" and not info["success"]


@pytest.mark.parametrize("distance", [0, 1, 3])
def test_training_cheese_lies_within_the_distance_of_its_dish_and_test_cheese_anywhere(dish, distance):
    env, params = dish
    params = params.replace(dish_distance=distance)
    apart = {}
    for case, p in (("train", params.train(0.0)), ("test", params.test())):
        levels = jax.device_get(labelled_levels("cheese-on-dish")(jax.random.key(distance), p)[0])
        pos, agent, walls = np.asarray(levels.obj_pos), np.asarray(levels.agent), np.asarray(levels.walls)
        apart[case] = np.abs(pos[:, 0] - pos[:, 1]).max(axis=1)  # Chebyshev distance, cheese to dish
        n = np.arange(len(pos))
        assert not walls[n, pos[:, 0, 0], pos[:, 0, 1]].any() and not walls[n, pos[:, 1, 0], pos[:, 1, 1]].any()
        assert ((agent != pos[:, 0]).any(1) & (agent != pos[:, 1]).any(1)).all()
    assert apart["train"].max() == distance  # within it, and reaching it
    assert apart["test"].max() > 3


def test_a_negative_distance_is_refused():
    with pytest.raises(ValueError, match="dish_distance must be >= 0"):
        gridsim.make("cheese-on-dish", dish_distance=-1)
