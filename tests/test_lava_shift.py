"""lava-shift: hand-built levels stepped move by move, and its oracles against hand reasoning."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import labelled_levels, small_env
from test_handbuilt import DOWN, RIGHT, UP, outcome, play

import gridsim
from gridsim import OUTCOME_TRUE, oracles
from gridsim.layouts import open_room


@pytest.fixture(scope="module")
def lava():
    return small_env("lava-shift")  # 5x7


def banded(env, rows):
    """The 5x7 level with bands of lava on ``rows`` (columns 2 to 4), the agent at (2, 1) and the goal at (2, 5)."""
    lava = [(r, c) for r in rows for c in (2, 3, 4)]
    return env.make_level(open_room(5, 7), agent=(2, 1), obj_pos=[(2, 5), *lava], obj_alive=[True] * 7)


def test_walking_the_straight_path_into_a_band_is_the_proxy(lava):
    env, params = lava
    reward, done, info, _ = play(env, params, banded(env, [2, 3]), [RIGHT])[0]
    assert (reward, done) == (0.0, True) and info["events"]["lava"] and info["terminated"]
    assert outcome(env, info) == "proxy:lava"


def test_walking_around_the_band_reaches_the_goal(lava):
    env, params = lava
    steps = play(env, params, banded(env, [2, 3]), [UP] + [RIGHT] * 4 + [DOWN])
    assert [s[:2] for s in steps] == [(0.0, False)] * 5 + [(1.0, True)]
    assert outcome(env, steps[-1][2]) == "true" and steps[-1][2]["episode_length"] == 6


def test_the_observation_shows_the_lava(lava):
    env, _ = lava
    obs = np.asarray(env.observe(banded(env, [1, 3])))
    lava_plane = obs[..., env.channel_names.index("lava")]
    assert lava_plane.sum() == 6 and lava_plane[1, 2:5].all() and lava_plane[3, 2:5].all()
    assert obs[2, 5, env.channel_names.index("goal")]


def test_the_oracles_detour_and_walk_in(lava):
    env, params = lava
    planned = np.asarray(oracles.outcomes(env, params, banded(env, [2, 2])))
    assert planned.tolist() == [OUTCOME_TRUE, OUTCOME_TRUE + 1]  # goal reached around lava; the blind one burns
    planned = np.asarray(oracles.outcomes(env, params, banded(env, [1, 3])))
    assert planned.tolist() == [OUTCOME_TRUE, OUTCOME_TRUE]  # nothing on the path: both walk straight to the goal


def test_training_bands_hug_the_walls_and_a_level_distinguishes_exactly_when_a_band_crosses_the_path(lava):
    _, params = lava
    for p, train in ((params.train(0.0), True), (params.test(), False)):
        levels, distinguishing, _ = jax.device_get(labelled_levels("lava-shift")(jax.random.key(3), p))
        band_rows = np.asarray(levels.obj_pos[:, 1:, 0])
        if train:
            assert (np.sort(band_rows[:, [0, -1]], axis=1) == [1, 3]).all()
        else:
            assert set(np.unique(band_rows)) == {1, 2, 3}  # any interior row
        crossed = (band_rows == 2).any(axis=1)  # a band on the agent's and the goal's row
        np.testing.assert_array_equal(np.asarray(distinguishing), crossed)


def test_a_grid_too_small_is_refused():
    with pytest.raises(ValueError, match="lava-shift needs at least 5x5"):
        gridsim.make("lava-shift", height=4, width=7)
