"""Levels searched per second by ``gridsim search`` on a finished sweep: every agent's search, its
random test levels and its nearest-failure chains, all played and judged by the oracles.

    python benchmarks/search_throughput.py runs/coin_alpha                     # after `make demo`: 64 agents
    python benchmarks/search_throughput.py runs/coin_alpha --objective regret --repeats 3
    python benchmarks/search_throughput.py DIR --smoke --out-dir /tmp/bench    # seconds: a tiny search, 2 runs

Like ``gridsim search``, each run writes its table into the sweep directory. The first run includes
compilation (one program per sweep, reused by every point); the others load nothing new. Reports the
episodes each agent plays (search, as many random test levels, the nearest-failure chains), levels per
second over all agents (the median over repeats after the first), and the device. No peer library
searches levels for trained agents, so there is no side-by-side row. Writes
``benchmarks/results/search_throughput-<platform>-<time>.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from env_throughput import device_info, time_runs, write_results  # noqa: E402

from experiments import search  # noqa: E402
from gridsim.search import Config  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", help="a finished sweep directory")
    parser.add_argument("--objective", default="proxy:end", help="as gridsim search's (default proxy:end, the demo's)")
    parser.add_argument("--repeats", type=int, default=3, help="runs, the first with compilation (default 3)")
    parser.add_argument("--smoke", action="store_true", help="seconds, for the tests: a 4-level population, "
                                                             "1 generation, 1-step chains, 2 runs")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    config = Config()
    if args.smoke:
        config, args.repeats = Config(population=4, generations=1, nearest_steps=1, branch=1), 2
    info = device_info()
    seconds, table, warm = time_runs(lambda: search.run(args.directory, args.objective, config), args.repeats)
    agents = table.num_rows
    episodes = 2 * config.budget + config.nearest_budget  # per agent: search, random levels, nearest chains
    result = {"directory": str(args.directory), "objective": args.objective, "agents": agents,
              "config": config._asdict(), "episodes_per_agent": episodes, "first_s": seconds[0], "warm_median_s": warm,
              "levels_per_s": agents * episodes / warm, "device": info}
    out = write_results(args.out_dir, "search_throughput", result, [
        f"Device: {info['devices']} {info['cpu_model']}, jax {info['jax']}", "",
        "| sweep | objective | agents | episodes per agent | first run s (compiles) | warm s (median) | levels/s |",
        "|---|---|---:|---:|---:|---:|---:|",
        f"| {args.directory} | {args.objective} | {agents} | {episodes} | {seconds[0]:.1f} | {warm:.1f} | "
        f"{result['levels_per_s']:,.0f} |"])
    print(search.format_summary(table))
    print(f"wrote {out}.json and .md", file=sys.stderr)


if __name__ == "__main__":
    main()
