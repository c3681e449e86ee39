"""Prior samples of a model in the common DataTree layout."""

import jax
import jax.numpy as jnp
from numpyro.infer import Predictive

from brgnnft.inference._layout import build_datatree
from brgnnft.inference._validate import check_data, check_model
from brgnnft.models._checks import check_positive_int


def draw_prior(model, x, *, key, num_samples: int) -> dict:
    """Return prior draws of every parameter site and ``f``, shape (num_samples, ...)."""
    sites = [*model.param_shapes(x.shape[1]), "f"]
    if getattr(model, "likelihood", "gaussian") == "gaussian" and getattr(model, "noise", 0.0) is None:
        sites.append("noise")
    predictive = Predictive(model, num_samples=num_samples, return_sites=sites)
    return predictive(key, jnp.asarray(x))


def prior_samples(model, x, *, key, num_samples: int = 1000, y=None):
    """Draw from the prior of ``model`` at inputs x and return the common DataTree layout.

    Parameters
    ----------
    model : a brgnnft model (``model(x, y=None)``).
    x : array (n, d)
    key : jax.random key
    num_samples : int
        Number of prior draws S (one chain of S draws).
    y : array (n,), optional
        Observed targets, stored in ``observed_data`` when given.

    Returns
    -------
    DataTree with groups ``prior`` (sites and ``f``, dims (chain, draw, ...)), ``prior_predictive``,
    ``constant_data`` and, with ``y``, ``observed_data``.

    Examples
    --------
    >>> import jax, numpy as np
    >>> from brgnnft.models import MLP
    >>> from brgnnft.inference import prior_samples
    >>> tree = prior_samples(MLP(hidden=(16,)), np.linspace(-1, 1, 5)[:, None],
    ...                      key=jax.random.key(0), num_samples=10)
    >>> tree["prior"]["f"].shape
    (1, 10, 5)
    """
    check_model(model)
    x, y = check_data(model, x, y, key, require_y=False)
    num_samples = check_positive_int("num_samples", num_samples)
    key_prior, key_predictive = jax.random.split(key)

    draws = draw_prior(model, x, key=key_prior, num_samples=num_samples)
    prior = {name: value[None] for name, value in draws.items()}
    return build_datatree(model, x, y, key=key_predictive, prior=prior, attrs={"inference": "prior"})
