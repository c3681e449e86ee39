"""Integrators of Riemannian Langevin diffusions, the stochastic dynamics of diffusion coarse graining.

A diffusion on parameter space with metric G(theta) (diffusion tensor D = G^-1) and stationary
density pi(theta) is the Ito SDE

.. math::

    d\\theta = \\tfrac12 \\left[ D \\nabla \\log \\pi + \\operatorname{div} D \\right] dt + D^{1/2} dW,
    \\qquad (\\operatorname{div} D)_i = \\sum_j \\partial_j D_{ij}.

With this drift the probability flux b pi - 1/2 div(D pi) vanishes, so pi is stationary for any
state-dependent D: the 1/2 div D term is the Ito correction of a metric that follows the state.
Two special cases are the ones :mod:`brgnnft.brg.diffusion` uses:

- pi the Gaussian prior N(mu_0, Sigma_0): the Fisher-metric Ornstein-Uhlenbeck coarse graining,
  d theta = -1/2 D Sigma_0^-1 (theta - mu_0) dt + D^{1/2} dW (+ 1/2 div D dt);
- pi proportional to sqrt(det G): Brownian motion on the statistical manifold (the heat flow), whose
  stationary density is the Riemannian volume, the Jeffreys prior.

The stationary density is given as an optional Gaussian factor N(mu_0, diag(v)) times exp(r(theta))
with an optional log density r. Two schemes advance it:

- ``"euler_maruyama"``: theta' = theta + b dt + sqrt(dt) D^{1/2} xi.
- ``"exponential"`` (needs the Gaussian factor): the metric is frozen over a step, the linear drift
  of the Gaussian factor is integrated exactly and the rest of the drift is held constant. When the
  metric does not depend on theta and r = 0 each step is the exact Gaussian transition, for any
  step size.

With ``metropolis=True`` every step is a proposal accepted with the Metropolis-Hastings probability
for pi, which makes pi exactly stationary whatever the step size (a position-dependent MALA).
Rejected steps slow the dynamics down, so the acceptance rate is returned for the caller to check
that it is close to 1.

Cost: every step evaluates G and, for a state-dependent metric, its derivative (P, P, P) per
sample, so memory and time grow as S P^3; the integrator suits models with up to a few hundred
parameters.

References
----------
M. Girolami, B. Calderhead, "Riemann manifold Langevin and Hamiltonian Monte Carlo methods",
J. R. Stat. Soc. B 73 (2011) 123, arXiv:0907.1100. G. A. Pavliotis, "Stochastic Processes and
Applications", Springer (2014), chapter 4 (Fokker-Planck equation and detailed balance).
"""

import logging
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
from tqdm.auto import tqdm

from brgnnft.brg._flatten import in_float64
from brgnnft.models._checks import check_key, check_option, check_positive

logger = logging.getLogger(__name__)

SCHEMES = ("auto", "exponential", "euler_maruyama")


@dataclass(frozen=True)
class LangevinSDE:
    """A Riemannian Langevin diffusion: metric, and stationary density N(mean, diag(variance)) exp(r).

    Attributes
    ----------
    metric : callable or array (P, P)
        G(theta) for one flat parameter vector theta (P,), symmetric positive definite, written in
        JAX so it can be differentiated; or a constant matrix.
    prior_mean, prior_variance : array (P,), optional
        The Gaussian factor of the stationary density. Without it the factor is flat.
    log_density : callable, optional
        r(theta), the log of the remaining factor, in JAX; zero when None.
    """

    metric: Callable | np.ndarray
    prior_mean: np.ndarray | None = None
    prior_variance: np.ndarray | None = None
    log_density: Callable | None = None

    def __post_init__(self):
        if self.prior_variance is None:
            if self.prior_mean is not None:
                raise ValueError("prior_mean was given without prior_variance: pass both, or neither for a flat factor")
            return
        variance = np.asarray(self.prior_variance, dtype=np.float64)
        if variance.ndim != 1 or not np.all(np.isfinite(variance) & (variance > 0)):
            raise ValueError(f"prior_variance must be a vector (P,) of finite values > 0, got {self.prior_variance!r}")
        mean = np.zeros_like(variance) if self.prior_mean is None else np.asarray(self.prior_mean, dtype=np.float64)
        if mean.shape != variance.shape:
            raise ValueError(f"prior_mean has shape {mean.shape} but prior_variance {variance.shape}: give both shape (P,)")
        # The dataclass is frozen, so the normalised arrays are set through object.__setattr__.
        object.__setattr__(self, "prior_variance", variance)
        object.__setattr__(self, "prior_mean", mean)

    @property
    def constant_metric(self) -> bool:
        """True when the metric is a fixed matrix, so that div D = 0."""
        return not callable(self.metric)

    def metric_at(self, theta):
        """Return G(theta), shape (P, P)."""
        if self.constant_metric:
            return jnp.asarray(self.metric)
        return self.metric(theta)

    def log_stationary(self, theta):
        """Return log pi(theta) up to a constant."""
        value = jnp.zeros((), dtype=theta.dtype)
        if self.prior_variance is not None:
            value = value - 0.5 * jnp.sum((theta - self.prior_mean) ** 2 / self.prior_variance)
        if self.log_density is not None:
            value = value + self.log_density(theta)
        return value


class SDEResult(NamedTuple):
    """States of an integrated diffusion and its Metropolis statistics.

    Attributes
    ----------
    states : ndarray (K, S, P)
        The S samples at each of the K requested times.
    acceptance_rate : ndarray (K,)
        Fraction of accepted steps over the interval that ends at each time (1 without Metropolis).
    num_steps : ndarray (K,)
        Steps taken over each interval.
    """

    states: np.ndarray
    acceptance_rate: np.ndarray
    num_steps: np.ndarray


def _metric_terms(sde: LangevinSDE, theta):
    """Return G, its lower Cholesky factor C, D = G^-1 and div D at one point theta (P,)."""
    metric = sde.metric_at(theta)
    size = theta.shape[0]
    cholesky = jnp.linalg.cholesky(metric)
    diffusion = jsl.cho_solve((cholesky, True), jnp.eye(size, dtype=theta.dtype))
    if sde.constant_metric:
        return metric, cholesky, diffusion, jnp.zeros_like(theta)

    # d_j D = -D (d_j G) D, so (div D)_i = -sum_k D_ik sum_{l,j} (d_j G)_kl D_lj.
    metric_derivative = jax.jacfwd(sde.metric)(theta)
    divergence = -diffusion @ jnp.einsum("klj,lj->k", metric_derivative, diffusion)
    return metric, cholesky, diffusion, divergence


def _grad_log_density(sde: LangevinSDE, theta):
    """Return the gradient of r(theta), the non-Gaussian factor of the stationary density."""
    if sde.log_density is None:
        return jnp.zeros_like(theta)
    return jax.grad(sde.log_density)(theta)


def langevin_drift(sde: LangevinSDE, theta):
    """Return the Ito drift b(theta) = 1/2 [D grad log pi + div D] at one point theta (P,)."""
    _, _, diffusion, divergence = _metric_terms(sde, theta)
    gradient = _grad_log_density(sde, theta)
    if sde.prior_variance is not None:
        gradient = gradient - (theta - sde.prior_mean) / sde.prior_variance
    return 0.5 * (diffusion @ gradient + divergence)


class _Transition(NamedTuple):
    """The Gaussian one-step transition N(mean, R R^T) of a scheme, with log |det R|."""

    mean: jax.Array
    factor: jax.Array
    log_det_factor: jax.Array


def _euler_maruyama(sde: LangevinSDE, theta, dt) -> _Transition:
    _, cholesky, diffusion, divergence = _metric_terms(sde, theta)
    gradient = _grad_log_density(sde, theta)
    if sde.prior_variance is not None:
        gradient = gradient - (theta - sde.prior_mean) / sde.prior_variance
    mean = theta + 0.5 * dt * (diffusion @ gradient + divergence)

    # D = C^-T C^-1, so R = sqrt(dt) C^-T has R R^T = dt D.
    size = theta.shape[0]
    inverse_transpose = jsl.solve_triangular(cholesky.T, jnp.eye(size, dtype=theta.dtype), lower=False)
    log_det = 0.5 * size * jnp.log(dt) - jnp.sum(jnp.log(jnp.diag(cholesky)))
    return _Transition(mean, jnp.sqrt(dt) * inverse_transpose, log_det)


def _exponential(sde: LangevinSDE, theta, dt) -> _Transition:
    """Exponential integrator in the prior-whitened coordinates u = (theta - mu_0) / s.

    With the metric frozen at theta, u follows du = -1/2 M u dt + c dt + M^{1/2} dW with
    M = (S G S)^-1 = Q diag(1 / mu) Q^T, S = diag(s), and c = 1/2 S^-1 (D grad r + div D). Over dt
    this linear SDE moves u to E u + 2 Q diag(mu (1 - e^{-dt / (2 mu)})) Q^T c plus Gaussian noise
    of covariance I - E^2, with E = Q diag(e^{-dt / (2 mu)}) Q^T.
    """
    metric, _, diffusion, divergence = _metric_terms(sde, theta)
    scale = jnp.sqrt(sde.prior_variance)
    whitened = scale[:, None] * metric * scale[None, :]
    eigenvalues, vectors = jnp.linalg.eigh(whitened)
    eigenvalues = jnp.maximum(eigenvalues, 0.0)

    rate = dt / (2.0 * eigenvalues)
    decay = jnp.exp(-rate)
    constant = 0.5 * (diffusion @ _grad_log_density(sde, theta) + divergence) / scale
    u = (theta - sde.prior_mean) / scale
    mean_u = vectors @ (decay * (vectors.T @ u) + 2.0 * eigenvalues * (-jnp.expm1(-rate)) * (vectors.T @ constant))
    noise_variance = -jnp.expm1(-2.0 * rate)

    factor = scale[:, None] * vectors * jnp.sqrt(noise_variance)[None, :]
    log_det = jnp.sum(jnp.log(scale)) + 0.5 * jnp.sum(jnp.log(noise_variance))
    return _Transition(sde.prior_mean + scale * mean_u, factor, log_det)


def _log_transition_density(transition: _Transition, target):
    """Return log N(target | mean, R R^T)."""
    standardised = jnp.linalg.solve(transition.factor, target - transition.mean)
    size = target.shape[0]
    return -0.5 * jnp.sum(standardised**2) - transition.log_det_factor - 0.5 * size * math.log(2 * math.pi)


def _make_step(sde: LangevinSDE, scheme: str, metropolis: bool):
    """Return step(key, theta, dt) -> (theta', accepted) for one sample."""
    transition_at = _exponential if scheme == "exponential" else _euler_maruyama

    def step(key, theta, dt):
        key_noise, key_accept = jax.random.split(key)
        transition = transition_at(sde, theta, dt)
        proposal = transition.mean + transition.factor @ jax.random.normal(key_noise, theta.shape, dtype=theta.dtype)
        if not metropolis:
            return proposal, jnp.ones((), dtype=bool)

        reverse = transition_at(sde, proposal, dt)
        log_ratio = (
            sde.log_stationary(proposal)
            - sde.log_stationary(theta)
            + _log_transition_density(reverse, theta)
            - _log_transition_density(transition, proposal)
        )
        # A NaN ratio (the proposal left the region where G is positive definite) compares False,
        # so such proposals are rejected.
        accepted = jnp.log(jax.random.uniform(key_accept, dtype=theta.dtype)) < log_ratio
        return jnp.where(accepted, proposal, theta), accepted

    return step


def _progress_enabled(progress: bool) -> bool:
    return progress and sys.stderr.isatty()


def check_times(times) -> np.ndarray:
    """Return flow times as an ascending float64 array of distinct values > 0, or raise."""
    values = np.asarray(times, dtype=np.float64).reshape(-1) if np.ndim(times) <= 1 else None
    if values is None or values.size == 0:
        raise ValueError(f"times must be a non-empty 1-D sequence of positive numbers, got {times!r}")
    bad = values[~(np.isfinite(values) & (values > 0))]
    if bad.size:
        raise ValueError(f"times must be finite and > 0, got {float(bad[0])!r}: time 0 is the trained posterior itself")
    if len(np.unique(values)) != len(values):
        raise ValueError("times contain duplicates: pass each flow time once")
    return np.sort(values)


def resolve_scheme(sde: LangevinSDE, scheme: str) -> str:
    """Return the scheme to use: "auto" is "exponential" when the density has a Gaussian factor."""
    check_option("scheme", scheme, SCHEMES)
    has_gaussian = sde.prior_variance is not None
    if scheme == "exponential" and not has_gaussian:
        raise ValueError(
            "scheme='exponential' integrates the Gaussian factor of the stationary density exactly, "
            "but this diffusion has none (a heat flow): use scheme='euler_maruyama'"
        )
    if scheme == "auto":
        return "exponential" if has_gaussian else "euler_maruyama"
    return scheme


@in_float64
def integrate_sde(
    sde: LangevinSDE,
    theta,
    times,
    *,
    key,
    step_size: float,
    scheme: str = "auto",
    metropolis: bool = False,
    progress: bool = True,
) -> SDEResult:
    """Integrate a Riemannian Langevin diffusion from samples theta at time 0 to each of ``times``.

    Parameters
    ----------
    sde : LangevinSDE
    theta : array (S, P)
        Samples at time 0.
    times : sequence of float
        Times > 0 (sorted ascending). The path is continued from one time to the next, so the
        states at different times are the same sample paths.
    key : jax.random key
    step_size : float
        Largest step; each interval between times is split into equal steps no longer than this.
    scheme : {"auto", "exponential", "euler_maruyama"}
        "auto" takes "exponential" when the stationary density has a Gaussian factor.
    metropolis : bool
        Accept or reject every step by Metropolis-Hastings for the stationary density.
    progress : bool
        Show a progress bar over the intervals (only on a terminal).

    Returns
    -------
    SDEResult
    """
    check_key(key)
    step_size = check_positive("step_size", step_size)
    times = check_times(times)
    scheme = resolve_scheme(sde, scheme)
    theta = jnp.asarray(theta, dtype=jnp.float64)
    if theta.ndim != 2:
        raise ValueError(f"theta must have shape (S, P), got {theta.shape}")

    step = jax.vmap(_make_step(sde, scheme, bool(metropolis)), in_axes=(0, 0, None))

    @jax.jit
    def advance(key, theta, dt, num_steps):
        def body(_, carry):
            key, theta, accepted = carry
            key, key_step = jax.random.split(key)
            theta, accepted_now = step(jax.random.split(key_step, theta.shape[0]), theta, dt)
            return key, theta, accepted + accepted_now

        accepted = jnp.zeros(theta.shape[0], dtype=jnp.int64)
        _, theta, accepted = jax.lax.fori_loop(0, num_steps, body, (key, theta, accepted))
        return theta, accepted

    states, rates, counts = [], [], []
    previous = 0.0
    interval_keys = jax.random.split(key, len(times))
    logger.info("integrating %d samples to %d times with the %s scheme%s", theta.shape[0], len(times), scheme,
                " and Metropolis adjustment" if metropolis else "")
    for interval_key, time in tqdm(list(zip(interval_keys, times)), desc="diffusion", unit="time",
                                   disable=not _progress_enabled(progress)):
        num_steps = max(1, math.ceil((time - previous) / step_size - 1e-9))
        dt = (time - previous) / num_steps
        theta, accepted = advance(interval_key, theta, dt, num_steps)
        states.append(np.asarray(theta))
        rates.append(float(np.mean(np.asarray(accepted))) / num_steps)
        counts.append(num_steps)
        previous = time
    return SDEResult(np.stack(states), np.asarray(rates), np.asarray(counts))
