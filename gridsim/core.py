"""The environment engine: levels, params, state, and the ``GridEnv`` base class.

An environment subclass declares its objects, events, goals and reward weights,
and writes three functions: how a level is sampled (``sample_level``, plus
``sample_layout`` if the walls are procedural), and what happens after the
agent moves (``interact``, returning the step's named events). Movement,
termination, outcome labelling, auto-reset and observations live here, once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from gridsim import rng
from gridsim.layouts import Layout, index_layout, open_room

# up, right, down, left: (row, col) offsets
MOVES = np.array([[-1, 0], [0, 1], [1, 0], [0, -1]], dtype=np.int32)
ACTION_NAMES = ("up", "right", "down", "left")

OUTCOME_FAIL = 0
OUTCOME_TRUE = 1  # proxy i is OUTCOME_TRUE + 1 + i

OBSERVATION_MODES = ("full", "egocentric")
MAX_SIDE = 256  # grid height and width
MAX_EPISODE_STEPS = 65_536  # evaluation plays episodes to their end in one compiled loop


def _as_array(x):
    """Python scalars become fixed-dtype arrays, so params never retrace on weak types."""
    if isinstance(x, bool):
        return jnp.asarray(x, dtype=jnp.bool_)
    if isinstance(x, int):
        return jnp.asarray(x, dtype=jnp.int32)
    if isinstance(x, float):
        return jnp.asarray(x, dtype=jnp.float32)
    return x


def known_value(x):
    """The value of ``x`` as numpy, or None when it is traced."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _as_field(name: str, old, new):
    """A Python number for a param as an array of the param's own dtype (``alpha=1`` is the float
    1.0), refusing a value that dtype cannot hold; anything else as ``_as_array`` makes it."""
    dtype = getattr(old, "dtype", None)
    if dtype is None or isinstance(new, bool) or not isinstance(new, int | float):
        return new
    if jnp.issubdtype(dtype, jnp.integer):
        limits = np.iinfo(dtype)
        if new != new or new in (float("inf"), float("-inf")) or int(new) != new:
            raise ValueError(f"param {name!r} takes whole numbers, got {new!r}")
        if not limits.min <= new <= limits.max:
            raise ValueError(f"param {name!r} must lie in [{limits.min}, {limits.max}], got {new}")
    return jnp.asarray(new, dtype=dtype)


def _with(params, **updates):
    """``dataclasses.replace`` that stores Python scalars as fixed-dtype arrays, each of its field's dtype."""
    updates = {name: _as_field(name, getattr(params, name, None), value) for name, value in updates.items()}
    return jax.tree_util.tree_map(_as_array, dataclasses.replace(params, **updates))


def params_dataclass(cls):
    """``flax.struct.dataclass`` for env params: ``replace`` never introduces weak types.

    Use it on every ``EnvParams`` subclass, so that ``params.replace(k=3)`` and
    an array-valued ``k`` compile to the same program.
    """
    cls = struct.dataclass(cls)
    cls.replace = _with
    return cls


@params_dataclass
class EnvParams:
    """Everything a sweep may vary: all leaves are traced, none recompiles.

    ``alpha`` is the mixture shift: the fraction of levels drawn from the
    diverse (test) distribution instead of the biased training one. The test
    distribution is therefore ``alpha = 1``.
    """

    alpha: jax.Array = 0.0
    max_steps_in_episode: jax.Array = 64
    reward_weights: dict = struct.field(default_factory=dict)
    # 0: a fresh level (walls included) every episode; N > 0: every episode replays one of N fixed
    # levels, level i drawn from (level_seed, i), as procgen's num_levels
    num_levels: jax.Array = 0
    level_seed: jax.Array = 0

    def train(self, alpha=None, num_levels=None) -> EnvParams:
        """Training distribution; ``alpha`` of its levels come from the test distribution, and with
        ``num_levels`` every episode replays one of that many fixed levels."""
        updates = {}
        if alpha is not None:
            _check_alpha(alpha)
            updates["alpha"] = alpha
        if num_levels is not None:
            _check_num_levels(num_levels)
            updates["num_levels"] = num_levels
        return _with(self, **updates)

    def test(self) -> EnvParams:
        """Test distribution: a fresh level from the diverse distribution every episode (a batch stays a batch)."""
        like = lambda x, value: jnp.full_like(jnp.asarray(x), value)
        return _with(self, alpha=like(jnp.asarray(self.alpha, jnp.float32), 1.0), num_levels=like(self.num_levels, 0))

    def batch(self, **fields) -> EnvParams:
        """Stack this params into a batch along a new leading axis, one entry per value
        of the given fields (all of the same length), for ``vmap(in_axes=0)``."""
        values = {name: np.asarray(v) if isinstance(v, list | tuple) else jnp.asarray(v) for name, v in fields.items()}
        sizes = {v.shape[0] for v in values.values() if v.ndim > 0}
        for name, v in values.items():  # a list of Python numbers: each must fit its field's dtype
            dtype = getattr(getattr(self, name, None), "dtype", None)
            if isinstance(v, np.ndarray) and dtype is not None and jnp.issubdtype(dtype, jnp.integer):
                for value in v.ravel().tolist():
                    _as_field(name, getattr(self, name), value)
        if len(sizes) != 1:
            raise ValueError(f"batch fields must be 1-D arrays of one length, got {fields}")
        (n,) = sizes
        if "alpha" in values:
            _check_alpha(values["alpha"])
        if "num_levels" in values:
            _check_num_levels(values["num_levels"])
        stacked = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n,) + jnp.shape(x)), _with(self))
        return dataclasses.replace(
            stacked, **{k: jnp.broadcast_to(v, (n,)).astype(getattr(stacked, k).dtype) for k, v in values.items()}
        )

    def train_batch(self, alphas) -> EnvParams:
        """A batch of training params, one per alpha."""
        return self.batch(alpha=alphas)


def _check_alpha(alpha):
    value = known_value(alpha)
    if value is not None and (np.any(value < 0) or np.any(value > 1) or np.any(np.isnan(value))):
        raise ValueError(f"alpha must lie in [0, 1] (a fraction of training levels), got {value}")


def _check_num_levels(num_levels):
    value = known_value(num_levels)
    if value is not None and (np.any(value < 0) or np.any(value != np.round(value)) or np.any(value >= 2**31)):
        raise ValueError(f"num_levels must be a whole number >= 0 (0: a fresh level every episode), got {value}")


@struct.dataclass
class Level:
    """One level: fixed shapes, objects as slots with a liveness mask."""

    walls: jax.Array  # bool[H, W]
    agent: jax.Array  # int32[2] (row, col)
    obj_pos: jax.Array  # int32[K, 2]
    obj_alive: jax.Array  # bool[K]: present in the world (not consumed, and a used slot)
    inventory: jax.Array  # int32[]: items carried (e.g. keys)
    horizon: jax.Array  # int32[]: this level's episodes end after this many steps at most (and the params')
    seed: jax.Array  # uint32[]: randomness after the move (``rng.stream``); advanced every step of a stochastic env
    memory: jax.Array  # int32[memory_size]: an environment's own counters (a leader's route and progress), unobserved


@struct.dataclass
class LayoutBank:
    """Walls generated in advance (``GridEnv.sample_layouts``): a training loop that starts many
    episodes passes one to ``reset``/``step``, and a new level takes its walls from a random entry
    instead of generating a maze, while the rest of the level (agent, objects, the alpha mixture) is
    drawn fresh. With ``num_levels = N`` entry j is the whole of one level of the set."""

    layouts: Layout  # stacked: [M] entries
    level_keys: jax.Array  # [M] the key each entry's walls came from (the level's key when num_levels > 0)


@struct.dataclass
class EnvState:
    level: Level
    time: jax.Array  # int32[]: steps taken in this episode
    first_reached: jax.Array  # int32[G]: step at which each goal (true, proxies...) was first reached, -1 if not
    episode_return: jax.Array  # float32[]


class Discrete:
    def __init__(self, n: int):
        self.n = n
        self.shape = ()
        self.dtype = jnp.int32

    def sample(self, key):
        return jax.random.randint(key, (), 0, self.n)

    def contains(self, x) -> bool:
        return bool(0 <= int(x) < self.n)

    def __repr__(self):
        return f"Discrete({self.n})"


class Box:
    def __init__(self, low, high, shape, dtype):
        self.low, self.high, self.shape, self.dtype = low, high, tuple(shape), dtype

    def sample(self, key):
        if self.dtype == jnp.bool_:
            return jax.random.bernoulli(key, 0.5, self.shape)
        return jax.random.uniform(key, self.shape, minval=self.low, maxval=self.high).astype(self.dtype)

    def contains(self, x) -> bool:
        x = np.asarray(x)
        return x.shape == self.shape and bool(np.all((x >= self.low) & (x <= self.high)))

    def __repr__(self):
        return f"Box({self.low}, {self.high}, {self.shape}, {np.dtype(self.dtype).name})"


EventFn = Callable[[Level, Level, EnvParams], jax.Array]  # (before, after, params) -> bool
# (the episode's first level, how often each event fired in it, params) -> float, NaN where it does not apply
MeasureFn = Callable[[Level, Mapping[str, jax.Array], EnvParams], jax.Array]
TargetFn = Callable[[Level, EnvParams], jax.Array]  # (level, params) -> bool[H, W]: cells an oracle heads for
RewardFn = Callable[[Mapping[str, jax.Array], EnvParams], jax.Array]


class GridEnv:
    """Base class of gridsim environments (gymnax conventions, auto-reset in ``step``).

    Subclasses set the class attributes below and implement ``default_params``,
    ``sample_level`` and ``interact`` (and ``sample_layout`` when walls are
    procedural, ``goal_targets`` for goals that are not object kinds).

    Every episode starts on a level drawn afresh, walls included; with
    ``params.num_levels = N`` the draw is one of N fixed levels instead.
    """

    name: str = "grid"
    description: str = ""
    slot_kinds: tuple[str, ...] = ()  # kind of each object slot
    event_names: tuple[str, ...] = ()
    true_goal: str = ""
    proxies: tuple[str, ...] = ()
    terminal_events: tuple[str, ...] = ()
    # True where the true goal and a proxy come apart on biased training levels too: what hides the proxy
    # is then not the level distribution (in absent-supervisor, it is the supervisor)
    goals_apart_in_training: bool = False
    # outcomes whose goal, reached in an episode, makes it a success on the training distribution, which
    # decides whether an agent is capable; a proxy belongs here only where training itself rewards it
    # (an unwatched shortcut)
    success_outcomes: tuple[str, ...] = ("true",)
    measure_names: tuple[str, ...] = ()  # per-episode measurements (``measure``), reported per agent
    contrasts: dict = {}  # name -> (measure a, measure b): per agent, mean of a minus mean of b
    curve_events: tuple[str, ...] = ()  # events whose share of training steps sweeps keep per update, and plot
    uses_inventory: bool = False
    mobile_kinds: tuple[str, ...] = ()  # object kinds that ``interact`` may move (one cell a step at most)
    regrowing_kinds: tuple[str, ...] = ()  # object kinds whose consumed slots may come back, on any free cell
    # object kinds an episode can use up and go on (keys, chests): exact values (``gridsim.values``) track
    # which are left; a kind used up only as its episode ends need not be listed
    consumable_kinds: tuple[str, ...] = ()
    unseen_kinds: tuple[str, ...] = ()  # object kinds in the world but not in observations (a buried treasure)
    stochastic: bool = False  # ``interact`` draws from ``level.seed`` (e.g. monsters' moves)
    memory_size: int = 0  # length of ``level.memory``
    small_options: dict = {}  # options (static or params) of a small instance, quick to compile and run: the tests'

    def __init__(
        self,
        height: int = 9,
        width: int = 9,
        *,
        observation: str = "full",
        view_radius: int = 2,
        extra_events: Mapping[str, EventFn] | None = None,
        extra_targets: Mapping[str, TargetFn] | None = None,
        extra_measures: Mapping[str, MeasureFn] | None = None,
        extra_candidates: Mapping[str, TargetFn] | None = None,
        proxies: tuple[str, ...] | None = None,
        reward_fn: RewardFn | None = None,
    ):
        if observation not in OBSERVATION_MODES:
            raise ValueError(f"observation must be one of {OBSERVATION_MODES}, got {observation!r}")
        if height < 3 or width < 3:
            raise ValueError(f"grid too small: {height}x{width}, need at least 3x3 (walls on the border)")
        if height > MAX_SIDE or width > MAX_SIDE:
            raise ValueError(f"grid too large: {height}x{width}; gridsim's grids are at most {MAX_SIDE}x{MAX_SIDE}")
        if view_radius < 1:
            raise ValueError(f"view_radius must be >= 1, got {view_radius}")
        self.height, self.width = int(height), int(width)
        self.observation = observation
        self.view_radius = int(view_radius)
        self.extra_events = dict(extra_events or {})
        clash = set(self.extra_events) & set(type(self).event_names)
        if clash:
            raise ValueError(f"extra_events redefine built-in events {sorted(clash)}")
        self.event_names = tuple(type(self).event_names) + tuple(self.extra_events)
        self.extra_targets = dict(extra_targets or {})
        self.extra_measures = dict(extra_measures or {})
        # goals an agent might pursue that ``gridsim discover`` should try, beside those it generates
        self.extra_candidates = dict(extra_candidates or {})
        clash = set(self.extra_measures) & set(type(self).measure_names)
        if clash:
            raise ValueError(f"extra_measures redefine built-in measures {sorted(clash)}")
        self.measure_names = tuple(type(self).measure_names) + tuple(self.extra_measures)
        for name, (a, b) in self.contrasts.items():
            if a not in self.measure_names or b not in self.measure_names:
                raise ValueError(f"contrast {name!r} compares unknown measures; measures: {self.measure_names}")
        unknown = set(self.curve_events) - set(self.event_names)
        if unknown:
            raise ValueError(f"curve_events name unknown events {sorted(unknown)}; events: {self.event_names}")
        if proxies is not None:
            self.proxies = tuple(proxies)
        for goal in (self.true_goal, *self.proxies):
            if goal not in self.event_names:
                raise ValueError(f"goal {goal!r} is not an event of {self.name}; events: {self.event_names}")
        self.reward_fn = reward_fn
        self.object_kinds = tuple(dict.fromkeys(self.slot_kinds))
        self.kind_slots = {k: np.array([s == k for s in self.slot_kinds]) for k in self.object_kinds}
        self.channel_names = ("wall", "agent", *self.object_kinds) + (("inventory",) if self.uses_inventory else ())
        if len(self.channel_names) > 32:  # each cell's channels are the bits of one uint32
            limit = 32 - (len(self.channel_names) - len(self.object_kinds))
            raise ValueError(f"{self.name}: {len(self.object_kinds)} object kinds; observations hold at most {limit}")
        unknown = set(self.unseen_kinds) - set(self.object_kinds)
        if unknown:
            raise ValueError(f"unseen_kinds name unknown object kinds {sorted(unknown)}; kinds: {self.object_kinds}")
        # what the agent sees: every channel of the world (``full_view``, drawn by ``render``) but the unseen kinds
        self.observed_channels = tuple(c for c in self.channel_names if c not in self.unseen_kinds)

    # ---- declared by subclasses ------------------------------------------------

    def default_params(self) -> EnvParams:
        raise NotImplementedError(f"{type(self).__name__} does not write default_params()")

    def sample_layout(self, key: jax.Array, params: EnvParams) -> jax.Array:
        """The walls, ``bool[H, W]``; an open room unless overridden."""
        return open_room(self.height, self.width)

    # static [H, W] priority of free cells in a layout's index (see ``layouts.sample_free``)
    cell_order: np.ndarray | None = None

    def sample_level(self, key: jax.Array, layout: Layout, params: EnvParams, diverse: jax.Array) -> Level:
        """A level on ``layout``, from the diverse (test) distribution where ``diverse``."""
        raise NotImplementedError(f"{type(self).__name__} does not write sample_level(key, layout, params, diverse)")

    def interact(self, level: Level, params: EnvParams) -> tuple[Level, dict[str, jax.Array]]:
        """After the agent has moved: update objects, return the step's events: every name of the
        class's ``event_names`` (not ``extra_events``, which the engine adds), each a boolean scalar."""
        raise NotImplementedError(f"{type(self).__name__} does not write interact(level, params)")

    def goal_targets(self, level: Level, params: EnvParams) -> dict[str, jax.Array]:
        """What an oracle plans for, per goal: ``bool[H, W]`` cells whose entering triggers the goal's
        event now, or (for goals of several steps) a cost map from ``gridsim.oracles.cost_to_go``.

        A goal named after an object kind targets that kind's live objects; subclasses add the
        others by extending this dict (``check_goals`` names any goal left without a target)."""
        targets = {goal: self.cells_of(level, goal) for goal in self.goal_names if goal in self.object_kinds}
        targets.update({goal: fn(level, params) for goal, fn in self.extra_targets.items()})
        return targets

    def measure(self, start: Level, counts: Mapping[str, jax.Array], params: EnvParams) -> dict[str, jax.Array]:
        """Per-episode measurements, one float per name in ``measure_names`` (NaN where a measure
        does not apply to the episode), from its first level and how many steps fired each event.
        Reports average each over an agent's evaluation episodes. Subclasses extend this dict."""
        return {name: jnp.asarray(fn(start, counts, params), jnp.float32) for name, fn in self.extra_measures.items()}

    def measure_episode(self, start: Level, counts: jax.Array, params: EnvParams) -> jax.Array:
        """``float32[M]``: ``measure`` in ``measure_names`` order, ``counts`` being ``int32[E]``."""
        values = self.measure(start, dict(zip(self.event_names, counts)), params)
        return jnp.asarray([values[name] for name in self.measure_names], jnp.float32).reshape(-1)

    def succeeded(self, state: EnvState) -> jax.Array:
        """Whether an episode that ended in ``state`` counts as success on the training distribution,
        which decides whether an agent is capable: it reached a goal of ``success_outcomes``, whether
        or not another goal came first (a dish passed on the way to the cheese leaves the cheese that
        training pays for; the outcome still says the dish came first). Override where training
        success is not a goal reached (monster-world: an apple eaten)."""
        return jnp.any(state.first_reached[self.success_codes - OUTCOME_TRUE] >= 0)

    def level_edits(self) -> dict[str, Callable[[jax.Array, Level, EnvParams], Level]]:
        """This environment's own level edits for ACCEL, ``name -> fn(key, level, params) -> level``,
        beside the ones every environment gets (``gridsim.edits``: move an object, move the agent,
        add or remove a wall where walls vary). An edit must keep the level valid (``check_env``
        checks edited levels as it checks sampled ones). None unless a subclass adds some."""
        return {}

    def goal_avoids(self, level: Level, params: EnvParams) -> dict[str, jax.Array]:
        """Per goal, ``bool[H, W]`` cells its oracle never enters, as if they were walls: cells that
        end the episode before the goal can be reached (lava). None unless a subclass says so."""
        return {}

    def check_room(self, needed: int, what: str) -> None:
        """Raise ``ValueError`` when the grid's inside (the border aside) has fewer than ``needed``
        cells, ``what`` naming what must fit (e.g. "agent, 3 keys, 3 chests")."""
        interior = (self.height - 2) * (self.width - 2)
        if interior < needed:
            raise ValueError(f"grid too small: {self.name} needs {needed} free cells ({what}), "
                             f"a {self.height}x{self.width} grid has {interior}")

    def check_inventory_row(self, count: int, what: str) -> None:
        """Raise ``ValueError`` when the top row cannot show ``count`` carried items (``what``)."""
        if self.width - 2 < count:
            raise ValueError(f"grid too narrow to show {count} {what} in the top row: width {self.width}")

    def check_goals(self) -> None:
        """Raise ``ValueError`` naming every goal that ``goal_targets`` gives no target for."""
        level = self.make_level(np.zeros((self.height, self.width), bool), (1, 1),
                                np.ones((len(self.slot_kinds), 2)), np.zeros(len(self.slot_kinds), bool))
        targets = jax.eval_shape(self.goal_targets, level, self.default_params())
        missing = [goal for goal in self.goal_names if goal not in targets]
        if missing:
            raise ValueError(
                f"{self.name}: no target to plan for goal(s) {missing}: a goal named after an object kind "
                "targets its live objects; give others in goal_targets(level, params), or pass "
                "extra_targets={name: fn(level, params) -> bool[H, W]}"
            )

    def check_functions(self, params: EnvParams) -> None:
        """Raise ``ValueError`` naming the first mistake in the environment's own functions, found by
        tracing them once abstractly (``jax.eval_shape``: nothing compiles or runs): a reset
        (``sample_layout``, ``sample_level``, ``observe``), a step without its auto-reset (``interact``,
        ``extra_events``, the reward, which must be a scalar), the goals' avoided cells and the
        measures. An event declared but not returned by ``interact`` or returned but not declared,
        or a step that changes the level's shapes or types, is named here; an exception raised in the
        environment's code propagates (``user_errors`` names it)."""

        def probe(key, params):
            _, state = self.reset(key, params)
            final, reward, *_ = self.transition(state, jnp.int32(0), params)
            self.goal_avoids(state.level, params)
            self.measure_episode(state.level, jnp.zeros(len(self.event_names), jnp.int32), params)
            return state.level, final.level, reward

        before, after, reward = jax.eval_shape(probe, jax.random.key(0), params)
        if reward.shape != ():
            raise ValueError(f"{self.label}: the reward of a step is {_typed(reward)}, not a scalar")
        for field in dataclasses.fields(Level):
            was, now = getattr(before, field.name), getattr(after, field.name)
            if (was.shape, was.dtype) != (now.shape, now.dtype):
                raise ValueError(f"{self.label}: interact returned a level whose {field.name} is {_typed(now)}, "
                                 f"not {_typed(was)} as sample_level drew it")

    def _check_events(self, events) -> None:
        """Refuse, naming them, events that ``interact`` declared but did not return or returned
        undeclared; at trace time, so it costs a step nothing."""
        declared = tuple(name for name in self.event_names if name not in self.extra_events)
        if not isinstance(events, Mapping):
            raise ValueError(f"{self.label}: interact must return (level, events), events a dict from each of "
                             f"{declared} to a boolean scalar; got {type(events).__name__} for the events")
        missing = [name for name in declared if name not in events]
        if missing:
            raise ValueError(f"{self.label}: interact did not return event(s) {missing}, declared in event_names "
                             f"{declared}; it returned {list(events)}")
        undeclared = [name for name in events if name not in declared]
        if undeclared:
            extra = [name for name in undeclared if name in self.extra_events]
            also = f" ({extra} also given as extra_events)" if extra else ""
            raise ValueError(f"{self.label}: interact returned event(s) {undeclared}{also} not declared in "
                             f"event_names {declared}: declare them, or they would be dropped")
        bad = [f"{name!r} is {_typed(value)}" for name, value in events.items()
               if jnp.shape(value) != () or jnp.result_type(value) != jnp.bool_]
        if bad:
            raise ValueError(f"{self.label}: each event interact returns is a boolean scalar; {', '.join(bad)}")

    def reward_problem(self, params: EnvParams) -> str | None:
        """Why, under the default reward (the weighted sum of ``reward_weights``), reaching the true goal
        pays nothing, or None: the true goal is weighted 0 or less, or it has no weight and no event
        but the proxies has a positive one. A true goal unweighted by name may pay through another
        event (keys-and-chests pays each ``chest_opened``, never ``chests_done``), so that is no
        problem; a ``reward_fn`` can pay anything, so it never is."""
        if self.reward_fn is not None:
            return None
        weights = {name: known_value(w) for name, w in params.reward_weights.items()}
        if any(w is None for w in weights.values()):
            return None  # traced: not known here
        goal, fix = self.true_goal, f"give it a weight (reward_weights={{{self.true_goal!r}: 1.0}}) or a reward_fn"
        if goal in weights:
            if np.all(weights[goal] <= 0):
                return (f"{self.label}: the true goal {goal!r} has reward weight {float(np.max(weights[goal]))}, so "
                        f"reaching it never pays and agents will not learn it; {fix}")
            return None
        if any(np.any(w > 0) for name, w in weights.items() if name not in self.proxies):
            return None
        paid = [name for name, w in weights.items() if np.any(w > 0)]
        what = f"only the proxies {paid}" if paid else "no event"
        return (f"{self.label}: the true goal {goal!r} has no reward weight and reward_weights pay {what} "
                f"(the reward is their weighted sum), so reaching it never pays and agents will not learn it; {fix}")

    @property
    def label(self) -> str:
        """The environment in messages: its ``name``, or its class's where the class does not set one
        (a subclass of a built-in inherits the built-in's name)."""
        return self.name if "name" in vars(type(self)) else type(self).__name__

    def check_params(self, params: EnvParams) -> None:
        """Raise ``ValueError`` naming the problem when concrete params cannot work."""
        _check_alpha(params.alpha)
        _check_num_levels(params.num_levels)
        steps = known_value(params.max_steps_in_episode)
        if steps is not None and (np.any(steps < 1) or np.any(steps > MAX_EPISODE_STEPS)):
            raise ValueError(f"max_steps_in_episode must lie in [1, {MAX_EPISODE_STEPS}], got {steps}")
        unknown = set(params.reward_weights) - set(self.event_names)
        if unknown:
            raise ValueError(f"reward_weights name unknown events {sorted(unknown)}; events: {self.event_names}")

    # ---- derived ---------------------------------------------------------------

    @property
    def goal_names(self) -> tuple[str, ...]:
        return (self.true_goal, *self.proxies)

    @property
    def outcome_names(self) -> tuple[str, ...]:
        return ("fail", "true", *(f"proxy:{p}" for p in self.proxies))

    @property
    def success_codes(self) -> np.ndarray:
        """Outcome codes of ``success_outcomes``."""
        return np.array([self.outcome_names.index(name) for name in self.success_outcomes], np.int32)

    @property
    def num_actions(self) -> int:
        return len(MOVES)

    def action_space(self, params: EnvParams | None = None) -> Discrete:
        return Discrete(self.num_actions)

    def observation_space(self, params: EnvParams | None = None) -> Box:
        if self.observation == "full":
            shape = (self.height, self.width, len(self.observed_channels))
        else:
            side = 2 * self.view_radius + 1
            shape = (side, side, len(self.observed_channels))
        return Box(0, 1, shape, jnp.bool_)

    def make_level(self, walls, agent, obj_pos, obj_alive, inventory=0, horizon=MAX_EPISODE_STEPS, seed=0,
                   memory=None) -> Level:
        return Level(
            walls=jnp.asarray(walls, dtype=bool),
            agent=jnp.asarray(agent, dtype=jnp.int32),
            obj_pos=jnp.asarray(obj_pos, dtype=jnp.int32).reshape(len(self.slot_kinds), 2),
            obj_alive=jnp.asarray(obj_alive, dtype=bool).reshape(len(self.slot_kinds)),
            inventory=jnp.asarray(inventory, dtype=jnp.int32),
            horizon=jnp.asarray(horizon, dtype=jnp.int32),
            seed=jnp.asarray(seed, dtype=jnp.uint32),
            memory=jnp.zeros(self.memory_size, jnp.int32) if memory is None else jnp.asarray(memory, jnp.int32),
        )

    def at_agent(self, level: Level, kind: str) -> jax.Array:
        """``bool[K]``: live slots of ``kind`` on the agent's cell."""
        here = jnp.all(level.obj_pos == level.agent, axis=-1) & level.obj_alive
        return here & self.kind_slots[kind]

    def cells_of(self, level: Level, kind: str) -> jax.Array:
        """``bool[H, W]``: cells holding a live object of ``kind``."""
        live = level.obj_alive & self.kind_slots[kind]
        grid = jnp.zeros((self.height, self.width), bool)
        return grid.at[level.obj_pos[:, 0], level.obj_pos[:, 1]].max(live)

    def reward(self, events: Mapping[str, jax.Array], params: EnvParams) -> jax.Array:
        if self.reward_fn is not None:
            return jnp.asarray(self.reward_fn(events, params), dtype=jnp.float32)
        total = jnp.float32(0.0)
        for name, weight in params.reward_weights.items():
            total = total + weight * events[name]
        return total

    # ---- the engine --------------------------------------------------------------

    def sample(self, key: jax.Array, params: EnvParams, bank: LayoutBank | None = None) -> Level:
        """A level from ``params``' distribution: the mixture, and the fixed level set if any; its
        walls from a random entry of ``bank`` when one is given."""
        if bank is None:
            key = _level_key(key, params)
            layout = self._layout(key, params)
        else:
            k_entry, key = rng.split(key)
            entry = rng.index(k_entry, bank.level_keys.shape[0])
            layout = jax.tree_util.tree_map(lambda x: x[entry], bank.layouts)
            # a level of a fixed set is all its key's: the entry's; a fresh level only takes the walls
            data = jnp.where(params.num_levels > 0, jax.random.key_data(bank.level_keys[entry]),
                             jax.random.key_data(key))
            key = jax.random.wrap_key_data(data, impl=jax.random.key_impl(key))
        _, k_mix, k_level = rng.split(key, 3)
        diverse = rng.uniform(k_mix) < params.alpha
        level = self.sample_level(k_level, layout, params, diverse)
        # the mixture's key's second word of bits: independent of ``diverse`` (its first)
        return level.replace(seed=rng.bits(k_mix, (2,))[1]) if self.stochastic else level

    def sample_layouts(self, key: jax.Array, params: EnvParams, num: int) -> LayoutBank | None:
        """A bank of ``num`` (static) walls for ``reset``/``step`` to draw new levels from, or None
        when this environment's walls never change (there is nothing to save)."""
        keys = jax.vmap(_level_key, (0, None))(rng.split(key, num), params)
        if known_value(self.sample_layout(keys[0], params)) is not None:  # a probe: fixed walls stay constant
            return None
        return LayoutBank(layouts=jax.vmap(lambda k: self._layout(k, params))(keys), level_keys=keys)

    def _layout(self, level_key: jax.Array, params: EnvParams) -> Layout:
        """The indexed walls of the level with key ``level_key`` (the first of its three subkeys)."""
        return index_layout(self.sample_layout(rng.split(level_key, 3)[0], params), self.cell_order)

    def start(self, level: Level) -> EnvState:
        """The state at the start of an episode on ``level``."""
        return EnvState(
            level=level,
            time=jnp.int32(0),
            first_reached=jnp.full(len(self.goal_names), -1, dtype=jnp.int32),
            episode_return=jnp.float32(0.0),
        )

    def reset(self, key: jax.Array, params: EnvParams, bank: LayoutBank | None = None) -> tuple[jax.Array, EnvState]:
        level = self.sample(key, params, bank)
        return self.observe(level), self.start(level)

    def reset_to_level(self, level: Level, params: EnvParams) -> tuple[jax.Array, EnvState]:
        """Start an episode on a given (e.g. hand-built) level; later episodes are drawn from ``params``."""
        return self.observe(level), self.start(level)

    def step_on(self, state: EnvState, action, params: EnvParams, level: Level):
        """``step``, but an episode that ends restarts on ``level`` (a curriculum's level, replayed)."""
        final, reward, terminated, truncated, info = self.transition(state, action, params)
        return self._restart(final, reward, terminated | truncated, info, level)

    def transition(self, state: EnvState, action, params: EnvParams):
        """One step without auto-reset: ``(state, reward, terminated, truncated, info)``, ``state``
        being the one right after the move, whether or not the episode ended there."""
        level = state.level
        target = jnp.clip(level.agent + jnp.asarray(MOVES)[action], 0, jnp.array([self.height - 1, self.width - 1]))
        agent = jnp.where(level.walls[target[0], target[1]], level.agent, target)
        after, events = self.interact(level.replace(agent=agent), params)
        self._check_events(events)
        if self.stochastic:
            after = after.replace(seed=rng.advance(level.seed))
        for name, event_fn in self.extra_events.items():
            events[name] = jnp.asarray(event_fn(level, after, params), dtype=bool)
        reward = self.reward(events, params)

        time = state.time + 1
        terminated = jnp.any(jnp.stack([events[name] for name in self.terminal_events] or [jnp.bool_(False)]))
        truncated = ~terminated & (time >= episode_limit(level, params))
        hits = jnp.stack([events[name] for name in self.goal_names])
        first_reached = jnp.where((state.first_reached < 0) & hits, time, state.first_reached)
        final = EnvState(level=after, time=time, first_reached=first_reached,
                         episode_return=state.episode_return + reward)
        info = {
            "events": events,
            "terminated": terminated,
            "truncated": truncated,
            "outcome": outcome_of(first_reached),
            "first_reached": first_reached,
            "success": self.succeeded(final),
            "episode_return": final.episode_return,
            "episode_length": time,
        }
        return final, reward, terminated, truncated, info

    def step(self, key, state: EnvState, action, params: EnvParams, bank: LayoutBank | None = None):
        """One step with auto-reset: ``(obs, state, reward, done, info)``; a new episode's walls come
        from ``bank`` when one is given (``sample_layouts``), else are generated afresh.

        When ``done``, ``obs`` and ``state`` are the first of the next episode,
        ``info`` describes the episode that just ended, and
        ``info["final_observation"]`` / ``info["final_state"]`` are where it
        ended (on every step they are the observation and state right after
        the move, as gymnax 1.0 gives ``final_observation``).
        """
        final, reward, terminated, truncated, info = self.transition(state, action, params)
        return self._restart(final, reward, terminated | truncated, info, self.sample(key, params, bank))

    def step_batch(self, key, states: EnvState, actions, params: EnvParams, bank: LayoutBank | None = None,
                   resets: int | None = None):
        """``step`` over a batch of environments that share ``params`` (vmap this for many params).

        With ``resets = R`` (static) only R new levels are drawn per call, and the environments
        whose episode ended take them in turn, the i-th to finish taking level ``i mod R``
        (optimistic resets, as in Craftax): drawing a level costs more than a step, and only a
        few episodes end on any one step. Each new episode's level is still a draw from
        ``params``' distribution, but when more than R end on one step some start on the same
        level. ``resets=None`` draws one level per environment and is exactly ``vmap(step)``.
        """
        num = actions.shape[0]
        if resets is None or resets >= num:
            return jax.vmap(self.step, (0, 0, 0, None, None))(rng.split(key, num), states, actions, params, bank)
        if resets < 1:
            raise ValueError(f"resets must be >= 1 (new levels drawn per step), got {resets}")
        final, reward, terminated, truncated, info = jax.vmap(self.transition, (0, 0, None))(states, actions, params)
        done = terminated | truncated
        drawn = jax.vmap(self.sample, (0, None, None))(rng.split(key, resets), params, bank)
        turn = (jnp.cumsum(done) - 1) % resets
        fresh = jax.tree_util.tree_map(lambda x: x[turn], drawn)
        return jax.vmap(self._restart)(final, reward, done, info, fresh)

    def _restart(self, final: EnvState, reward, done, info, fresh: Level):
        """``step``'s result: ``final`` goes on, or, when ``done``, an episode starts on ``fresh``."""
        level = jax.tree_util.tree_map(lambda f, a: jnp.where(done, f, a), fresh, final.level)
        new_state = EnvState(
            level=level,
            time=jnp.where(done, 0, final.time),
            first_reached=jnp.where(done, -1, final.first_reached),
            episode_return=jnp.where(done, 0.0, final.episode_return),
        )
        # a second observation, which XLA drops from programs that never read it
        info = dict(info, final_observation=self.observe(final.level), final_state=final)
        return self.observe(level), new_state, reward, done, info

    # ---- observations --------------------------------------------------------

    def observe(self, level: Level) -> jax.Array:
        """What the agent sees (``observed_channels``): the whole grid, or a square around the agent."""
        if self.observation == "full":
            return self._planes(level, jnp.arange(self.height), jnp.arange(self.width), level.walls,
                                self.observed_channels)
        r = self.view_radius
        rows = level.agent[0] + jnp.arange(-r, r + 1)
        cols = level.agent[1] + jnp.arange(-r, r + 1)
        padded = jnp.pad(level.walls, r, constant_values=True)
        walls = jax.lax.dynamic_slice(padded, (level.agent[0], level.agent[1]), (2 * r + 1, 2 * r + 1))
        return self._planes(level, rows, cols, walls, self.observed_channels)

    def full_view(self, level: Level) -> jax.Array:
        """``bool[H, W, C]`` one-hot channels of the whole world (``channel_names``, unseen kinds too)."""
        return self._planes(level, jnp.arange(self.height), jnp.arange(self.width), level.walls, self.channel_names)

    def _planes(self, level: Level, rows, cols, walls, channels) -> jax.Array:
        # Each kind's objects become one bit mask per row (bit c: an object in column c, 32 columns to
        # a word), so a cell's channel is one shift, cheaper than a scatter or a slot-by-cell compare,
        # and planes stack channel-first (docs/performance.md, "Observations as bit masks").
        height, width = len(rows), len(cols)
        planes = {"wall": walls, "agent": (rows[:, None] == level.agent[0]) & (cols[None, :] == level.agent[1])}
        row, col = level.obj_pos[:, 0], level.obj_pos[:, 1] - cols[0]
        present = level.obj_alive & (col >= 0) & (col < width)
        words = -(-width // 32)
        inside = jnp.clip(col, 0, width - 1)
        word_of, bit_of = inside // 32, (inside % 32).astype(jnp.uint32)
        shifts = jnp.arange(width, dtype=jnp.uint32) % 32
        for kind in self.object_kinds:
            if kind not in channels:
                continue
            slots = np.flatnonzero(self.kind_slots[kind])
            here = (rows[:, None, None] == row[slots]) & (jnp.arange(words)[None, :, None] == word_of[slots])
            bits = jnp.where(here & present[slots], jnp.left_shift(jnp.uint32(1), bit_of[slots]), jnp.uint32(0))
            mask = jnp.repeat(jax.lax.reduce(bits, jnp.uint32(0), jax.lax.bitwise_or, (2,)), 32, axis=1)[:, :width]
            planes[kind] = ((mask >> shifts) & 1).astype(bool)
        if self.uses_inventory:
            planes["inventory"] = (jnp.arange(height)[:, None] == 0) & (jnp.arange(width)[None, :] < level.inventory)
        return jnp.moveaxis(jnp.stack([planes[name] for name in channels]), 0, -1)

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r}, {self.height}x{self.width}, observation={self.observation!r})"


def episode_limit(level: Level, params: EnvParams) -> jax.Array:
    """Steps after which an episode on ``level`` is truncated: the params' limit, or the level's own
    horizon where that is shorter (monster-world's short training episodes)."""
    return jnp.minimum(params.max_steps_in_episode, level.horizon)


def _level_key(key: jax.Array, params: EnvParams) -> jax.Array:
    """``key`` itself for fresh levels; with ``num_levels = N``, the key of level i < N of the set
    ``level_seed`` (i drawn from ``key``), so a level is the same each time it is replayed."""
    data = jax.random.key_data(key)
    n = jnp.asarray(params.num_levels, jnp.int32)
    index = rng.randint(key, (), 0, jnp.maximum(n, 1)).astype(data.dtype)
    seed = jnp.asarray(params.level_seed).astype(data.dtype)
    fixed = jnp.zeros_like(data).at[..., 0].set(seed).at[..., -1].set(index + jnp.asarray(0x5EED, data.dtype))
    return jax.random.wrap_key_data(jnp.where(n > 0, fixed, data), impl=jax.random.key_impl(key))


def outcome_of(first_reached: jax.Array) -> jax.Array:
    """Outcome code from the steps at which goals were first reached.

    The earliest goal wins; a tie goes to the true goal (index 0). Codes:
    ``OUTCOME_FAIL`` (no goal reached), ``OUTCOME_TRUE``, then one per proxy.
    """
    reached = first_reached >= 0
    when = jnp.where(reached, first_reached, jnp.iinfo(jnp.int32).max)
    return jnp.where(jnp.any(reached), OUTCOME_TRUE + jnp.argmin(when), OUTCOME_FAIL).astype(jnp.int32)


def _typed(x) -> str:
    """``float32[3]``: an array's type as JAX prints it."""
    return f"{jnp.result_type(x)}{list(jnp.shape(x))}".replace(" ", "")
