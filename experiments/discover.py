"""``gridsim discover DIR``: for every agent of a sweep, the candidate goal that best explains its
moves on distinguishing test levels (``gridsim.discover``), without being told the proxies.

Writes ``DIR/discover.parquet`` (one row per agent) and prints, per sweep point, the share of
agents each candidate explains best, with Wilson intervals; ``gridsim plot`` draws it.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from agents import ppo
from experiments import spec as sweep_spec
from experiments.metrics import wilson_interval
from experiments.runner import batch_params, runner_for
from experiments.store import MANIFEST, Store
from gridsim import discover

RESULTS = "discover.parquet"


@functools.lru_cache(maxsize=4)
def _compiled(trainer, shape: discover.Candidates, episodes: int, max_steps: int):
    """``(networks, params, key, geometry) -> Scores``, one program for every sweep point: the
    candidates' regions (which hold the point's training region) are an argument."""
    env = trainer.env

    def one_agent(network, params, key, geometry):
        result, trace = ppo.evaluate(trainer, network, params, key, episodes, max_steps, greedy=True, trace=True)
        active = trace.first_episode & result.distinguishing[None]
        cands = shape._replace(geometry=geometry)
        return discover.score(env, cands, params, trace.state.level, trace.action, active)

    return jax.jit(jax.vmap(one_agent, (0, None, None, None)))


def run(directory, episodes: int = 256, seed: int = 0, declared_proxies: bool = False) -> pa.Table:
    """Score every agent of the sweep in ``directory``; write and return the table."""
    directory = Path(directory)
    store = Store(directory)
    spec = sweep_spec.parse(store.manifest()["spec"], directory / MANIFEST)
    runner, params = runner_for(spec)
    env = runner.env
    rows = []
    for point in store.point_files():
        train = jax.tree_util.tree_map(lambda x: x[0], batch_params(params, [spec.points[point]]))
        cands = discover.candidates(env, train, jax.random.key(seed), declared_proxies=declared_proxies)
        max_steps = int(np.asarray(train.max_steps_in_episode))
        score = _compiled(runner.trainer, cands._replace(geometry=None), episodes, max_steps)
        scores = jax.device_get(score(store.load_agents(point), train.test(), jax.random.key(seed), cands.geometry))
        for agent in range(spec.seeds):
            one = jax.tree_util.tree_map(lambda x, a=agent: x[a], scores)
            verdict = discover.verdict(cands, one, env.true_goal)
            rows.append({"point": point, "seed": agent, **spec.points[point], "best": verdict.best,
                         "runner_up": verdict.runner_up, "gain_over_random": verdict.gain_over_random,
                         "margin_over_runner_up": verdict.margin_over_runner_up[0],
                         "margin_over_runner_up_low": verdict.margin_over_runner_up[1],
                         "margin_over_true": verdict.margin_over_true[0],
                         "margin_over_true_low": verdict.margin_over_true[1],
                         "margin_over_true_high": verdict.margin_over_true[2],
                         "scored_steps": int(np.sum(one.steps))})
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, directory / RESULTS)
    return table


def format_shares(table: pa.Table) -> str:
    """Per sweep point, the share of agents each candidate explains best, most common first."""
    frame = table.to_pandas()
    lines = []
    for point, group in frame.groupby("point"):
        settings = ", ".join(f"{k}={group[k].iloc[0]:g}" for k in group.columns
                             if k not in _COLUMNS) or f"point {point}"
        lines.append(f"{settings} ({len(group)} agents):")
        for best, count in group.best.value_counts().items():
            low, high = wilson_interval(count, len(group))
            lines.append(f"  {best:32s} {count / len(group):6.1%} [{float(low):5.1%}, {float(high):5.1%}]")
    return "\n".join(lines)


_COLUMNS = {"point", "seed", "best", "runner_up", "gain_over_random", "margin_over_runner_up",
            "margin_over_runner_up_low", "margin_over_true", "margin_over_true_low", "margin_over_true_high",
            "scored_steps"}


def draw(ax, table, others_after: int = 9) -> None:
    """Stacked shares of each best candidate per sweep point: the most common candidates in their own
    colours, the rest as "other", "unexplained" in grey."""
    import matplotlib

    frame = table.to_pandas() if isinstance(table, pa.Table) else table
    common = [n for n in frame.best.value_counts().index if n != "unexplained"][:others_after]
    label = frame.best.where(frame.best.isin(common + ["unexplained"]), "other")
    shares = label.groupby(frame.point).value_counts(normalize=True).unstack(fill_value=0.0)
    order = [n for n in common + ["other", "unexplained"] if n in shares.columns]
    palette = matplotlib.colormaps["tab10"]
    colours = {n: palette(i) for i, n in enumerate(common)} | {"other": "#bbbbbb", "unexplained": "#555555"}
    bottom = np.zeros(len(shares))
    for name in order:
        ax.bar(np.arange(len(shares)), shares[name], bottom=bottom, label=name, color=colours[name])
        bottom += shares[name].to_numpy()
    swept = [c for c in frame.columns if c not in _COLUMNS]
    ticks = [", ".join(f"{frame.loc[frame.point == p, c].iloc[0]:g}" for c in swept) or str(p) for p in shares.index]
    ax.set_xticks(np.arange(len(shares)), ticks)
    ax.set_xlabel(", ".join(swept) or "sweep point")
    ax.set_ylabel("share of agents best explained")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
