"""Actor-critic networks for symbolic grid observations (flax.linen, orthogonal init).

Every network has one signature, ``(hidden, obs, reset) -> (hidden, logits, value)``
over a batch, so the PPO loop is the same for feed-forward and recurrent
policies: feed-forward ones pass ``hidden`` through untouched.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


def _dense(features: int, scale: float) -> nn.Dense:
    return nn.Dense(features, kernel_init=nn.initializers.orthogonal(scale), bias_init=nn.initializers.zeros)


class GridEncoder(nn.Module):
    """``"mlp"``: the flattened one-hot grid; ``"cnn"``: two 3x3 convolutions, then flattened."""

    kind: str = "mlp"

    @nn.compact
    def __call__(self, obs):
        x = obs.astype(jnp.float32)
        if self.kind == "cnn":
            for channels in (16, 32):
                x = nn.relu(nn.Conv(channels, (3, 3), kernel_init=nn.initializers.orthogonal(np.sqrt(2)))(x))
        return x.reshape(x.shape[:-3] + (-1,))


class Heads(nn.Module):
    """Separate two-layer tanh policy and value heads."""

    num_actions: int
    hidden: int

    @nn.compact
    def __call__(self, x):
        actor = nn.tanh(_dense(self.hidden, np.sqrt(2))(x))
        actor = nn.tanh(_dense(self.hidden, np.sqrt(2))(actor))
        critic = nn.tanh(_dense(self.hidden, np.sqrt(2))(x))
        critic = nn.tanh(_dense(self.hidden, np.sqrt(2))(critic))
        return _dense(self.num_actions, 0.01)(actor), _dense(1, 1.0)(critic)[..., 0]


class ActorCritic(nn.Module):
    num_actions: int
    hidden: int = 64
    encoder: str = "mlp"

    @nn.compact
    def __call__(self, hidden, obs, reset):
        logits, value = Heads(self.num_actions, self.hidden)(GridEncoder(self.encoder)(obs))
        return hidden, logits, value


class RecurrentActorCritic(nn.Module):
    """Encoder, a GRU, then the heads. The hidden state is zeroed where ``reset``
    (the first step of an episode), before the GRU reads that step's observation."""

    num_actions: int
    hidden: int = 64
    encoder: str = "mlp"

    @nn.compact
    def __call__(self, hidden, obs, reset):
        x = nn.relu(_dense(self.hidden, np.sqrt(2))(GridEncoder(self.encoder)(obs)))
        hidden = jnp.where(reset[..., None], 0.0, hidden)
        hidden, y = nn.GRUCell(self.hidden)(hidden, x)
        logits, value = Heads(self.num_actions, self.hidden)(y)
        return hidden, logits, value
