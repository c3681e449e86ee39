"""Output-space Fisher information of the observation models, and their exact KL divergences.

For an observation model p(y | f) with network output f in R^K, the Fisher information of the
parameters is I = J^T H_out J, where J is the Jacobian of f and H_out the Fisher information of
p(y | f) with respect to f. This module gives H_out, a factor L with H_out = L L^T (so the weighted
Jacobian L^T J turns every likelihood into a sum of squares), and KL(p(. | f) || p(. | f')).

Outputs have shape (..., n, K): K = 1 for the scalar likelihoods, the number of classes for
"categorical", and the output dimension for "gaussian".
"""

import jax
import jax.numpy as jnp

from brgnnft.models._checks import check_option

LIKELIHOODS = ("gaussian", "bernoulli", "categorical", "poisson")


def _noise_for(f, noise, trailing: int):
    """Return ``noise`` as a 0-d array, or with ``trailing`` unit axes after the sample axes of ``f``.

    ``f`` has shape (..., n, K); a per-sample noise has the sample shape (...).
    """
    if noise is None:
        raise ValueError("likelihood='gaussian' needs the noise standard deviation: pass noise=<sigma>")
    noise = jnp.asarray(noise, dtype=f.dtype)
    if noise.ndim == 0:
        return noise
    batch = f.shape[:-2]
    if noise.shape != batch:
        raise ValueError(
            f"noise has shape {noise.shape}, expected a scalar or the sample shape {batch} of the outputs"
        )
    return jnp.reshape(noise, noise.shape + (1,) * trailing)


def _check_output_shape(likelihood: str, f) -> None:
    if f.ndim < 2:
        raise ValueError(f"outputs must have shape (..., n, K), got shape {f.shape}")
    if likelihood == "categorical" and f.shape[-1] < 2:
        raise ValueError(f"likelihood='categorical' needs K >= 2 logits per datum, got outputs of shape {f.shape}")
    if likelihood in ("bernoulli", "poisson") and f.shape[-1] != 1:
        raise ValueError(f"likelihood={likelihood!r} needs K = 1 output per datum, got outputs of shape {f.shape}")


def output_fisher(likelihood: str, f, *, noise=None) -> jax.Array:
    """Return the Fisher information H_out of p(y | f) with respect to the output f.

    Parameters
    ----------
    likelihood : {"gaussian", "bernoulli", "categorical", "poisson"}
        f is the mean, the logit, the class logits, or the log rate.
    f : array of shape (..., n, K)
        Network outputs.
    noise : float or array of shape (...), optional
        Observation standard deviation sigma; required for "gaussian".

    Returns
    -------
    jax.Array of shape (..., n, K, K)

    Notes
    -----
    Gaussian: I_K / sigma^2. Bernoulli: p (1 - p) with p = sigmoid(f). Categorical:
    diag(p) - p p^T with p = softmax(f). Poisson: mu = exp(f).
    """
    check_option("likelihood", likelihood, LIKELIHOODS)
    f = jnp.asarray(f)
    _check_output_shape(likelihood, f)
    eye = jnp.broadcast_to(jnp.eye(f.shape[-1], dtype=f.dtype), f.shape + (f.shape[-1],))
    if likelihood == "gaussian":
        return eye / _noise_for(f, noise, 3) ** 2
    if likelihood == "bernoulli":
        return (jax.nn.sigmoid(f) * jax.nn.sigmoid(-f))[..., None]
    if likelihood == "poisson":
        return jnp.exp(f)[..., None]
    p = jax.nn.softmax(f, axis=-1)
    return p[..., :, None] * eye - p[..., :, None] * p[..., None, :]


def output_fisher_factor(likelihood: str, f, *, noise=None) -> jax.Array:
    """Return L of shape (..., n, K, K) with L L^T = H_out, the output-space Fisher.

    The Fisher of the parameters is then a sum of squares, I = sum_i (L_i^T J_i)^T (L_i^T J_i),
    with J_i the (K, P) Jacobian of the outputs at datum i. Arguments as in :func:`output_fisher`.

    Notes
    -----
    Gaussian: I_K / sigma. Bernoulli: sqrt(p (1 - p)), computed as exp((log p + log(1 - p)) / 2)
    so that it stays accurate for large |f|. Poisson: exp(f / 2). Categorical: with s = sqrt(p),
    L = diag(s) - p s^T, which gives L L^T = diag(p) - 2 p p^T + p (s^T s) p^T = diag(p) - p p^T
    because s^T s = sum(p) = 1.
    """
    check_option("likelihood", likelihood, LIKELIHOODS)
    f = jnp.asarray(f)
    _check_output_shape(likelihood, f)
    eye = jnp.broadcast_to(jnp.eye(f.shape[-1], dtype=f.dtype), f.shape + (f.shape[-1],))
    if likelihood == "gaussian":
        return eye / _noise_for(f, noise, 3)
    if likelihood == "bernoulli":
        return jnp.exp(0.5 * (jax.nn.log_sigmoid(f) + jax.nn.log_sigmoid(-f)))[..., None]
    if likelihood == "poisson":
        return jnp.exp(0.5 * f)[..., None]
    log_p = jax.nn.log_softmax(f, axis=-1)
    p = jnp.exp(log_p)
    s = jnp.exp(0.5 * log_p)
    return s[..., :, None] * eye - p[..., :, None] * s[..., None, :]


def output_kl_divergence(likelihood: str, f_from, f_to, *, noise=None) -> jax.Array:
    """Return KL(p(. | f_from) || p(. | f_to)) per datum, shape (..., n).

    Parameters
    ----------
    likelihood : {"gaussian", "bernoulli", "categorical", "poisson"}
    f_from, f_to : arrays of shape (..., n, K)
        Outputs of the two parameter values; they broadcast against each other on equal rank.
    noise : float or array of shape (...), optional
        Observation standard deviation, shared by both; required for "gaussian".

    Notes
    -----
    Gaussian: sum_k (f'_k - f_k)^2 / (2 sigma^2). Bernoulli: p log(p / q) + (1 - p) log((1 - p) /
    (1 - q)). Categorical: sum_k p_k log(p_k / q_k). Poisson: mu log(mu / nu) - mu + nu. Logs of
    probabilities come from log_sigmoid and log_softmax, so saturated logits do not give NaN.
    """
    check_option("likelihood", likelihood, LIKELIHOODS)
    f_from = jnp.asarray(f_from)
    f_to = jnp.asarray(f_to)
    if f_from.ndim != f_to.ndim:
        raise ValueError(f"f_from has shape {f_from.shape} and f_to {f_to.shape}: give both the same rank")
    _check_output_shape(likelihood, f_from)
    _check_output_shape(likelihood, f_to)
    if likelihood == "gaussian":
        difference = f_to - f_from
        return jnp.sum(difference**2, axis=-1) / (2.0 * _noise_for(difference, noise, 1) ** 2)
    if likelihood == "bernoulli":
        log_p, log_q = jax.nn.log_sigmoid(f_from), jax.nn.log_sigmoid(f_to)
        log_not_p, log_not_q = jax.nn.log_sigmoid(-f_from), jax.nn.log_sigmoid(-f_to)
        divergence = jnp.exp(log_p) * (log_p - log_q) + jnp.exp(log_not_p) * (log_not_p - log_not_q)
        return divergence[..., 0]
    if likelihood == "poisson":
        rate_from, rate_to = jnp.exp(f_from), jnp.exp(f_to)
        return (rate_from * (f_from - f_to) - rate_from + rate_to)[..., 0]
    log_p = jax.nn.log_softmax(f_from, axis=-1)
    log_q = jax.nn.log_softmax(f_to, axis=-1)
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)
