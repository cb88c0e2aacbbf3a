"""PPO agents that know environments only through the gymnax-style interface.

``agents.ppo``: ``make_train(config, env)``, segmented training, ``evaluate``.
"""

import gridsim  # noqa: F401  (first: importing gridsim sets its XLA:CPU flags before any backend starts)
