"""Built-in environments."""

from gridsim.envs.cheese_in_corner import CheeseInCorner
from gridsim.envs.coin_at_end import CoinAtEnd
from gridsim.envs.keys_and_chests import KeysAndChests
from gridsim.envs.open_room import OpenRoom

__all__ = ["CheeseInCorner", "CoinAtEnd", "KeysAndChests", "OpenRoom"]
