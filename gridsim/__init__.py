"""gridsim: vectorised gridworlds for finding and measuring goal misgeneralization."""

from gridsim import (
    _xla_flags,  # noqa: F401  (must run before JAX starts a backend)
    oracles,  # noqa: E402  (after the envs it plans for)
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
from gridsim.registry import load, make, register, registered
from gridsim.rollout import Evaluation, Policy, evaluate, obs_policy, random_policy

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
