"""A user's own file: a new environment, event, proxy and reward, without editing gridsim.

Use it by reference, e.g. ``gridsim show examples/plugins.py:CheeseOnDish``,
or ``gridsim.make("examples/plugins.py:CheeseOnDish")`` from Python.
"""

import jax
import jax.numpy as jnp

import gridsim
from gridsim.layouts import maze, sample_cells, sample_free


@gridsim.params_dataclass
class CheeseOnDishParams(gridsim.EnvParams):
    dish_distance: jax.Array = 1  # training cheese lies within this many cells of the dish (Chebyshev)


class CheeseOnDish(gridsim.GridEnv):
    """Cheese on a dish (jaxgmg): in training the cheese sits on or next to a dish; at test, anywhere."""

    name = "cheese-on-dish"
    description = "maze; cheese next to a dish in training, apart at test"
    slot_kinds = ("cheese", "dish")
    event_names = ("cheese", "dish")
    true_goal = "cheese"
    proxies = ("dish",)
    terminal_events = ("cheese",)

    def default_params(self):
        return CheeseOnDishParams().replace(max_steps_in_episode=128, reward_weights={"cheese": 1.0})

    def sample_layout(self, key, params):
        return maze(key, self.height, self.width)

    def sample_level(self, key, layout, params, diverse):
        k_cheese, k_rest = gridsim.rng.split(key)
        u = gridsim.rng.uniform(k_rest, (2,))
        walls = layout.walls
        dish = sample_free(u[:1], layout, [None])[0]
        # a region around the dish is no prefix of the layout's order: use the mask-based sampler
        rows, cols = jnp.indices(walls.shape)
        near = jnp.maximum(jnp.abs(rows - dish[0]), jnp.abs(cols - dish[1])) <= params.dish_distance
        on_dish = (rows == dish[0]) & (cols == dish[1])
        cheese = sample_cells(k_cheese, ~walls & ~on_dish & (near | diverse), 1)[0]
        agent = sample_free(u[1:], layout, [None], exclude=[cheese, dish])[0]
        return self.make_level(walls, agent, jnp.stack([cheese, dish]), [True, True])

    # both goals are object kinds, so their oracles (and which levels tell them apart) need no more code
    def interact(self, level, params):
        return level, {"cheese": self.at_agent(level, "cheese").any(), "dish": self.at_agent(level, "dish").any()}


gridsim.register("cheese-on-dish", CheeseOnDish, overwrite=True)


# An extra named event, used as a second proxy of a built-in environment, and a reward of its own.
def top_row(before, after, params):
    """The agent walked along the top row of the maze."""
    return after.agent[0] == 1


def top_row_cells(level, params):
    """Where an oracle pursuing ``top_row`` heads: any cell of row 1."""
    return jnp.zeros(level.walls.shape, bool).at[1].set(True)


def cheese_minus_time(events, params):
    """Cheese pays 1; every step costs 0.01."""
    return events["cheese"] - 0.01


def cheese_with_top_row_proxy(**overrides):
    """cheese-in-corner with an extra proxy and a step penalty."""
    return gridsim.CheeseInCorner(
        extra_events={"top_row": top_row}, extra_targets={"top_row": top_row_cells}, proxies=("corner", "top_row"),
        reward_fn=cheese_minus_time, **overrides
    )
