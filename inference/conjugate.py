"""Exact Gaussian posteriors: Bayesian linear regression and Gaussian-process regression."""

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from brgnnft.inference._layout import add_chain_axis, build_datatree
from brgnnft.inference._validate import check_data, check_fixed_noise, check_model
from brgnnft.inference.prior import draw_prior
from brgnnft.models._checks import check_positive_int


def linear_posterior_moments(features, y, noise: float, prior_variance: float):
    """Return the posterior mean (P,) and covariance (P, P) of Bayesian linear regression.

    .. math::

        \\Sigma = (\\Phi^T \\Phi / \\sigma^2 + I / s^2)^{-1},\\quad \\mu = \\Sigma \\Phi^T y / \\sigma^2
    """
    features = np.asarray(features, dtype=float)
    precision = features.T @ features / noise**2 + np.eye(features.shape[1]) / prior_variance
    factor = scipy.linalg.cho_factor(precision, lower=True)
    mean = scipy.linalg.cho_solve(factor, features.T @ np.asarray(y, dtype=float) / noise**2)
    covariance = scipy.linalg.cho_solve(factor, np.eye(features.shape[1]))
    return mean, covariance


def sample_linear_posterior(features, y, noise: float, prior_variance: float, *, key, num_samples: int):
    """Draw exact posterior samples of the readout, shape (num_samples, P), by Matheron's rule.

    a = a_0 + s^2 Phi^T (s^2 Phi Phi^T + sigma^2 I)^{-1} (y - Phi a_0 - sigma eps) with
    a_0 ~ N(0, s^2 I), eps ~ N(0, I): an exact draw from the Gaussian posterior that costs
    O(n^2 P) instead of the O(P^3) of a P x P Cholesky factor, so it suits wide networks.
    """
    features = jnp.asarray(features)
    n, num_features = features.shape
    key_prior, key_noise = jax.random.split(key)
    a0 = jnp.sqrt(prior_variance) * jax.random.normal(key_prior, (num_samples, num_features))
    eps = jax.random.normal(key_noise, (num_samples, n))
    gram = prior_variance * features @ features.T + noise**2 * jnp.eye(n)
    residual = jnp.asarray(y)[None, :] - a0 @ features.T - noise * eps
    solved = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(gram, lower=True), residual.T)
    return a0 + prior_variance * (features.T @ solved).T


def _sample_gaussian_process(model, x, y, *, key, num_samples):
    mean, covariance = model.posterior_moments(x, y, x)
    mean = np.asarray(mean)
    covariance = np.asarray(covariance)
    jitter = 1e-10 * np.mean(np.diag(covariance))
    factor = np.linalg.cholesky(covariance + jitter * np.eye(len(mean)))
    draws = np.asarray(jax.random.normal(key, (num_samples, len(mean))))
    return {"f": mean + draws @ factor.T}


def conjugate(model, x, y, *, key, num_samples: int = 1000, num_prior_samples: int = 0):
    """Draw from the exact Gaussian posterior of a model linear in its Bayesian parameters.

    Works for models with a frozen feature map and a Bayesian readout (``RandomFeatures``, a frozen
    ``CosNet``) and for Gaussian-process models (``NNGP``), and returns the common DataTree layout
    with one chain of ``num_samples`` independent draws.

    Raises
    ------
    TypeError
        For any other model (an MLP, an unfrozen CosNet): use ``nuts`` or ``ensemble``.
    """
    is_gaussian_process = getattr(model, "is_gaussian_process", False)
    if not is_gaussian_process:
        check_model(model)
    x, y = check_data(model, x, y, key, require_y=True)
    check_fixed_noise(model, "conjugate")
    num_samples = check_positive_int("num_samples", num_samples)
    key_sample, key_prior, key_predictive = jax.random.split(key, 3)

    if is_gaussian_process:
        samples = _sample_gaussian_process(model, x, y, key=key_sample, num_samples=num_samples)
    elif getattr(model, "linear_site", None) and getattr(model, "is_linear", True):
        features = model.features(jnp.asarray(x))
        a = sample_linear_posterior(
            features, y, model.noise, model.readout_variance, key=key_sample, num_samples=num_samples
        )
        samples = {model.linear_site: a, "f": a @ features.T}
    else:
        raise TypeError(
            f"conjugate needs a model linear in its Bayesian parameters (RandomFeatures, a frozen "
            f"CosNet) or a Gaussian process (NNGP), got {model!r}: use nuts or ensemble instead"
        )

    prior = None
    if num_prior_samples:
        prior = add_chain_axis(draw_prior(model, x, key=key_prior, num_samples=num_prior_samples))
    return build_datatree(
        model,
        x,
        y,
        key=key_predictive,
        posterior=add_chain_axis(samples),
        prior=prior,
        attrs={"inference": "conjugate"},
    )
