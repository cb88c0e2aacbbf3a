"""Level search (``gridsim.search``, ``gridsim search``): the expectations come from the oracles and
from policies built by hand, whose failures are known before the search runs."""

from __future__ import annotations

import functools
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from conftest import small_env

from experiments.cli import main
from gridsim import OUTCOME_TRUE, Policy, oracles, search, testing
from gridsim.core import MOVES

# the tests that read the searches below share them (computed once per worker): one worker runs them all
shared = pytest.mark.xdist_group("search")
CONFIG = search.Config(population=8, generations=6, nearest_steps=4, branch=2, start="train")
FAMILY = (5, 5)  # the hand-built policy below fails exactly when the cheese lies on this cell


@functools.cache
def cheese():
    env, params = small_env("cheese-in-corner")
    return env, params.test(), params.train(0.0)


def family_policy(env, fails) -> Policy:
    """The cheese's oracle (an optimal policy: cheese-in-corner pays for the cheese alone), except,
    where ``fails`` (traced), on levels whose cheese lies on ``FAMILY``: there it walks into a wall
    (a bump) for the whole episode."""
    cheese_slot = int(np.argmax(env.kind_slots["cheese"]))

    def act(key, obs, state, params, carry, first):
        level = state.level
        in_family = fails & jnp.all(level.obj_pos[cheese_slot] == jnp.asarray(FAMILY))
        stuck = jnp.argmax(level.walls[level.agent[0] + MOVES[:, 0], level.agent[1] + MOVES[:, 1]])
        return jnp.where(in_family, stuck, oracles.oracle_action(env, level, params, jnp.int32(0))), carry

    return Policy(act=act)


@functools.cache
def searched(policy_name: str):
    """The searches the tests read, each run once: the regret objective for the cheese's oracle and
    the family policy (one program, the policy's failing a traced flag), the proxy objective for the
    corner's oracle."""
    env, test, train = cheese()
    max_steps = int(test.max_steps_in_episode)
    if policy_name == "corner":
        run = jax.jit(lambda key: search.search(env, test, train, oracles.policy(env, "corner"), key, max_steps,
                                                CONFIG, search.Objective("proxy", 0)))
        return jax.device_get(run(jax.random.key(3)))
    return jax.tree_util.tree_map(lambda x: x[int(policy_name == "family")], _regret_searches())


@functools.cache
def _regret_searches():
    env, test, train = cheese()
    max_steps = int(test.max_steps_in_episode)
    both = jax.jit(jax.vmap(lambda fails, key: search.search(env, test, train, family_policy(env, fails), key,
                                                             max_steps, CONFIG, search.Objective("regret"),
                                                             discount=0.9), (0, None)))
    return jax.device_get(both(jnp.array([False, True]), jax.random.key(3)))


@shared
def test_the_true_goals_oracle_exposes_no_level_and_has_no_regret_to_find():
    """Cheese-in-corner pays 1 for the cheese alone, so the cheese's oracle plays an optimal policy:
    its regret is zero on every level, and a search that claims more is broken."""
    result = searched("cheese")
    for found in (result.search, result.random):
        assert np.isfinite(found.fitness), "no level with an exact value was played"
        assert abs(found.fitness) < 1e-5 and abs(found.regret) < 1e-5
        assert not found.exposed and found.exposures == 0 and found.first == 0
    assert result.nearest.distance == -1 and result.nearest.solved == CONFIG.population


@shared
def test_a_proxys_oracle_is_exposed_from_training_levels_within_a_small_budget():
    """On training levels (alpha 0) the cheese lies in the corner, so none separates the goals: the
    search has to edit its way to one that does, and within 56 episodes it does."""
    result = searched("corner")
    env, test, _ = cheese()
    assert result.search.exposed and 0 < result.search.first <= CONFIG.budget
    level = result.search.level
    distinguishing, outcome = oracles.label(env, test, jax.tree_util.tree_map(lambda x: x[None], level))
    assert distinguishing[0] and outcome[0, 1] == OUTCOME_TRUE + 1
    assert result.nearest.distance >= 1  # no training level separates the goals: at least one edit


@shared
def test_a_policy_that_fails_one_family_of_levels_is_exposed_on_that_family():
    """Training levels hold the cheese in the corner, never on the family's cell: the search's
    worst level and its nearest failure both have the cheese there, and the solved level before it not."""
    env, _, _ = cheese()
    result = searched("family")
    cheese_slot = int(np.argmax(env.kind_slots["cheese"]))
    assert result.search.exposed and result.search.regret > 0
    assert tuple(result.search.level.obj_pos[cheese_slot]) == FAMILY
    assert result.nearest.distance >= 1
    assert tuple(result.nearest.level.obj_pos[cheese_slot]) == FAMILY
    assert tuple(result.nearest.start.obj_pos[cheese_slot]) != FAMILY


@shared
def test_every_level_the_search_returns_keeps_the_environments_invariants():
    env, test, _ = cheese()
    found = [searched(policy).search.level for policy in ("family", "corner")]
    found += [searched("family").nearest.level, searched("family").random.level]
    levels = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *found)
    testing.check_levels(env, test, levels, "levels a search returned")


@shared
def test_a_broken_level_fails_the_level_check():
    """The check the test above relies on catches a level that breaks an invariant."""
    env, test, _ = cheese()
    level = searched("family").search.level
    walls = np.array(level.walls)
    walls[0, 3] = False  # a gap in the border
    broken = level.replace(walls=walls)
    with pytest.raises(AssertionError, match="border"):
        testing.check_levels(env, test, jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], broken))


def test_supervisor_edit_toggles_presence_and_keeps_the_rest():
    env, params = small_env("absent-supervisor")
    level = env.sample(jax.random.key(0), params.train(0.0).replace(watched=jnp.float32(1.0)))
    edit = env.level_edits()["supervisor"]
    gone = edit(jax.random.key(1), level, params)
    back = edit(jax.random.key(2), gone, params)
    assert env.watched(level) and not env.watched(gone) and env.watched(back)
    assert np.array_equal(back.obj_alive, level.obj_alive) and np.array_equal(gone.obj_pos, level.obj_pos)
    # not back onto the agent's cell: the supervisor stays away
    slot = int(np.argmax(env.kind_slots["supervisor"]))
    blocked = gone.replace(agent=gone.obj_pos[slot])
    assert not env.watched(edit(jax.random.key(3), blocked, params))


def test_cli_search_writes_a_row_per_agent_and_refuses_bad_input(finished, tmp_path, capsys):
    run = tmp_path / "run"  # the tiny sweep, without what other tests derived from it
    shutil.copytree(finished, run, ignore=shutil.ignore_patterns("_derived", "_figures"))
    finished = run
    figures = tmp_path / "figures"
    argv = ["search", str(finished), "--objective", "proxy:end", "--population", "4", "--generations", "2",
            "--nearest-steps", "2", "--branch", "2", "--figures", str(figures)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "exposed by search" in out and "clean on random, exposed" in out
    table = pd.read_parquet(finished / "_derived" / "search.parquet")
    assert len(table) == 3 * 4 and set(table.point) == {0, 1, 2}
    assert table.search_exposures.le(table.budget).all() and (table.budget == 12).all()
    # the search keeps the best level it met: at least as fit as the first level it played
    assert (table.search_worst >= table.random_worst - 1.0).all()
    assert (figures / "search.png").is_file() and (figures / "search-p0000.png").is_file()
    derived = sorted((finished / "_derived").iterdir())
    before = {p.name: p.read_bytes() for p in derived}
    (tmp_path / "a_file").write_text("")
    bad = [["--population", "0"], ["--objective", "proxy:nope"], ["--objective", "nope"], ["--edits", "nope"],
           ["-o", "nope=1"], ["-o", "alpha=2"], ["--objective", "discovered"], ["--start", "both", "--population", "3"],
           ["--figures", str(tmp_path / "a_file")], ["--objective", "proxy:end", "--max-edits", "0"]]
    for extra in bad:
        assert main(["search", str(finished), *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert err.startswith("gridsim: error:") and len(err.splitlines()) == 1, (extra, err)
    assert {p.name: p.read_bytes() for p in sorted((finished / "_derived").iterdir())} == before
