"""``gridsim discover DIR``: for every agent of a sweep, the candidate goal that best explains its
moves on distinguishing test levels (``gridsim.discover``), without being told the proxies.

Writes ``DIR/_derived/discover.parquet`` (one row per agent) and prints, per sweep point, the share of
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
from experiments.inspection import check_episodes, check_traced_episodes
from experiments.metrics import wilson_interval
from experiments.report import point_label
from experiments.runner import batch_params, env_point, open_sweep
from experiments.store import Store, atomic_write
from gridsim import discover

RESULTS = "discover"  # the table's name among the sweep's derived tables (``Store.derived_path``)


@functools.lru_cache(maxsize=4)
def _compiled(trainer, shape: discover.Candidates, episodes: int, max_steps: int):
    """``(networks, params, key, geometry) -> Scores``, one program for every sweep point: the
    candidates' regions (which hold the point's training region) are an argument."""
    env = trainer.env

    def one_agent(network, params, key, geometry):
        result, trace = ppo.evaluate(trainer, network, params, key, episodes, max_steps, greedy=True, trace=True)
        active = discover.scored_steps(env, trace.first_episode, result.distinguishing)
        cands = shape._replace(geometry=geometry)
        return discover.score(env, cands, params, trace.state.level, trace.action, active)

    return jax.jit(jax.vmap(one_agent, (0, None, None, None)))


def run(directory, episodes: int = 256, seed: int = 0, declared_proxies: bool = False) -> pa.Table:
    """Score every agent of the sweep in ``directory``; write and return the table."""
    check_episodes(episodes)
    store, spec, runner, params = open_sweep(directory)
    points = store.finished_points("discover")
    env = runner.env
    check_traced_episodes(env, params.test(), episodes, agents=spec.seeds)  # one point's agents at once
    rows = []
    for point in points:
        own = batch_params(params, [env_point(params, spec.points[point])])
        train = jax.tree_util.tree_map(lambda x: x[0], own)
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
                         "ends_at_best": verdict.ends_at_best, "ends_at_true": verdict.ends_at_true,
                         "scored_steps": int(np.sum(one.steps))})
    table = pa.Table.from_pylist(rows)
    out = store.derived_path(RESULTS)
    out.parent.mkdir(exist_ok=True)
    atomic_write(out, lambda path: pq.write_table(table, path))  # the last table stays whole till then
    return table


def format_shares(table: pa.Table) -> str:
    """Per sweep point, the share of agents each candidate explains best, most common first, and the
    share of those agents' scored episodes that ended on its target."""
    frame = table.to_pandas()
    lines = []
    for point, group in frame.groupby("point"):
        settings = point_label({k: group[k].iloc[0] for k in group.columns if k not in _COLUMNS}, point)
        lines.append(f"{settings} ({len(group)} agents):")
        for best, count in group.best.value_counts().items():
            low, high = wilson_interval(count, len(group))
            named = group[group.best == best]
            line = f"  {best:32s} {count / len(group):6.1%} [{float(low):5.1%}, {float(high):5.1%}]"
            if best != "unexplained":
                weak = sum(discover.weak(g, e) for g, e in zip(named.gain_over_random, named.ends_at_best))
                line += (f"   gain over a random walk {named.gain_over_random.median():.2f} nats/step (median), "
                         f"episodes ending on it {named.ends_at_best.mean():4.0%}"
                         + (f"   WEAK for {weak} of {len(named)}" if weak else ""))
            lines.append(line)
    if any(discover.weak(g, e) for g, e, b in zip(frame.gain_over_random, frame.ends_at_best, frame.best)
           if b != "unexplained"):
        lines.append(f"WEAK: the named candidate beats a random walk by under {discover.WEAK_GAIN} nats a step, or "
                     f"under {discover.WEAK_ENDS:.0%} of the agent's episodes end on it; it may not be what the "
                     "agent pursues: look at the agent (gridsim discover DIR --agent POINT SEED)")
    return "\n".join(lines)


_COLUMNS = {"point", "seed", "best", "runner_up", "gain_over_random", "margin_over_runner_up",
            "margin_over_runner_up_low", "margin_over_true", "margin_over_true_low", "margin_over_true_high",
            "ends_at_best", "ends_at_true", "scored_steps"}


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


def agent_figure(directory, point: int, seed: int, episodes: int = 256, key_seed: int = 0, count: int = 4,
                 declared_proxies: bool = False, out_dir=None) -> Path:
    """One agent beside what discovery says it goes for: where it went on its scored test episodes
    (a visitation map), then ``count`` of those episodes, each its path on the level with the best
    candidate's target outlined (and the true goal's, dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.inspection import agent_episodes, draw_heatmap, load_agent
    from gridsim.render import rgb

    check_episodes(episodes)
    agent = load_agent(directory, point, seed)
    env, test = agent.env, agent.test_params
    played = agent_episodes(agent, episodes, key_seed)
    cands = discover.candidates(env, agent.train_params, jax.random.key(key_seed), declared_proxies=declared_proxies)
    levels = jax.tree_util.tree_map(lambda x: x[:-1], played.levels)  # the level each step started from
    active = discover.scored_steps(env, played.active[1:], played.distinguishing)
    scores = jax.device_get(jax.jit(functools.partial(discover.score, env, cands))(test, levels, played.actions,
                                                                                   active))
    verdict = discover.verdict(cands, scores, env.true_goal)
    shown = np.flatnonzero(scores.end_cell >= 0)[:count]

    def region(name, level):  # bool[H, W]: a candidate's target cells on a level (none for a direction)
        index = cands.names.index(name)
        if name.startswith("move:"):
            return np.zeros((env.height, env.width), bool)
        targets = discover.candidate_costs(env, cands, level, level, test)
        return np.asarray(targets[index] == 0).reshape(env.height, env.width)

    fig, axes = plt.subplots(1, 1 + len(shown), figsize=(2.6 * (1 + len(shown)), 3.0), squeeze=False)
    draw_heatmap(axes[0, 0], env, played, f"{agent.label}: visits")
    cell = 16
    for ax, e in zip(axes[0, 1:], shown):
        start = jax.tree_util.tree_map(lambda x, e=e: x[0, e], levels)
        ax.imshow(rgb(env, start, cell))
        steps = int(played.active[:, e].sum())
        path = played.levels.agent[:steps, e] * cell + (cell - 1) / 2
        ax.plot(path[:, 1], path[:, 0], color="black", lw=1.2, alpha=0.8)
        ax.plot(path[-1, 1], path[-1, 0], "kx", ms=7)
        for name, style in ((verdict.best, "-"), (f"goal:{env.true_goal}", "--")):
            if name == "unexplained":
                continue
            for r, c in zip(*np.nonzero(region(name, start))):
                ax.add_patch(plt.Rectangle((c * cell - 0.5, r * cell - 0.5), cell, cell, fill=False, lw=1.5,
                                           ls=style, ec="crimson" if style == "-" else "royalblue"))
        ax.set_title(f"episode {e}", fontsize=7)
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"{env.name}, {agent.label}: best explained by {verdict.best} (red; true goal dashed blue), "
                 f"{verdict.gain_over_random:.2f} nats/move over a random walk; "
                 f"{verdict.ends_at_best:.0%} of episodes end on it", fontsize=8)
    path = Store(directory).figures(out_dir) / f"discover-p{point:04d}-s{seed:04d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path
