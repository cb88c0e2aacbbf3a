"""PPO agents (see the agents issue); knows environments only through gridsim's public API."""
