"""Activation functions by name, so that models and kernels agree on what each name means."""

from collections.abc import Callable

import jax
import jax.numpy as jnp


def _identity(u):
    return u


ACTIVATIONS: dict[str, Callable] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "erf": jax.scipy.special.erf,
    "gelu": jax.nn.gelu,
    "sigmoid": jax.nn.sigmoid,
    "cos": jnp.cos,
    "identity": _identity,
}


def resolve_activation(activation) -> tuple[str, Callable]:
    """Return ``(name, function)`` for an activation given by name or as a callable.

    A callable keeps its ``__name__`` as its name, so that kernels can tell that no closed form
    applies and fall back to quadrature.
    """
    if callable(activation):
        return getattr(activation, "__name__", "custom"), activation
    if activation not in ACTIVATIONS:
        known = ", ".join(sorted(ACTIVATIONS))
        raise ValueError(f"unknown activation {activation!r}: use one of {known}, or pass a callable")
    return activation, ACTIVATIONS[activation]
