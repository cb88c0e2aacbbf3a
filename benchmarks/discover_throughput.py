"""Wall time of ``gridsim discover`` on a finished sweep: every agent's test episodes traced and scored.

    python benchmarks/discover_throughput.py runs/coin_alpha            # after `make demo`
    python benchmarks/discover_throughput.py runs/coin_alpha --episodes 256 --repeats 3
    python benchmarks/discover_throughput.py DIR --smoke --out-dir /tmp/bench   # seconds: 16 episodes, 2 runs

Like ``gridsim discover``, each run writes its table into the sweep directory.

The first run includes compilation (one program per sweep, reused by every point); the others load
nothing new. Reports agents, episodes and scored moves per second, the median over repeats after
the first, and the device. Writes ``benchmarks/results/discover_throughput-<platform>-<time>.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from env_throughput import device_info, time_runs, write_results  # noqa: E402

from experiments import discover  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", help="a finished sweep directory")
    parser.add_argument("--episodes", type=int, default=256, help="test episodes per agent (default 256)")
    parser.add_argument("--repeats", type=int, default=3, help="runs, the first with compilation (default 3)")
    parser.add_argument("--smoke", action="store_true", help="seconds, for the tests: 16 episodes per agent, 2 runs")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if args.smoke:
        args.episodes, args.repeats = 16, 2
    info = device_info()
    seconds, table, warm = time_runs(lambda: discover.run(args.directory, args.episodes), args.repeats)
    agents = table.num_rows
    moves = int(sum(table.column("scored_steps").to_pylist()))
    result = {"directory": str(args.directory), "agents": agents, "episodes_per_agent": args.episodes,
              "first_s": seconds[0], "warm_median_s": warm, "agent_episodes_per_s": agents * args.episodes / warm,
              "scored_moves": moves, "device": info}
    out = write_results(args.out_dir, "discover_throughput", result, [
        f"Device: {info['devices']} {info['cpu_model']}, jax {info['jax']}", "",
        "| sweep | agents | episodes each | first run s (compiles) | warm s (median) | agent-episodes/s |",
        "|---|---:|---:|---:|---:|---:|",
        f"| {args.directory} | {agents} | {args.episodes} | {seconds[0]:.1f} | {warm:.1f} | "
        f"{result['agent_episodes_per_s']:,.0f} |"])
    print(discover.format_shares(table))
    print(f"wrote {out}.json and .md", file=sys.stderr)


if __name__ == "__main__":
    main()
