"""Playing a policy on an environment: per-episode outcomes, labelled by the oracles.

``evaluate`` plays fresh episodes with any ``gridsim.Policy`` and labels each one's level as distinguishing or
not by running the oracles on the same level, so an agent's rate and the
oracles' calibration come from one definition.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gridsim import oracles, values
from gridsim.core import EnvParams, GridEnv
from gridsim.policy import Policy


class Evaluation(NamedTuple):
    """Per-episode results, each ``[episodes]`` (with leading axes for vmapped agents)."""

    outcome: jax.Array  # index into env.outcome_names
    episode_return: jax.Array
    episode_length: jax.Array
    finished: jax.Array  # False if the episode had not ended within max_steps
    distinguishing: jax.Array  # the level separates the true goal from every proxy (from the oracles)
    oracle_outcome: jax.Array  # [episodes, goals]: each goal's oracle's outcome on the same level
    measures: jax.Array  # [episodes, env.measure_names]: NaN where one does not apply, or unfinished
    success: jax.Array  # the episode counts as success on the training distribution (``GridEnv.succeeded``)
    # with a ``discount``: the episode's discounted return, and its level's best (``gridsim.values``; NaN where
    # not exact, and everywhere without a discount)
    discounted_return: jax.Array = None
    best_return: jax.Array = None
    end_cell: jax.Array = None  # [episodes, 2]: where the agent stood when its first episode ended (or at max_steps)

    @property
    def regret(self) -> jax.Array:
        """Per episode, the best discounted return its level pays minus the agent's (NaN where unknown)."""
        return self.best_return - self.discounted_return


class Trace(NamedTuple):
    """Every step of an evaluation, for pictures (memory grows with ``max_steps``); leaves ``[max_steps, episodes]``."""

    state: Any  # the env state each step started from
    action: jax.Array  # the move the policy chose there
    info: dict  # the step's info (its episode's outcome where it ended; info["final_state"] where it ended)
    first_episode: jax.Array  # the step belongs to its environment's first episode


def evaluate(env: GridEnv, params: EnvParams, policy: Policy, key, episodes: int, max_steps: int,
             label: bool = True, trace: bool = False, discount=None, levels=None):
    """Play ``episodes`` fresh episodes (one per parallel env) for up to ``max_steps`` steps each,
    on levels drawn from ``params``, or on ``levels`` (``[episodes]``) when given.

    Pure and jittable; ``episodes``, ``max_steps``, ``label`` and ``trace`` are static (use the
    params' ``max_steps_in_episode``). Only each environment's first episode counts. With
    ``label``, each episode's level is labelled by the oracles (see ``gridsim.oracles``). With a
    ``discount`` (may be traced), each episode's discounted return and its level's exact best
    (``gridsim.values``) are kept, so ``Evaluation.regret`` is known.
    Returns an ``Evaluation``, or ``(Evaluation, Trace)`` with ``trace``.
    """
    k_reset, k_run = jax.random.split(key)
    if levels is None:
        obs, env_state = jax.vmap(env.reset, (0, None))(jax.random.split(k_reset, episodes), params)
    else:
        obs, env_state = jax.vmap(env.reset_to_level, (0, None))(levels, params)
    if label:
        distinguishing, oracle_outcome = oracles.label(env, params, env_state.level)
    else:
        distinguishing = jnp.zeros(episodes, bool)
        oracle_outcome = jnp.zeros((episodes, len(env.goal_names)), jnp.int32)
    carry = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (episodes,) + jnp.shape(x)), policy.carry)
    act = jax.vmap(policy.act, (0, 0, 0, None, 0, 0))
    zeros = lambda dtype: jnp.zeros(episodes, dtype)
    if discount is None:
        best, discount = jnp.full(episodes, jnp.nan), jnp.float32(1.0)
    else:
        best = values.best_returns(env, params, env_state.level, discount).value
    result = Evaluation(zeros(jnp.int32), zeros(jnp.float32), zeros(jnp.int32), zeros(bool), distinguishing,
                        oracle_outcome, measures=None, success=zeros(bool), discounted_return=zeros(jnp.float32),
                        best_return=best, end_cell=env_state.level.agent)
    start = env_state.level
    counts = jnp.zeros((episodes, len(env.event_names)), jnp.int32)  # events fired in each first episode

    def one_step(loop, key):
        obs, env_state, carry, first, counts, result, scale = loop
        k_act, _ = jax.random.split(key)  # the actions' keys as when steps drew levels too
        action, carry = act(jax.random.split(k_act, episodes), obs, env_state, params, carry, first)
        # no auto-reset: only first episodes count, and drawing the next level is most of a maze step
        next_state, reward, terminated, truncated, info = jax.vmap(env.transition, (0, 0, None))(
            env_state, action, params
        )
        done = terminated | truncated
        obs = jax.vmap(env.observe)(next_state.level)
        info = dict(info, final_observation=obs, final_state=next_state)
        step = Trace(env_state, action, info, ~result.finished) if trace else None
        ends_first = done & ~result.finished
        record = lambda old, new: jnp.where(ends_first, new, old)
        fired = jnp.stack([info["events"][name] for name in env.event_names], axis=-1)
        counts = counts + (fired & ~result.finished[:, None])  # first episodes only: final once it ends
        result = result._replace(
            outcome=record(result.outcome, info["outcome"]),
            episode_return=record(result.episode_return, info["episode_return"]),
            episode_length=record(result.episode_length, info["episode_length"]),
            success=record(result.success, info["success"]),
            discounted_return=result.discounted_return + jnp.where(result.finished, 0.0, scale * reward),
            end_cell=jnp.where(result.finished[:, None], result.end_cell, next_state.level.agent),
            finished=result.finished | done,
        )
        return (obs, next_state, carry, done, counts, result, scale * discount), step

    loop = (obs, env_state, carry, jnp.ones(episodes, bool), counts, result, jnp.float32(1.0))
    (*_, counts, result, _), steps = jax.lax.scan(one_step, loop, jax.random.split(k_run, max_steps))
    measures = jax.vmap(env.measure_episode, (0, 0, None))(start, counts, params)
    result = result._replace(measures=jnp.where(result.finished[:, None], measures, jnp.nan),
                             best_return=jnp.where(result.finished, result.best_return, jnp.nan))
    return (result, steps) if trace else result
