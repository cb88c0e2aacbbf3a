"""Present any gridsim environment as a gymnax ``Environment``, in either step convention.

- ``GymnaxEnv``: gymnax 1.0's API. ``step`` returns six values, ``(obs, state,
  reward, terminated, truncated, info)``, with ``info["final_observation"]``.
- ``PureJaxRLEnv``: the five-value step ``(obs, state, reward, done, info)``
  that PureJaxRL and rejax call (gymnax before 1.0), ``done`` being
  ``terminated or truncated``; ``info`` still carries the split and
  ``final_observation``.

Both auto-reset with gridsim's own reset (a fresh level, or one of the level
set); ``step_env`` / ``reset_env`` are the transition without reset and the
reset, as gymnax 1.0 defines them. No glue is needed: rejax's PPO trains on
``PureJaxRLEnv`` unchanged. Requires the optional ``gymnax`` extra.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

try:
    from gymnax.environments import environment as _gymnax_env
    from gymnax.environments import spaces as _gymnax_spaces
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("the gymnax adapter needs gymnax: pip install 'gridsim[gymnax]'") from err

from gridsim.core import EnvParams, GridEnv, episode_limit


class GymnaxEnv(_gymnax_env.Environment):
    """A gridsim environment with gymnax 1.0's six-value ``step``."""

    def __init__(self, env: GridEnv, params: EnvParams | None = None):
        super().__init__()
        self.env = env
        self._default_params = params if params is not None else env.default_params()

    @property
    def default_params(self) -> EnvParams:
        return self._default_params

    @property
    def name(self) -> str:
        return f"gridsim/{self.env.name}"

    @property
    def num_actions(self) -> int:
        return self.env.num_actions

    def _step(self, key, state, action, params):
        params = self.default_params if params is None else params
        obs, state, reward, done, info = self.env.step(key, state, action, params)
        info = dict(info, discount=1.0 - info["terminated"].astype(jnp.float32))
        return jax.lax.stop_gradient(obs), jax.lax.stop_gradient(state), reward, done, info

    def step(self, key, state, action, params=None):
        obs, state, reward, _, info = self._step(key, state, action, params)
        return obs, state, reward, info["terminated"], info["truncated"], info

    def reset(self, key, params=None):
        return self.env.reset(key, self.default_params if params is None else params)

    def step_env(self, key, state, action, params):
        """One step without auto-reset: ``(obs, state, reward, terminated, info)``."""
        state, reward, terminated, _, info = self.env.transition(state, action, params)
        return self.env.observe(state.level), state, reward, terminated, info

    def reset_env(self, key, params):
        return self.env.reset(key, params)

    def get_obs(self, state, params=None, key=None):
        return self.env.observe(state.level)

    def is_truncated(self, state, params) -> jax.Array:
        return state.time >= episode_limit(state.level, params)

    def discount(self, state, params) -> jax.Array:
        return jnp.float32(1.0)

    def action_space(self, params=None):
        return _gymnax_spaces.Discrete(self.env.num_actions)

    def observation_space(self, params=None):
        shape = self.env.observation_space(params).shape
        return _gymnax_spaces.Box(0, 1, shape, jnp.bool_)


class PureJaxRLEnv(GymnaxEnv):
    """A gridsim environment with the five-value ``step`` of PureJaxRL and rejax."""

    def step(self, key, state, action, params=None):
        return self._step(key, state, action, params)
