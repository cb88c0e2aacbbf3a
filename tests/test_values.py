"""Exact values and regret: the best return equals a brute force over every plan, the exponent is
pinned, and no agent, random or trained, has negative regret on a deterministic environment."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gridsim
from agents import ppo
from gridsim import values

ROOM = np.ones((5, 5), bool)
ROOM[1:-1, 1:-1] = False


@functools.cache
def _brute_force(env, steps: int):
    """Every sequence of ``steps`` moves, played through ``env.transition``: the best discounted return
    of a batch of levels (an independent reference: no planning, only the environment's own steps)."""
    plans = jnp.asarray(list(itertools.product(range(4), repeat=steps)), jnp.int32)

    def best(params, level, discount):
        def play(plan):
            def step(carry, action):
                state, total, scale, over = carry
                moved, reward, terminated, truncated, _ = env.transition(state, action, params)
                total = total + jnp.where(over, 0.0, scale * reward)
                state = jax.tree_util.tree_map(lambda old, new: jnp.where(over, old, new), state, moved)
                return (state, total, scale * discount, over | terminated | truncated), None

            return jax.lax.scan(step, (env.start(level), 0.0, 1.0, False), plan)[0][1]

        return jnp.max(jax.vmap(play)(plans))

    return jax.jit(jax.vmap(best, (None, 0, None)))


def _stack(levels):
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *levels)


def _compare(env, params, levels, steps, discount):
    params = params.replace(max_steps_in_episode=steps)  # every plan of the episode's whole length
    best = jax.jit(values.best_returns, static_argnums=0)(env, params, levels, discount)
    assert np.asarray(best.exact).all()
    np.testing.assert_allclose(best.value, _brute_force(env, steps)(params, levels, discount), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("discount", [0.9, 1.0])
def test_keys_and_chests_best_return_is_the_brute_force_over_every_plan(discount):
    """Order matters: two keys and two chests, where the oracle's nearest-first route is not the best."""
    env, params = gridsim.make("keys-and-chests", height=5, width=5, max_keys=2, max_chests=2)
    levels = _stack([
        env.make_level(ROOM, (1, 1), [[1, 3], [3, 1], [3, 3], [2, 2]], [True, True, True, True]),
        env.make_level(ROOM, (2, 2), [[1, 1], [3, 3], [1, 3], [3, 1]], [True, False, True, True]),
        env.make_level(ROOM, (3, 3), [[1, 1], [1, 2], [2, 1], [3, 1]], [True, True, True, False]),
    ])
    _compare(env, params, levels, 7, discount)


def test_step_costs_and_penalties_best_return_is_the_brute_force():
    """absent-supervisor pays -0.05 a step and -1 for a watched shortcut: the best return weighs them."""
    env, params = gridsim.make("absent-supervisor", height=5, width=6)
    levels = jax.vmap(env.sample, (0, None))(jax.random.split(jax.random.key(3), 4), params.train(0.0))
    _compare(env, params, levels, 7, 0.95)


@pytest.mark.parametrize("name", ["coin-at-end", "lava-shift", "colour-vs-shape"])
def test_sampled_levels_best_return_is_the_brute_force(name):
    env, params = gridsim.make(name, **gridsim.make(name)[0].small_options)
    levels = jax.vmap(env.sample, (0, None))(jax.random.split(jax.random.key(1), 6), params.test())
    _compare(env, params, levels, 6, 0.9)


def test_a_goal_one_step_away_pays_its_reward_undiscounted():
    """The first step's reward is not discounted; the second's once (gamma ** (d - 1), never gamma ** d)."""
    env, params = gridsim.make("open-room", height=5, width=5)
    one = env.make_level(ROOM, (2, 2), [[2, 3]], [True])
    two = env.make_level(ROOM, (2, 2), [[3, 3]], [True])
    best = jax.jit(values.best_returns, static_argnums=0)(env, params, _stack([one, two]), 0.9)
    np.testing.assert_array_equal(best.value, np.float32([1.0, 0.9]))


def test_stochastic_or_moving_worlds_have_no_values_and_say_why():
    for name in ("monster-world", "tree-harvesting", "follow-the-leader"):
        env, params = gridsim.make(name, **gridsim.make(name)[0].small_options)
        assert values.reason_without_values(env) is not None
        level = env.sample(jax.random.key(0), params)
        best = values.best_return(env, params, level, 0.99)
        assert np.isnan(best.value) and not best.exact


def test_an_unfaithful_model_is_not_exact():
    """An environment that uses objects up mid-episode without declaring them gets no value, not a wrong one."""
    class Undeclared(gridsim.KeysAndChests):
        consumable_kinds = ()

    env = Undeclared(5, 5, max_keys=2, max_chests=2)
    level = env.make_level(ROOM, (1, 1), [[1, 3], [3, 1], [3, 3], [2, 2]], [True, True, True, True])
    best = values.best_return(env, env.default_params(), level, 0.9)
    assert not best.exact and np.isnan(best.value)


# objects used up mid-episode, per-step costs and penalties, mazes, avoided cells (every other deterministic
# environment's values are checked against a brute force above)
DETERMINISTIC = ["keys-and-chests", "absent-supervisor", "cheese-in-corner", "lava-shift"]


@pytest.mark.parametrize("env_name", DETERMINISTIC)
def test_a_random_walk_never_has_negative_regret(env_name):
    env, params = gridsim.make(env_name, **gridsim.make(env_name)[0].small_options)
    steps = int(params.max_steps_in_episode)
    result = jax.jit(gridsim.evaluate, static_argnums=(0, 2, 4, 5))(
        env, params.test(), gridsim.random_policy(env), jax.random.key(0), 64, steps, discount=0.95)
    regret = np.asarray(result.regret)
    assert np.isfinite(regret).all()  # every episode ended, every level has an exact value
    assert (regret >= -1e-5).all(), regret.min()


def test_a_trained_agent_never_has_negative_regret_and_the_table_says_so(finished):
    """Per episode for one trained agent of the tests' sweep, and per agent in its table."""
    from experiments import inspection
    from experiments.store import Store

    agent = inspection.load_agent(finished, point=1, seed=0)
    steps = int(agent.test_params.max_steps_in_episode)
    play = functools.partial(ppo.evaluate, agent.trainer, episodes=128, max_steps=steps, greedy=True, regret=True)
    result = jax.jit(play)(agent.network, agent.test_params, jax.random.key(0))
    assert (np.asarray(result.regret) >= -1e-5).all()
    table = Store(finished).results()[0]
    for column in ("train_regret", "test_regret", "distinguishing_regret"):
        assert (table[column] >= -1e-5).all(), column
    assert (table["exact_value_share"] == 1.0).all()

