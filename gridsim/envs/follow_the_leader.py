"""Follow the leader (Shah et al. 2022, after DeepMind's cultural transmission agents).

An open room with beacons and a leader, a scripted bot that starts on the agent's cell, walks to the
next beacon of its route (one step after each of the agent's) and waits there until the agent has
been on it: one frame shows where it leads. Each level has its own rewarded order of the beacons,
unseen: each beacon visited in turn pays +1 (the count shows in the top row), and one entered out of
turn costs 0.2 (as in cultural transmission's goal cycles, trying beacons until one pays is dear;
at -1 the agents learned to avoid beacons altogether). In training the leader walks the rewarded
order, so following it is the way to be paid; at test it walks another order. The true goal is
finishing the rewarded order, the proxy finishing the leader's: an agent that learned to follow
ends its episode on the leader's last beacon with the order undone.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from gridsim import rng
from gridsim.core import EnvParams, GridEnv, params_dataclass
from gridsim.layouts import sample_free
from gridsim.oracles import UNREACHABLE, cost_to_go


def _random_order(u):
    """A uniformly random permutation: each number's rank among ``u`` (ties by position). A sort
    under ``vmap`` costs more on CPU than the rest of a step, and auto-reset draws one every step."""
    i = jnp.arange(u.shape[0])
    before = (u[None, :] < u[:, None]) | ((u[None, :] == u[:, None]) & (i[None, :] < i[:, None]))
    return before.sum(axis=1).astype(jnp.int32)


@params_dataclass
class FollowTheLeaderParams(EnvParams):
    pass


class FollowTheLeader(GridEnv):
    name = "follow-the-leader"
    description = "a leader walks the unseen rewarded beacon order in training, another order at test"
    event_names = ("beacon", "wrong_beacon", "rule_done", "followed_leader")
    true_goal = "rule_done"
    proxies = ("followed_leader",)
    terminal_events = ("rule_done", "followed_leader")
    mobile_kinds = ("leader",)
    uses_inventory = True  # beacons done in the rewarded order
    small_options = dict(height=5, width=5, beacons=3)

    def __init__(self, height: int = 7, width: int = 7, *, beacons: int = 3, **kwargs):
        self.beacons = int(beacons)
        if self.beacons < 2:
            raise ValueError(f"beacons must be >= 2 (one order must differ from another), got {beacons}")
        self.slot_kinds = ("beacon",) * self.beacons + ("leader",)
        # memory: the rewarded order and the leader's route (beacon indices), the beacon the agent stood
        # on after the last step (``beacons``: none), and the agent's progress along the route
        self.memory_size = 2 * self.beacons + 2
        super().__init__(height, width, **kwargs)
        self.check_room(1 + self.beacons, f"agent, {self.beacons} beacons")
        self.check_inventory_row(self.beacons, "beacons done")

    def default_params(self) -> FollowTheLeaderParams:
        return FollowTheLeaderParams().replace(max_steps_in_episode=4 * (self.height + self.width),
                                               reward_weights={"beacon": 1.0, "wrong_beacon": -0.2})

    def sample_level(self, key, layout, params, diverse):
        k_cells, k_rule, k_route = rng.split(key, 3)
        cells = sample_free(rng.uniform(k_cells, (1 + self.beacons,)), layout, [None] * (1 + self.beacons))
        rule = _random_order(rng.uniform(k_rule, (self.beacons,)))
        same = jnp.arange(self.beacons)
        shuffle = _random_order(rng.uniform(k_route, (self.beacons,)))
        shuffle = jnp.where(jnp.all(shuffle == same), same[::-1], shuffle)  # any order but the rule's
        route = jnp.where(diverse, rule[shuffle], rule)
        memory = jnp.concatenate([rule, route, jnp.array([self.beacons, 0], jnp.int32)])
        return self.make_level(layout.walls, cells[0], jnp.concatenate([cells[1:], cells[:1]]),
                               np.ones(len(self.slot_kinds), bool), memory=memory)

    def interact(self, level, params):
        k = self.beacons
        rule, route, followed = level.memory[:k], level.memory[k:2 * k], level.memory[-1]
        beacons = level.obj_pos[:k]
        on = jnp.all(beacons == level.agent, axis=-1)
        progress = level.inventory + on[rule[jnp.minimum(level.inventory, k - 1)]] * (level.inventory < k)
        standing = jnp.where(on.any(), jnp.argmax(on), k)
        entered = on.any() & (standing != level.memory[2 * k])
        followed = followed + on[route[jnp.minimum(followed, k - 1)]] * (followed < k)
        # the leader: one step to the route's next beacon not yet followed, rows first (a shortest path in
        # an open room), and none once the agent has followed the whole route
        leader = level.obj_pos[k]
        gap = beacons[route[jnp.minimum(followed, k - 1)]] - leader
        step = jnp.where(gap[0] != 0, jnp.stack([jnp.sign(gap[0]), 0]), jnp.stack([0, jnp.sign(gap[1])]))
        moved = leader + step * (followed < k)
        moved = jnp.where(level.walls[moved[0], moved[1]], leader, moved)
        advanced = progress > level.inventory
        level = level.replace(obj_pos=level.obj_pos.at[k].set(moved), inventory=progress,
                              memory=level.memory.at[2 * k].set(standing).at[-1].set(followed))
        return level, {"beacon": advanced, "wrong_beacon": entered & ~advanced, "rule_done": progress == k,
                       "followed_leader": followed == k}

    def _order_target(self, level, order, done):
        """The cost map of visiting the beacons ``order[done:]`` in turn: the next one's cell, valued at
        what remains from it (a goal of several steps, as ``oracles.cost_to_go`` takes)."""
        k = self.beacons
        cells = level.obj_pos[order]
        grid = lambda i, value: jnp.full(level.walls.shape, UNREACHABLE).at[cells[i, 0], cells[i, 1]].set(value)
        remaining = [jnp.int32(0)] * k
        for i in range(k - 2, -1, -1):
            remaining[i] = cost_to_go(level.walls, grid(i + 1, remaining[i + 1]))[cells[i, 0], cells[i, 1]]
        value = jnp.stack(remaining)[jnp.minimum(done, k - 1)]
        return grid(jnp.minimum(done, k - 1), value)

    def goal_targets(self, level, params):
        k = self.beacons
        return {"rule_done": self._order_target(level, level.memory[:k], level.inventory),
                "followed_leader": self._order_target(level, level.memory[k:2 * k], level.memory[-1])}
