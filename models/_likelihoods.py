"""Observation models: how a network output f becomes the distribution of the target y."""

import jax.numpy as jnp
import numpyro.distributions as dist

from brgnnft.models._checks import check_option

LIKELIHOODS = ("gaussian", "bernoulli", "categorical", "poisson")


def check_likelihood(likelihood: str, out_dim: int) -> str:
    """Validate a likelihood name against the output dimension it needs."""
    check_option("likelihood", likelihood, LIKELIHOODS)
    if likelihood == "categorical" and out_dim < 2:
        raise ValueError(
            f"likelihood='categorical' needs out_dim >= 2 (one logit per class), got out_dim={out_dim}"
        )
    if likelihood in ("bernoulli", "poisson") and out_dim != 1:
        raise ValueError(f"likelihood={likelihood!r} needs out_dim=1, got out_dim={out_dim}")
    return likelihood


def observation_distribution(likelihood: str, f, noise):
    """Return the distribution of y given the network output ``f`` of shape (n,) or (n, k).

    f is the mean for "gaussian" (standard deviation ``noise``), the logit for "bernoulli", the
    logits over the last axis for "categorical", and the log rate for "poisson".
    """
    if likelihood == "gaussian":
        distribution = dist.Normal(f, noise)
        return distribution.to_event(1) if f.ndim == 2 else distribution
    if likelihood == "bernoulli":
        return dist.Bernoulli(logits=f)
    if likelihood == "categorical":
        return dist.Categorical(logits=f)
    return dist.Poisson(rate=jnp.exp(f))
