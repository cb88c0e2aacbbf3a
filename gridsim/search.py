"""Level search: the levels on which a policy does worst, found by editing levels.

Random test levels are the weakest test of an agent: a proxy that shows on one level in a thousand
passes a few hundred of them. ``search`` looks for the levels that expose a policy. It starts from
levels drawn from a distribution (test levels, or the agent's own training levels) and improves them
with ACCEL's edits (``gridsim.edits``): a population of ``Config.population`` levels, each
generation's children their parents (the fitter of two drawn at random) with one to
``Config.max_edits`` edits, the fittest of parents and children kept. It plays ``Config.budget``
episodes in all, and beside them the same number of random test levels. It also looks for the
*nearest* failure: chains of single edits from training levels the policy solves, each step keeping
the fittest of ``Config.branch`` edits, until the policy fails; the number of edits is an upper bound
on the level's distance from one the policy solves ("move the coin one cell up and it runs past").

What exposes a policy is an ``Objective``, judged with the oracles' labels on each episode:

- ``regret``: fitness is the level's exact best discounted return minus the policy's
  (``gridsim.values``; a level without an exact value is never kept); the policy is exposed on a
  level where the true goal's oracle reaches the true goal and the policy does not reach it first.
- ``proxy``: exposed where the policy reaches the proxy first on a level where the oracles separate
  the proxy from the true goal (``oracles.separated``), so an optimal pursuer of the true goal would not.
- ``target``: exposed where the policy's episode ends on a target (the candidate goal that
  ``gridsim.discover`` named, say) without reaching the true goal first, on a level where the true
  goal's oracle reaches it.

For the last two, fitness is 1 on an exposing episode, and, so that the search can climb toward one,
half the closeness of the episode's end to the target's cells on the level (``1 - steps/(H * W)``).
Everything is pure and jittable; vmap ``search`` over agents.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gridsim import edits, oracles, rng
from gridsim.core import OUTCOME_TRUE, EnvParams, GridEnv, Level
from gridsim.layouts import distances
from gridsim.policy import Policy
from gridsim.rollout import Evaluation, evaluate

STARTS = ("test", "train", "both")
TargetFn = Callable[[Level, EnvParams, Any], jax.Array]  # (level, params, data) -> bool[H, W]


class Config(NamedTuple):
    """A search's sizes and edits (all static)."""

    population: int = 16  # levels kept per agent
    generations: int = 15  # rounds of children: ``budget`` episodes per agent
    max_edits: int = 3  # a child is its parent with 1 to max_edits edits
    edits: tuple[str, ...] | None = None  # names from ``edits.level_edits`` (None: all of them)
    start: str = "test"  # where the first levels come from: "test", "train" (the agent's own), or "both"
    nearest_steps: int = 8  # single edits along each chain of the nearest-failure search
    branch: int = 4  # edits tried from each chain's level at each step

    @property
    def budget(self) -> int:
        """Episodes the search plays per agent (and random test levels beside it)."""
        return self.population * (self.generations + 1)

    @property
    def nearest_budget(self) -> int:
        """Episodes the nearest-failure search plays per agent (step 0 plays each training level
        ``branch`` times, in the batch shape of the later steps)."""
        return self.population * self.branch * (1 + self.nearest_steps)

    def validate(self, env: GridEnv) -> Config:
        for name in ("population", "generations", "max_edits", "nearest_steps", "branch"):
            if getattr(self, name) < 1:
                raise ValueError(f"search {name} must be >= 1, got {getattr(self, name)}")
        if self.start not in STARTS:
            raise ValueError(f"search start must be one of {', '.join(STARTS)}, got {self.start!r}")
        if self.start == "both" and self.population % 2:
            raise ValueError(f"search start 'both' draws half the population from each: population must be "
                             f"even, got {self.population}")
        edits.chosen_edits(env, self.edits)
        return self


class Objective(NamedTuple):
    """What exposes a policy (static): ``kind`` is "regret", "proxy" (``proxy``: an index into
    ``env.proxies``) or "target" (``target(level, params, data)`` gives the target's cells; ``data``
    is ``search``'s traced ``target_data``, e.g. which candidate goal, per agent)."""

    kind: str = "regret"
    proxy: int = 0
    target: TargetFn | None = None

    def validate(self, env: GridEnv) -> Objective:
        if self.kind not in ("regret", "proxy", "target"):
            raise ValueError(f"a search objective is 'regret', 'proxy' or 'target', got {self.kind!r}")
        if self.kind == "proxy" and not 0 <= self.proxy < len(env.proxies):
            raise ValueError(f"{env.name} has no proxy {self.proxy} (its proxies: {', '.join(env.proxies) or 'none'})")
        if self.kind == "target" and self.target is None:
            raise ValueError("a 'target' objective needs its target function")
        return self


class Judged(NamedTuple):
    """Per episode: how much it exposes the policy, and the numbers a report shows."""

    fitness: jax.Array
    exposed: jax.Array
    regret: jax.Array  # NaN where not known (no discount, or no exact value)
    outcome: jax.Array
    solved: jax.Array  # the policy reached the true goal first


def judge(env: GridEnv, params: EnvParams, objective: Objective, result: Evaluation, levels: Level,
          target_data=None) -> Judged:
    """Score each episode of ``result`` (played on ``levels``) under ``objective``."""
    solvable = result.oracle_outcome[:, 0] == OUTCOME_TRUE  # the true goal's oracle reaches it
    solved = result.outcome == OUTCOME_TRUE
    if objective.kind == "regret":
        regret = result.regret
        fitness = jnp.where(jnp.isnan(regret), -jnp.inf, regret)
        exposed = solvable & ~solved
    else:
        if objective.kind == "proxy":
            target = jax.vmap(lambda lv: oracles.target_costs(env, lv, params)[1 + objective.proxy] == 0)(levels)
            exposed = ((result.outcome == OUTCOME_TRUE + 1 + objective.proxy)
                       & oracles.separated(env, result.oracle_outcome)[:, objective.proxy])
        else:
            target = jax.vmap(objective.target, (0, None, None))(levels, params, target_data)
            on_target = target[jnp.arange(target.shape[0]), result.end_cell[:, 0], result.end_cell[:, 1]]
            exposed = solvable & ~solved & on_target
        steps = jax.vmap(distances)(levels.walls, result.end_cell)
        cells = env.height * env.width
        nearest = jnp.min(jnp.where(target, steps, cells), axis=(1, 2))
        fitness = exposed + 0.5 * (1.0 - jnp.minimum(nearest, cells) / cells)
    return Judged(fitness.astype(jnp.float32), exposed, result.regret, result.outcome, solved)


class Found(NamedTuple):
    """One agent's search (or random levels): the level that exposed it most, and counts."""

    level: Level
    fitness: jax.Array
    exposed: jax.Array  # that level exposes the agent
    regret: jax.Array  # the agent's regret there
    outcome: jax.Array  # the agent's outcome there
    first: jax.Array  # episodes played up to and including the first that exposed the agent (0: none did)
    exposures: jax.Array  # episodes that exposed it


class Nearest(NamedTuple):
    distance: jax.Array  # fewest edits found from a solved training level to one that exposes the agent (-1: none)
    start: Level  # that training level
    level: Level  # the edited level
    solved: jax.Array  # chains that started on a level the agent solved


class Result(NamedTuple):
    search: Found
    random: Found
    nearest: Nearest


def _take(tree, index):
    return jax.tree_util.tree_map(lambda x: x[index], tree)


def _concat(a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.concatenate([x, y]), a, b)


def _found(levels: Level, judged: Judged, played_before) -> Found:
    """A ``Found`` for a batch of episodes played after ``played_before`` others (``first`` 0 when
    none of them exposed the agent; ``_better`` keeps the earliest)."""
    best = jnp.argmax(judged.fitness)
    index = jnp.arange(judged.exposed.shape[0]) + played_before + 1
    first = jnp.where(judged.exposed.any(), jnp.min(jnp.where(judged.exposed, index, index[-1])), 0)
    return Found(_take(levels, best), judged.fitness[best], judged.exposed[best], judged.regret[best],
                 judged.outcome[best], first.astype(jnp.int32),
                 judged.exposed.sum().astype(jnp.int32))


def _better(old: Found, new: Found) -> Found:
    """The fitter of two ``Found``, with their counts added and the earlier first exposure."""
    keep = new.fitness > old.fitness
    merged = jax.tree_util.tree_map(lambda a, b: jnp.where(keep, b, a), old, new)
    first = jnp.where(old.first > 0, old.first, new.first)
    return merged._replace(first=first, exposures=old.exposures + new.exposures)


def search(env: GridEnv, params: EnvParams, train_params: EnvParams, policy: Policy, key, max_steps: int,
           config: Config | None = None, objective: Objective | None = None, discount=None,
           target_data=None) -> Result:
    """Search for the levels that expose ``policy`` (one agent; vmap for many). Episodes are played
    under ``params`` (the test params) for ``max_steps`` steps (static; the episode limit); random
    levels come from ``params``, the agent's own from ``train_params``. ``discount`` (needed by the
    regret objective) gives each episode's regret; ``config`` and ``objective`` default to ``Config()``
    and regret."""
    config = (Config() if config is None else config).validate(env)
    objective = (Objective() if objective is None else objective).validate(env)
    population = config.population

    def play(key, levels):
        result = evaluate(env, params, policy, key, levels.agent.shape[0], max_steps, discount=discount,
                          levels=levels)
        return judge(env, params, objective, result, levels, target_data)

    def draw(key, source, count):
        return jax.vmap(env.sample, (0, None))(rng.split(key, count), source)

    def mutate(key, levels, counts):
        one = lambda k, level, count: edits.edit(env, k, level, params, count, config.edits)
        return jax.vmap(one)(rng.split(key, counts.shape[0]), levels, counts)

    k_start, k_rounds, k_near = rng.split(key, 3)
    if config.start == "test":
        levels = draw(k_start, params, population)
    elif config.start == "train":
        levels = draw(k_start, train_params, population)
    else:
        k_test, k_train = rng.split(k_start)
        levels = _concat(draw(k_test, params, population // 2), draw(k_train, train_params, population // 2))

    # Round 0 plays the first population, later rounds its edited children; every round also plays as
    # many random test levels. Both in one batch: one compiled episode loop serves the whole search.
    def round_(carry, inputs):
        levels, fitness, found, random = carry
        g, key = inputs
        k_pick, k_count, k_edit, k_draw, k_play = rng.split(key, 5)
        a, b = rng.randint(k_pick, (2, population), 0, population)
        parent = jnp.where(fitness[a] >= fitness[b], a, b)
        children = mutate(k_edit, _take(levels, parent), rng.randint(k_count, (population,), 1, config.max_edits + 1))
        children = jax.tree_util.tree_map(lambda first, child: jnp.where(g == 0, first, child), levels, children)
        drawn = draw(k_draw, params, population)
        played = play(k_play, _concat(children, drawn))
        mine, theirs = _take(played, slice(0, population)), _take(played, slice(population, None))
        found = _better(found, _found(children, mine, g * population))
        random = _better(random, _found(drawn, theirs, g * population))
        # the fittest of children and parents survive; a child wins a tie, so the search drifts on a plateau
        pool_levels, pool = _concat(children, levels), jnp.concatenate([mine.fitness, fitness])
        keep = jnp.argsort(-pool, stable=True)[:population]
        return (_take(pool_levels, keep), pool[keep], found, random), None

    nothing = _nothing(levels)
    carry = (levels, jnp.full(population, -jnp.inf), nothing, nothing)
    rounds = jnp.arange(config.generations + 1)
    (_, _, found, random), _ = jax.lax.scan(round_, carry, (rounds, rng.split(k_rounds, config.generations + 1)))
    return Result(found, random, nearest_failure(play, mutate, draw, config, train_params, k_near))


def _nothing(levels: Level) -> Found:
    """A ``Found`` that any level beats (fitness -inf), before anything is played."""
    zero = jnp.int32(0)
    return Found(_take(levels, 0), jnp.float32(-jnp.inf), jnp.bool_(False), jnp.float32(jnp.nan), zero, zero, zero)


def nearest_failure(play, mutate, draw, config: Config, train_params: EnvParams, key) -> Nearest:
    """Chains of single edits from the agent's training levels that it solves; at each step every
    chain tries ``config.branch`` edits, stops at the first that exposes the agent, else moves to the
    fittest of them. Step 0 plays the training levels themselves (in the same batch shape, so one
    compiled episode loop serves every step). Returns the shortest chain that ended in an exposure."""
    chains, branch = config.population, config.branch
    k_draw, k_steps = rng.split(key)
    starts = draw(k_draw, train_params, chains)
    never = jnp.int32(config.nearest_steps + 1)

    def step(carry, inputs):
        levels, distance, failing = carry
        d, key = inputs
        k_edit, k_play = rng.split(key)
        tries = jax.tree_util.tree_map(lambda x: jnp.repeat(x, branch, axis=0), levels)
        edited = mutate(k_edit, tries, jnp.ones(chains * branch, jnp.int32))
        tries = jax.tree_util.tree_map(lambda old, new: jnp.where(d == 0, old, new), tries, edited)
        by_chain = lambda tree: jax.tree_util.tree_map(lambda x: x.reshape((chains, branch) + x.shape[1:]), tree)
        judged, tries = by_chain(play(k_play, tries)), by_chain(tries)
        # step 0: a chain starts only from a training level the agent solves (its first try is the level)
        distance = jnp.where(d == 0, jnp.where(judged.solved[:, 0] & ~judged.exposed[:, 0], never, never + 1),
                             distance)
        now = (d > 0) & judged.exposed.any(axis=1) & (distance == never)
        pick = lambda which: jax.tree_util.tree_map(lambda x: x[jnp.arange(chains), which], tries)
        failing = jax.tree_util.tree_map(lambda f, e: oracles.where_rows(now, e, f), failing,
                                         pick(jnp.argmax(judged.exposed, axis=1)))
        distance = jnp.where(now, d, distance)
        stays = (d == 0) | (distance < never)
        levels = jax.tree_util.tree_map(lambda old, new: oracles.where_rows(stays, old, new), levels,
                                        pick(jnp.argmax(judged.fitness, axis=1)))
        return (levels, distance, failing), None

    steps = jnp.arange(config.nearest_steps + 1, dtype=jnp.int32)
    carry = (starts, jnp.full(chains, never + 1), starts)
    (_, distance, failing), _ = jax.lax.scan(step, carry, (steps, rng.split(k_steps, config.nearest_steps + 1)))
    best = jnp.argmin(distance)
    found = distance[best] < never
    return Nearest(jnp.where(found, distance[best], -1), _take(starts, best), _take(failing, best),
                   (distance <= never).sum())

