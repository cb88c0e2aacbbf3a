"""Agents looked inside per second by ``gridsim probe`` and ``gridsim steer`` on a finished sweep, and
what capturing one agent needs in memory (so how many agents a device holds at once).

    python benchmarks/inside_throughput.py runs/coin_alpha                     # after `make demo`: 64 agents
    python benchmarks/inside_throughput.py DIR --smoke --out-dir /tmp/bench    # seconds: tiny settings, 2 runs

Like the commands, each run writes its tables into the sweep directory. The first run includes
compilation (one program per sweep, reused by every point); the others load nothing new. Reports, for
each command, the first run's seconds, the median of the others, agents per second and captured
episodes per second, the bytes one agent's capture needs and the agents that half the device holds
(the chunk the commands use), and the device. No peer library probes or steers the agents of a
sweep, so there is no side-by-side row. Writes ``benchmarks/results/inside_throughput-<platform>-<time>.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from env_throughput import device_info, time_runs, write_results  # noqa: E402

from agents import activations  # noqa: E402
from experiments import memory, probe, steer  # noqa: E402
from experiments import spec as sweep_spec  # noqa: E402
from experiments.runner import runner_for  # noqa: E402
from experiments.store import MANIFEST, Store  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", help="a finished sweep directory")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each command, the first compiling (default 3)")
    parser.add_argument("--smoke", action="store_true", help="seconds, for the tests: 16 probe episodes, 256 "
                                                             "vector episodes, 8 steered episodes at one scale, 2 runs")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    probe_episodes, rows, vector_episodes, episodes, scales = 512, 1024, 4096, 256, steer.SCALES
    if args.smoke:
        # the sizes tests/test_inside.py runs the commands at: in its process the programs are compiled already
        probe_episodes, rows, vector_episodes, episodes, scales, args.repeats = 16, 32, 256, 8, (2.0,), 2
    info = device_info()
    store = Store(args.directory)
    spec = sweep_spec.from_manifest(store.manifest(), Path(args.directory) / MANIFEST)
    runner, params = runner_for(spec)
    max_steps = int(np.asarray(params.max_steps_in_episode))
    features = sum(activations.layer_sizes(runner.trainer, params).values())
    one_agent = memory.capture_bytes(runner.env, params, probe_episodes, max_steps, features)
    agents = spec.seeds * len(store.point_files())
    rows_out = []
    for name, run, played in (
            ("probe", lambda: probe.run(args.directory, probe_episodes, rows), probe_episodes),
            ("steer", lambda: steer.run(args.directory, scales=scales, vector_episodes=vector_episodes,
                                        episodes=episodes),
             vector_episodes + 2 * (len(scales) + 1) * episodes)):
        seconds, _, warm = time_runs(run, args.repeats)
        rows_out.append({"command": name, "agents": agents, "episodes_per_agent": played, "first_s": seconds[0],
                         "warm_median_s": warm, "agents_per_s": agents / warm,
                         "episodes_per_s": agents * played / warm})
    result = {"directory": str(args.directory), "probe_episodes": probe_episodes, "rows": rows,
              "vector_episodes": vector_episodes, "steered_episodes": episodes, "scales": list(scales),
              "capture_bytes_per_agent": one_agent, "agents_per_chunk": memory.budget() // max(one_agent, 1),
              "runs": rows_out, "device": info}
    lines = [f"Device: {info['devices']} {info['cpu_model']}, jax {info['jax']}", "",
             f"One agent's capture ({probe_episodes} episodes of {max_steps} steps, {features} activations a step): "
             f"{one_agent / 2**20:,.0f} MiB; half this device holds {result['agents_per_chunk']:,} agents at once.", "",
             "| command | agents | episodes per agent | first run s (compiles) | warm s (median) | agents/s "
             "| episodes/s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| gridsim {r['command']} | {r['agents']} | {r['episodes_per_agent']:,} | {r['first_s']:.1f} | "
              f"{r['warm_median_s']:.1f} | {r['agents_per_s']:.2f} | {r['episodes_per_s']:,.0f} |" for r in rows_out]
    out = write_results(args.out_dir, "inside_throughput", result, lines)
    print(f"wrote {out}.json and .md", file=sys.stderr)


if __name__ == "__main__":
    main()
