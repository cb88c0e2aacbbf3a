"""Colour versus shape (Maze II of Langosco et al. 2022; Ramanauskas & Şimşek 2023).

An open room with objects that each have a shape (square or circle) and a colour (red or blue),
shown in separate observation channels. Touching either object ends the episode; only the square
pays. A training level holds the red square alone, as in the published mazes (one goal object,
its colour and shape both on it), or with ``distractor`` the blue circle as well; at test a blue
square and a red circle, and an agent that learned "red" walks to the circle. Shape and colour
predict reward equally well in training, so which one an agent follows is not fixed by the
training data: report the distribution over seeds.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gridsim import rng
from gridsim.core import EnvParams, GridEnv, params_dataclass
from gridsim.layouts import sample_free


@params_dataclass
class ColourVsShapeParams(EnvParams):
    distractor: jax.Array = 0.0  # share of training levels that also hold the blue circle (test levels all do)


class ColourVsShape(GridEnv):
    name = "colour-vs-shape"
    description = "the square is red in training; at test the circle is"
    slot_kinds = ("square", "circle", "red", "blue")  # an object is a shape slot and a colour slot on one cell
    event_names = ("square", "red", "other")
    true_goal = "square"
    proxies = ("red",)
    terminal_events = ("square", "red", "other")
    small_options = dict(height=5, width=5)

    def __init__(self, height: int = 7, width: int = 7, **kwargs):
        super().__init__(height, width, **kwargs)
        self.check_room(3, "agent, two objects")

    def default_params(self) -> ColourVsShapeParams:
        return ColourVsShapeParams().replace(max_steps_in_episode=2 * (self.height + self.width),
                                             reward_weights={"square": 1.0})

    def sample_level(self, key, layout, params, diverse):
        u = rng.uniform(key, (4,))
        agent, square, circle = sample_free(u[:3], layout, [None] * 3)
        red, blue = jnp.where(diverse, circle, square), jnp.where(diverse, square, circle)
        both = diverse | (u[3] < params.distractor)  # the circle's slots, shape and colour
        alive = jnp.stack([jnp.bool_(True), both, jnp.bool_(True), both])
        return self.make_level(layout.walls, agent, jnp.stack([square, circle, red, blue]), alive)

    def interact(self, level, params):
        square, red = self.at_agent(level, "square").any(), self.at_agent(level, "red").any()
        touched = self.at_agent(level, "circle").any() | self.at_agent(level, "blue").any()
        return level, {"square": square, "red": red, "other": touched & ~square & ~red}

    def goal_avoids(self, level, params):
        # the blue circle of training ends the episode for nothing: both oracles walk around it
        other = ((self.cells_of(level, "circle") | self.cells_of(level, "blue"))
                 & ~self.cells_of(level, "square") & ~self.cells_of(level, "red"))
        return {"square": other, "red": other}
