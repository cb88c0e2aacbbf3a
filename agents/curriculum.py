"""Curricula: robust PLR and ACCEL over a level buffer, in one file, for ``agents.ppo``.

Each PPO update is one of three kinds, chosen per seed:

- **new**: every environment plays a level drawn from the training params (``params.train(alpha)``,
  so alpha stays the experiment's axis); the levels are scored and the best enter the buffer;
  no gradient is taken (robust PLR).
- **replay** (with probability ``replay_prob`` once the buffer holds a batch of levels): distinct
  levels drawn from the buffer by score rank and staleness; the agent trains on them, and their
  scores and staleness are renewed.
- **edit** (ACCEL, the update after a replay): the levels just replayed, each edited ``edits``
  times (``gridsim.edits``), are scored like new ones; no gradient.

Within an update each environment replays its level whenever an episode ends. Under ``vmap``
all three kinds are computed and one is kept, so an update costs the same whichever it is.

Scores, per level, from the update's rollout (``gamma`` the agent's discount):

- ``regret``: the level's exact best return (``gridsim.values``) minus the mean discounted return
  of the episodes it finished;
- ``pvl``: the mean positive GAE advantage over its steps (positive value loss);
- ``maxmc``: the best discounted return any episode on it has reached minus the mean value of
  its steps;
- ``neg-return``: minus the mean discounted return of its finished episodes;
- ``learnability``: ``p (1 - p)``, ``p`` its finished episodes' success rate.

A score that a rollout cannot give (no episode finished; no exact value) is NaN and never
enters the buffer: a new level without one is dropped, a replayed level keeps its old score.

A replay draws its levels without replacement, each draw with ``(1 - staleness) P_rank(i) +
staleness P_stale(i)`` among the levels not yet drawn, where
``P_rank(i)`` is proportional to ``(1 / rank_i) ** (1 / temperature)`` (rank 1: highest score)
and ``P_stale(i)`` to the updates since level ``i`` was last replayed or entered (Jiang et al. 2021).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from gridsim import edits, values

METHODS = ("dr", "plr", "accel")
SCORES = ("regret", "pvl", "maxmc", "neg-return", "learnability")
NEW, REPLAY, EDIT = 0, 1, 2  # kinds of update
LIMITS = {"buffer_size": 1 << 20, "edits": 1 << 10}


@dataclasses.dataclass(frozen=True)
class Config:
    """A curriculum. ``method``, ``score`` and ``buffer_size`` shape the program; the other settings
    are traced (``Params``): sweep them without recompiling."""

    method: str = "dr"  # "dr" (a fresh level for every episode), "plr" (robust PLR) or "accel"
    score: str = "regret"
    buffer_size: int = 256  # levels kept
    replay_prob: float = 0.5  # chance an update replays buffered levels (once a batch of them is buffered)
    temperature: float = 0.3  # of the rank distribution: lower replays the top levels more
    staleness: float = 0.3  # weight of staleness against score rank in the replay distribution
    edits: int = 5  # ACCEL: edits per edited level

    TRACED = ("replay_prob", "temperature", "staleness", "edits")

    @property
    def active(self) -> bool:
        return self.method != "dr"

    def params(self, **overrides) -> Params:
        """The traced settings, with ``overrides`` (e.g. a sweep point's) in place of this config's."""
        settings = {name: overrides.get(name, getattr(self, name)) for name in self.TRACED}
        return Params(replay_prob=jnp.float32(settings["replay_prob"]),
                      temperature=jnp.float32(settings["temperature"]),
                      staleness=jnp.float32(settings["staleness"]), edits=jnp.int32(settings["edits"]))

    def validate(self, num_envs: int | None = None, env=None) -> Config:
        """Raise ``ValueError`` naming the setting, before anything compiles."""
        if self.method not in METHODS:
            raise ValueError(f"curriculum.method must be one of {list(METHODS)}, got {self.method!r}")
        if self.score not in SCORES:
            raise ValueError(f"curriculum.score must be one of {list(SCORES)}, got {self.score!r}")
        check_settings(**{name: getattr(self, name) for name in self.TRACED})
        if self.method == "accel" and self.edits < 1:
            raise ValueError("curriculum.edits must be >= 1 for 'accel' (with none it would score copies of "
                             "the levels it just replayed)")
        if not 1 <= self.buffer_size <= LIMITS["buffer_size"]:
            raise ValueError(f"curriculum.buffer_size must lie in [1, {LIMITS['buffer_size']:,}], "
                             f"got {self.buffer_size}")
        if self.active and num_envs is not None and self.buffer_size < num_envs:
            raise ValueError(f"curriculum.buffer_size ({self.buffer_size}) is smaller than a batch of levels "
                             f"(ppo.num_envs = {num_envs}): a replay draws one level per environment")
        if self.active and env is not None:
            if not hasattr(env, "step_on"):
                raise ValueError(f"a curriculum replays levels: it needs a gridsim GridEnv, not {type(env).__name__}")
            reason = values.reason_without_values(env)
            if self.score == "regret" and reason is not None:
                raise ValueError(f"curriculum.score 'regret' needs exact values, and {reason}; "
                                 "score by 'pvl', 'maxmc', 'neg-return' or 'learnability'")
        return self


def check_settings(replay_prob, temperature, staleness, edits) -> None:
    """Raise ``ValueError`` naming a traced setting out of range (a sweep's values are checked here too)."""
    for name, value, low, high in (("replay_prob", replay_prob, 0, 1), ("staleness", staleness, 0, 1)):
        if not (math.isfinite(value) and low <= value <= high):
            raise ValueError(f"curriculum.{name} must lie in [0, 1], got {value}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"curriculum.temperature must be > 0, got {temperature}")
    if isinstance(edits, bool) or int(edits) != edits or not 0 <= edits <= LIMITS["edits"]:
        raise ValueError(f"curriculum.edits must be a whole number in [0, {LIMITS['edits']}], got {edits}")


@struct.dataclass
class Params:
    replay_prob: jax.Array
    temperature: jax.Array
    staleness: jax.Array
    edits: jax.Array


@struct.dataclass
class Buffer:
    levels: Any  # Level, leaves [N, ...]
    score: jax.Array  # float32[N]
    max_return: jax.Array  # float32[N]: best discounted return an episode on the level reached (maxmc)
    last_scored: jax.Array  # int32[N]: the update that last scored it
    filled: jax.Array  # bool[N]


@struct.dataclass
class State:
    """A seed's curriculum: part of its ``TrainState``, so it is vmapped, checkpointed and resumed with it."""

    params: Params
    buffer: Buffer
    replayed: Any  # Level [num_envs]: the last replayed levels, which ACCEL edits next
    replay_index: jax.Array  # int32[num_envs]: their buffer slots
    last_kind: jax.Array  # int32[]: NEW, REPLAY or EDIT


class Plan(struct.PyTreeNode):
    """What one update plays: a level per environment, and what kind of update it is."""

    levels: Any
    kind: jax.Array
    index: jax.Array  # buffer slot of each replayed level


def init(config: Config, params: Params, example_levels) -> State:
    """An empty buffer; ``example_levels`` (a batch ``[num_envs]``) gives the levels' shapes."""
    n = config.buffer_size
    first = jax.tree_util.tree_map(lambda x: x[0], example_levels)
    buffer = Buffer(levels=jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), first),
                    score=jnp.zeros(n, jnp.float32), max_return=jnp.full(n, -jnp.inf, jnp.float32),
                    last_scored=jnp.zeros(n, jnp.int32), filled=jnp.zeros(n, bool))
    batch = example_levels.agent.shape[0]
    return State(params=params, buffer=buffer, replayed=example_levels, replay_index=jnp.zeros(batch, jnp.int32),
                 last_kind=jnp.int32(NEW))


def staleness(buffer: Buffer, now) -> jax.Array:
    """``int32[N]``: updates done since each level was last scored, ``now`` being the updates done so far
    (0 for a level the last update scored)."""
    return now - buffer.last_scored


def replay_distribution(buffer: Buffer, params: Params, now) -> jax.Array:
    """``float32[N]``: the chance that a replay draws each buffered level (0 for empty slots), ``now``
    being the updates done so far."""
    n = buffer.score.shape[0]
    order = jnp.argsort(jnp.where(buffer.filled, -buffer.score, jnp.inf), stable=True)
    rank = jnp.zeros(n, jnp.float32).at[order].set(jnp.arange(1, n + 1, dtype=jnp.float32))
    by_rank = jnp.where(buffer.filled, (1.0 / rank) ** (1.0 / params.temperature), 0.0)
    stale = jnp.where(buffer.filled, staleness(buffer, now).astype(jnp.float32), 0.0)
    uniform = buffer.filled.astype(jnp.float32)
    normal = lambda w: w / jnp.maximum(jnp.sum(w), 1e-30)
    stale_share = normal(jnp.where(jnp.sum(stale) > 0, stale, uniform))
    p = (1.0 - params.staleness) * normal(by_rank) + params.staleness * stale_share
    return jnp.where(jnp.any(buffer.filled), p, 1.0 / n)  # an empty buffer is never replayed


def plan(config: Config, env, state: State, env_params, key, now) -> Plan:
    """The levels the update plays, and its kind (``NEW``, ``REPLAY`` or ``EDIT``)."""
    k_new, k_replay, k_pick, k_edit = jax.random.split(key, 4)
    batch = state.replay_index.shape[0]
    fresh = jax.vmap(env.sample, (0, None))(jax.random.split(k_new, batch), env_params)
    # without replacement: each environment replays a level of its own, and each level gets one score
    index = jax.random.choice(k_pick, config.buffer_size, (batch,), replace=False, p=replay_distribution(
        state.buffer, state.params, now))
    replayed = jax.tree_util.tree_map(lambda x: x[index], state.buffer.levels)
    enough = jnp.sum(state.buffer.filled) >= batch
    replay = enough & (jax.random.uniform(k_replay) < state.params.replay_prob)
    kind = jnp.where(replay, REPLAY, NEW)
    levels = _pick(replay, replayed, fresh)
    if config.method == "accel":
        edited = jax.vmap(edits.edit, (None, 0, 0, None, None))(env, jax.random.split(k_edit, batch), state.replayed,
                                                               env_params, state.params.edits)
        after_replay = state.last_kind == REPLAY
        kind = jnp.where(after_replay, EDIT, kind)
        levels = _pick(after_replay, edited, levels)
    return Plan(levels=levels, kind=kind.astype(jnp.int32), index=index)


def _pick(condition, yes, no):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(condition, a, b), yes, no)


def scores(config: Config, env, env_params, levels, rollout, gamma) -> tuple[jax.Array, jax.Array]:
    """``(score, best episode return)`` per environment (``[num_envs]``) from an update's rollout,
    which started every environment on its level. ``rollout``: ``reward``, ``done``, ``success``,
    ``value``, ``advantage``, each ``[num_steps, num_envs]``."""

    def episodes(carry, t):
        total, scale, finished, returns, successes, best = carry
        total = total + scale * t["reward"]
        done = t["done"]
        returns = returns + jnp.where(done, total, 0.0)
        successes = successes + (done & t["success"])
        best = jnp.where(done, jnp.maximum(best, total), best)
        return (jnp.where(done, 0.0, total), jnp.where(done, 1.0, scale * gamma), finished + done, returns,
                successes, best), None

    zeros = jnp.zeros(rollout["reward"].shape[1], jnp.float32)
    start = (zeros, zeros + 1.0, zeros.astype(jnp.int32), zeros, zeros.astype(jnp.int32), zeros - jnp.inf)
    (_, _, finished, returns, successes, best), _ = jax.lax.scan(episodes, start, rollout)
    some = finished > 0
    per_episode = lambda x: jnp.where(some, x / jnp.maximum(finished, 1), jnp.nan)
    mean_return = per_episode(returns)
    if config.score == "regret":
        score = values.best_returns(env, env_params, levels, gamma).value - mean_return
    elif config.score == "pvl":
        score = jnp.mean(jnp.maximum(rollout["advantage"], 0.0), axis=0)
    elif config.score == "maxmc":
        score = jnp.where(some, best - jnp.mean(rollout["value"], axis=0), jnp.nan)
    elif config.score == "neg-return":
        score = -mean_return
    else:
        p = per_episode(successes.astype(jnp.float32))
        score = p * (1.0 - p)
    return score, best


def record(config: Config, state: State, plan: Plan, score, best_return, value_mean, now) -> State:
    """The buffer after an update: replayed levels rescored; new or edited ones inserted where they
    beat the lowest score of a full buffer. ``now``: the updates done, this one included."""
    buffer = state.buffer
    replay = plan.kind == REPLAY
    if config.score == "maxmc":  # a replayed level's best return is the best of all its episodes
        best = jnp.where(replay, jnp.maximum(buffer.max_return[plan.index], best_return), best_return)
        score = jnp.where(jnp.isfinite(best), best - value_mean, jnp.nan)
    else:
        best = best_return
    # replay: rescore in place (a level drawn twice takes one of its scores); a NaN score keeps the old one
    ok = replay & jnp.isfinite(score)
    rescored = buffer.replace(
        score=buffer.score.at[plan.index].set(jnp.where(ok, score, buffer.score[plan.index])),
        max_return=buffer.max_return.at[plan.index].set(jnp.where(replay, best, buffer.max_return[plan.index])),
        last_scored=buffer.last_scored.at[plan.index].set(jnp.where(replay, now, buffer.last_scored[plan.index])),
    )
    inserted = _insert(buffer, plan.levels, jnp.where(~replay, score, jnp.nan), best, now)
    new_buffer = _pick(replay, rescored, inserted)
    return state.replace(buffer=new_buffer, replayed=_pick(replay, plan.levels, state.replayed),
                         replay_index=jnp.where(replay, plan.index, state.replay_index), last_kind=plan.kind)


def _insert(buffer: Buffer, levels, score, best_return, now) -> Buffer:
    """Keep the ``N`` highest-scoring of the buffered levels and the candidates with a finite score."""
    n = buffer.score.shape[0]
    keyed = jnp.concatenate([jnp.where(buffer.filled, buffer.score, -jnp.inf),
                             jnp.where(jnp.isfinite(score), score, -jnp.inf)])
    top_score, top = jax.lax.top_k(keyed, n)
    both = lambda old, new: jnp.concatenate([old, new])[top]
    return Buffer(
        levels=jax.tree_util.tree_map(both, buffer.levels, levels),
        score=jnp.where(jnp.isfinite(top_score), top_score, 0.0),
        max_return=both(buffer.max_return, best_return),
        last_scored=both(buffer.last_scored, jnp.full(score.shape, now, jnp.int32)),
        filled=jnp.isfinite(top_score),
    )
