"""The shipped conformance check passes on every registered environment and the example plug-in,
and fails, naming the invariant, on environments broken on purpose."""

from __future__ import annotations

import jax.numpy as jnp
import pytest
from conftest import PLUGIN, REGISTERED, env_for

import gridsim
from gridsim.testing import check_env


@pytest.mark.parametrize("name", [*REGISTERED, PLUGIN, "examples/buried_treasure.py:BuriedTreasure"])
def test_every_environment_passes_the_conformance_check(name):
    env, params = env_for(name)
    check_env(env, params, oracle_levels=64)


class IntoTheWall(gridsim.CoinAtEnd):
    """Moves the agent onto the top-left border cell whenever it picks up nothing."""

    def interact(self, level, params):
        level, events = super().interact(level, params)
        return level.replace(agent=jnp.where(events["coin"], level.agent, jnp.zeros(2, jnp.int32))), events


class RovingCoin(gridsim.CoinAtEnd):
    """The coin follows the agent around."""

    def interact(self, level, params):
        level, events = super().interact(level, params)
        return level.replace(obj_pos=jnp.broadcast_to(level.agent, level.obj_pos.shape)), events


@pytest.mark.parametrize("broken, message", [(IntoTheWall, "agent stands in a wall"),
                                             (RovingCoin, "a live object moved")])
def test_a_broken_environment_is_named(broken, message):
    env = broken(height=5, width=7)
    with pytest.raises(AssertionError, match=message):
        check_env(env, oracle_levels=16)
