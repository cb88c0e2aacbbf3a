"""The results of a sweep as a table: rates per sweep point, with confidence intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd

from experiments.metrics import (
    bootstrap_mean_interval,
    difference_test,
    mean_rate_interval,
    misgeneralizes,
    wilson_interval,
)
from experiments.store import Store


def point_label(settings: dict, point: int) -> str:
    """A sweep point as its settings, ``alpha=0.01, corner_size=2``, or ``point N`` when nothing is swept."""
    return ", ".join(f"{name}={value:g}" for name, value in settings.items()) or f"point {point}"


def load(directory) -> tuple[pd.DataFrame, list[str], dict]:
    """The results table, the swept column names, and the manifest (read through the store)."""
    table, manifest = Store(directory).results()
    swept = list(manifest["points"][0]) if manifest["points"] else []
    return table, swept, manifest


def outcome_columns(table: pd.DataFrame) -> list[str]:
    """The per-outcome counts of test episodes (``GridEnv.outcome_names``: fail, true, proxy:<goal>), not
    the other ``test_`` columns (episodes, regret)."""
    return [c for c in table.columns if c in ("test_fail", "test_true") or c.startswith("test_proxy:")]


def measure_columns(frame: pd.DataFrame) -> list[str]:
    """The environment's own per-agent measurements (``GridEnv.measure_names`` and ``contrasts``), in a
    results table or a summary (where each has a ``<column>_ci`` beside it)."""
    return [c for c in frame.columns if c.startswith("measure_") and not c.endswith("_ci")]


def _declares_proxies(table: pd.DataFrame) -> bool:
    """Whether the environment named proxies: its outcome columns (when the table has them) say so."""
    outcomes = outcome_columns(table)
    return not outcomes or any(c.startswith("test_proxy") for c in outcomes)


def summarize(table: pd.DataFrame, swept: list[str], all_seeds: bool = False) -> pd.DataFrame:
    """One row per sweep point. Rates are over capable seeds only: an agent
    that fails its own training distribution is a capability failure, not a misgeneralization.
    A capable seed with no distinguishing test episode has no rate: it is left out and counted.
    ``all_seeds``: rates over every seed that did not diverge, capable or not (to compare training
    methods whose agents are not all capable; a rate then mixes incapacity with misgeneralization)."""
    rows = []
    declares_proxies = _declares_proxies(table)  # one environment: the same for every point
    for point, group in table.groupby("point", sort=True):
        capable = group[~group.diverged] if all_seeds else group[group.capable]
        rates = capable.misgeneralization_rate.to_numpy(dtype=float)
        rated = rates[np.isfinite(rates)]
        misgeneralizing = int(misgeneralizes(rated).sum())
        frac_low, frac_high = wilson_interval(misgeneralizing, len(rated))
        rows.append(
            {
                "point": point,
                **{name: group[name].iloc[0] for name in swept},
                "seeds": len(group),
                "capable": int(group.capable.sum()),
                "counted": len(capable),  # the seeds the rates are over: the capable ones, or all with all_seeds
                "unrated": len(capable) - len(rated),
                "diverged": int(group.diverged.sum()),
                "num_levels": int(group.num_levels.iloc[0]),
                "test_episodes": int(group.test_episodes.median()),
                "distinguishing_episodes": float(group.distinguishing_episodes.median()),
                "declares_proxies": declares_proxies,
                "train_success": group.train_success.mean(),
                "misgeneralization": rated.mean() if len(rated) else np.nan,
                "misgeneralization_ci": mean_rate_interval(rated),
                "seeds_misgeneralizing": misgeneralizing / len(rated) if len(rated) else np.nan,
                "seeds_misgeneralizing_ci": (float(frac_low), float(frac_high)) if len(rated) else (np.nan, np.nan),
                "capability_failure": np.nanmean(capable.capability_failure_rate) if len(rated) else np.nan,
                **_true_and_regret(capable),
                **{column: capable[column].mean() for column in measure_columns(table)},
                **{f"{column}_ci": bootstrap_mean_interval(capable[column]) for column in measure_columns(table)},
            }
        )
    return pd.DataFrame(rows)


def _true_and_regret(capable: pd.DataFrame) -> dict:
    """Over capable seeds: the true-goal rate on distinguishing test levels, and the mean regret there
    (``gridsim.values``; NaN where no level has an exact value), each with its interval."""
    column = lambda name: capable[name] if name in capable else pd.Series(np.nan, index=capable.index)
    true = column("true_rate").to_numpy(dtype=float)
    regret = column("distinguishing_regret")
    finite = regret[np.isfinite(regret)]
    return {"true_goal": np.nanmean(true) if np.isfinite(true).any() else np.nan,
            "true_goal_ci": mean_rate_interval(true),
            "distinguishing_regret": finite.mean() if len(finite) else np.nan,
            "distinguishing_regret_ci": bootstrap_mean_interval(finite)}


def _regret(r) -> str:
    """A summary row's regret on distinguishing levels with its interval, or "-"."""
    if not np.isfinite(r.distinguishing_regret):
        return "-"
    low, high = r.distinguishing_regret_ci
    return f"{r.distinguishing_regret:.3f} [{low:.3f}, {high:.3f}]"


def _pct(x) -> str:
    return "-" if not np.isfinite(x) else f"{x:.1%}"


def format_summary(summary: pd.DataFrame, swept: list[str]) -> str:
    header = ["point", *swept, "seeds", "capable", "diverged", "train succ", "misgen. rate [95% CI]",
              "seeds misgen. [95% CI]", "cap. fail"]
    lines = ["  ".join(f"{h:>12}" if 0 < i <= len(swept) else h for i, h in enumerate(header))]
    notes = []
    proxies = bool(summary.declares_proxies.all())
    for _, r in summary.iterrows():
        lo, hi = r.misgeneralization_ci
        flo, fhi = r.seeds_misgeneralizing_ci
        cells = [f"{r.point:>5d}"] + [f"{r[name]:>12g}" for name in swept] + [
            f"{r.seeds:>5d}",
            f"{r.capable:>7d}",
            f"{r.diverged:>8d}",
            f"{r.train_success:>10.1%}",
            f"{_pct(r.misgeneralization):>6} [{_pct(lo):>6}, {_pct(hi):>6}]",
            f"{_pct(r.seeds_misgeneralizing):>6} [{_pct(flo):>6}, {_pct(fhi):>6}]",
            f"{_pct(r.capability_failure):>8}",
        ]
        lines.append("  ".join(cells))
        if r.unrated and proxies:
            notes.append(f"point {r.point}: {r.unrated} of {r.counted} capable seeds had no distinguishing test "
                         "episode (no rate; left out of the mean and intervals)")
    if not proxies:
        notes.append("the environment declares no proxy, so no level is distinguishing and no rate is given: "
                     "`gridsim discover DIR` names what the agents go for")
    for column in measure_columns(summary):
        cells = []
        for _, r in summary.iterrows():
            lo, hi = r[f"{column}_ci"]
            cells.append(f"point {r.point}: {r[column]:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(r[column])
                         else f"point {r.point}: -")
        notes.append(f"{column.removeprefix('measure_')} (mean over capable seeds [95% bootstrap CI]): "
                     + "; ".join(cells))
    if np.isfinite(summary.distinguishing_regret).any():
        cells = [f"point {r.point}: {_regret(r)}" for _, r in summary.iterrows()]
        notes.append("regret on distinguishing test levels (best discounted return minus the agent's, mean over "
                     "capable seeds [95% bootstrap CI]): " + "; ".join(cells))
    levels = sorted(summary.num_levels.unique())
    training = ", ".join("a fresh level every episode" if n == 0 else f"{n} fixed levels per seed" for n in levels)
    low, high = summary.distinguishing_episodes.min(), summary.distinguishing_episodes.max()
    median = f"{low:.0f}" if round(low) == round(high) else f"{low:.0f} to {high:.0f} (by point)"
    notes.append(f"training levels: {training}; per seed {summary.test_episodes.iloc[0]} fresh test episodes, "
                 f"a median {median} of them distinguishing (counted)")
    notes.append("rates over capable seeds (greedy training success >= 80%); intervals: Wilson, 95%")
    return "\n".join(lines + notes)


def format_comparison(sweeps: list[tuple[str, pd.DataFrame, list[str]]],
                      tables: list[pd.DataFrame] | None = None, all_seeds: bool = False) -> str:
    """Per sweep (``(label, summary, swept)``) and point: capable seeds, and the misgeneralization rate,
    true-goal rate and regret on distinguishing test levels with their 95% intervals. With each sweep's
    results table (``tables``), a sweep after the first that sweeps the same settings also gets, at each
    point the first has, how far its mean misgeneralization rate lies from the first's
    (``metrics.difference_test``): paired by seed where both points trained the same seeds, over the
    seeds counted in both."""
    rate = lambda value, interval: f"{_pct(value):>6} [{_pct(interval[0])}, {_pct(interval[1])}]"
    counted = lambda table: table[~table.diverged] if all_seeds else table[table.capable]
    lines = []
    for i, (label, summary, swept) in enumerate(sweeps):
        lines.append(label)
        comparable = tables is not None and i > 0 and set(swept) == set(sweeps[0][2])
        for _, r in summary.iterrows():
            settings = {name: r[name] for name in swept}
            point = point_label(settings, r.point)
            lines.append(f"  {point:>16}  capable {r.capable:>3d}/{r.seeds:<3d}  misgen. "
                         f"{rate(r.misgeneralization, r.misgeneralization_ci)}  "
                         f"true {rate(r.true_goal, r.true_goal_ci)}  regret {_regret(r)}")
            if comparable:
                lines.extend(_difference_line(tables[0], tables[i][tables[i].point == r.point], settings, counted))
        if tables is not None and i > 0 and not comparable:
            lines.append(f"  (not compared with the first sweep: it sweeps {', '.join(swept) or 'nothing'}, "
                         f"the first {', '.join(sweeps[0][2]) or 'nothing'})")
    return "\n".join(lines)


def _difference_line(first: pd.DataFrame, mine: pd.DataFrame, settings: dict, counted) -> list[str]:
    """The line saying how far ``mine`` (one point's rows) lies from the first sweep's point with the same
    ``settings``; none when the first has no such point."""
    for name, value in settings.items():
        first = first[np.isclose(first[name].to_numpy(dtype=float), float(value))]
    if first.point.nunique() != 1:
        return []
    paired = sorted(first.seed) == sorted(mine.seed)
    if paired:
        both = counted(first).merge(counted(mine), on="seed", suffixes=("_first", "_mine"))
        a, b = both.misgeneralization_rate_first, both.misgeneralization_rate_mine
    else:
        a, b = counted(first).misgeneralization_rate, counted(mine).misgeneralization_rate
    difference, low, high, p = difference_test(a, b, paired=paired)
    if not np.isfinite(difference):
        return []
    test = f"Wilcoxon p = {p:.2f}, paired by seed" if paired else f"Mann-Whitney p = {p:.2f}"
    return [f"  {'':>16}  misgen. minus the first sweep's: {100 * difference:+.1f} points "
            f"[{100 * low:+.1f}, {100 * high:+.1f}], {test}"]
