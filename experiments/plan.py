"""Which sweep points share a chunk: as many as fit the device's memory, or as the spec says.

A chunk is one compiled call (``experiments.runner.run_chunk``); larger chunks use the device
better, smaller ones lose less to an interruption. Every chunk of a sweep has the size chosen when
the sweep started (recorded in its manifest; the last chunk padded), so every point runs in the
same compiled program: a point's numbers do not depend on which chunk, executor or resumed run
computed it. (XLA's floating-point order changes with the batch's shape, not with a point's place
in it.)
"""

from __future__ import annotations

import math

import jax

from experiments import memory
from experiments.runner import runner_for
from experiments.spec import SweepSpec
from experiments.train import devices_for

CPU_CHUNK_ENVS = 4096  # on a few CPU cores more parallel envs add no throughput, only coarser resumption


def check_memory(spec: SweepSpec, names: dict[str, str] | None = None) -> int:
    """Bytes one sweep point needs in one device's memory (all of it on CPU, whose host devices share
    one memory; a device's share of the seeds elsewhere); a point that cannot fit is refused,
    naming the setting that needs the most (as the sweep file names it, or as ``names`` maps it)."""
    runner, params = runner_for(spec)
    # host devices (CPU) share one memory; other devices each hold their share of the seeds
    shared = jax.local_devices()[0].platform == "cpu"
    seeds_per_device = spec.seeds if shared else spec.seeds // len(devices_for(spec.seeds))
    parts = {part: n * seeds_per_device for part, n in runner.bytes_per_agent(params).items()}
    setting, what = (("eval.episodes", f"evaluating {spec.seeds:,} agents on {spec.eval_episodes:,} episodes each")
                     if parts["evaluation"] > parts["training"] else
                     ("seeds", f"training {spec.seeds:,} agents of one sweep point"))
    memory.refuse_beyond_device(sum(parts.values()), (names or {}).get(setting, setting), what)
    return sum(parts.values())


def points_per_chunk(spec: SweepSpec) -> int:
    """The spec's ``[run] points_per_chunk``, else as many of its points as fit half this machine's
    memory (and, on CPU, ``CPU_CHUNK_ENVS``), balanced over the chunks."""
    todo = len(spec.points)
    per_point = check_memory(spec)
    if spec.points_per_chunk:
        return max(1, min(spec.points_per_chunk, todo))
    fit = memory.budget() // max(1, per_point)
    if jax.local_devices()[0].platform == "cpu":
        fit = min(fit, CPU_CHUNK_ENVS // (spec.seeds * spec.ppo.num_envs))
    fit = max(1, min(todo, fit))
    chunks = math.ceil(todo / fit)
    return math.ceil(todo / chunks)


def plan(todo: list[int], size: int) -> list[list[int]]:
    """The chunks of ``size`` points that cover ``todo`` (sweep point indices); the last may be short
    (``run_chunk`` pads it to ``size``)."""
    return [todo[i : i + size] for i in range(0, len(todo), size)]
