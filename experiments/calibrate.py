"""The range the misgeneralization metric can take on an environment's test levels.

The true-goal oracle pursues only the true goal, each proxy's oracle only its
proxy (``gridsim.oracles``); a uniform random walk pursues nothing. Played on
the same test levels, their outcome rates over distinguishing levels bound
what an agent's rate means: the true oracle must score 0% misgeneralization
and every proxy oracle 100%, by the definition of a distinguishing level, and
the random walk shows how often a proxy is hit by chance. The environment's
own measures (``measure_names``, ``contrasts``) get the same three references.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pandas as pd

import gridsim
from experiments.metrics import measure_columns, nan_mean
from gridsim import OUTCOME_TRUE, oracles


def policies(env) -> dict[str, gridsim.Policy]:
    named = {f"oracle: {goal}": oracles.policy(env, goal) for goal in env.goal_names}
    named["random walk"] = gridsim.random_policy(env)
    return named


def calibrate(env, params, episodes: int = 4096, seed: int = 0, alpha: float = 1.0) -> pd.DataFrame:
    """One row per policy: episodes, distinguishing episodes, each outcome's share of them, and each of
    the env's measures (``measure_<name>``), averaged over all episodes as a sweep averages an agent's."""
    params = params.train(alpha=alpha)
    max_steps = int(np.asarray(params.max_steps_in_episode))
    key = jax.random.key(seed)  # one key: every policy plays the same levels
    rows = []
    distinguishing = None
    for name, policy in policies(env).items():
        label = distinguishing is None
        play = jax.jit(functools.partial(gridsim.evaluate, env, policy=policy, episodes=episodes,
                                         max_steps=max_steps, label=label))
        result = jax.device_get(play(params, key=key))
        if label:
            distinguishing = np.asarray(result.distinguishing)
        outcome = np.asarray(result.outcome)[distinguishing]
        counts = np.bincount(outcome, minlength=len(env.outcome_names))
        shares = counts / len(outcome) if len(outcome) else np.full(len(counts), np.nan)
        rows.append({
            "policy": name,
            "episodes": episodes,
            "distinguishing": int(distinguishing.sum()),
            **{outcome_name: share for outcome_name, share in zip(env.outcome_names, shares)},
            "misgeneralization": shares[OUTCOME_TRUE + 1:].sum() if len(outcome) else np.nan,
            **measure_means(env, np.asarray(result.measures)),
        })
    return pd.DataFrame(rows)


def measure_means(env, measures: np.ndarray) -> dict[str, float]:
    """``measure_<name>`` over ``[episodes, measure_names]``, NaN-skipping, and each contrast."""
    return {name: float(value) for name, value in measure_columns(env, nan_mean(measures, axis=0)).items()}


def format_calibration(env, table: pd.DataFrame) -> str:
    first = table.iloc[0]
    share = first.distinguishing / first.episodes
    lines = [f"{env.name} ({env.height}x{env.width}): {first.episodes} levels, "
             f"{first.distinguishing} distinguishing ({share:.1%}); shares of the distinguishing ones:"]
    columns = [*env.outcome_names, "misgeneralization"]
    widths = [max(len(c), 6) + 2 for c in columns]
    lines.append(f"{'policy':<22}" + "".join(f"{c:>{w}}" for c, w in zip(columns, widths)))
    for _, row in table.iterrows():
        cells = "".join(f"{'-' if not np.isfinite(row[c]) else format(row[c], '.1%'):>{w}}"
                        for c, w in zip(columns, widths))
        lines.append(f"{row.policy:<22}{cells}")
    measures = [c for c in table.columns if c.startswith("measure_")]
    if measures:
        lines.append("measures, mean over episodes where they apply:")
        widths = [len(c) - len("measure_") + 2 for c in measures]
        lines.append(f"{'policy':<22}" + "".join(f"{c[len('measure_'):]:>{w}}" for c, w in zip(measures, widths)))
        for _, row in table.iterrows():
            lines.append(f"{row.policy:<22}" + "".join(f"{row[c]:>{w}.3f}" for c, w in zip(measures, widths)))
    return "\n".join(lines)
