"""Present any gridsim environment as a gymnax ``Environment``.

Agents written for the gymnax ecosystem (PureJaxRL, rejax, ...) then train on
gridsim unchanged. ``step`` keeps gridsim's own cheap auto-reset; gymnax's
``step_env`` / ``reset_env`` are provided too for code that calls them.
Requires the optional ``gymnax`` extra.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

try:
    from gymnax.environments import environment as _gymnax_env
    from gymnax.environments import spaces as _gymnax_spaces
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("the gymnax adapter needs gymnax: pip install 'gridsim[gymnax]'") from err

from gridsim.core import EnvParams, GridEnv


class GymnaxEnv(_gymnax_env.Environment):
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

    def step(self, key, state, action, params=None):
        params = self.default_params if params is None else params
        obs, state, reward, done, info = self.env.step(key, state, action, params)
        info = dict(info, discount=self.discount(state, params))
        return jax.lax.stop_gradient(obs), jax.lax.stop_gradient(state), reward, done, info

    def reset(self, key, params=None):
        return self.env.reset(key, self.default_params if params is None else params)

    def step_env(self, key, state, action, params):
        return self.step(key, state, action, params)

    def reset_env(self, key, params):
        return self.env.reset(key, params)

    def get_obs(self, state, params=None, key=None):
        return self.env.observe(state.level)

    def is_terminal(self, state, params) -> jax.Array:
        return state.time >= params.max_steps_in_episode

    def discount(self, state, params) -> jax.Array:
        return jnp.float32(1.0)

    def action_space(self, params=None):
        return _gymnax_spaces.Discrete(self.env.num_actions)

    def observation_space(self, params=None):
        shape = self.env.observation_space(params).shape
        return _gymnax_spaces.Box(0, 1, shape, jnp.bool_)
