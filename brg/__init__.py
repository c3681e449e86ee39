"""Bayesian renormalization group: Fisher information, coarse graining, flows and the command."""

__all__: list[str] = []
