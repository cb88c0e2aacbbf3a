"""The built-in environments, each registered under its ``name``. A new built-in environment is a
module here (with its tests and its example sweep) and one line in ``BUILT_IN``."""

from gridsim.envs.absent_supervisor import AbsentSupervisor
from gridsim.envs.cheese_in_corner import CheeseInCorner
from gridsim.envs.cheese_on_dish import CheeseOnDish
from gridsim.envs.coin_at_end import CoinAtEnd
from gridsim.envs.colour_vs_shape import ColourVsShape
from gridsim.envs.follow_the_leader import FollowTheLeader
from gridsim.envs.keys_and_chests import KeysAndChests
from gridsim.envs.lava_shift import LavaShift
from gridsim.envs.monster_world import MonsterWorld
from gridsim.envs.open_room import OpenRoom
from gridsim.envs.tree_harvesting import TreeHarvesting
from gridsim.registry import register

BUILT_IN = (AbsentSupervisor, CheeseInCorner, CheeseOnDish, CoinAtEnd, ColourVsShape, FollowTheLeader,
            KeysAndChests, LavaShift, MonsterWorld, OpenRoom, TreeHarvesting)
for _env in BUILT_IN:
    register(_env.name, _env)

__all__ = [env.__name__ for env in BUILT_IN]
