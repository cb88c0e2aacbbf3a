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
        """Episodes the nearest-failure search plays per agent."""
        return self.population * (1 + self.nearest_steps * self.branch)

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


def _found(levels: Level, judged: Judged, played_before, first) -> Found:
    """A ``Found`` for a batch of episodes played after ``played_before`` others."""
    best = jnp.argmax(judged.fitness)
    index = jnp.arange(judged.exposed.shape[0]) + played_before + 1
    here = jnp.min(jnp.where(judged.exposed, index, jnp.iinfo(jnp.int32).max))
    return Found(_take(levels, best), judged.fitness[best], judged.exposed[best], judged.regret[best],
                 judged.outcome[best], jnp.where(here < jnp.iinfo(jnp.int32).max, here, first).astype(jnp.int32),
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
    config = Config() if config is None else config
    objective = Objective() if objective is None else objective
    population = config.population
    names = config.edits

    def play(key, levels):
        result = evaluate(env, params, policy, key, levels.agent.shape[0], max_steps, discount=discount,
                          levels=levels)
        return judge(env, params, objective, result, levels, target_data)

    def draw(key, source, count):
        return jax.vmap(env.sample, (0, None))(rng.split(key, count), source)

    def mutate(key, levels, counts):
        return jax.vmap(edits.edit, (None, 0, 0, None, 0, None))(env, rng.split(key, counts.shape[0]), levels,
                                                                  params, counts, names)

    k_start, k_first, k_gen, k_random, k_near = rng.split(key, 5)
    if config.start == "test":
        levels = draw(k_start, params, population)
    elif config.start == "train":
        levels = draw(k_start, train_params, population)
    else:
        half = population // 2
        k_test, k_train = rng.split(k_start)
        levels = _concat(draw(k_test, params, half), draw(k_train, train_params, half))
    judged = play(k_first, levels)
    found = _found(levels, judged, 0, jnp.int32(0))

    def generation(carry, inputs):
        levels, judged, found = carry
        g, key = inputs
        k_pick, k_count, k_edit, k_play = rng.split(key, 4)
        a, b = rng.randint(k_pick, (2, population), 0, population)
        parent = jnp.where(judged.fitness[a] >= judged.fitness[b], a, b)
        children = mutate(k_edit, _take(levels, parent), rng.randint(k_count, (population,), 1, config.max_edits + 1))
        played = play(k_play, children)
        found = _better(found, _found(children, played, g * population, found.first))
        # the fittest of children and parents survive; a child wins a tie, so the search drifts on a plateau
        pool_levels, pool = _concat(children, levels), _concat(played, judged)
        keep = jnp.argsort(-pool.fitness, stable=True)[:population]
        return (_take(pool_levels, keep), _take(pool, keep), found), None

    rounds = jnp.arange(1, config.generations + 1)
    (_, _, found), _ = jax.lax.scan(generation, (levels, judged, found), (rounds, rng.split(k_gen, config.generations)))

    def random_round(found, inputs):
        g, key = inputs
        k_draw, k_play = rng.split(key)
        levels = draw(k_draw, params, population)
        return _better(found, _found(levels, play(k_play, levels), g * population, found.first)), None

    k_r0, k_rest = rng.split(k_random)
    levels = draw(k_r0, params, population)
    random = _found(levels, play(k_r0, levels), 0, jnp.int32(0))
    random, _ = jax.lax.scan(random_round, random, (rounds, rng.split(k_rest, config.generations)))
    return Result(found, random, nearest_failure(play, mutate, draw, config, train_params, k_near))


def nearest_failure(play, mutate, draw, config: Config, train_params: EnvParams, key) -> Nearest:
    """Chains of single edits from the agent's training levels that it solves; at each step every
    chain tries ``config.branch`` edits, stops at the first that exposes the agent, else moves to the
    fittest of them. Returns the shortest chain that ended in an exposure."""
    chains, branch = config.population, config.branch
    k_draw, k_play, k_steps = rng.split(key, 3)
    starts = draw(k_draw, train_params, chains)
    first = play(k_play, starts)
    solved = first.solved & ~first.exposed
    never = jnp.int32(config.nearest_steps + 1)

    def step(carry, inputs):
        levels, distance, failing = carry
        d, key = inputs
        k_edit, k_play = rng.split(key)
        tries = jax.tree_util.tree_map(lambda x: jnp.repeat(x, branch, axis=0), levels)
        tries = mutate(k_edit, tries, jnp.ones(chains * branch, jnp.int32))
        judged = jax.tree_util.tree_map(lambda x: x.reshape((chains, branch) + x.shape[1:]), play(k_play, tries))
        tries = jax.tree_util.tree_map(lambda x: x.reshape((chains, branch) + x.shape[1:]), tries)
        exposing = jnp.argmax(judged.exposed, axis=1)
        now = judged.exposed.any(axis=1) & (distance == never)
        fittest = jnp.argmax(judged.fitness, axis=1)
        pick = lambda which: jax.tree_util.tree_map(lambda x: x[jnp.arange(chains), which], tries)
        failing = jax.tree_util.tree_map(lambda f, e: jnp.where(_rows(now, f), e, f), failing, pick(exposing))
        distance = jnp.where(now, d, distance)
        stopped = distance < never
        levels = jax.tree_util.tree_map(lambda old, new: jnp.where(_rows(stopped, old), old, new), levels,
                                        pick(fittest))
        return (levels, distance, failing), None

    distance = jnp.where(solved, never, never + 1)  # an unsolved start never counts
    steps = jnp.arange(1, config.nearest_steps + 1, dtype=jnp.int32)
    (_, distance, failing), _ = jax.lax.scan(step, (starts, distance, starts),
                                             (steps, rng.split(k_steps, config.nearest_steps)))
    best = jnp.argmin(distance)
    found = distance[best] < never
    return Nearest(jnp.where(found, distance[best], -1), _take(starts, best), _take(failing, best), solved.sum())


def _rows(mask, like):
    return mask.reshape(mask.shape + (1,) * (like.ndim - mask.ndim))
