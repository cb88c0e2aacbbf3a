"""Wall time and env-steps/s of a whole sweep (training, evaluation, writing), as `gridsim sweep` runs it.

    python benchmarks/sweep_throughput.py                         # the demo sweep, 16 seeds (5-13 min, 2 CPU cores)
    python benchmarks/sweep_throughput.py --seeds 16 1024         # on a GPU: the demo, then 1024 seeds per point
    python benchmarks/sweep_throughput.py --spec examples/keys_chests.toml
    python benchmarks/sweep_throughput.py --smoke --out-dir /tmp/bench   # seconds: examples/tiny_sweep.toml, 2 seeds

Each run goes to a fresh temporary directory (or, with ``--runs-dir``, a new one that is kept),
so nothing is resumed. Wall time includes compilation; the manifest's per-chunk seconds are
reported too. Writes ``benchmarks/results/sweep_throughput-<platform>-<time>.{json,md}``
(``--out-dir`` elsewhere).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
from env_throughput import device_info  # noqa: E402

from experiments import spec as sweep_spec  # noqa: E402
from experiments import sweep  # noqa: E402
from experiments.executors import executor  # noqa: E402
from experiments.report import load, summarize  # noqa: E402
from experiments.store import Store  # noqa: E402


def with_seeds(spec: sweep_spec.SweepSpec, seeds: int, path) -> sweep_spec.SweepSpec:
    """``spec`` at ``seeds`` agents per point, its text included: a sweep directory's manifest keeps
    the text, and whatever reads the sweep back (``gridsim discover``, ``report``) parses it, so a
    ``dataclasses.replace(spec, seeds=...)`` alone would leave them expecting the file's seed count."""
    text, found = re.subn(r"(?m)^seeds\s*=\s*\d+", f"seeds = {seeds}", spec.source, count=1)
    changed = sweep_spec.parse(text, path, folder=spec.folder)
    if not found or changed.seeds != seeds:
        raise ValueError(f"{path}: could not set its top-level 'seeds' to {seeds}")
    return dataclasses.replace(changed, out=spec.out, points_per_chunk=spec.points_per_chunk)


def measure(spec: sweep_spec.SweepSpec, path, seeds: int, executor_name: str = "local",
            runs_dir: Path | None = None) -> dict:
    """One sweep from scratch: in a temporary directory, or in a new one under ``runs_dir``, kept."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run" if runs_dir is None else runs_dir / f"{spec.name}-{executor_name}-{seeds}seeds"
        if out.exists():  # a finished sweep would only be resumed, in no time
            raise FileExistsError(f"{out} exists: --runs-dir needs new directories")
        spec = dataclasses.replace(with_seeds(spec, seeds, path), out=out)
        started = time.perf_counter()
        sweep.run(spec, progress=False, executor=executor(executor_name))
        wall = time.perf_counter() - started
        table, swept, manifest = load(spec.out)
        summary = summarize(table, swept)
        chunks = Store(spec.out).chunks()
    steps = len(spec.points) * seeds * spec.ppo.steps_per_seed
    stats = jax.local_devices()[0].memory_stats() or {}
    return {
        "executor": executor_name,
        "directory": str(spec.out) if runs_dir else None,
        "seeds": seeds,
        "points": len(spec.points),
        "env_steps": steps,
        "wall_s": round(wall, 2),
        "env_steps_per_s": round(steps / wall),
        "chunks": chunks,
        "peak_device_bytes": stats.get("peak_bytes_in_use"),
        "misgeneralization_by_point": [None if r != r else round(float(r), 4) for r in summary.misgeneralization],
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "examples" / "coin_alpha.toml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[16])
    parser.add_argument("--executors", nargs="+", default=["local"], choices=("local", "ray"),
                        help="run the sweep through each (ray: a local Ray instance)")
    parser.add_argument("--points-per-chunk", type=int, default=None, help="override the spec's chunking")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds, for the tests: examples/tiny_sweep.toml at 2 seeds per point, locally")
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="keep each sweep in a new directory under this one (default: a temporary directory)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if args.smoke:
        args.spec, args.seeds, args.executors = str(ROOT / "examples" / "tiny_sweep.toml"), [2], ["local"]
    spec = sweep_spec.load(args.spec)
    if args.points_per_chunk:
        spec = dataclasses.replace(spec, points_per_chunk=args.points_per_chunk)
    info = device_info()
    runs = []
    for seeds in args.seeds:
        for name in args.executors:
            runs.append(measure(spec, args.spec, seeds, name, args.runs_dir))
            print(json.dumps({k: v for k, v in runs[-1].items() if k != "chunks"}), flush=True)

    platform = jax.devices()[0].platform
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out_dir / f"sweep_throughput-{platform}-{stamp}"
    out.parent.mkdir(parents=True, exist_ok=True)
    info["loadavg_end"] = os.getloadavg()
    out.with_suffix(".json").write_text(json.dumps({"spec": args.spec, "device": info, "runs": runs}, indent=2))
    lines = [f"Sweep `{Path(args.spec).name}` on {info['devices']} ({info['device_kind']}, {info['cpu_model']}, "
             f"{info['cpus_usable']} CPUs usable), jax {info['jax']}; load average {info['loadavg_start']} at start, "
             f"{info['loadavg_end']} at end", "",
             "| executor | seeds per point | points | chunks | env steps | wall s (incl. compile) | env-steps/s | "
             "chunk seconds (sum) | peak device memory |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        peak = f"{r['peak_device_bytes'] / 2**30:.1f} GiB" if r["peak_device_bytes"] else "n/a"
        inside = sum(c["seconds"] for c in r["chunks"])
        lines.append(f"| {r['executor']} | {r['seeds']} | {r['points']} | {len(r['chunks'])} | {r['env_steps']:,} | "
                     f"{r['wall_s']:.1f} | {r['env_steps_per_s']:,} | {inside:.1f} | {peak} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}.json and .md", file=sys.stderr)


if __name__ == "__main__":
    main()
