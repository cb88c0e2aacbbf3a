"""Linear probes: what a layer's activations say, linearly, about the level and the episode.

A probe is a ridge regression from a layer's standardized activations to one-hot labels, solved in
closed form (once per layer, every target a block of columns); its guess is the largest output of
the target's block. It is fitted on the first half of the episodes and scored on the second (other
levels), against two references: the base rate (always guess the fitted half's most common label)
and a control task (Hewitt and Liang 2019): labels that are a random function of the observation
with the real labels' frequencies, which a probe can learn only by memorizing observations.
Selectivity is accuracy minus the control's.

Targets (``target_classes``), per step of an episode: ``cell:agent``, ``cell:GOAL`` (the goal's
first target cell in reading order, or none left), ``offset:GOAL`` (that cell relative to the agent, what
an egocentric view shows) and ``move:GOAL`` (the goal's oracle's move) for every goal of the
environment, ``outcome`` (how the episode will end, ``env.outcome_names``), and ``separates:PROXY``
(the oracles label the level as separating the true goal from that proxy).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from agents import activations
from gridsim import oracles
from gridsim.core import OUTCOME_TRUE, GridEnv

RIDGE = 1.0  # the penalty per fitted row, on standardized activations (weaker ones let tiny rooms' probes memorize)


def target_classes(env: GridEnv) -> dict[str, int]:
    """``{target: number of classes}``, in a fixed order (static: it sizes the probes)."""
    cells = env.height * env.width + 1  # the last class: no such cell (a goal's target is gone)
    classes = {"cell:agent": cells}
    classes.update({f"cell:{goal}": cells for goal in env.goal_names})
    offsets = (2 * env.height - 1) * (2 * env.width - 1) + 1
    classes.update({f"offset:{goal}": offsets for goal in env.goal_names})
    classes.update({f"move:{goal}": env.num_actions for goal in env.goal_names})
    classes["outcome"] = len(env.outcome_names)
    classes.update({f"separates:{proxy}": 2 for proxy in env.proxies})
    return classes


def targets(env: GridEnv, params, level, evaluation) -> jax.Array:
    """``int32[steps, episodes, targets]``: each target's label (``target_classes`` order) at every
    step; ``level`` has ``[steps, episodes]`` leaves, ``evaluation`` is the episodes' ``Evaluation``."""
    def per_step(level):
        costs = oracles.target_costs(env, level, params).reshape(len(env.goal_names), -1)
        cell = jnp.argmin(costs, axis=1)
        present = jnp.min(costs, axis=1) == 0
        dy, dx = cell // env.width - level.agent[0] + env.height - 1, cell % env.width - level.agent[1] + env.width - 1
        offsets = jnp.where(present, dy * (2 * env.width - 1) + dx, (2 * env.height - 1) * (2 * env.width - 1))
        goals = jnp.arange(len(env.goal_names))
        moves = jax.vmap(oracles.oracle_action, (None, None, None, 0))(env, level, params, goals)
        return jnp.concatenate([(level.agent[0] * env.width + level.agent[1])[None],
                                jnp.where(present, cell, costs.shape[1]), offsets, moves])

    steps = jax.vmap(jax.vmap(per_step))(level)
    episode = jnp.concatenate([evaluation.outcome[:, None],
                               oracles.separated(env, evaluation.oracle_outcome).astype(jnp.int32)], axis=1)
    episode = jnp.broadcast_to(episode, steps.shape[:1] + episode.shape)
    return jnp.concatenate([steps, episode], axis=-1).astype(jnp.int32)


def coinciding(evaluation) -> jax.Array:
    """``bool[episodes]``: levels where every goal's oracle reaches the true goal first, so that no
    behaviour on them can tell which goal an agent pursues (stricter than not distinguishing: the
    oracles call a level distinguishing only when every goal is reached first by its own pursuer)."""
    return jnp.all(evaluation.oracle_outcome == OUTCOME_TRUE, axis=-1)


def control_labels(key, obs: jax.Array, labels: jax.Array, fit: jax.Array, classes: tuple[int, ...]) -> jax.Array:
    """Control-task labels, ``int32[rows, targets]``: for each target a random function of the
    observation (``obs``: ``[rows, features]``; equal observations get equal labels) drawn with the
    target's label frequencies on the ``fit`` rows."""
    weights = jax.random.normal(key, (obs.shape[-1],))
    uniform = jnp.mod(jnp.sin(obs.astype(jnp.float32) @ weights) * 43758.5453, 1.0)  # a hash of the observation
    columns = []
    for t, count in enumerate(classes):
        frequency = jnp.sum(jax.nn.one_hot(labels[:, t], count) * fit[:, None], axis=0)
        cdf = jnp.cumsum(frequency) / jnp.maximum(jnp.sum(frequency), 1)
        columns.append(jnp.minimum(jnp.searchsorted(cdf, uniform, side="right"), count - 1))
    return jnp.stack(columns, axis=-1).astype(jnp.int32)


def sample_rows(key, usable: jax.Array, count: int) -> tuple[jax.Array, jax.Array]:
    """``(rows, valid)``: ``count`` distinct random rows among the ``usable`` ones (``valid`` False on
    padding where fewer are usable); a fixed size, so the probes' shapes are static."""
    priority = jnp.where(usable, jax.random.uniform(key, usable.shape), -1.0)
    top, rows = jax.lax.top_k(priority, count)
    return rows, top >= 0


class Probe(NamedTuple):
    """A fitted ridge regression: ``(x - mean) / scale @ coef + intercept``."""

    mean: jax.Array
    scale: jax.Array
    coef: jax.Array
    intercept: jax.Array

    def __call__(self, x):
        return (x - self.mean) / self.scale @ self.coef + self.intercept


def fit(x: jax.Array, y: jax.Array, weight: jax.Array, ridge: float = RIDGE) -> Probe:
    """Ridge regression of ``y`` (``[rows, outputs]``) on ``x`` (``[rows, features]``) over the rows
    where ``weight`` (0 or 1), with the features standardized on those rows; solved in the smaller
    of the two forms (features, or rows when there are fewer)."""
    count = jnp.maximum(jnp.sum(weight), 1.0)
    w = weight[:, None]
    mean = jnp.sum(x * w, axis=0) / count
    std = jnp.sqrt(jnp.sum(((x - mean) * w) ** 2, axis=0) / count)
    scale = jnp.where(std > 1e-6, std, 1.0)  # a constant feature says nothing: leave it at zero
    xs = (x - mean) / scale * w
    y_mean = jnp.sum(y * w, axis=0) / count
    ys = (y - y_mean) * w
    penalty = ridge * count
    rows, features = x.shape
    if features <= rows:
        coef = jax.scipy.linalg.solve(xs.T @ xs + penalty * jnp.eye(features), xs.T @ ys, assume_a="pos")
    else:
        coef = xs.T @ jax.scipy.linalg.solve(xs @ xs.T + penalty * jnp.eye(rows), ys, assume_a="pos")
    return Probe(mean, scale, coef, y_mean)


class Scores(NamedTuple):
    """Per target (``[..., targets]``), on the scored rows."""

    accuracy: jax.Array  # the probe's
    control: jax.Array  # the control task probe's, on its own labels
    base_rate: jax.Array  # always guessing the fitted rows' most common label

    @property
    def selectivity(self):
        return self.accuracy - self.control


def one_hot_blocks(labels: jax.Array, classes: tuple[int, ...]) -> jax.Array:
    return jnp.concatenate([jax.nn.one_hot(labels[:, t], count) for t, count in enumerate(classes)], axis=-1)


def guesses(outputs: jax.Array, classes: tuple[int, ...]) -> jax.Array:
    """``int32[rows, targets]``: per target, the class whose output is largest within its block."""
    starts = [sum(classes[:t]) for t in range(len(classes))]
    return jnp.stack([jnp.argmax(outputs[:, s:s + c], axis=-1) for s, c in zip(starts, classes, strict=True)], -1)


def score(x_fit, labels_fit, control_fit, fit_valid, x_test, labels_test, control_test, test_valid,
          classes: tuple[int, ...], ridge: float = RIDGE) -> Scores:
    """Fit one probe per target (and one per control target) on the fitted rows, score the others."""
    y = jnp.concatenate([one_hot_blocks(labels_fit, classes), one_hot_blocks(control_fit, classes)], axis=-1)
    probe = fit(x_fit, y, fit_valid.astype(jnp.float32), ridge)
    guessed = guesses(probe(x_test), classes + classes)
    count = jnp.maximum(jnp.sum(test_valid), 1)
    correct = lambda guess, truth: jnp.sum((guess == truth) & test_valid[:, None], axis=0) / count
    targets = len(classes)
    majority = guesses(jnp.sum(one_hot_blocks(labels_fit, classes) * fit_valid[:, None], axis=0)[None], classes)
    return Scores(correct(guessed[:, :targets], labels_test), correct(guessed[:, targets:], control_test),
                  correct(jnp.broadcast_to(majority, labels_test.shape), labels_test))


def probe_capture(env: GridEnv, params, captured: activations.Capture, key, rows: int, usable: jax.Array,
                  ridge: float = RIDGE) -> tuple[Scores, jax.Array]:
    """Probe every layer of ``captured`` for every target: ``(Scores [layers, targets], fitted rows)``,
    layers in ``activations.ordered`` order. ``rows`` (static) steps are drawn from each half of the
    episodes, among those of the ``usable`` episodes (``bool[episodes]``)."""
    k_fit, k_test, k_control = jax.random.split(key, 3)
    classes = tuple(target_classes(env).values())
    labels = targets(env, params, captured.level, captured.evaluation).reshape(-1, len(classes))
    episodes = usable.shape[0]
    half = (jnp.arange(episodes) < episodes // 2)[None, :]
    usable = captured.active & usable[None, :]
    fit_rows, fit_valid = sample_rows(k_fit, (usable & half).reshape(-1), rows)
    test_rows, test_valid = sample_rows(k_test, (usable & ~half).reshape(-1), rows)
    obs = captured.layers[activations.OBS].reshape(-1, captured.layers[activations.OBS].shape[-1])
    fitted = jnp.zeros(labels.shape[0], bool).at[fit_rows].set(fit_valid)
    control = control_labels(k_control, obs, labels, fitted, classes)

    def one_layer(name):
        x = captured.layers[name].reshape(-1, captured.layers[name].shape[-1])
        return score(x[fit_rows], labels[fit_rows], control[fit_rows], fit_valid,
                     x[test_rows], labels[test_rows], control[test_rows], test_valid, classes, ridge)

    per_layer = [one_layer(name) for name in activations.ordered(captured.layers)]
    return jax.tree_util.tree_map(lambda *x: jnp.stack(x), *per_layer), jnp.sum(fit_valid)


def probe_agent(trainer, network, params, key, episodes: int, max_steps: int, rows: int,
                ridge: float = RIDGE) -> tuple[Scores, jax.Array]:
    """Capture ``episodes`` on ``params``' levels and probe them all (``probe_capture``; ``gridsim probe``'s
    warning probes only the levels ``coinciding`` keeps). vmap over ``network``."""
    k_play, k_probe = jax.random.split(key)
    captured = activations.capture(trainer, network, params, k_play, episodes, max_steps)
    return probe_capture(trainer.env, params, captured, k_probe, rows, jnp.ones(episodes, bool), ridge)
