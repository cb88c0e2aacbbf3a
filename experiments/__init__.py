"""Sweeps, metrics, storage, reports and the command line (see docs/design.md)."""
