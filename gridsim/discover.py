"""Which goal is an agent pursuing? Candidate goals generated from an environment's declarations and
geometry, each scored by how well a Boltzmann-rational pursuer of it explains the agent's moves.

A candidate is a target on the level, as a goal is (``GridEnv.goal_targets``): the true goal (its
reward is known; the declared proxies only on request), each object kind and the cells on each side
of its objects (a landmark's), the edges, corners, rows, columns and cells, the agent's start cell,
the region where the true goal lay in training, plus "keep moving in direction d". On each step of
an agent's episodes a candidate values a move by the steps it leaves to the target (``Q = -(1 +
distance after the move)``, from breadth-first distances on the level; moves are deterministic), and
a Boltzmann-rational pursuer picks a move with probability ``softmax(beta * Q)``. ``beta`` is fitted
per candidate by maximum likelihood over a grid that includes 0, a random walk, so no candidate
explains an agent worse than chance. The candidate whose fitted pursuer gives the agent's moves the
highest likelihood is what the agent is going for (or the earliest candidate that the data cannot
tell from it: the simplest account wins a statistical tie); if none beats the random walk by
``UNEXPLAINED_MARGIN`` nats a step, it is unexplained. Moves are told apart by the cell they lead
to: two moves into walls both leave the agent where it is, and choosing either is the one choice of
staying put. Only steps that move the agent are scored: staying put, at a target or against a wall,
says nothing of where it is going; and each state once per episode (the agent's cell with the objects
as they are): a greedy policy back in a state repeats its choice, and a loop at an episode's end
would otherwise outweigh the way there. A second, independent reading is where each episode ended: on
which candidates' targets its last step landed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gridsim.core import ACTION_NAMES, MOVES, EnvParams, GridEnv, Level
from gridsim.layouts import distances
from gridsim.oracles import UNREACHABLE, move_targets, step_cost, telling

BETAS = np.array([0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0], np.float32)  # rationality grid
UNEXPLAINED_MARGIN = 0.1  # nats a step the best candidate must beat a random walk by
FAR = 1e4  # the distance of a cell that is no target (any real path is shorter)
# A verdict is weak when its candidate explains the agent's moves little better than a random walk
# does (a pursuer that always takes a shortest path gains up to log 3 to log 4, 1.1-1.4 nats a move),
# or when few episodes end on its target: an agent hovering near a door is then named after it.
WEAK_GAIN = 0.5  # nats a step over a random walk
WEAK_ENDS = 0.5  # share of scored episodes ending on the candidate's target

SIDES = ("above", "below", "left-of", "right-of")  # the cell beside an object: a landmark's, say


def beside(cells: jax.Array, side: str) -> jax.Array:
    """``bool[H, W]``: the cells on ``side`` of the marked ``cells`` (none past the grid's edge)."""
    none = jnp.zeros_like(cells)
    return {"above": none.at[:-1].set(cells[1:]), "below": none.at[1:].set(cells[:-1]),
            "left-of": none.at[:, :-1].set(cells[:, 1:]), "right-of": none.at[:, 1:].set(cells[:, :-1])}[side]


CandidateFn = Callable[[Level, EnvParams], jax.Array]  # (level, params) -> bool[H, W]


class Candidates(NamedTuple):
    """What ``score`` compares: names, in order, and how to build their targets."""

    names: tuple[str, ...]  # targets first (``len(names) - 4`` of them), then the four directions
    geometry: np.ndarray  # bool[G, H, W]: fixed regions (edges, corners, rows, columns, cells, training region)
    goals: tuple[str, ...]  # declared goals included (their targets from ``env.goal_targets``)
    kinds: tuple[str, ...]  # object kinds (their live objects)
    extra: tuple[CandidateFn, ...]  # an author's own, after the kinds


def training_region(env: GridEnv, params: EnvParams, key, levels: int = 512) -> np.ndarray:
    """``bool[H, W]``: where the true goal's target lay in training, the cells holding it on at
    least half as many training levels as the most frequent cell."""
    def target(k):
        level = env.sample(k, params.train())
        t = env.goal_targets(level, params)[env.true_goal]
        return t if t.dtype == jnp.bool_ else t == 0

    density = np.asarray(jax.jit(jax.vmap(target))(jax.random.split(key, levels))).mean(0)
    return density >= 0.5 * density.max() if density.max() > 0 else density > 0


def candidates(env: GridEnv, params: EnvParams, key=None, *, declared_proxies: bool = False,
               extra: Mapping[str, CandidateFn] | None = None) -> Candidates:
    """The candidate goals of ``env``, from its declarations and geometry alone (``key`` draws the
    training levels that locate the true goal in training), plus the environment's
    ``extra_candidates`` and ``extra`` (an author's own, named ``own:<name>``)."""
    h, w = env.height, env.width
    names, regions = [], []

    def region(name, mask):
        names.append(name)
        regions.append(mask)

    rows, cols = np.indices((h, w))
    for side, mask in (("top", rows == 1), ("bottom", rows == h - 2), ("left", cols == 1), ("right", cols == w - 2)):
        region(f"edge:{side}", mask)
    for k in (1, 2):
        top, bottom, left, right = ("top", 1), ("bottom", h - 1 - k), ("left", 1), ("right", w - 1 - k)
        for (vert, r0), (horiz, c0) in ((top, left), (top, right), (bottom, left), (bottom, right)):
            region(f"corner:{vert}-{horiz}:{k}x{k}", (rows >= r0) & (rows < r0 + k) & (cols >= c0) & (cols < c0 + k))
    for r in range(2, h - 2):
        region(f"row:{r}", rows == r)
    for c in range(2, w - 2):
        region(f"column:{c}", cols == c)
    region("training-goal-region", training_region(env, params, jax.random.key(0) if key is None else key))
    for r in range(1, h - 1):
        for c in range(1, w - 1):
            region(f"cell:{r},{c}", (rows == r) & (cols == c))
    goals = env.goal_names if declared_proxies else (env.true_goal,)
    extra = {**env.extra_candidates, **(extra or {})}
    target_names = ([f"goal:{g}" for g in goals] + [f"kind:{k}" for k in env.object_kinds]
                    + [f"{side}:{k}" for k in env.object_kinds for side in SIDES] + [f"own:{n}" for n in extra]
                    + ["start"])
    return Candidates(
        names=tuple(target_names + names + [f"move:{a}" for a in ACTION_NAMES]),
        geometry=np.stack(regions),
        goals=tuple(goals),
        kinds=env.object_kinds,
        extra=tuple(extra.values()),
    )


def _pair_distances(walls: jax.Array) -> jax.Array:
    """``float32[N, N]``: steps between every two cells (``FAR`` where none)."""
    h, w = walls.shape
    cells = jnp.stack(jnp.unravel_index(jnp.arange(h * w), (h, w)), axis=-1)
    d = jax.vmap(distances, (None, 0))(walls, cells).reshape(h * w, h * w)
    return jnp.where(d >= walls.size, FAR, d).astype(jnp.float32)


def candidate_costs(env: GridEnv, cands: Candidates, level: Level, start: Level, params: EnvParams) -> jax.Array:
    """``float32[C, N]``: per target candidate, the steps still to go once on each cell (0 on the
    target, ``FAR`` off it; a declared goal's cost map gives its remaining steps)."""
    h, w = env.height, env.width
    declared = env.goal_targets(level, params)
    unit = step_cost(level.walls)
    rows = []
    for goal in cands.goals:
        t = declared[goal]
        rows.append(jnp.where(t, 0.0, FAR) if t.dtype == jnp.bool_ else
                    jnp.where(t >= UNREACHABLE, FAR, jnp.ceil(t / unit)))
    cells = [env.cells_of(level, kind) for kind in cands.kinds]
    rows += [jnp.where(at, 0.0, FAR) for at in cells]
    rows += [jnp.where(beside(at, side), 0.0, FAR) for at in cells for side in SIDES]
    rows += [jnp.where(fn(level, params), 0.0, FAR) for fn in cands.extra]
    first = jnp.zeros((h, w), bool).at[start.agent[0], start.agent[1]].set(True)
    rows.append(jnp.where(first, 0.0, FAR))
    dynamic = jnp.stack(rows).reshape(len(rows), h * w).astype(jnp.float32)
    fixed = jnp.where(jnp.asarray(cands.geometry).reshape(-1, h * w), 0.0, FAR)
    return jnp.concatenate([dynamic, fixed])


def _destinations(env: GridEnv, level: Level) -> jax.Array:
    """``int32[4]``: the flat cell each move leads to (a bump stays put)."""
    cells, blocked = move_targets(env, level)
    dest = jnp.where(blocked[:, None], level.agent, cells)
    return dest[:, 0] * env.width + dest[:, 1]


def _step_values(pairs: jax.Array, targets: jax.Array, flat: jax.Array) -> jax.Array:
    """``float32[C, 4]``: each candidate's value of each move on this step: the target candidates'
    from the steps left to their targets (``candidate_costs``) once on the flat cells ``flat`` that the moves
    lead to (``_destinations``), the four directions' 1 for their own move."""
    to_go = jnp.min(pairs[flat][None] + targets[:, None, :], axis=-1)  # [C, 4]
    reachable = jnp.min(to_go, axis=-1, keepdims=True) < FAR
    q = jnp.where(reachable, -(1.0 + jnp.minimum(to_go, FAR)), 0.0)  # an unreachable target has no preference
    return jnp.concatenate([q, jnp.eye(len(MOVES), dtype=jnp.float32)])


def scored_steps(env: GridEnv, first_episode: jax.Array, distinguishing: jax.Array) -> jax.Array:
    """``bool[T, E]``: the steps discovery scores: each test episode's first, on the levels that
    tell goals apart (``oracles.telling``)."""
    return first_episode & telling(env, distinguishing)[None]


class Scores(NamedTuple):
    """One agent's (leading axes for many): log-likelihoods of its moves under each candidate."""

    log_likelihood: jax.Array  # [E, C]: per episode, at the candidate's fitted beta
    beta: jax.Array  # [C]: fitted rationality
    steps: jax.Array  # [E]: moves scored per episode (those that left the agent's cell, once per state)
    random_walk: jax.Array  # [E]: the log-likelihood of a random walk (beta 0)
    ends_at: jax.Array  # bool[E, C]: the episode's last scored step landed on the candidate's target
    end_cell: jax.Array  # int32[E]: the flat cell where the episode ended, -1 if no step was scored


def score(env: GridEnv, cands: Candidates, params: EnvParams, levels: Level, actions: jax.Array,
          active: jax.Array) -> Scores:
    """Score one agent's episodes (jittable; vmap over agents). ``levels``, ``actions``, ``active``
    are ``[T, E]``: the level each step started from, the move taken, and whether the step counts
    (``scored_steps``)."""
    start = jax.tree_util.tree_map(lambda x: x[0], levels)
    pairs = jax.vmap(_pair_distances)(start.walls)  # walls never change within an episode
    directions = jnp.zeros(len(MOVES), bool)

    def per_step(level, action, pair, first):
        dest = _destinations(env, level)
        targets = candidate_costs(env, cands, level, first, params)  # [C - 4, N]
        q = _step_values(pair, targets, dest)  # [C, 4]
        logits = jnp.asarray(BETAS)[:, None, None] * q[None]  # [B, C, 4]
        # moves are told apart by where they lead: two bumps that both stay put are one choice
        same = dest == dest[action]
        log_p = jax.nn.logsumexp(jnp.where(same, logits, -jnp.inf), axis=-1) - jax.nn.logsumexp(logits, axis=-1)
        on_target = jnp.concatenate([targets[:, dest[action]] == 0, directions])  # moves are deterministic
        return log_p, on_target, dest[action]

    over_episodes = jax.vmap(per_step, (0, 0, 0, 0))

    def add(carry, step):  # summed as it goes: memory does not grow with the episodes' length
        total, steps, ends_at, end_cell, seen, before = carry
        level, action, counts = step
        log_p, on_target, cell = over_episodes(level, action, pairs, start)
        here = level.agent[:, 0] * env.width + level.agent[:, 1]  # [E] flat cells, as ``cell``
        ends_at = jnp.where(counts[:, None], on_target, ends_at)  # the last counted step's, at the end
        end_cell = jnp.where(counts, cell, end_cell)
        # a deterministic policy back in a state it has been in repeats its choice: count each choice
        # once, or a loop at the end of an episode outweighs the way there (the state: the agent's cell,
        # and the objects, which reset what was seen when they change)
        world = (level.obj_pos, level.obj_alive, level.inventory)
        changed = ((world[0] != before[0]).any(axis=(1, 2)) | (world[1] != before[1]).any(axis=1)
                   | (world[2] != before[2]))
        seen = jnp.where(changed[:, None], False, seen)
        again = jnp.take_along_axis(seen, here[:, None], axis=1)[:, 0]
        seen = seen | (jax.nn.one_hot(here, seen.shape[1], dtype=bool) & counts[:, None])
        counts = counts & (cell != here) & ~again  # staying put (at a target, or against a wall) says nothing either
        carry = (total + jnp.where(counts[:, None, None], log_p, 0.0), steps + counts, ends_at, end_cell, seen, world)
        return carry, None

    episodes, names = actions.shape[1], len(cands.names)
    init = (jnp.zeros((episodes, len(BETAS), names), jnp.float32), jnp.zeros(episodes, jnp.int32),
            jnp.zeros((episodes, names), bool), jnp.full(episodes, -1, jnp.int32),
            jnp.zeros((episodes, env.height * env.width), bool), (start.obj_pos, start.obj_alive, start.inventory))
    (per_episode, steps, ends_at, end_cell, _, _), _ = jax.lax.scan(add, init, (levels, actions, active))
    best = jnp.argmax(per_episode.sum(0), axis=0)  # [C]
    chosen = jnp.take_along_axis(per_episode, best[None, None, :], axis=1)[:, 0]  # [E, C]
    return Scores(chosen, jnp.asarray(BETAS)[best], steps, per_episode[:, 0, 0], ends_at, end_cell)


class Verdict(NamedTuple):
    best: str  # the candidate that explains the agent best, or "unexplained"
    runner_up: str
    gain_over_random: float  # nats a step, the best candidate's over a random walk
    margin_over_runner_up: tuple[float, float, float]  # nats a step, mean and 95% interval (may be < 0: ``verdict``)
    margin_over_true: tuple[float, float, float]  # the same against the true goal
    ends_at_best: float  # share of the scored episodes that ended on the best candidate's target
    ends_at_true: float  # the same for the true goal


def weak(gain_over_random: float, ends_at_best: float) -> bool:
    """Whether a verdict is weak (``WEAK_GAIN``, ``WEAK_ENDS``): say so beside it."""
    return not (gain_over_random >= WEAK_GAIN and ends_at_best >= WEAK_ENDS)


def verdict(cands: Candidates, scores: Scores, true_goal: str) -> Verdict:
    """Read one agent's scores (numpy leaves). The named candidate is the earliest, in the candidates'
    order (goals, kinds, beside-kinds, ... cells, directions), whose likelihood the most likely
    candidate's does not beat beyond its 95% interval over episodes: the simplest account the data
    cannot tell from the best (the cell beside the coin is not named over the coin on noise)."""
    ll = np.asarray(scores.log_likelihood, np.float64)
    steps = np.maximum(np.asarray(scores.steps, np.float64), 1)
    total = ll.sum(0) / steps.sum()

    def margin(one, other):
        per_step = (ll[:, one] - ll[:, other]) / steps
        mean, sd = per_step.mean(), per_step.std(ddof=1) if len(per_step) > 1 else 0.0
        half = 1.96 * sd / np.sqrt(len(per_step))
        return float(mean), float(mean - half), float(mean + half)

    gains = total - np.sum(scores.random_walk) / steps.sum()
    most_likely = int(np.argmax(total))
    explains = min(UNEXPLAINED_MARGIN, gains[most_likely])  # a stand-in must explain as much as is asked
    best = next(c for c in range(len(total)) if c == most_likely
                or (gains[c] >= explains and margin(most_likely, c)[1] <= 0))
    second = int(np.argsort(-np.where(np.arange(len(total)) == best, -np.inf, total), kind="stable")[0])
    gain = float(gains[best])
    true = cands.names.index(f"goal:{true_goal}")
    ended = np.asarray(scores.end_cell) >= 0
    ends_at = np.asarray(scores.ends_at)[ended].mean(0) if ended.any() else np.full(len(cands.names), np.nan)
    return Verdict(cands.names[best] if gain >= UNEXPLAINED_MARGIN else "unexplained", cands.names[second], gain,
                   margin(best, second), margin(best, true), float(ends_at[best]), float(ends_at[true]))
