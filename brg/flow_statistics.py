"""Per-scale statistics of a flow, from network outputs f (..., S, m) at m test points.

Axis convention: the member axis S (chain and draw stacked) is second to last and the test-point
axis m is last. Any leading axes, such as the cutoff, pass through.
"""

import numpy as np
from scipy.special import logsumexp


def member_mse(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return each member's test mean squared error, shape (..., S)."""
    return np.mean((f - y) ** 2, axis=-1)


def mean_with_standard_error(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the mean over the last (member) axis and its standard error std / sqrt(S)."""
    count = values.shape[-1]
    error = values.std(axis=-1, ddof=1) / np.sqrt(count) if count > 1 else np.full(values.shape[:-1], np.nan)
    return values.mean(axis=-1), error


def gaussian_log_likelihood(f: np.ndarray, y: np.ndarray, noise) -> np.ndarray:
    """Return log N(y | f, noise^2) elementwise; ``noise`` broadcasts against f."""
    return -0.5 * ((y - f) / noise) ** 2 - np.log(noise) - 0.5 * np.log(2 * np.pi)


def log_predictive_density(log_likelihood: np.ndarray) -> np.ndarray:
    """Return sum_i log (1/S) sum_s p(y_i | f_s), shape (...), from (..., S, m) log likelihoods."""
    members = log_likelihood.shape[-2]
    return np.sum(logsumexp(log_likelihood, axis=-2) - np.log(members), axis=-1)


def predictive_variance(f: np.ndarray, noise) -> np.ndarray:
    """Return the variance of the predictive y at each test point, Var_s f + E_s noise^2, shape (..., m)."""
    return f.var(axis=-2, ddof=1) + np.mean(np.broadcast_to(np.asarray(noise) ** 2, f.shape), axis=-2)


def gaussian_kl(mean_p, var_p, mean_q, var_q) -> np.ndarray:
    """Return KL(N(mean_p, var_p) || N(mean_q, var_q)) elementwise."""
    return 0.5 * (np.log(var_q / var_p) + (var_p + (mean_p - mean_q) ** 2) / var_q - 1.0)


def predictive_kl(f: np.ndarray, f_reference: np.ndarray, noise) -> np.ndarray:
    """Return the mean over test points of the KL divergence between Gaussian fits of two predictives.

    Each predictive of y at a test point is summarised by its mean and variance (including the
    observation noise), and KL(coarse-grained || reference) is averaged over the m points.
    """
    mean_p, var_p = f.mean(axis=-2), predictive_variance(f, noise)
    mean_q, var_q = f_reference.mean(axis=-2), predictive_variance(f_reference, noise)
    return np.mean(gaussian_kl(mean_p, var_p, mean_q, var_q), axis=-1)
