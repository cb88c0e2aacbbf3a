"""What a command will need in device memory, estimated from shapes before anything compiles.

A setting that cannot fit (a million seeds, a billion evaluation episodes) is refused in one line
naming it, instead of aborting inside XLA after the work it came after. The estimates err high and
refuse only what would not fit the whole device; a chunk plans for half of it.
"""

from __future__ import annotations

import os

import jax
import numpy as np

GiB = 2**30


def budget() -> int:
    """Bytes a chunk may use: half the first device's memory (GPU), or half the free RAM (CPU)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"] * 0.5)
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * 0.5)
    except (ValueError, OSError):
        return 4 << 30


def tree_bytes(tree) -> int:
    """Bytes of the arrays (or shapes) in ``tree``; keys count as nothing."""
    return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree)
               if hasattr(x, "dtype") and not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key))


def evaluation_bytes(env, params, episodes: int, max_steps: int, trace: bool) -> int:
    """``gridsim.evaluate`` of ``episodes`` parallel episodes: a few copies of every episode's state
    and observation, the oracles' distance maps (one per goal and level), and with ``trace`` every
    step's state and info."""
    obs, state = jax.eval_shape(env.reset, jax.random.key(0), params)
    per_episode = 8 * (tree_bytes(state) + tree_bytes(obs)) + 4 * 4 * env.height * env.width * len(env.goal_names)
    if trace:
        per_episode += max_steps * 3 * (tree_bytes(state) + tree_bytes(obs))
    return episodes * per_episode


def refuse_beyond_device(needed: int, setting: str, what: str) -> None:
    """ValueError naming ``setting`` when ``needed`` bytes exceed the device's whole memory."""
    device = 2 * budget()
    if needed > device:
        raise ValueError(f"{setting}: {what} needs about {needed / GiB:,.1f} GiB, more than this machine's "
                         f"{device / GiB:,.1f} GiB")


def in_chunks(program, size: int, batched, *shared):
    """``program(chunk, *shared)`` over chunks of ``size`` rows of ``batched`` (a tree with a
    leading agents axis), so memory holds one chunk; the last chunk is padded with its last agent (one
    shape, one compile). Returns the results concatenated on the host, leaves ``[agents, ...]``."""
    agents = jax.tree_util.tree_leaves(batched)[0].shape[0]
    size = max(1, min(size, agents))
    pieces = []
    for start in range(0, agents, size):
        index = np.minimum(np.arange(start, start + size), agents - 1)
        chunk = jax.tree_util.tree_map(lambda x, i=index: x[i], batched)
        pieces.append(jax.device_get(program(chunk, *shared)))
    joined = jax.tree_util.tree_map(lambda *x: np.concatenate(x), *pieces)
    return jax.tree_util.tree_map(lambda x: x[:agents], joined)


def capture_bytes(env, params, episodes: int, max_steps: int, features: int) -> int:
    """One agent's ``agents.activations.capture``: the traced evaluation, and every layer's
    ``features`` (summed over layers) at every step of every episode, a few times over."""
    return evaluation_bytes(env, params, episodes, max_steps, trace=True) + 3 * 4 * episodes * max_steps * features
