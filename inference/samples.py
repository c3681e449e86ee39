"""The common DataTree layout from samples that came from elsewhere (any optimiser or sampler)."""

import jax
import jax.numpy as jnp
import numpy as np

from brgnnft.inference._layout import build_datatree
from brgnnft.inference._validate import check_data, check_model


def from_samples(model, x, y, samples: dict, *, key, attrs: dict | None = None):
    """Wrap parameter samples of shape (chain, draw, ...) in the common DataTree layout.

    ``f`` is computed with ``model.apply`` when ``samples`` does not contain it. The predictive and
    log-likelihood groups follow from the model's likelihood, as for every inference route.

    Parameters
    ----------
    model : a brgnnft model.
    x : array (n, d); y : array (n,) or None
    samples : dict of site name to array (chain, draw, ...), every parameter site of the model.
    key : jax.random key for the predictive draws.
    attrs : extra root attributes (strings and numbers).
    """
    check_model(model)
    x, y = check_data(model, x, y, key, require_y=False)
    missing = sorted(set(model.param_shapes(x.shape[1])) - set(samples))
    if missing:
        raise ValueError(f"samples lack the parameter sites {missing}: pass every site of the model")
    posterior = {name: np.asarray(value) for name, value in samples.items()}
    if "f" not in posterior:
        params = {name: jnp.asarray(posterior[name]) for name in model.param_shapes(x.shape[1])}
        posterior["f"] = np.asarray(model.apply(params, jnp.asarray(x)))
    attrs = {"inference": "external", **(attrs or {})}
    return build_datatree(model, x, y, key=key, posterior=posterior, attrs=attrs)
