"""Open room: a goal somewhere in an empty room. No proxy and no shift.

A sanity check, like MiniGrid's Empty rooms: an agent that cannot learn this
cannot be said to misgeneralize anywhere else.
"""

from __future__ import annotations

from gridsim import rng
from gridsim.core import EnvParams, GridEnv, params_dataclass
from gridsim.layouts import sample_free


@params_dataclass
class OpenRoomParams(EnvParams):
    pass


class OpenRoom(GridEnv):
    name = "open-room"
    description = "a goal anywhere in an open room; no proxy (a sanity check)"
    slot_kinds = ("goal",)
    event_names = ("goal",)
    true_goal = "goal"
    proxies = ()
    terminal_events = ("goal",)
    small_options = dict(height=5, width=5)

    def __init__(self, height: int = 7, width: int = 7, **kwargs):
        super().__init__(height, width, **kwargs)
        self.check_room(2, "agent and goal")

    def default_params(self) -> OpenRoomParams:
        return OpenRoomParams().replace(max_steps_in_episode=2 * (self.height + self.width),
                                        reward_weights={"goal": 1.0})

    def sample_level(self, key, layout, params, diverse):
        agent, goal = sample_free(rng.uniform(key, (2,)), layout, [None, None])
        return self.make_level(layout.walls, agent, goal, True)

    def interact(self, level, params):
        return level, {"goal": self.at_agent(level, "goal").any()}
