"""The infinite-width network as a NumPyro Gaussian-process model."""

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpyro
import numpyro.distributions as dist

from brgnnft.models._checks import check_inputs, check_positive, check_targets


class GPMoments(NamedTuple):
    """Mean (m,) and covariance (m, m) of the latent function f at m points."""

    mean: jnp.ndarray
    covariance: jnp.ndarray


class NNGP:
    """Gaussian-process prior on f with a given kernel, observed with Gaussian noise.

    This is the N -> infinity limit of a Bayesian network whose NNGP kernel is ``kernel``, with
    the same model contract as the finite networks: ``model(x, y=None)`` samples the site ``f``
    of shape (n,) and observes ``y``.

    Parameters
    ----------
    kernel : callable
        ``kernel(x1, x2)`` returning the (n1, n2) covariance, e.g. ``MLP(...).kernel``.
    noise : float or None
        Observation standard deviation sigma. ``None`` puts a HalfNormal(``noise_scale``) prior on
        it (site ``noise``); :meth:`posterior_moments` then needs ``noise`` passed explicitly.
    jitter : float
        Added to the diagonal of K(x, x) in :meth:`__call__` so that its Cholesky factor exists.
    noise_scale : float
        Scale of the HalfNormal noise prior when ``noise`` is None.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from brgnnft.models import MLP, NNGP
    >>> gp = NNGP(MLP(hidden=(64,), activation="relu").kernel, noise=0.1)
    >>> x = jnp.linspace(-1.0, 1.0, 6).reshape(-1, 1)
    >>> gp.posterior_moments(x, jnp.sin(3 * x[:, 0]), x).mean.shape
    (6,)
    """

    is_gaussian_process = True

    def __init__(self, kernel: Callable, noise: float | None = 0.1, *, jitter: float = 1e-6, noise_scale: float = 1.0):
        if not callable(kernel):
            raise TypeError(
                f"kernel must be a callable kernel(x1, x2) -> (n1, n2), got {type(kernel).__name__}: "
                "pass e.g. MLP(...).kernel"
            )
        self.kernel = kernel
        self.noise = check_positive("noise", noise, allow_none=True)
        self.jitter = check_positive("jitter", jitter)
        self.noise_scale = check_positive("noise_scale", noise_scale)

    def __repr__(self) -> str:
        return f"NNGP(kernel={self.kernel!r}, noise={self.noise}, jitter={self.jitter})"

    def __call__(self, x, y=None):
        """NumPyro model: f ~ MultivariateNormal(0, K(x, x) + jitter I), y ~ Normal(f, noise)."""
        n = x.shape[0]
        covariance = self.kernel(x, x) + self.jitter * jnp.eye(n, dtype=x.dtype)
        f = numpyro.sample("f", dist.MultivariateNormal(jnp.zeros(n, dtype=x.dtype), covariance_matrix=covariance))
        noise = self.noise
        if noise is None:
            noise = numpyro.sample("noise", dist.HalfNormal(self.noise_scale))
        with numpyro.plate("obs", n):
            numpyro.sample("y", dist.Normal(f, noise), obs=y)

    def posterior_moments(self, x, y, x_new, *, noise: float | None = None) -> GPMoments:
        """Return the posterior mean and covariance of f at ``x_new`` given data (x, y).

        Parameters
        ----------
        x : array (n, d)
        y : array (n,)
        x_new : array (m, d)
        noise : float, optional
            Observation standard deviation; defaults to the model's ``noise``.

        Returns
        -------
        GPMoments
            ``mean`` (m,) and ``covariance`` (m, m).

        Notes
        -----
        With :math:`L L^T = K(X, X) + \\sigma^2 I` and :math:`K_* = K(X, X_*)` (Rasmussen and
        Williams 2006, eqs. 2.25-2.26 and Algorithm 2.1):

        .. math::

            \\bar f_* = K_*^T (K + \\sigma^2 I)^{-1} y, \\qquad
            \\operatorname{cov}(f_*) = K(X_*, X_*) - V^T V,\\quad V = L^{-1} K_*.

        References
        ----------
        .. [1] C. E. Rasmussen, C. K. I. Williams, "Gaussian Processes for Machine Learning",
           MIT Press (2006), chapter 2.
        """
        x = check_inputs(x, "x")
        y = check_targets(y, x.shape[0], "y")
        if y.ndim != 1:
            raise ValueError(f"y must have shape (n,), got {y.shape}: the NNGP model has one output")
        x_new = check_inputs(x_new, "x_new")
        if x_new.shape[1] != x.shape[1]:
            raise ValueError(
                f"x_new has {x_new.shape[1]} features but x has {x.shape[1]}: pass points of the same dimension"
            )
        noise = self.noise if noise is None else check_positive("noise", noise)
        if noise is None:
            raise ValueError(
                "posterior_moments needs a fixed noise, but the model puts a prior on it: "
                "pass noise=... (e.g. a posterior mean)"
            )

        x, y, x_new = jnp.asarray(x), jnp.asarray(y), jnp.asarray(x_new)
        train_cov = self.kernel(x, x) + noise**2 * jnp.eye(x.shape[0], dtype=x.dtype)
        cross_cov = self.kernel(x, x_new)
        test_cov = self.kernel(x_new, x_new)

        cholesky = jnp.linalg.cholesky(train_cov)
        alpha = jsl.cho_solve((cholesky, True), y)
        mean = cross_cov.T @ alpha

        v = jsl.solve_triangular(cholesky, cross_cov, lower=True)
        covariance = test_cov - v.T @ v
        return GPMoments(mean, covariance)
