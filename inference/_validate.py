"""Checks that every inference route runs before any work starts."""

import numpy as np

from brgnnft.models._checks import check_inputs, check_key, check_targets


def check_model(model):
    """Raise a TypeError unless ``model`` follows the model contract of the library."""
    for attribute in ("apply", "param_shapes", "prior_variance"):
        if not hasattr(model, attribute):
            raise TypeError(
                f"model {model!r} has no {attribute!r}: use a brgnnft.models model (MLP, "
                "RandomFeatures, CosNet) or lift a network with from_flax / from_equinox"
            )
    if not callable(model):
        raise TypeError(f"model {model!r} is not callable as a NumPyro model model(x, y=None)")
    return model


def check_data(model, x, y, key, *, require_y: bool):
    """Validate model, data and key; return x and y as NumPy arrays (y may be None)."""
    check_key(key)
    x = check_inputs(x)
    if y is None:
        if require_y:
            raise ValueError("y is required for a posterior: pass one target per row of x")
        return x, None
    y = check_targets(y, x.shape[0])
    if getattr(model, "likelihood", "gaussian") in ("bernoulli", "categorical", "poisson"):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError(
                f"y must hold integer labels or counts for the {model.likelihood} likelihood, "
                "got non-integer values"
            )
    return x, y


def check_fixed_noise(model, route: str) -> float:
    """Return the model's noise, raising if the model puts a prior on it instead."""
    noise = getattr(model, "noise", None)
    if getattr(model, "likelihood", "gaussian") == "gaussian" and noise is None:
        raise ValueError(
            f"{route} needs a fixed observation noise, but the model has noise=None (a noise "
            "prior): build the model with noise=<standard deviation>, or use nuts"
        )
    return noise
