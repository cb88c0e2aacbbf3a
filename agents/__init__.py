"""PPO agents that know environments only through the gymnax-style interface.

``agents.ppo``: ``make_train(config, env)``, segmented training, ``evaluate``.
"""

import gridsim._xla_flags  # noqa: F401  (the XLA:CPU deadlock guard, before any backend starts)
