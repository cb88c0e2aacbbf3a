"""Cheap per-step randomness: counter-based hashing of a JAX key.

JAX's threefry runs as a rolled loop on CPU; under ``vmap`` each call costs
about 100 ns per environment, more than a whole gridsim step. Auto-reset
samples a level placement on every step, so the engine and the built-in
environments stretch the step's key (which the caller split with threefry)
into the few numbers they need with an integer hash instead. The functions
mirror ``jax.random``'s names and take and return ordinary typed keys.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_GOLDEN = 0x9E3779B9


def _mix(x: jax.Array) -> jax.Array:
    """A 32-bit avalanche hash (Wellons' lowbias32 constants)."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _seed(key: jax.Array) -> jax.Array:
    words = jax.random.key_data(key).astype(jnp.uint32).ravel()
    seed = jnp.uint32(0x85EBCA6B)
    for i in range(words.shape[0]):
        seed = _mix(seed ^ (words[i] + jnp.uint32((i + 1) * _GOLDEN & 0xFFFFFFFF)))
    return seed


def bits(key: jax.Array, shape=()) -> jax.Array:
    """``uint32`` random bits of ``shape``."""
    n = math.prod(shape)
    counters = jnp.arange(n, dtype=jnp.uint32)
    return _mix(_seed(key) ^ _mix(counters * jnp.uint32(_GOLDEN) + jnp.uint32(1))).reshape(shape)


def uniform(key: jax.Array, shape=()) -> jax.Array:
    """``float32`` uniform on [0, 1)."""
    return (bits(key, shape) >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)


def to_int(u: jax.Array, minval, maxval) -> jax.Array:
    """Map uniforms on [0, 1) to ``int32`` uniform on [minval, maxval) (for numbers drawn in one batch)."""
    span = maxval - minval
    return minval + jnp.minimum((u * span).astype(jnp.int32), span - 1)


def randint(key: jax.Array, shape, minval, maxval) -> jax.Array:
    """``int32`` uniform on [minval, maxval)."""
    return to_int(uniform(key, shape), minval, maxval)


def split(key: jax.Array, num: int = 2) -> jax.Array:
    """``num`` new keys of the same implementation as ``key``.

    Children are counter offsets of the parent's last word, hashed only when
    drawn from: XLA recomputes fused hash chains per consumer, so short
    chains matter more here than in ``jax.random``.
    """
    data = jax.random.key_data(key)
    offsets = (jnp.arange(1, num + 1, dtype=jnp.uint32) * jnp.uint32(0x632BE5AB)).astype(data.dtype)
    # a concatenation, not ``.at[].add``: XLA fuses it into its consumers instead of writing the keys out
    head = jnp.broadcast_to(data[..., :-1], (num, *data.shape[:-1], data.shape[-1] - 1))
    children = jnp.concatenate([head, data[..., -1:] + offsets.reshape((num,) + (1,) * data.ndim)], axis=-1)
    return jax.random.wrap_key_data(children, impl=jax.random.key_impl(key))


def index(key: jax.Array, n) -> jax.Array:
    """``int32`` uniform on [0, n) from one multiply-xorshift of the key's words, for a gather
    index: XLA recomputes an index for every element it gathers, so a full hash there costs more
    than the rest of a step. The words of a split key are already uniform."""
    words = jax.random.key_data(key).astype(jnp.uint32).ravel()
    x = words[0] * jnp.uint32(_GOLDEN) ^ words[-1]
    x = (x ^ (x >> 16)) * jnp.uint32(0x7FEB352D)
    return to_int((x >> 8).astype(jnp.float32) * jnp.float32(2.0**-24), 0, n)


def stream(seed: jax.Array, shape=()) -> jax.Array:
    """``float32`` uniforms on [0, 1) from a ``uint32`` seed: a level's randomness after the move
    (``Level.seed``), which keeps ``transition`` free of keys and a replayed level the same."""
    counters = jnp.arange(math.prod(shape), dtype=jnp.uint32)
    x = _mix(seed ^ _mix(counters * jnp.uint32(_GOLDEN) + jnp.uint32(1)))
    return ((x >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)).reshape(shape)


def advance(seed: jax.Array) -> jax.Array:
    """The next step's seed."""
    return _mix(seed + jnp.uint32(_GOLDEN))
