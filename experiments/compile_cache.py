"""JAX's persistent compilation cache for the command line: a second run of the same program loads
it instead of compiling it (compiling is most of a short run's time).

The cache lives in ``$GRIDSIM_COMPILE_CACHE``, else ``$XDG_CACHE_HOME/gridsim/jax``, else
``~/.cache/gridsim/jax``; ``gridsim --no-compile-cache ...`` turns it off, and a cache directory
set through JAX's own ``JAX_COMPILATION_CACHE_DIR`` is left as it is.
"""

from __future__ import annotations

import os
from pathlib import Path


def where() -> Path:
    if os.environ.get("GRIDSIM_COMPILE_CACHE"):
        return Path(os.environ["GRIDSIM_COMPILE_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "gridsim" / "jax"


def enable() -> None:
    """Turn the cache on (before anything compiles); Ray workers inherit it through the environment."""
    import jax

    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    path = where()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # an unwritable home: run without the cache rather than fail
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(path)
    jax.config.update("jax_compilation_cache_dir", str(path))  # programs that took over 1 s to compile (JAX's default)
