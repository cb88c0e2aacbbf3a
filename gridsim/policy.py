"""What picks the moves: a ``Policy`` for one environment, and the two simplest ones.

A trained agent (``agents.ppo``), an oracle (``gridsim.oracles``) and a random walk are all
``Policy`` values, so ``gridsim.evaluate``, the oracles' calibration and episode GIFs play any of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from gridsim.core import GridEnv


class Policy(NamedTuple):
    """``act(key, obs, state, params, carry, first) -> (action, carry)`` for one environment.

    ``carry`` is the policy's own per-environment memory (a recurrent state; ``()`` for none),
    ``first`` says that ``obs`` starts an episode. Most policies read only ``obs``; oracles read
    ``state`` (the level) and ``params``.
    """

    act: Callable[..., tuple[jax.Array, Any]]
    carry: Any = ()


def random_policy(env: GridEnv) -> Policy:
    """Uniformly random moves."""
    return Policy(act=lambda key, obs, state, params, carry, first: (
        jax.random.randint(key, (), 0, env.num_actions), carry))


def obs_policy(fn: Callable[[jax.Array, jax.Array], jax.Array]) -> Policy:
    """A ``Policy`` from a plain ``fn(key, obs) -> action``."""
    return Policy(act=lambda key, obs, state, params, carry, first: (fn(key, obs), carry))
