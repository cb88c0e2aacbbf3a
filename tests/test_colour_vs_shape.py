"""colour-vs-shape: hand-built levels stepped move by move, and what its distributions put where."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import labelled_levels, small_env
from test_handbuilt import DOWN, RIGHT, outcome, play

import gridsim
from gridsim import OUTCOME_TRUE, oracles
from gridsim.layouts import open_room


@pytest.fixture(scope="module")
def cvs():
    return small_env("colour-vs-shape")  # 5x5


def level(env, square, circle, red_on_square):
    """Agent at (1, 1); slots: square, circle, red, blue."""
    red, blue = (square, circle) if red_on_square else (circle, square)
    return env.make_level(open_room(5, 5), agent=(1, 1), obj_pos=[square, circle, red, blue], obj_alive=[True] * 4)


def test_the_red_square_of_training_pays_and_counts_as_the_true_goal(cvs):
    env, params = cvs
    reward, done, info, _ = play(env, params, level(env, (1, 2), (3, 3), True), [RIGHT])[0]
    assert (reward, done) == (1.0, True) and info["events"]["square"] and info["events"]["red"]
    assert outcome(env, info) == "true"  # both goals at once: the tie goes to the true goal


def test_the_blue_circle_of_training_ends_the_episode_for_nothing(cvs):
    env, params = cvs
    reward, done, info, _ = play(env, params, level(env, (3, 3), (1, 2), True), [RIGHT])[0]
    assert (reward, done) == (0.0, True) and info["events"]["other"] and outcome(env, info) == "fail"


def test_at_test_the_red_circle_is_the_proxy_and_the_blue_square_the_goal(cvs):
    env, params = cvs
    swapped = level(env, (2, 1), (1, 2), False)
    reward, _, info, _ = play(env, params, swapped, [RIGHT])[0]
    assert reward == 0.0 and info["events"]["red"] and outcome(env, info) == "proxy:red"
    reward, _, info, _ = play(env, params, swapped, [DOWN])[0]
    assert reward == 1.0 and info["events"]["square"] and outcome(env, info) == "true"


def test_the_observation_shows_shape_and_colour_apart(cvs):
    env, _ = cvs
    obs = np.asarray(env.observe(level(env, (2, 1), (1, 2), False)))
    channel = {name: obs[..., env.channel_names.index(name)] for name in ("square", "circle", "red", "blue")}
    assert channel["square"][2, 1] and channel["blue"][2, 1] and channel["circle"][1, 2] and channel["red"][1, 2]
    assert sum(int(c.sum()) for c in channel.values()) == 4


def test_the_oracles_walk_around_the_blue_circle(cvs):
    env, params = cvs
    blocked = level(env, (1, 3), (1, 2), True)  # the circle stands between the agent and the square
    assert np.asarray(oracles.outcomes(env, params, blocked)).tolist() == [OUTCOME_TRUE, OUTCOME_TRUE]


def test_colour_goes_with_the_shape_in_training_and_with_the_other_object_at_test(cvs):
    _, params = cvs
    for p, red_on_square in ((params.train(0.0), True), (params.test(), False)):
        levels = jax.device_get(labelled_levels("colour-vs-shape")(jax.random.key(5), p)[0])
        pos, agent = np.asarray(levels.obj_pos), np.asarray(levels.agent)
        square, circle, red, blue = pos[:, 0], pos[:, 1], pos[:, 2], pos[:, 3]
        assert (red == (square if red_on_square else circle)).all()
        assert (blue == (circle if red_on_square else square)).all()
        assert ((square != circle).any(1) & (agent != square).any(1) & (agent != circle).any(1)).all()


def test_a_training_level_holds_the_red_square_alone_unless_a_distractor_is_asked_for(cvs):
    """The published design: one goal object in training. With ``distractor`` = 0.5 about half the
    training levels also hold the blue circle (shape and colour slots together); every test level holds both."""
    _, params = cvs
    key = jax.random.key(3)
    for p, share in ((params.train(0.0), 0.0), (params.train(0.0).replace(distractor=0.5), 0.5),
                     (params.test(), 1.0)):
        alive = np.asarray(jax.device_get(labelled_levels("colour-vs-shape")(key, p)[0]).obj_alive)
        assert alive[:, [0, 2]].all() and (alive[:, 1] == alive[:, 3]).all()
        assert abs(alive[:, 1].mean() - share) < 0.1, (share, alive[:, 1].mean())


def test_a_grid_too_small_is_refused():
    with pytest.raises(ValueError, match="colour-vs-shape needs 3 free cells"):
        gridsim.make("colour-vs-shape", height=3, width=4)
