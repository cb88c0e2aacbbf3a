"""``gridsim probe DIR``: linear probes on every layer of every agent of a finished sweep
(``agents.probes``), and a warning before deployment: whether anything measured on training levels
alone tells which agents will misgeneralize.

Writes ``DIR/_derived/probe.parquet`` (one row per agent, layer and target: the probe's held-out
accuracy, the base rate and the control task's accuracy; ``probe-test.parquet`` with ``--levels
test``) and ``DIR/_derived/warning.parquet`` (one
row per agent: the predictors, measured on the training levels the oracles do not label
distinguishing, and whether the agent misgeneralizes at test), and prints, per sweep point, the
probes' accuracy by layer and each predictor's AUROC over agents with a bootstrap interval.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from agents import activations, probes
from experiments import memory
from experiments.metrics import auroc, auroc_interval, auroc_test, bootstrap_mean_interval, capable, misgeneralizes
from experiments.report import point_label
from experiments.runner import batch_params, env_point, open_sweep, seed_keys
from experiments.store import Store, atomic_write
from experiments.train import level_seed

RESULTS = "probe"  # the tables' names among the sweep's derived tables (``Store.derived_path``)
TEST_RESULTS = "probe-test"  # the probes on test levels (``--levels test``)
WARNING = "warning"
LEVELS = ("train", "test")
BEHAVIOUR = ("return", "length", "entropy")  # the behavioural baseline's predictors


@functools.lru_cache(maxsize=4)
def _compiled(trainer, episodes: int, max_steps: int, rows: int, ridge: float, warn: bool):
    """``(networks, params, keys) -> ((scores, fitted), warning scores, behaviour, behaviour on every level
    not labelled distinguishing)``, vmapped over agents (each its own levels); without ``warn`` (test
    levels) the last three are None."""
    env = trainer.env

    def one_agent(network, params, key):
        k_play, k_all, k_warn = jax.random.split(key, 3)
        captured = activations.capture(trainer, network, params, k_play, episodes, max_steps)
        everything = probes.probe_capture(env, params, captured, k_all, rows, jnp.ones(episodes, bool), ridge)
        if not warn:
            return everything, None, None, None
        coinciding = probes.coinciding(captured.evaluation)  # what a warning before deployment may look at
        warning = probes.probe_capture(env, params, captured, k_warn, rows, coinciding, ridge)[0]
        return (everything, warning, _behaviour(captured, coinciding),
                _behaviour(captured, ~captured.evaluation.distinguishing))

    return jax.jit(jax.vmap(one_agent))


def _behaviour(captured: activations.Capture, usable) -> jax.Array:
    """``[return, length, entropy]``: the mean episode return and length and the policy's mean
    entropy (nats, over its steps) on the ``usable`` episodes."""
    evaluation = captured.evaluation
    count = jnp.maximum(jnp.sum(usable), 1)
    logp = jax.nn.log_softmax(captured.logits)
    entropy = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    steps = captured.active & usable[None, :]
    return jnp.stack([jnp.sum(jnp.where(usable, evaluation.episode_return, 0)) / count,
                      jnp.sum(jnp.where(usable, evaluation.episode_length, 0)) / count,
                      jnp.sum(jnp.where(steps, entropy, 0)) / jnp.maximum(jnp.sum(steps), 1)])


def sweep_env(directory):
    """The environment of the sweep in ``directory``."""
    return open_sweep(directory)[2].env


def agent_params(spec, params, point: int, levels: str):
    """Each agent's own levels at ``point`` (``levels`` is ``train``, its training levels, or ``test``),
    leaves ``[seeds, ...]``."""
    own = jax.tree_util.tree_map(lambda x: x[0], batch_params(params, [env_point(params, spec.points[point])]))
    if levels == "test":
        own = own.test()
    batch = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (spec.seeds,) + jnp.shape(x)), own)
    return batch.replace(level_seed=jax.vmap(level_seed)(seed_keys(spec))) if levels == "train" else batch


def chunk_size(env, params, episodes: int, max_steps: int, features: int, agents: int, setting: str) -> int:
    """Agents captured at once: as many as half the device holds; refuse when one cannot fit."""
    one = memory.capture_bytes(env, params, episodes, max_steps, features)
    memory.refuse_beyond_device(one, setting, f"capturing {episodes:,} episodes of {max_steps:,} steps with "
                                f"{features:,} activations a step")
    return int(max(1, min(agents, memory.budget() // max(one, 1))))


def check(episodes: int, rows: int, ridge: float) -> None:
    if episodes < 4:
        raise ValueError(f"--episodes must be >= 4 (half fit the probes, half score them), got {episodes}")
    if rows < 2:
        raise ValueError(f"--rows must be >= 2, got {rows}")
    if not ridge > 0:
        raise ValueError(f"--ridge must be > 0, got {ridge}")


def run(directory, episodes: int = 512, rows: int = 1024, ridge: float = probes.RIDGE, levels: str = "train",
        seed: int = 0) -> tuple[pa.Table, pa.Table | None]:
    """Probe every agent of the sweep in ``directory``; write and return the tables (the warning's
    only on training levels: on test levels it would look at what it is to predict)."""
    check(episodes, rows, ridge)
    if levels not in LEVELS:
        raise ValueError(f"--levels is train or test, got {levels!r}")
    store, spec, runner, params = open_sweep(directory)
    points = store.finished_points("probe")
    env, trainer = runner.env, runner.trainer
    sizes = activations.layer_sizes(trainer, params)
    max_steps = int(np.asarray(params.max_steps_in_episode))
    chunk = chunk_size(env, params, episodes, max_steps, sum(sizes.values()), spec.seeds, "--episodes")
    program = _compiled(trainer, episodes, max_steps, rows, float(ridge), levels == "train")
    targets = list(probes.target_classes(env))
    import pandas as pd

    rows_out, warn_rows = [], []
    for point in points:
        batch = agent_params(spec, params, point, levels)
        keys = jax.random.split(jax.random.key(seed), spec.seeds)
        (scores, fitted), warn, behaviour, loose = memory.in_chunks(lambda both: program(*both), chunk,
                                                                    (store.load_agents(point), batch, keys))
        table = pd.read_parquet(store.point_path(point))
        for agent in range(spec.seeds):
            for k, layer in enumerate(sizes):
                for t, target in enumerate(targets):
                    rows_out.append({"point": point, "seed": agent, **spec.points[point], "levels": levels,
                                     "layer": layer, "features": sizes[layer], "target": target,
                                     "accuracy": float(scores.accuracy[agent, k, t]),
                                     "control": float(scores.control[agent, k, t]),
                                     "base_rate": float(scores.base_rate[agent, k, t]),
                                     "fitted_rows": int(fitted[agent])})
            if levels == "train":
                warn_rows.append(_warning_row(spec, point, agent, table, sizes, targets, warn, behaviour, loose))
    probe_table = pa.Table.from_pylist(rows_out)
    warning_table = pa.Table.from_pylist(warn_rows) if warn_rows else None
    store.derived_path(RESULTS).parent.mkdir(exist_ok=True)
    name = RESULTS if levels == "train" else TEST_RESULTS
    if warning_table is not None:
        atomic_write(store.derived_path(WARNING), lambda path: pq.write_table(warning_table, path))
    atomic_write(store.derived_path(name), lambda path: pq.write_table(probe_table, path))
    return probe_table, warning_table


def _warning_row(spec, point: int, agent: int, table, sizes: dict, targets: list, warn, behaviour, loose) -> dict:
    """One agent's predictors (training levels only: those where the goals coincide, and for the
    behaviour also all those not labelled distinguishing) and what happened at test."""
    row = table[table.seed == agent].iloc[0]
    able = bool(capable(row.train_success, row.diverged))
    rate = float(row.misgeneralization_rate)
    out = {"point": point, "seed": agent, **spec.points[point], "capable": able, "misgeneralization_rate": rate,
           "misgeneralizes": bool(misgeneralizes(rate)) if able and np.isfinite(rate) else None}
    out.update({f"behaviour:{name}": float(behaviour[agent, i]) for i, name in enumerate(BEHAVIOUR)})
    out.update({f"undistinguished:{name}": float(loose[agent, i]) for i, name in enumerate(BEHAVIOUR)})
    for k, layer in enumerate(sizes):
        for t, target in enumerate(targets):
            out[f"selectivity:{layer}:{target}"] = float(warn.selectivity[agent, k, t])
    return out


def predictors(env, warning) -> list[str]:
    """The warning's declared predictors, in order: the behavioural baseline on levels where the goals
    coincide, then, for every layer, the selectivity there of the probe for where the true goal is
    (``where_target``: what an agent that pursues it must know), then the behaviour on every level not
    labelled distinguishing. The table holds every layer and target; these are the ones reported."""
    inside = [c for c in warning.columns
              if c.startswith("selectivity:") and c.endswith(f":{where_target(env, env.true_goal)}")]
    return ([f"behaviour:{name}" for name in BEHAVIOUR] + inside
            + [f"undistinguished:{name}" for name in BEHAVIOUR])


def summarize_warning(env, warning) -> list[dict]:
    """Per point and predictor, the AUROC over agents (misgeneralizing ones positive; above 0.5 when a
    higher value warns) with a bootstrap interval; only points where agents split."""
    out = []
    for point, rows in warning.groupby("point", sort=True):
        known = rows[rows.misgeneralizes.notna()]
        labels = known.misgeneralizes.astype(bool).to_numpy()
        for name in predictors(env, warning):
            scores = known[name].to_numpy(float)
            low, high = auroc_interval(scores, labels)
            value, p = auroc_test(scores, labels)
            out.append({"point": point, "predictor": name, "agents": len(known), "misgeneralize": int(labels.sum()),
                        "auroc": value, "low": low, "high": high, "p": p})
    return out


def summarize(table) -> list[dict]:
    """Per point, layer and target: the mean held-out accuracy over agents with a bootstrap interval,
    and the mean base rate and control accuracy."""
    out = []
    for (point, layer, target), rows in table.groupby(["point", "layer", "target"], sort=False):
        low, high = bootstrap_mean_interval(rows.accuracy)
        out.append({"point": point, "layer": layer, "target": target, "accuracy": rows.accuracy.mean(),
                    "low": low, "high": high, "base_rate": rows.base_rate.mean(), "control": rows.control.mean()})
    return out


def where_target(env, goal: str) -> str:
    """The probe target for where ``goal`` is, as the agent sees it: its cell relative to the agent
    under an egocentric view, its cell in the grid under a full one (each a linear read of the view)."""
    return f"{'offset' if env.observation == 'egocentric' else 'cell'}:{goal}"


def shown_targets(env) -> list[str]:
    """The targets the report prints: where each goal is (``where_target``), its oracle's move, and how
    the episode ends (the table holds every target)."""
    return ([where_target(env, goal) for goal in env.goal_names] + [f"move:{goal}" for goal in env.goal_names]
            + ["outcome"])


def _point_label(rows) -> str:
    """The sweep point of ``rows`` (one point's rows of the probe or warning table)."""
    settings = [c for c in rows.columns if c not in _NOT_SETTINGS and ":" not in c]
    return point_label({c: rows[c].iloc[0] for c in settings}, int(rows.point.iloc[0]))


_NOT_SETTINGS = {"point", "seed", "levels", "layer", "features", "target", "accuracy", "control", "base_rate",
                 "fitted_rows", "capable", "misgeneralization_rate", "misgeneralizes"}


def format_summary(env, table, warning=None) -> str:
    """The probes' accuracy by layer for the shown targets, per point, and the warning's AUROCs."""
    import pandas as pd

    table = table.to_pandas() if hasattr(table, "to_pandas") else table
    summary = pd.DataFrame(summarize(table))
    shown = [t for t in shown_targets(env) if t in set(table.target)]
    levels = table.levels.iloc[0]
    held_out = "held-out levels of the training distribution" if levels == "train" else "held-out test levels"
    lines = [f"Linear probes on {'training' if levels == 'train' else 'test'} levels ({held_out}): "
             "accuracy %, mean over agents [95% bootstrap interval]; 'control' is the mean accuracy on the "
             "control task (labels a random function of the observation); selectivity is the difference."]
    for point, rows in table.groupby("point", sort=True):
        lines.append(f"\n{_point_label(rows)} ({rows.seed.nunique()} agents)")
        here = summary[summary.point == point].set_index(["layer", "target"])
        width = 18
        lines.append("  " + "layer".ljust(9) + "".join(t.rjust(width) for t in shown))
        for layer in dict.fromkeys(rows.layer):
            cells = [here.loc[(layer, t)] for t in shown]
            lines.append("  " + layer.ljust(9) + "".join(
                f"{100 * c.accuracy:.0f} [{100 * c.low:.0f}, {100 * c.high:.0f}]".rjust(width) for c in cells))
        first = next(iter(dict.fromkeys(rows.layer)))
        lines.append("  " + "base rate".ljust(9) + "".join(f"{100 * here.loc[(first, t)].base_rate:.0f}".rjust(width)
                                                          for t in shown))
        best = {t: here.xs(t, level="target").assign(sel=lambda f: f.accuracy - f.control).sel.idxmax() for t in shown}
        lines.append("  " + "selective".ljust(9) + "".join(
            f"{best[t]} {100 * (here.loc[(best[t], t)].accuracy - here.loc[(best[t], t)].control):+.0f}".rjust(width)
            for t in shown) + "   (the most selective layer, accuracy - control)")
    if warning is not None:
        lines.append("\n" + format_warning(env, warning))
    return "\n".join(lines)


def format_warning(env, warning) -> str:
    """Each declared predictor's AUROC per point where capable agents split."""
    import pandas as pd

    warning = warning.to_pandas() if hasattr(warning, "to_pandas") else warning
    lines = ["A warning before deployment: AUROC over capable agents of each predictor for misgeneralizing at test "
             "[95% bootstrap interval] and the two-sided Mann-Whitney p-value; 0.5 is no warning, 1 a perfect one "
             "where a higher value warns, 0 where a "
             "lower one does. behaviour: and selectivity: are measured on training levels where every goal's oracle "
             "reaches the true goal first (the goals coincide); undistinguished: on every training level the "
             "oracles do not label distinguishing."]
    summary = pd.DataFrame(summarize_warning(env, warning))
    for point, rows in summary.groupby("point", sort=True):
        label = _point_label(warning[warning.point == point])
        first = rows.iloc[0]
        if first.misgeneralize in (0, first.agents):
            lines.append(f"  {label}: {first.misgeneralize} of {first.agents} capable agents misgeneralize: "
                         "they do not split, no AUROC")
            continue
        lines.append(f"  {label}: {first.misgeneralize} of {first.agents} capable agents misgeneralize")
        for row in rows.itertuples():
            lines.append(f"    {row.predictor.ljust(36)} {row.auroc:.2f} [{row.low:.2f}, {row.high:.2f}]  p={row.p:.2g}"
                         + ("  (lower warns)" if row.auroc < 0.5 else ""))
    return "\n".join(lines)


def layers_figure(env, table):
    """Per sweep point, each shown target's held-out accuracy by layer (mean over agents, 95% bootstrap
    interval), its base rate dashed."""
    import pandas as pd

    from experiments.plots import _pyplot

    table = table.to_pandas() if hasattr(table, "to_pandas") else table
    summary = pd.DataFrame(summarize(table))
    points = sorted(set(table.point))
    shown = [t for t in shown_targets(env) if t in set(table.target)]
    fig, axes = _pyplot().subplots(1, len(points), figsize=(2.6 * len(points) + 1.5, 3.2), sharey=True, squeeze=False)
    layers = list(dict.fromkeys(table.layer))
    x = np.arange(len(layers))
    for ax, point in zip(axes[0], points, strict=True):
        here = summary[summary.point == point]
        for k, target in enumerate(shown):
            rows = here[here.target == target].set_index("layer").loc[layers]
            colour = f"C{k}"
            ax.errorbar(x, rows.accuracy, yerr=[rows.accuracy - rows.low, rows.high - rows.accuracy], color=colour,
                        marker="o", ms=3, capsize=2, lw=1, label=target)
            ax.axhline(rows.base_rate.iloc[0], color=colour, ls="--", lw=0.7)
        ax.set_xticks(x, layers, rotation=60, fontsize=7)
        ax.set_title(_point_label(table[table.point == point]), fontsize=8)
        ax.set_ylim(0, 1.02)
    axes[0][0].set_ylabel(f"held-out probe accuracy ({table.levels.iloc[0]} levels)")
    axes[0][-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), title="dashed: base rate",
                       title_fontsize=6)
    return fig


def _roc(scores, labels):
    """(false positive rates, true positive rates) as the threshold falls through ``scores``."""
    order = np.argsort(-scores, kind="stable")
    labels = labels[order]
    tpr = np.concatenate([[0], np.cumsum(labels) / max(labels.sum(), 1)])
    fpr = np.concatenate([[0], np.cumsum(~labels) / max((~labels).sum(), 1)])
    return fpr, tpr


def roc_figure(env, warning):
    """Per sweep point where capable agents split, each declared predictor's ROC over agents (as
    measured: a curve below the diagonal warns by lower values); behaviour solid, probes dotted, the
    behaviour on every undistinguished level dashed."""
    from experiments.plots import _pyplot

    warning = warning.to_pandas() if hasattr(warning, "to_pandas") else warning
    known = warning[warning.misgeneralizes.notna()]
    split = [p for p, rows in known.groupby("point") if 0 < rows.misgeneralizes.astype(bool).sum() < len(rows)]
    fig, axes = _pyplot().subplots(1, max(len(split), 1), figsize=(3.4 * max(len(split), 1) + 2, 3.2), squeeze=False)
    for ax, point in zip(axes[0], split, strict=False):
        rows = known[known.point == point]
        labels = rows.misgeneralizes.astype(bool).to_numpy()
        for k, name in enumerate(predictors(env, warning)):
            scores = rows[name].to_numpy(float)
            style = {"behaviour": "-", "selectivity": ":", "undistinguished": "--"}[name.split(":")[0]]
            ax.plot(*_roc(scores, labels), style, color=f"C{k % 10}", lw=1,
                    label=f"{name.replace(':' + where_target(env, env.true_goal), '')} {auroc(scores, labels):.2f}")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
        ax.set_title(f"{_point_label(rows)}: {labels.sum()} of {len(labels)} misgeneralize", fontsize=8)
        ax.set_xlabel("false positive rate")
        ax.legend(fontsize=5, loc="lower right", title="AUROC", title_fontsize=5)
    if not split:
        axes[0][0].text(0.5, 0.5, "no sweep point where agents split", ha="center", va="center")
    axes[0][0].set_ylabel("true positive rate (misgeneralizing agents)")
    return fig


def figures(directory, save) -> None:
    """Draw the probes' figures with ``save(fig, stem)`` (``gridsim plot``'s)."""
    import pandas as pd

    store = Store(directory)
    env = sweep_env(directory)
    for name in (RESULTS, TEST_RESULTS):
        if store.derived_path(name).exists():
            save(layers_figure(env, pd.read_parquet(store.derived_path(name))), f"{name}-layers")
    if store.derived_path(WARNING).exists():
        save(roc_figure(env, pd.read_parquet(store.derived_path(WARNING))), "warning-roc")
