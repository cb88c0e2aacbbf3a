"""Sweeps, metrics, storage and plots (see the experiments issue)."""
