"""XLA flags for the CPU, set before JAX starts its backend (docs/performance.md, "XLA flags").

- With jaxlib 0.10 on a 2-core CPU, vmapped training programs hung inside
  ``block_until_ready`` unless the concurrency-optimised scheduler is off.
- One host device per core: a single XLA:CPU program keeps about 1.4 of 2 cores busy, and the
  sweep runner splits seeds over local devices, whose programs run at once (1.3x to 1.5x the
  env-steps/s of one device for PPO at 64 to 4096 seeds, 2 AMD EPYC cores, docs/benchmarks.md).
  It changes nothing on a GPU, whose devices are the GPUs.

Each flag is added to ``XLA_FLAGS`` unless the user already set it either way. They only take
effect if JAX has not started its CPU backend yet.
"""

import os

FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
DEVICES = "--xla_force_host_platform_device_count"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_flags = os.environ.get("XLA_FLAGS", "")
if FLAG not in _flags:
    _flags = f"{_flags} {FLAG}=false"
if DEVICES not in _flags:
    _flags = f"{_flags} {DEVICES}={_cores()}"
os.environ["XLA_FLAGS"] = _flags.strip()
