"""``gridsim steer DIR``: for every agent of a finished sweep, a goal vector built from its training
levels alone (``agents.activations.goal_vector``), added at one layer at several scales, and how the
agent's outcomes on distinguishing test levels move, beside a random direction of the same length.

Writes ``DIR/_derived/steer.parquet`` (one row per agent, direction and scale: the outcome shares on
the test levels the oracles label distinguishing) and prints, per sweep point and scale, the mean
shares and the share of misgeneralizing agents the vector turns to the true goal, with Wilson intervals.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import gridsim
from agents import activations
from experiments import memory
from experiments.metrics import capable, misgeneralizes, rate, wilson_interval
from experiments.probe import agent_params
from experiments.report import point_label
from experiments.runner import open_sweep
from experiments.store import Store, atomic_write

RESULTS = "steer"  # the table's name among the sweep's derived tables (``Store.derived_path``)
SCALES = (1.0, 4.0, 16.0, 64.0)  # multiples of the goal vector (the difference of two means)
DIRECTIONS = ("goal", "random")  # the goal vector, and a random direction of the same length
CHUNK = 256  # training episodes captured at once while averaging a goal vector
TURNED = 0.5  # a misgeneralizing agent is turned when it reaches the true goal first on more than this share


def default_layer(sizes: dict) -> str:
    """The first layer of the policy's own path (gridsim's ``actor1``), else the first after the input."""
    return "actor1" if "actor1" in sizes else [name for name in sizes if name != activations.OBS][0]


@functools.lru_cache(maxsize=4)
def _compiled(trainer, layer: str, scales: tuple, vector_episodes: int, episodes: int, max_steps: int):
    """``(networks, train params, test params, keys) -> (GoalVector, outcome counts [directions, scales,
    outcomes], distinguishing [directions, scales])``, vmapped over agents (each its own levels)."""
    env = trainer.env
    outcomes = len(env.outcome_names)

    def one_agent(network, train, test, key):
        k_vector, k_random, k_test = jax.random.split(key, 3)
        found = activations.goal_vector(trainer, network, train, k_vector, layer, vector_episodes, max_steps, CHUNK)
        defined = jnp.all(jnp.isfinite(found.vector))
        goal = jnp.where(defined, found.vector, 0.0)
        direction = jax.random.normal(k_random, goal.shape)
        random = direction / jnp.linalg.norm(direction) * jnp.linalg.norm(goal)

        def shares(vector, scale):  # the same test levels (k_test) for every vector and scale: paired
            policy = activations.steered_policy(trainer, network, {layer: scale * vector})
            result = gridsim.evaluate(env, test, policy, k_test, episodes, max_steps)
            counted = result.distinguishing & result.finished
            return jnp.sum(jax.nn.one_hot(result.outcome, outcomes) * counted[:, None], axis=0), jnp.sum(counted)

        per_scale = jax.vmap(shares, (None, 0))
        counts, distinguishing = jax.vmap(per_scale, (0, None))(jnp.stack([goal, random]), jnp.asarray(scales))
        return found, counts, distinguishing

    return jax.jit(jax.vmap(one_agent))


def check(layer: str | None, sizes: dict, scales, vector_episodes: int, episodes: int) -> str:
    """The layer to steer; ValueError naming the bad argument otherwise."""
    layer = default_layer(sizes) if layer is None else layer
    steerable = [name for name in sizes if name != activations.OBS]
    if layer not in steerable:
        raise ValueError(f"--layer {layer}: not a layer of this sweep's network (its layers: {', '.join(steerable)})")
    if not scales or any(not np.isfinite(s) for s in scales):
        raise ValueError(f"--scales must be finite numbers, got {','.join(map(str, scales)) or 'none'}")
    if vector_episodes < CHUNK:
        raise ValueError(f"--vector-episodes must be >= {CHUNK} (they are played {CHUNK} at a time), "
                         f"got {vector_episodes}")
    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    return layer


def run(directory, layer: str | None = None, scales=SCALES, vector_episodes: int = 4096, episodes: int = 256,
        seed: int = 0) -> pa.Table:
    """Steer every agent of the sweep in ``directory``; write and return the table."""
    store, spec, runner, params = open_sweep(directory)
    env, trainer = runner.env, runner.trainer
    sizes = activations.layer_sizes(trainer, params)
    layer = check(layer, sizes, tuple(scales), vector_episodes, episodes)
    if not env.proxies:
        raise ValueError(f"{env.name} declares no proxy: no level is distinguishing, so there is nothing to steer "
                         "toward or away from")
    points = store.finished_points("steer")
    scales = (0.0,) + tuple(float(s) for s in scales)  # 0: the agent as trained, on the same levels
    max_steps = int(np.asarray(params.max_steps_in_episode))
    one = memory.capture_bytes(env, params, CHUNK, max_steps, sum(sizes.values()))
    steered = len(DIRECTIONS) * len(scales) * memory.evaluation_bytes(env, params.test(), episodes, max_steps, False)
    memory.refuse_beyond_device(one + steered, "--episodes", f"steering one agent at {len(scales)} scales")
    chunk = int(max(1, min(spec.seeds, memory.budget() // (one + steered))))
    program = _compiled(trainer, layer, scales, vector_episodes, episodes, max_steps)
    import pandas as pd

    rows = []
    for point in points:
        train, test = agent_params(spec, params, point, "train"), agent_params(spec, params, point, "test")
        keys = jax.random.split(jax.random.key(seed), spec.seeds)
        found, counts, distinguishing = memory.in_chunks(lambda batch: program(*batch), chunk,
                                                         (store.load_agents(point), train, test, keys))
        table = pd.read_parquet(store.point_path(point))
        for agent in range(spec.seeds):
            sweep_row = table[table.seed == agent].iloc[0]
            able = bool(capable(sweep_row.train_success, sweep_row.diverged))
            rate_at_test = float(sweep_row.misgeneralization_rate)
            defined = bool(np.all(np.isfinite(found.vector[agent])))
            for d, direction in enumerate(DIRECTIONS):
                for s, scale in enumerate(scales):
                    shares = rate(counts[agent, d, s], distinguishing[agent, d, s])
                    rows.append({"point": point, "seed": agent, **spec.points[point], "layer": layer,
                                 "direction": direction, "scale": scale, "vector_defined": defined,
                                 "vector_norm": float(np.linalg.norm(found.vector[agent])) if defined else None,
                                 "apart_steps": int(found.apart[agent]), "together_steps": int(found.together[agent]),
                                 "capable": able, "misgeneralizes": bool(misgeneralizes(rate_at_test))
                                 if able and np.isfinite(rate_at_test) else None,
                                 "distinguishing_episodes": int(distinguishing[agent, d, s]),
                                 **{f"share_{name}": float(shares[o]) if defined else None
                                    for o, name in enumerate(env.outcome_names)}})
    out = pa.Table.from_pylist(rows)
    store.derived_path(RESULTS).parent.mkdir(exist_ok=True)
    atomic_write(store.derived_path(RESULTS), lambda path: pq.write_table(out, path))
    return out


def summarize(table) -> list[dict]:
    """Per point, direction and scale: the mean outcome shares over agents with a vector, and how many
    of the misgeneralizing ones reach the true goal first on more than ``TURNED`` of the levels."""
    frame = table.to_pandas() if hasattr(table, "to_pandas") else table
    frame = frame[frame.vector_defined]
    shares = [c for c in frame.columns if c.startswith("share_")]
    out = []
    for (point, direction, scale), rows in frame.groupby(["point", "direction", "scale"], sort=True):
        bad = rows[rows.misgeneralizes.fillna(False).astype(bool)]
        turned = int((bad.share_true > TURNED).sum())
        low, high = wilson_interval(turned, len(bad))
        out.append({"point": point, "direction": direction, "scale": scale, "agents": len(rows),
                    **{c: rows[c].mean() for c in shares}, "misgeneralizing": len(bad), "turned": turned,
                    "turned_low": float(low), "turned_high": float(high)})
    return out


def format_summary(table) -> str:
    import pandas as pd

    frame = table.to_pandas() if hasattr(table, "to_pandas") else table
    summary = pd.DataFrame(summarize(frame))
    shares = [c for c in summary.columns if c.startswith("share_")]
    layer = frame.layer.iloc[0]
    lines = [f"Steering at {layer}: a goal vector from each agent's training levels (mean activation where the "
             "true goal lies apart from every proxy's target minus where it lies on one) times a scale, beside a "
             "random direction of its length. "
             "Outcome shares on the test levels the oracles label distinguishing, mean over agents; 'turned': "
             f"misgeneralizing agents that then reach the true goal first on more than {TURNED:.0%} of them "
             "[95% Wilson interval]."]
    for point, here in frame.groupby("point", sort=True):
        label = _point_label(here)
        agents = here.drop_duplicates("seed")
        missing = int((~agents.vector_defined).sum())
        lines.append(f"\n{label}: {len(agents) - missing} agents with a vector"
                     + (f" ({missing} without: no training level puts the true goal apart from the proxies' "
                        "targets, or none on one)" if missing else ""))
        rows = summary[summary.point == point] if len(summary) else summary
        if not len(rows):
            continue
        lines.append("  direction  scale" + "".join(c.removeprefix("share_").rjust(13) for c in shares) + "   turned")
        for _, row in rows.iterrows():
            cells = "".join(f"{100 * row[c]:12.0f}%" for c in shares)
            interval = f"[{100 * row.turned_low:.0f}, {100 * row.turned_high:.0f}]"
            turned = (f"{row.turned:.0f}/{row.misgeneralizing:.0f} {interval}" if row.misgeneralizing
                      else "none misgeneralize")
            lines.append(f"  {row.direction:<9} {row.scale:>5g}{cells}   {turned}")
    return "\n".join(lines)


def _point_label(rows) -> str:
    """The sweep point of ``rows`` (one point's rows of the steering table)."""
    settings = [c for c in rows.columns if c not in _NOT_SETTINGS and not c.startswith("share_")]
    return point_label({c: rows[c].iloc[0] for c in settings}, int(rows.point.iloc[0]))


_NOT_SETTINGS = {"point", "seed", "layer", "direction", "scale", "vector_defined", "vector_norm", "apart_steps",
                 "together_steps", "capable", "misgeneralizes", "distinguishing_episodes"}


def shares_figure(table):
    """Per sweep point, the mean shares of true goal and proxies on distinguishing test levels against
    the scale, for the goal vector (solid) and the random direction (dashed)."""
    import pandas as pd

    from experiments.plots import _pyplot

    frame = table.to_pandas() if hasattr(table, "to_pandas") else table
    summary = pd.DataFrame(summarize(frame))
    points = sorted(set(summary.point)) if len(summary) else []
    fig, axes = _pyplot().subplots(1, max(len(points), 1), figsize=(2.8 * max(len(points), 1) + 1.5, 3.0),
                                   sharey=True, squeeze=False)
    shares = [c for c in frame.columns if c.startswith("share_") and c != "share_fail"]
    for ax, point in zip(axes[0], points, strict=False):
        here = summary[summary.point == point]
        scales = sorted(set(here.scale))
        x = np.arange(len(scales))
        for k, column in enumerate(shares):
            for direction, style in zip(DIRECTIONS, ("-", "--"), strict=True):
                rows = here[here.direction == direction].set_index("scale").loc[scales]
                ax.plot(x, rows[column], style, marker="o", ms=3, color=f"C{k}", lw=1,
                        label=f"{column.removeprefix('share_')} ({direction})")
        ax.set_title(_point_label(frame[frame.point == point]), fontsize=8)
        ax.set_xticks(x, [f"{s:g}" for s in scales])
        ax.set_xlabel(f"scale of the vector at {frame.layer.iloc[0]}")
        ax.set_ylim(0, 1.02)
    axes[0][0].set_ylabel("share of distinguishing test levels")
    axes[0][-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def figures(directory, save) -> None:
    """Draw the steering figure with ``save(fig, stem)`` (``gridsim plot``'s)."""
    import pandas as pd

    save(shares_figure(pd.read_parquet(Store(directory).derived_path(RESULTS))), "steer")
