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

from experiments.runner import runner_for
from experiments.spec import SweepSpec
from experiments.train import memory_budget

CPU_CHUNK_ENVS = 4096  # on a few CPU cores more parallel envs add no throughput, only coarser resumption


def points_per_chunk(spec: SweepSpec) -> int:
    """The spec's ``[run] points_per_chunk``, else as many of its points as fit half this machine's
    memory (and, on CPU, ``CPU_CHUNK_ENVS``), balanced over the chunks."""
    todo = len(spec.points)
    if spec.points_per_chunk:
        return max(1, min(spec.points_per_chunk, todo))
    runner, params = runner_for(spec)
    devices = jax.local_devices()
    seeds_per_device = spec.seeds // len(devices) if spec.seeds % len(devices) == 0 else spec.seeds
    budget, per_point = memory_budget(), runner.bytes_per_agent(params) * seeds_per_device
    if per_point > 2 * budget:  # the estimate errs high: refuse only what cannot fit the whole memory
        raise ValueError(f"seeds: one sweep point's {spec.seeds:,} agents need about {per_point / 2**30:.1f} GiB, "
                         f"more than this machine's {2 * budget / 2**30:.1f} GiB; use fewer seeds")
    fit = budget // max(1, per_point)
    if devices[0].platform == "cpu":
        fit = min(fit, CPU_CHUNK_ENVS // (spec.seeds * runner.config.num_envs))
    fit = max(1, min(todo, fit))
    chunks = math.ceil(todo / fit)
    return math.ceil(todo / chunks)


def plan(todo: list[int], size: int) -> list[list[int]]:
    """The chunks of ``size`` points that cover ``todo`` (sweep point indices); the last may be short
    (``run_chunk`` pads it to ``size``)."""
    return [todo[i : i + size] for i in range(0, len(todo), size)]
