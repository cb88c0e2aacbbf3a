"""Figures of a sweep: rate against the swept param, outcome shares, training curves, per-seed
distributions, and where representative agents go. Figures go to ``<sweep>/_figures`` (or anywhere
but the sweep directory itself, where results are read)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from experiments.report import load, measure_columns, outcome_columns, point_label, summarize
from experiments.store import Store


def _log_like(values: np.ndarray) -> bool:
    """Values spanning orders of magnitude (e.g. alpha = 0, 0.001, ..., 0.1) read better on a symlog axis."""
    positive = values[values > 0]
    return positive.size >= 2 and positive.max() / positive.min() >= 20


def representative_seeds(table: pd.DataFrame) -> dict[int, int]:
    """Per point, the capable seed whose misgeneralization rate is nearest the point's median (else seed 0)."""
    chosen = {}
    for point, group in table.groupby("point"):
        capable = group[group.capable & np.isfinite(group.misgeneralization_rate)]
        if len(capable):
            distance = (capable.misgeneralization_rate - capable.misgeneralization_rate.median()).abs()
            chosen[int(point)] = int(capable.seed.loc[distance.idxmin()])
        else:
            chosen[int(point)] = 0
    return chosen


class Sweep(NamedTuple):
    """What every figure reads: the results, the per-point summary, and the x axis (the first swept param)."""

    directory: Path
    table: pd.DataFrame
    summary: pd.DataFrame
    swept: list[str]
    manifest: dict
    x_name: str
    xs: np.ndarray

    @property
    def capable(self) -> pd.DataFrame:
        return self.table[self.table.capable]


def load_sweep(directory, all_seeds: bool = False) -> Sweep:
    """A sweep's results and summary (``all_seeds``: rates over every seed, capable or not)."""
    table, swept, manifest = load(directory)
    summary = summarize(table, swept, all_seeds)
    x_name = swept[0] if swept else "point"
    return Sweep(Path(directory), table, summary, swept, manifest, x_name, summary[x_name].to_numpy(dtype=float))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def misgeneralization_figure(sweep: Sweep):
    """The rate against the first swept param: the mean over capable seeds, its interval, and each seed."""
    fig, ax = _pyplot().subplots(figsize=(5.5, 3.6))
    summary, xs, x_name = sweep.summary, sweep.xs, sweep.x_name
    low = np.array([ci[0] for ci in summary.misgeneralization_ci])
    high = np.array([ci[1] for ci in summary.misgeneralization_ci])
    ax.fill_between(xs, low, high, alpha=0.25, color="crimson", label="95% interval for the mean over seeds")
    ax.plot(xs, summary.misgeneralization, "o-", color="crimson", label="mean over capable seeds")
    capable = sweep.capable
    spread = np.random.default_rng(0).random(len(capable)) - 0.5
    seed_xs = capable[x_name].to_numpy(float)
    if _log_like(xs):
        linthresh = float(xs[xs > 0].min())
        ax.set_xscale("symlog", linthresh=linthresh)
        ax.set_xlim(-0.5 * linthresh, xs.max() * 1.5)
        seed_xs = np.where(seed_xs > 0, seed_xs * 10 ** (0.1 * spread), np.abs(spread) * 0.3 * linthresh)
    else:
        seed_xs = seed_xs + spread * 0.02 * (np.ptp(xs) or 1)
    ax.scatter(seed_xs, capable.misgeneralization_rate, s=9, color="k", alpha=0.4, label="one seed", zorder=3)
    ax.set_xlabel(x_name)
    ax.set_ylabel("misgeneralization rate\n(proxy outcomes, distinguishing test levels)")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(f"{sweep.manifest['env']}: {int(summary.seeds.iloc[0])} seeds per point", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    return fig


def outcomes_figure(sweep: Sweep):
    """Each point's distinguishing test episodes by outcome, pooled over capable seeds."""
    fig, ax = _pyplot().subplots(figsize=(5.5, 3.6))
    columns = outcome_columns(sweep.table)
    # points without a capable seed keep an empty bar rather than shifting the others
    pooled = sweep.capable.groupby("point")[columns].sum().reindex(sweep.summary.point, fill_value=0)
    fractions = pooled.div(pooled.sum(axis=1).clip(lower=1), axis=0)
    bottom = np.zeros(len(fractions))
    labels = [f"{v:g}" for v in sweep.xs]
    for column in columns:
        ax.bar(labels, fractions[column], bottom=bottom, label=column.removeprefix("test_"))
        bottom += fractions[column].to_numpy()
    ax.set_xlabel(sweep.x_name)
    ax.set_ylabel("fraction of distinguishing test episodes")
    ax.legend(fontsize=7)
    return fig


def measure_figure(sweep: Sweep, column: str):
    """One of the environment's own measures against the first swept param."""
    fig, ax = _pyplot().subplots(figsize=(5.5, 3.6))
    summary, xs = sweep.summary, sweep.xs
    interval = np.array(summary[f"{column}_ci"].tolist(), dtype=float)
    ax.fill_between(xs, interval[:, 0], interval[:, 1], color="teal", alpha=0.2, label="95% bootstrap CI")
    ax.plot(xs, summary[column], "o-", color="teal", label="mean over capable seeds")
    capable = sweep.capable
    ax.scatter(capable[sweep.x_name].to_numpy(dtype=float), capable[column], s=9, color="k", alpha=0.4,
               label="one seed", zorder=3)
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_xlabel(sweep.x_name)
    ax.set_ylabel(column.removeprefix("measure_"))
    ax.legend(fontsize=7)
    return fig


def training_figure(sweep: Sweep, curves: pd.DataFrame):
    """Training curves, the median over seeds per point: success, reward per step, the env's curve events."""
    # reward per step is the learning curve that needs no episode to end (a reset-free world)
    panels = [("success_rate", "training success")] + [("reward_per_step", "reward per step")] * (
        "reward_per_step" in curves)
    panels += [(column, f"share of steps: {column.removeprefix('rate_')}")
               for column in curves.columns if column.startswith("rate_")]  # the env's curve_events
    fig, axes = _pyplot().subplots(1, len(panels), figsize=(5.5 * len(panels), 3.6), squeeze=False)
    for ax, (column, what) in zip(axes[0], panels):
        for point, group in curves.groupby("point"):
            median = group.groupby("update")[column].median().dropna()  # updates in which no episode ended: none
            label = (f"{sweep.x_name}={sweep.summary.set_index('point').loc[point, sweep.x_name]:g}" if sweep.swept
                     else f"point {point}")
            ax.plot(median.index, median.to_numpy(), label=label)
        ax.set_xlabel("update")
        ax.set_ylabel(f"{what} (median over seeds)")
        ax.legend(fontsize=7)
    return fig


def seeds_figure(sweep: Sweep):
    """Per point, the histogram of capable seeds' misgeneralization rates."""
    point_labels = {int(p): point_label({n: r[n] for n in sweep.swept}, p)
                    for p, r in sweep.summary.set_index("point").iterrows()}
    fig, axes = _pyplot().subplots(1, len(sweep.summary), figsize=(1.9 * len(sweep.summary) + 0.8, 2.6),
                                   sharey=True, squeeze=False)
    bins = np.linspace(0, 1, 11)
    for ax, (point, group) in zip(axes[0], sweep.table.groupby("point")):
        capable = group[group.capable]
        ax.hist(capable.misgeneralization_rate.dropna(), bins=bins, color="crimson", alpha=0.8)
        ax.set_title(f"{point_labels[int(point)]}\n{len(capable)} of {len(group)} capable", fontsize=7)
        ax.set_xlabel("misgen. rate", fontsize=7)
    axes[0, 0].set_ylabel("seeds")
    return fig


def discover_figure(found: pd.DataFrame):
    """The shares of agents that each candidate explains best (``gridsim discover``'s table)."""
    from experiments.discover import draw

    fig, ax = _pyplot().subplots(figsize=(5.5, 3.6))
    draw(ax, found)
    ax.set_title("what each agent goes for (gridsim discover)", fontsize=9)
    return fig


def visitation_figure(sweep: Sweep):
    """Where a representative agent of each point goes on distinguishing test levels."""
    from experiments.inspection import agent_episodes, draw_heatmap, load_agent

    chosen = representative_seeds(sweep.table)
    fig, axes = _pyplot().subplots(1, len(chosen), figsize=(2.2 * len(chosen), 2.4), squeeze=False)
    for ax, (point, seed) in zip(axes[0], chosen.items()):
        agent = load_agent(sweep.directory, point, seed)
        draw_heatmap(ax, agent.env, agent_episodes(agent, 256), agent.label)
    fig.suptitle("where a representative agent of each point goes on distinguishing test levels "
                 "(share of steps per cell)", fontsize=8)
    return fig


def training_label(sweep: Sweep) -> str:
    """How a sweep's agents were trained: its curriculum (method and score) or domain randomization."""
    from experiments.spec import from_manifest

    curriculum = from_manifest(sweep.manifest, sweep.directory).curriculum
    return f"{curriculum.method} ({curriculum.score})" if curriculum.active else "dr"


def comparison_figure(sweeps: list[Sweep], all_seeds: bool = False):
    """Sweeps of one environment side by side against their first swept param: the misgeneralization rate,
    the true-goal rate and the regret on distinguishing test levels, the mean over capable seeds and its
    95% interval."""
    panels = [("misgeneralization", "misgeneralization rate"), ("true_goal", "true-goal rate"),
              ("distinguishing_regret", "regret")]
    fig, axes = _pyplot().subplots(1, len(panels), figsize=(4.8 * len(panels), 3.6), squeeze=False)
    fig.subplots_adjust(wspace=0.35)
    for ax, (column, what) in zip(axes[0], panels):
        for i, sweep in enumerate(sweeps):
            xs, summary = sweep.xs, sweep.summary
            interval = np.array(summary[f"{column}_ci"].tolist(), dtype=float)
            color = f"C{i}"
            ax.fill_between(xs, interval[:, 0], interval[:, 1], color=color, alpha=0.15)
            label = f"{sweep.directory.name}: {training_label(sweep)}"
            ax.plot(xs, summary[column], "o-", color=color, ms=3, label=label)
            if _log_like(xs):
                ax.set_xscale("symlog", linthresh=float(xs[xs > 0].min()))
        ax.set_xlabel(sweeps[0].x_name)
        ax.set_ylabel(f"{what}\n(distinguishing test levels)")
    axes[0, 0].legend(fontsize=7)
    over = "every seed, capable or not" if all_seeds else "capable seeds"
    fig.suptitle(f"{sweeps[0].manifest['env']}: mean over {over}, 95% intervals", fontsize=9)
    return fig


def compare(directories, out_dir, all_seeds: bool = False) -> list[Path]:
    """``comparison_figure`` of sweep directories (PNG and SVG) in ``out_dir``."""
    sweeps = [load_sweep(d, all_seeds) for d in directories]
    envs = {s.manifest["env"] for s in sweeps}
    if len(envs) > 1:
        raise ValueError(f"the sweeps compared train different environments ({sorted(envs)}): compare one at a time")
    axes = {s.x_name for s in sweeps}
    if len(axes) > 1:
        raise ValueError(f"the sweeps compared sweep different params first ({sorted(axes)})")
    from experiments.spec import from_manifest

    specs = [from_manifest(s.manifest, s.directory) for s in sweeps]
    for what, key in (("ppo.gamma (regret's discount)", lambda spec: spec.ppo.gamma),
                      ("[env_options]", lambda spec: json.dumps(spec.env_options, sort_keys=True))):
        if len({key(spec) for spec in specs}) > 1:
            raise ValueError(f"the sweeps compared differ in {what}: their rates and regrets are not comparable")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return save_figure(comparison_figure(sweeps, all_seeds), out_dir, "comparison")


def save_figure(fig, out_dir: Path, stem: str) -> list[Path]:
    """``fig`` as ``<out_dir>/<stem>.png`` and ``.svg``, then closed; the paths written."""
    paths = [Path(out_dir) / f"{stem}{suffix}" for suffix in (".png", ".svg")]
    for path in paths:
        fig.savefig(path, dpi=130, bbox_inches="tight")
    _pyplot().close(fig)
    return paths


def plot(directory, out_dir=None, visitation: bool = True) -> list[Path]:
    """Every figure of a sweep that its directory has the data for, PNG and SVG of each, in ``out_dir``
    (default ``<directory>/_figures``, which Parquet readers skip). ``visitation``: include the
    figure that plays agents again (the slowest)."""
    store = Store(directory)
    sweep = load_sweep(directory)
    out_dir = store.figures(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig, stem):
        written.extend(save_figure(fig, out_dir, stem))

    save(misgeneralization_figure(sweep), "misgeneralization")
    save(outcomes_figure(sweep), "outcomes")
    for column in measure_columns(sweep.summary):
        save(measure_figure(sweep, column), column)
    curves = store.curves()
    if curves is not None:
        save(training_figure(sweep, curves), "training")
    save(seeds_figure(sweep), "seeds")
    found = store.derived_path("discover")  # written by ``gridsim discover``
    if found.exists():
        save(discover_figure(pd.read_parquet(found)), "discover")
    for table in sorted(store.derived_path("search").parent.glob("search*.parquet")):  # ``gridsim search``'s
        from experiments import search

        search.figures(directory, save, table.stem)
    if store.derived_path("probe").exists() or store.derived_path("probe-test").exists():  # ``gridsim probe``'s
        from experiments import probe

        probe.figures(directory, save)
    if store.derived_path("steer").exists():  # ``gridsim steer``'s
        from experiments import steer

        steer.figures(directory, save)
    if visitation and all(store.agents_path(p).exists() for p in sweep.summary.point):
        save(visitation_figure(sweep), "visitation")
    return written
