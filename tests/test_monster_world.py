"""monster-world: hand-built levels stepped move by move, monsters' moves, horizons and measurements."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import small_env
from test_handbuilt import DOWN, LEFT, RIGHT, UP, outcome, play

import gridsim
from gridsim.core import MAX_EPISODE_STEPS, episode_limit
from gridsim.layouts import open_room
from gridsim.testing import check_env

# slots of the small instance: apples 0-1, shields 2-4, monster 5


@pytest.fixture(scope="module")
def monsters():
    env, params = small_env("monster-world")  # 6x6 (interior rows and columns 1-4), 60-step test episodes
    return env, params.replace(chase=1.0)  # every monster step heads for the agent: moves known by hand


def level(env, apples, shields, monster, agent=(1, 1), horizon=MAX_EPISODE_STEPS):
    return env.make_level(open_room(6, 6), agent, [*apples, *shields, monster], [True] * 6, horizon=horizon)


def events(step):
    return sorted(name for name, fired in step[2]["events"].items() if fired)


def test_a_monster_hurts_an_agent_without_a_shield_every_step_it_stays(monsters):
    env, params = monsters
    start = level(env, [(4, 4), (4, 3)], [(3, 1), (4, 1), (4, 2)], (1, 4))
    steps = play(env, params, start, [LEFT] * 4)  # the agent bumps the wall; the monster walks along row 1
    assert [s[3].level.obj_pos[5].tolist() for s in steps] == [[1, 3], [1, 2], [1, 1], [1, 1]]
    assert [s[0] for s in steps] == [0.0, 0.0, -1.0, -1.0]
    assert events(steps[2]) == ["hurt"] and bool(steps[3][3].level.obj_alive[5])


def test_a_shield_slays_the_monster_and_the_next_pickup_decides_the_outcome(monsters):
    env, params = monsters
    start = level(env, [(2, 3), (4, 4)], [(2, 1), (4, 1), (4, 2)], (1, 4))
    fight = play(env, params, start, [DOWN, UP, RIGHT])
    assert events(fight[0]) == ["shield"] and int(fight[0][3].level.inventory) == 1
    assert [s[3].level.obj_pos[5].tolist() for s in fight] == [[1, 3], [1, 2], [1, 2]]
    assert events(fight[2]) == ["cleared", "slay"] and fight[2][0] == 0.0
    assert int(fight[2][3].level.inventory) == 0 and not fight[2][3].level.obj_alive[5]
    assert outcome(env, fight[2][2]) == "fail" and not fight[2][2]["success"]

    to_apple = play(env, params, start, [DOWN, UP, RIGHT, DOWN, RIGHT])
    assert events(to_apple[-1]) == ["apple", "apple_when_clear"] and to_apple[-1][0] == 1.0
    assert outcome(env, to_apple[-1][2]) == "true" and to_apple[-1][2]["success"]

    to_shield = play(env, params, start, [DOWN, UP, RIGHT, DOWN, DOWN, DOWN])
    assert events(to_shield[-1]) == ["shield", "shield_when_clear"]
    assert outcome(env, to_shield[-1][2]) == "proxy:shield_when_clear" and not to_shield[-1][2]["success"]


def test_measures_count_pickups_after_the_last_monster(monsters):
    """Against counts summed by hand from the steps' events; NaN before the monsters are gone."""
    env, params = monsters
    start = level(env, [(2, 3), (4, 4)], [(2, 1), (4, 1), (4, 2)], (1, 4))
    # shields, apples, and the shields' share of the two, after the last monster
    for actions, expected in (([DOWN, UP, RIGHT, DOWN, DOWN, DOWN, LEFT], [2, 0, 1]),  # two shields after
                              ([DOWN, UP, RIGHT, DOWN, RIGHT], [0, 1, 0]),  # one apple after
                              ([DOWN, UP, RIGHT], [0, 0, np.nan]),  # cleared, nothing picked up since
                              ([DOWN, UP], [np.nan, np.nan, np.nan])):  # the monster still about
        steps = play(env, params, start, actions)
        counts = np.sum([[s[2]["events"][name] for name in env.event_names] for s in steps], axis=0)
        measured = np.asarray(env.measure_episode(start, counts.astype(np.int32), params))
        np.testing.assert_array_equal(measured, expected)


def test_training_levels_end_after_train_steps_and_test_levels_run_the_full_episode(monsters):
    env, params = monsters
    keys = jax.random.split(jax.random.key(0), 64)
    for case, expected in ((params.train(0.0), 25), (params.test(), 60)):  # the small instance: 60
        levels = jax.jit(jax.vmap(env.sample, (0, None)))(keys, case)
        assert (np.asarray(jax.vmap(episode_limit, (0, None))(levels, case)) == expected).all()
    start = level(env, [(4, 4), (4, 3)], [(3, 1), (4, 1), (4, 2)], (1, 4), agent=(3, 3), horizon=3)
    steps = play(env, params.replace(chase=0.0), start, [UP, DOWN, UP])
    assert [s[1] for s in steps] == [False, False, True] and steps[-1][2]["truncated"]


def test_monster_moves_are_random_one_cell_and_fixed_by_the_level_seed():
    """With chase 0 a monster in the open picks each of the four moves about equally often, by its
    level's seed alone: the same seed gives the same move."""
    env, params = small_env("monster-world", chase=0.0)
    transition = jax.jit(jax.vmap(env.transition, (0, None, None)))
    starts = jax.vmap(lambda seed: env.make_level(open_room(6, 6), (4, 4), [(1, 1), (1, 2), (1, 3), (1, 4), (2, 1),
                                                                        (2, 3)], [True] * 6, seed=seed))
    seeds = np.arange(400, dtype=np.uint32) * 7919
    moved = lambda: np.asarray(transition(jax.vmap(env.start)(starts(seeds)), LEFT, params)[0].level.obj_pos[:, 5])
    first = moved()
    steps = first - [2, 3]
    assert (np.abs(steps).sum(axis=-1) == 1).all()  # in the open a move always succeeds
    directions = np.unique(steps, axis=0, return_counts=True)[1]
    assert len(directions) == 4 and directions.min() >= 70  # 100 each expected
    np.testing.assert_array_equal(moved(), first)


def test_with_regrow_a_pickup_grows_back_the_next_step_and_the_last_apple_no_longer_ends_the_episode():
    plain, params = small_env("monster-world")
    params = params.replace(chase=0.0)
    regrow, _ = small_env("monster-world", regrow=True)
    start = level(plain, [(1, 2), (1, 3)], [(3, 3), (4, 3), (4, 4)], (4, 1))
    assert play(plain, params, start, [RIGHT, RIGHT])[-1][2]["terminated"]  # without regrow: both apples eaten
    steps = play(regrow, params, start, [RIGHT, RIGHT, LEFT])
    assert [events(s)[:1] for s in steps] == [["apple"], ["apple"], []] and not any(s[1] for s in steps)
    alive = [s[3].level.obj_alive.tolist()[:2] for s in steps]
    assert alive == [[False, True], [True, False], [True, True]]  # each apple back one step after it went
    for s in steps:
        pos = np.asarray(s[3].level.obj_pos)
        live = np.asarray(s[3].level.obj_alive) & ~regrow.kind_slots["monster"]
        assert len({tuple(p) for p in pos[live]}) == live.sum()  # apples and shields on cells of their own
        assert tuple(s[3].level.agent.tolist()) not in {tuple(p) for p in pos[live]}
    assert steps[-1][2]["success"] and int(steps[-1][3].level.memory[0]) == 2


def test_monster_world_with_regrow_passes_the_conformance_check():
    check_env(*small_env("monster-world", regrow=True), oracle_levels=64)


def test_a_regrown_apple_lands_uniformly_on_the_free_cells():
    """400 level seeds: the apple eaten at (1, 2) comes back once on each free cell, about equally often."""
    env, params = small_env("monster-world", regrow=True, chase=0.0)
    starts = jax.vmap(lambda seed: env.make_level(open_room(6, 6), (1, 1), [(1, 2), (1, 3), (3, 3), (4, 3), (4, 4),
                                                                        (4, 1)], [True] * 6, seed=seed))
    transition = jax.vmap(env.transition, (0, None, None))
    run = jax.jit(lambda states: transition(transition(states, RIGHT, params)[0], LEFT, params)[0])
    ends = run(jax.vmap(env.start)(starts(np.arange(400, dtype=np.uint32) * 7919)))
    assert np.asarray(ends.level.obj_alive[:, 0]).all()
    cells, counts = np.unique(np.asarray(ends.level.obj_pos[:, 0]), axis=0, return_counts=True)
    interior = {(r, c) for r in range(1, 5) for c in range(1, 5)}
    free = interior - {(1, 1), (1, 3), (3, 3), (4, 3), (4, 4)}  # less the agent's cell and the other pickups
    assert {tuple(c) for c in cells.tolist()} == free and counts.min() >= 15  # 400 / 11 = 36 expected


@pytest.mark.parametrize("option, value, field", [("shields", 1, "shields"), ("monsters", 0, "monsters"),
                                                  ("apples", 0, "apples"), ("height", 3, "grid too small")])
def test_impossible_counts_are_refused(option, value, field):
    options = dict(height=6, width=6, apples=2, shields=3, monsters=1) | {option: value}
    with pytest.raises(ValueError, match=field):
        gridsim.make("monster-world", **options)


@pytest.mark.parametrize("field, value", [("train_steps", 0), ("chase", 1.5)])
def test_impossible_params_are_refused(monsters, field, value):
    env, params = monsters
    with pytest.raises(ValueError, match=field):
        env.check_params(params.replace(**{field: value}))
