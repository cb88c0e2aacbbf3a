"""Avoid the XLA:CPU deadlock on large vmapped programs (docs/performance.md, "XLA flags").

With jaxlib 0.10 on a 2-core CPU, vmapped training programs hung inside
``block_until_ready`` unless the concurrency-optimised scheduler is off. The
flag is added to ``XLA_FLAGS`` unless the user already set it either way.
It only takes effect if JAX has not started its CPU backend yet.
"""

import os

FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"

_flags = os.environ.get("XLA_FLAGS", "")
if FLAG not in _flags:
    os.environ["XLA_FLAGS"] = f"{_flags} {FLAG}=false".strip()
