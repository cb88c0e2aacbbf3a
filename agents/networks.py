"""Actor-critic networks for symbolic grid observations (flax.linen, orthogonal init).

Every network has one signature, ``(hidden, obs, reset) -> (hidden, logits, value)``
over a batch, so the PPO loop is the same for feed-forward and recurrent
policies: feed-forward ones pass ``hidden`` through untouched.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _orthonormal_columns(z):
    """Q of ``z = QR`` with R's diagonal positive (what ``jax.random.orthogonal`` returns), by
    Gram-Schmidt applied twice per column. jax's QR calls LAPACK, whose OpenBLAS threads stall
    when the CPU is shared: init of 64 seeds took 0.3 to 16 s on 2 busy cores, against ~50 ms this way."""

    def column(k, q):
        a = jax.lax.dynamic_index_in_dim(z, k, axis=1, keepdims=False)
        for _ in range(2):  # the second pass restores orthogonality lost to rounding
            a = a - q @ (q.T @ a)  # q's columns k and after are still zero
        return jax.lax.dynamic_update_index_in_dim(q, a / jnp.linalg.norm(a), k, axis=1)

    return jax.lax.fori_loop(0, z.shape[1], column, jnp.zeros_like(z))


def orthogonal(scale: float = 1.0):
    """``nn.initializers.orthogonal(scale)`` (same distribution, same matrices up to rounding
    for the same key), computed without LAPACK."""

    def init(key, shape, dtype=jnp.float32):
        rows, cols = math.prod(shape) // shape[-1], shape[-1]
        q = _orthonormal_columns(jax.random.normal(key, (max(rows, cols), min(rows, cols)), dtype))
        return jnp.asarray(scale, dtype) * (q.T if rows < cols else q).reshape(shape)

    return init


@jax.custom_vjp
def _matmul(x, kernel):
    return x @ kernel


def _matmul_fwd(x, kernel):
    return x @ kernel, (x, kernel)


def _matmul_bwd(residuals, g):
    x, kernel = residuals
    rows = x.reshape(-1, x.shape[-1])
    # The kernel's gradient is x^T g. Left to itself XLA:CPU folds the transpose into the dot
    # and runs a slow generic kernel (~60% of a minibatch step for the 189-input layers);
    # transposing x into memory first makes it a plain matmul, about twice as fast overall.
    x_t = jax.lax.optimization_barrier(rows.T)
    return (g @ kernel.T).reshape(x.shape), x_t @ g.reshape(-1, g.shape[-1])


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def _input_dot_general(x, kernel, dimension_numbers, precision=None, preferred_element_type=None):
    """``nn.Dense``'s contraction, with ``_matmul``'s faster gradient."""
    if dimension_numbers != (((x.ndim - 1,), (0,)), ((), ())) or kernel.ndim != 2:
        raise ValueError(f"unexpected Dense contraction {dimension_numbers}")
    return _matmul(x, kernel)


def _dense(features: int, scale: float, wide_input: bool = False) -> nn.Dense:
    # only layers fed by the wide encoder output gain from _matmul; on the narrow hidden layers it is slower
    return nn.Dense(
        features,
        kernel_init=orthogonal(scale),
        bias_init=nn.initializers.zeros,
        dot_general=_input_dot_general if wide_input else None,
    )


class Conv3x3(nn.Module):
    """``nn.Conv(features, (3, 3))`` with "SAME" zero padding and the same parameters, computed as
    one matmul over the nine shifted copies of the input: under vmap over seeds a convolution
    becomes a grouped one, which XLA:CPU runs far slower (docs/performance.md, "The CNN as a
    matrix product")."""

    features: int

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        kernel = self.param("kernel", orthogonal(np.sqrt(2)), (3, 3, channels, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        height, width = x.shape[-3:-1]
        padded = jnp.pad(x, [(0, 0)] * (x.ndim - 3) + [(1, 1), (1, 1), (0, 0)])
        shifted = [padded[..., dy:dy + height, dx:dx + width, :] for dy in range(3) for dx in range(3)]
        return jnp.concatenate(shifted, axis=-1) @ kernel.reshape(9 * channels, self.features) + bias


class GridEncoder(nn.Module):
    """``"mlp"``: the flattened one-hot grid; ``"cnn"``: two 3x3 convolutions, then flattened."""

    kind: str = "mlp"

    @nn.compact
    def __call__(self, obs):
        x = obs.astype(jnp.float32)
        if self.kind == "cnn":
            for i, channels in enumerate((16, 32)):
                x = nn.relu(Conv3x3(channels, name=f"Conv_{i}")(x))  # nn.Conv's names: saved networks load
        return x.reshape(x.shape[:-3] + (-1,))


class Heads(nn.Module):
    """Separate two-layer tanh policy and value heads."""

    num_actions: int
    hidden: int
    wide_input: bool = False  # fed by the encoder directly (see _dense)

    @nn.compact
    def __call__(self, x):
        actor = nn.tanh(_dense(self.hidden, np.sqrt(2), self.wide_input)(x))
        actor = nn.tanh(_dense(self.hidden, np.sqrt(2))(actor))
        critic = nn.tanh(_dense(self.hidden, np.sqrt(2), self.wide_input)(x))
        critic = nn.tanh(_dense(self.hidden, np.sqrt(2))(critic))
        return _dense(self.num_actions, 0.01)(actor), _dense(1, 1.0)(critic)[..., 0]


class ActorCritic(nn.Module):
    num_actions: int
    hidden: int = 64
    encoder: str = "mlp"

    @nn.compact
    def __call__(self, hidden, obs, reset):
        logits, value = Heads(self.num_actions, self.hidden, wide_input=True)(GridEncoder(self.encoder)(obs))
        return hidden, logits, value


class RecurrentActorCritic(nn.Module):
    """Encoder, a GRU, then the heads. The hidden state is zeroed where ``reset``
    (the first step of an episode), before the GRU reads that step's observation."""

    num_actions: int
    hidden: int = 64
    encoder: str = "mlp"

    @nn.compact
    def __call__(self, hidden, obs, reset):
        x = nn.relu(_dense(self.hidden, np.sqrt(2), wide_input=True)(GridEncoder(self.encoder)(obs)))
        hidden = jnp.where(reset[..., None], 0.0, hidden)
        hidden, y = nn.GRUCell(self.hidden, recurrent_kernel_init=orthogonal())(hidden, x)
        logits, value = Heads(self.num_actions, self.hidden)(y)
        return hidden, logits, value


# The layers agents.activations reads and steers: module path (flax's automatic names, which saved
# networks keep) -> the layer's role. Dense and convolution layers before their nonlinearity, the
# encoder's output after its ReLU, and the GRU's new hidden state.
LAYERS = {
    "GridEncoder_0/Conv_0": "conv1",
    "GridEncoder_0/Conv_1": "conv2",
    "GridEncoder_0": "encoder",  # the second convolution after its ReLU, flattened (the CNN's only)
    "Dense_0": "embed",  # the recurrent network's layer before its GRU
    "GRUCell_0": "gru",
    "Heads_0/Dense_0": "actor1",
    "Heads_0/Dense_1": "actor2",
    "Heads_0/Dense_2": "critic1",
    "Heads_0/Dense_3": "critic2",
    "Heads_0/Dense_4": "logits",
    "Heads_0/Dense_5": "value",
}
