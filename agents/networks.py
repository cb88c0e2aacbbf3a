"""Actor-critic networks for symbolic grid observations (flax.linen, orthogonal init)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


def _dense(features: int, scale: float) -> nn.Dense:
    return nn.Dense(features, kernel_init=nn.initializers.orthogonal(scale), bias_init=nn.initializers.zeros)


class ActorCritic(nn.Module):
    """Separate policy and value heads on a shared encoder of the grid.

    ``encoder``: ``"mlp"`` (flattened one-hot grid) or ``"cnn"`` (two 3x3
    convolutions, then flattened): returns ``(logits, value)``.
    """

    num_actions: int
    hidden: int = 64
    encoder: str = "mlp"

    @nn.compact
    def __call__(self, obs):
        x = obs.astype(jnp.float32)
        if self.encoder == "cnn":
            for channels in (16, 32):
                x = nn.relu(nn.Conv(channels, (3, 3), kernel_init=nn.initializers.orthogonal(np.sqrt(2)))(x))
        x = x.reshape(x.shape[: -3] + (-1,))
        actor = nn.tanh(_dense(self.hidden, np.sqrt(2))(x))
        actor = nn.tanh(_dense(self.hidden, np.sqrt(2))(actor))
        logits = _dense(self.num_actions, 0.01)(actor)
        critic = nn.tanh(_dense(self.hidden, np.sqrt(2))(x))
        critic = nn.tanh(_dense(self.hidden, np.sqrt(2))(critic))
        value = _dense(1, 1.0)(critic)
        return logits, value[..., 0]
