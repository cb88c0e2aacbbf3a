"""gridsim: vectorised gridworlds for finding and measuring goal misgeneralization."""

from gridsim import (
    _xla_flags,  # noqa: F401  (first: it must run before JAX starts a backend)
    oracles,
)
from gridsim.core import (
    ACTION_NAMES,
    OUTCOME_FAIL,
    OUTCOME_TRUE,
    Box,
    Discrete,
    EnvParams,
    EnvState,
    GridEnv,
    Level,
    outcome_of,
    params_dataclass,
)
from gridsim.envs import CheeseInCorner, CoinAtEnd, KeysAndChests, OpenRoom
from gridsim.policy import Policy, obs_policy, random_policy
from gridsim.registry import load, make, register, registered
from gridsim.rollout import Evaluation, evaluate

__version__ = "0.1.0"

__all__ = [
    "ACTION_NAMES",
    "OUTCOME_FAIL",
    "OUTCOME_TRUE",
    "Box",
    "CheeseInCorner",
    "CoinAtEnd",
    "KeysAndChests",
    "OpenRoom",
    "Discrete",
    "EnvParams",
    "EnvState",
    "Evaluation",
    "GridEnv",
    "Level",
    "Policy",
    "evaluate",
    "load",
    "make",
    "obs_policy",
    "oracles",
    "outcome_of",
    "params_dataclass",
    "random_policy",
    "register",
    "registered",
]
