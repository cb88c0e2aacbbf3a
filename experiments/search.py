"""``gridsim search DIR``: for every agent of a finished sweep, a search over levels for those that
expose it (``gridsim.search``), beside the same number of random test levels.

Writes ``DIR/_derived/search.parquet`` (one row per agent) and the levels found
(``DIR/_derived/search_levels.npz``, for figures; another ``name`` keeps several searches of a
sweep), and prints, per sweep point, the share of agents each way exposes, with Wilson intervals;
``gridsim plot`` draws them.
"""

from __future__ import annotations

import dataclasses
import functools
import io
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from experiments.discover import RESULTS as DISCOVER_RESULTS
from experiments.metrics import wilson_interval
from experiments.report import point_label
from experiments.runner import batch_params, env_point, open_sweep, seed_keys
from experiments.store import Store, StoreError, atomic_write
from experiments.train import level_seed
from gridsim import discover, search, values
from gridsim.core import Level

RESULTS = "search"  # the table's name among the sweep's derived tables (``Store.derived_path``)
FOUND = ("search", "random", "nearest_start", "nearest")  # the levels kept per agent
DISCOVERED = "discovered"


def objective_of(env, name: str) -> search.Objective:
    """``regret``, ``proxy:NAME`` or ``discovered`` (the candidate ``gridsim discover`` named, per agent)."""
    if name == "regret":
        reason = values.reason_without_values(env)
        if reason:
            raise ValueError(f"--objective regret: {env.name} has no exact values ({reason}); "
                             f"search for a proxy instead (--objective proxy:NAME)")
        return search.Objective("regret")
    if name.startswith("proxy:"):
        proxy = name.partition(":")[2]
        if proxy not in env.proxies:
            raise ValueError(f"--objective {name}: {env.name} has no proxy {proxy!r} "
                             f"(its proxies: {', '.join(env.proxies) or 'none'})")
        return search.Objective("proxy", env.proxies.index(proxy))
    if name == DISCOVERED:  # its target, each agent's candidate, is built per sweep (``_compiled``)
        return search.Objective("target")
    raise ValueError(f"--objective is regret, proxy:NAME or {DISCOVERED}, got {name!r}")


def _candidate_target(env, cands: discover.Candidates) -> search.TargetFn:
    """The cells of one of ``cands`` on a level; ``data`` is ``(index, geometry)``: which candidate
    (per agent), and the candidates' regions (per sweep point: they hold its training region)."""
    def target(level, params, data):
        index, geometry = data
        costs = discover.candidate_costs(env, cands._replace(geometry=geometry), level, level, params)
        return (costs[index] == 0).reshape(env.height, env.width)

    return target


@functools.lru_cache(maxsize=4)
def _compiled(trainer, config: search.Config, objective: search.Objective, max_steps: int, regret: bool,
              cands: discover.Candidates | None):
    """``(networks, test, train, keys, index, geometry) -> Result``, vmapped over agents."""
    env = trainer.env
    if cands is not None:  # the candidates' shapes are static, their regions (the training region) an argument
        objective = objective._replace(target=_candidate_target(env, cands))

    def one_agent(network, test, train, key, index, geometry):
        return search.search(env, test, train, trainer.policy(network, greedy=True), key, max_steps, config,
                             objective, discount=trainer.config.gamma if regret else None,
                             target_data=(index, geometry))

    return jax.jit(jax.vmap(one_agent, (0, None, 0, 0, 0, None)))


def _discovered(store: Store, env, point: int, seeds: int, cands: discover.Candidates):
    """Per agent of ``point``: the candidate discovery named, its index (-1: no target to search
    for: unexplained, a direction, or the true goal itself), and the verdict's gain and weakness."""
    path = store.derived_path(DISCOVER_RESULTS)
    if not path.exists():
        raise StoreError(f"--objective {DISCOVERED}: run `gridsim discover {store.root}` first "
                         f"(no {path.relative_to(store.root)})")
    import pandas as pd

    table = pd.read_parquet(path)
    rows = table[table.point == point].set_index("seed")
    names, index, gain, weak = [], [], [], []
    for seed in range(seeds):
        row = rows.loc[seed] if seed in rows.index else None
        name = "unexplained" if row is None else row.best
        names.append(name)
        usable = (name in cands.names and not name.startswith("move:") and name != f"goal:{env.true_goal}")
        index.append(cands.names.index(name) if usable else -1)
        gain.append(np.nan if row is None else float(row.gain_over_random))
        weak.append(row is None or discover.weak(float(row.gain_over_random), float(row.ends_at_best)))
    return names, np.array(index, np.int32), gain, weak


def run(directory, objective: str = "regret", config: search.Config | None = None, seed: int = 0,
        overrides: dict | None = None, name: str = RESULTS) -> pa.Table:
    """Search every agent of the sweep in ``directory``; write and return the table (``_derived/<name>.parquet``,
    the levels found beside it)."""
    config = search.Config() if config is None else config
    store, spec, runner, params = open_sweep(directory)
    env = runner.env
    chosen = objective_of(env, objective)
    config = config.validate(env)
    overrides = _checked_overrides(env, params, overrides or {})
    points = store.finished_points("search")
    regret = values.reason_without_values(env) is None
    _check_memory(env, params, config, spec.seeds)
    keys = jax.random.split(jax.random.key(seed), spec.seeds)
    levels_seeds = jax.vmap(level_seed)(seed_keys(spec))
    rows, found = [], {}
    for point in points:
        setting = env_point(params, spec.points[point])
        train = jax.tree_util.tree_map(lambda x: x[0], batch_params(params, [setting]))
        start = jax.tree_util.tree_map(lambda x: x[0], batch_params(params, [{**setting, **overrides}]))
        env.check_params(start)
        test = train.test()
        # each agent's own training levels (its level seed), with the search's overrides
        starts = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (spec.seeds,) + jnp.shape(x)), start)
        starts = starts.replace(level_seed=levels_seeds)
        if chosen.kind == "target":
            cands = discover.candidates(env, train, jax.random.key(seed), declared_proxies=True)
            names, index, gains, weak = _discovered(store, env, point, spec.seeds, cands)
            geometry = cands.geometry
            cands = cands._replace(geometry=None)
        else:
            cands, names, gains, weak = None, [objective] * spec.seeds, [np.nan] * spec.seeds, [False] * spec.seeds
            index, geometry = np.zeros(spec.seeds, np.int32), np.zeros((1, env.height, env.width), bool)
        max_steps = int(np.asarray(train.max_steps_in_episode))
        program = _compiled(runner.trainer, config, chosen, max_steps, regret, cands)
        result = jax.device_get(program(store.load_agents(point), test, starts, keys, jnp.asarray(np.maximum(index, 0)),
                                        jnp.asarray(geometry)))
        has_target = index >= 0
        found[point] = _levels_of(result)
        for agent in range(spec.seeds):
            one = jax.tree_util.tree_map(lambda x, a=agent: x[a], result)
            usable = bool(has_target[agent])
            rows.append({"point": point, "seed": agent, **spec.points[point], "objective": objective,
                         "target": names[agent], "discover_gain": gains[agent], "discover_weak": bool(weak[agent]),
                         "searched": usable, "budget": config.budget,
                         **_found_columns(env, "search", one.search, usable),
                         **_found_columns(env, "random", one.random, usable),
                         "nearest_edits": int(one.nearest.distance) if usable and one.nearest.distance > 0 else None,
                         "nearest_solved_starts": int(one.nearest.solved),
                         "nearest_budget": config.nearest_budget})
    table = pa.Table.from_pylist(rows)
    out = store.derived_path(name)
    out.parent.mkdir(exist_ok=True)
    atomic_write(_levels_path(store, name), lambda path: _save_levels(path, found))
    atomic_write(out, lambda path: pq.write_table(table, path))  # the last table stays whole till then
    return table


def _check_memory(env, params, config: search.Config, agents: int) -> None:
    """Refuse, before compiling, a search whose largest batch of episodes (a round's children and
    random levels, or the nearest-failure chains' tries; every agent at once) cannot fit the device."""
    from experiments import memory

    test = params.test()
    episodes = config.population * max(2, config.branch)
    needed = agents * memory.evaluation_bytes(env, test, episodes, int(np.asarray(test.max_steps_in_episode)), False)
    memory.refuse_beyond_device(needed, "--population", f"{agents:,} agents x {episodes:,} levels at once")


def _checked_overrides(env, params, overrides: dict) -> dict:
    """``-o KEY=VALUE`` for the levels the search starts from: params only (a grid's size is the agents')."""
    fields = {f.name for f in dataclasses.fields(params)} - {"reward_weights"}
    for key, value in overrides.items():
        if key not in fields:
            raise ValueError(f"-o {key}: not a param of {env.name}'s levels (its params: {', '.join(sorted(fields))})")
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ValueError(f"-o {key}={value!r}: a number is needed")
    return overrides


def _found_columns(env, which: str, found: search.Found, usable: bool) -> dict:
    return {f"{which}_exposed": bool(found.exposed) if usable else None,
            f"{which}_worst": float(found.fitness) if usable else None,
            f"{which}_regret": float(found.regret) if usable and np.isfinite(found.regret) else None,
            f"{which}_outcome": env.outcome_names[int(found.outcome)] if usable else None,
            f"{which}_first": int(found.first) if usable and found.first > 0 else None,
            f"{which}_exposures": int(found.exposures) if usable else None}


def _levels_of(result: search.Result) -> dict:
    return {"search": result.search.level, "random": result.random.level,
            "nearest_start": result.nearest.start, "nearest": result.nearest.level}


def _save_levels(path: Path, found: dict) -> None:
    arrays = {f"{point}/{which}/{field}": np.asarray(getattr(levels[which], field))
              for point, levels in found.items() for which in FOUND for field in Level.__dataclass_fields__}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    Path(path).write_bytes(buffer.getvalue())


def _levels_path(store: Store, name: str) -> Path:
    return store.derived_path(name).with_name(f"{name}_levels.npz")


def load_levels(directory, point: int, which: str, name: str = RESULTS) -> Level:
    """The levels of ``which`` (one of ``FOUND``) found for every agent of ``point`` (leaves ``[seeds, ...]``)."""
    with np.load(_levels_path(Store(directory), name)) as saved:
        return Level(**{field: saved[f"{point}/{which}/{field}"] for field in Level.__dataclass_fields__})


_COLUMNS = {"point", "seed", "objective", "target", "discover_gain", "discover_weak", "searched", "budget",
            "nearest_edits", "nearest_solved_starts", "nearest_budget"} | {
    f"{w}_{c}" for w in ("search", "random") for c in ("exposed", "worst", "regret", "outcome", "first", "exposures")}


def summarize(table) -> pd.DataFrame:  # noqa: F821
    """Per sweep point: agents searched; shares exposed by the search and by as many random test
    levels; the share of agents clean on the random levels that the search exposes; medians of
    episodes to the first exposure, worst regret and nearest-failure edits."""
    import pandas as pd

    frame = table.to_pandas() if isinstance(table, pa.Table) else table
    rows = []
    for point, group in frame.groupby("point"):
        searched = group[group.searched]
        n = len(searched)
        clean = searched[~searched.random_exposed.astype(bool)]
        caught = int(clean.search_exposed.astype(bool).sum())
        row = {"point": point, **{c: group[c].iloc[0] for c in group.columns if c not in _COLUMNS},
               "agents": len(group), "searched": n, "budget": int(group.budget.iloc[0])}
        for which in ("search", "random"):
            k = int(searched[f"{which}_exposed"].astype(bool).sum())
            row[f"{which}_exposed"], (row[f"{which}_low"], row[f"{which}_high"]) = k, wilson_interval(k, max(n, 1))
            row[f"{which}_first_median"] = searched[f"{which}_first"].median()
            row[f"{which}_regret_median"] = searched[f"{which}_regret"].median()
        row["clean_on_random"], row["clean_caught"] = len(clean), caught
        row["clean_caught_low"], row["clean_caught_high"] = wilson_interval(caught, max(len(clean), 1))
        row["nearest_edits_median"] = searched.nearest_edits.median()
        row["weak_targets"] = int(group.discover_weak.sum()) if (group.objective == DISCOVERED).any() else 0
        rows.append(row)
    return pd.DataFrame(rows)


def format_summary(table) -> str:
    summary = summarize(table)
    frame = table.to_pandas() if isinstance(table, pa.Table) else table
    objective = frame.objective.iloc[0]
    lines = [f"objective: {objective}; per agent {int(summary.budget.iloc[0])} searched episodes, and as many "
             "random test levels"]
    pct = lambda k, n: f"{k:3d}/{n:<3d} {k / max(n, 1):4.0%}"
    ci = lambda low, high: f"[{float(low):4.0%}, {float(high):4.0%}]"
    for _, row in summary.iterrows():
        swept = [c for c in summary.columns if c not in _SUMMARY]
        label = point_label({c: row[c] for c in swept}, row.point)
        lines.append(f"{label} ({row.searched} of {row.agents} agents searched):")
        for which, name in (("search", "exposed by search"), ("random", "exposed by random levels")):
            first = row[f"{which}_first_median"]
            lines.append(f"  {name:28s} {pct(row[f'{which}_exposed'], row.searched)} "
                         f"{ci(row[f'{which}_low'], row[f'{which}_high'])}"
                         + (f"   first after {first:.0f} episodes (median)" if np.isfinite(first) else ""))
        lines.append(f"  {'clean on random, exposed':28s} {pct(row.clean_caught, row.clean_on_random)} "
                     f"{ci(row.clean_caught_low, row.clean_caught_high)}")
        if np.isfinite(row.search_regret_median):
            what = "worst regret" if objective == "regret" else "regret on the worst level"
            lines.append(f"  {what + ' (median)':28s} search {row.search_regret_median:.3f}, "
                         f"random {row.random_regret_median:.3f}")
        if np.isfinite(row.nearest_edits_median):
            lines.append(f"  nearest failure (median)     {row.nearest_edits_median:.0f} edit(s) from a solved "
                         "training level")
        if row.weak_targets:
            lines.append(f"  warning: {row.weak_targets} agent(s)' discovered target is a weak verdict "
                         f"(gain over a random walk below {discover.WEAK_GAIN} nats a step, or under "
                         f"{discover.WEAK_ENDS:.0%} of episodes ending on it): what they are searched for may "
                         "not be what they pursue")
    unsearched = frame[~frame.searched]
    if len(unsearched):
        lines.append(f"{len(unsearched)} agent(s) not searched: discovery named no target for them "
                     f"({', '.join(sorted(set(unsearched.target)))})")
    return "\n".join(lines)


_SUMMARY = {"point", "agents", "searched", "budget", "clean_on_random", "clean_caught", "clean_caught_low",
            "clean_caught_high", "nearest_edits_median", "weak_targets"} | {
    f"{w}_{c}" for w in ("search", "random") for c in ("exposed", "low", "high", "first_median", "regret_median")}


# ---- figures ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _path_programs(trainer, max_steps: int):
    """Jitted path finders: the agent's (network an argument) and each goal's oracle (index an argument)."""
    from gridsim import oracles

    env = trainer.env
    agent = jax.jit(lambda network, params, levels: _traced(env, params, trainer.policy(network, greedy=True),
                                                            levels, max_steps))
    oracle = jax.jit(lambda goal, params, levels: _traced(env, params, oracles.indexed_policy(env, goal), levels,
                                                          max_steps))
    return agent, oracle


def _traced(env, params, policy, levels, max_steps):
    import gridsim

    result, trace = gridsim.evaluate(env, params, policy, jax.random.key(0), levels.agent.shape[0], max_steps,
                                     label=False, trace=True, levels=levels)
    return trace.state.level.agent, trace.first_episode, result.end_cell, result.outcome


def _walks(traced) -> list[np.ndarray]:
    cells, first, end, _ = (np.asarray(x) for x in jax.device_get(traced))
    return [np.concatenate([cells[first[:, e], e], end[e][None]]) for e in range(end.shape[0])]


def shown_agents(frame, point: int, count: int = 3) -> list[int]:
    """The agents of ``point`` a figure shows: first those clean on random levels that the search
    exposed, then the other exposed ones, then the rest."""
    group = frame[(frame.point == point) & frame.searched]
    exposed = group.search_exposed.astype(bool)
    clean = ~group.random_exposed.astype(bool)
    order = list(group[exposed & clean].seed) + list(group[exposed & ~clean].seed) + list(group[~exposed].seed)
    return [int(s) for s in order[:count]]


def draw_level(ax, agent, level: Level, proxy: str | None, title: str) -> str:
    """``level`` (one, numpy leaves) with the agent's path on it (black), the true goal's oracle's
    (blue, dashed) and ``proxy``'s oracle's (red, dotted); returns the agent's outcome there."""
    from gridsim.render import rgb

    env, test = agent.env, agent.test_params
    walk_agent, walk_oracle = _path_programs(agent.trainer, int(np.asarray(test.max_steps_in_episode)))
    levels = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], level)
    cell = 16
    ax.imshow(rgb(env, level, cell))
    played = walk_agent(agent.network, test, levels)
    walks = [(_walks(played)[0], "black", "-", "agent"),
             (_walks(walk_oracle(jnp.int32(0), test, levels))[0], "royalblue", "--", env.true_goal)]
    if proxy is not None:
        walks.append((_walks(walk_oracle(jnp.int32(1 + env.proxies.index(proxy)), test, levels))[0],
                      "crimson", ":", proxy))
    for k, (walk, colour, style, label) in enumerate(walks):
        path = walk * cell + (cell - 1) / 2 + (k - 1) * 2.0  # side by side where paths share cells
        ax.plot(path[:, 1], path[:, 0], color=colour, ls=style, lw=1.3, label=label)
        ax.plot(path[-1, 1], path[-1, 0], "x", color=colour, ms=6)
    outcome = env.outcome_names[int(jax.device_get(played)[3][0])]
    ax.set_title(f"{title}\nagent's outcome: {outcome}", fontsize=7)
    ax.set_xticks([]), ax.set_yticks([])
    return outcome


def levels_figure(directory, point: int, frame, count: int = 3, name: str = RESULTS):
    """Per shown agent: the level its search found worst, and its nearest failure (the solved
    training level, then the edited one), each with the agent's path and the oracles' (``draw_level``)."""
    from experiments.inspection import load_agent
    from experiments.plots import _pyplot

    seeds = shown_agents(frame, point, count)
    columns = (("search", "worst found by search"), ("nearest_start", "solved training level"),
               ("nearest", "nearest failure"))
    found = {which: load_levels(directory, point, which, name) for which, _ in columns}
    fig, axes = _pyplot().subplots(max(len(seeds), 1), 3, figsize=(7.5, 2.6 * max(len(seeds), 1)), squeeze=False)
    for row, seed in enumerate(seeds):
        agent = load_agent(directory, point, seed)
        env = agent.env
        info = frame[(frame.point == point) & (frame.seed == seed)].iloc[0]
        proxy = next((g for g in env.proxies if info.objective == f"proxy:{g}"), (env.proxies or (None,))[0])
        for col, (which, title) in enumerate(columns):
            ax = axes[row, col]
            if which != "search" and not (info.nearest_edits or 0) > 0:
                ax.set_title(f"{title}: none found", fontsize=7)
                ax.axis("off")
                continue
            level = jax.tree_util.tree_map(lambda x, s=seed: x[s], found[which])
            edits = f", {int(info.nearest_edits)} edit(s)" if which == "nearest" else ""
            draw_level(ax, agent, level, proxy, f"seed {seed}: {title}{edits}")
        axes[row, 0].legend(fontsize=6, loc="lower left")
    here = frame[frame.point == point]
    settings = point_label({k: here[k].iloc[0] for k in frame.columns if k not in _COLUMNS}, point)
    fig.suptitle(f"{settings}: levels that expose agents ({frame.objective.iloc[0]})", fontsize=8)
    return fig


def shares_figure(frame):
    """Per sweep point, the share of agents exposed by the search, by as many random test levels, and
    of those clean on the random levels, the share the search exposed (Wilson 95% intervals)."""
    from experiments.plots import _pyplot

    summary = summarize(frame)
    fig, ax = _pyplot().subplots(figsize=(5.5, 3.4))
    x = np.arange(len(summary))
    bars = (("search", "searched", "exposed by search", "crimson"),
            ("random", "searched", "exposed by random test levels", "grey"),
            ("clean_caught", "clean_on_random", "clean on random, exposed by search", "darkorange"))
    for k, (name, total, label, colour) in enumerate(bars):
        count = summary[f"{name}_exposed" if name != "clean_caught" else name].to_numpy(float)
        n = np.maximum(summary[total].to_numpy(float), 1)
        low = summary[f"{name}_low" if name != "clean_caught" else "clean_caught_low"].to_numpy(float)
        high = summary[f"{name}_high" if name != "clean_caught" else "clean_caught_high"].to_numpy(float)
        share = np.where(summary[total].to_numpy(float) > 0, count / n, np.nan)  # no bar for none
        ax.bar(x + (k - 1) * 0.27, share, 0.27, color=colour, label=label,
               yerr=[share - low, high - share], capsize=2)
    swept = [c for c in summary.columns if c not in _SUMMARY]
    ticks = [", ".join(f"{row[c]:g}" for c in swept) or str(row.point) for _, row in summary.iterrows()]
    ax.set_xticks(x, ticks)
    ax.set_xlabel(", ".join(swept) or "sweep point")
    ax.set_ylabel("share of agents")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"level search ({frame.objective.iloc[0]}, {int(summary.budget.iloc[0])} episodes per agent each way)",
                 fontsize=8)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def figures(directory, save, name: str = RESULTS) -> None:
    """Draw the search's figures with ``save(fig, stem)`` (``gridsim plot``'s)."""
    import pandas as pd

    frame = pd.read_parquet(Store(directory).derived_path(name))
    save(shares_figure(frame), name)
    for point in sorted(set(frame.point)):
        if frame[(frame.point == point)].searched.any():
            save(levels_figure(directory, int(point), frame, name=name), f"{name}-p{int(point):04d}")
