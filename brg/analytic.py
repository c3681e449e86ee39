"""The information-shell flow of an infinite-width network in closed form.

With a Gaussian likelihood the trained infinite-width network is a Gaussian-process posterior, and
the information shell is a cutoff on the eigenvalues of the training Gram. Every coarse-grained
predictive is then Gaussian with a mean and covariance that follow in closed form. This is the
exact reference that a wide random-features ensemble converges to (see :func:`nngp_shell_flow`).

References
----------
J. N. Howard, M. S. Klinger, A. Maiti, A. G. Stapleton, "Bayesian RG Flow in Neural Network Field
Theories", arXiv:2405.17538. J. N. Howard, R. Jefferson, A. Maiti, Z. Ringel, "Wilsonian
Renormalization of Neural Network Gaussian Processes", arXiv:2405.06008.
"""

import logging
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from scipy.stats import norm

from brgnnft.brg._flatten import in_float64
from brgnnft.brg.coarse_grain import PRESCRIPTIONS, ShellSplit
from brgnnft.brg.flow import build_flow_tree, check_cutoffs
from brgnnft.brg.flow_statistics import gaussian_kl
from brgnnft.inference._layout import package_versions
from brgnnft.models import CosNet, RandomFeatures, nngp_kernel
from brgnnft.models._checks import check_inputs, check_key, check_option, check_positive, check_positive_int, check_targets

logger = logging.getLogger(__name__)

RESIDUALS = ("prior", "drop")

# A Gram whose smallest eigenvalue is below -NEGATIVE_TOLERANCE * (largest eigenvalue) is not
# positive semi-definite beyond rounding, so the kernel is rejected.
NEGATIVE_TOLERANCE = 1e-8


class GramModes(NamedTuple):
    """Eigenmodes of the training Gram and the map from their coordinates to the test points.

    Attributes
    ----------
    eigenvalues : ndarray (n,)
        All eigenvalues kappa_k of K(X, X), descending, negative rounding clipped to 0.
    kappa : ndarray (r,)
        The r eigenvalues above the rank tolerance; only these modes enter f(X).
    projected_targets : ndarray (r,)
        (U^T y)_k for the kept modes.
    test_map : ndarray (m, r)
        B = K(x*, X) U diag(kappa^{-1/2}): f(x*) = B a + residual.
    residual : ndarray (m, m)
        K(x*, x*) - B B^T, the prior covariance of the part of f(x*) independent of f(X).
    """

    eigenvalues: np.ndarray
    kappa: np.ndarray
    projected_targets: np.ndarray
    test_map: np.ndarray
    residual: np.ndarray


def _evaluate_kernel(kernel: Callable, x1: np.ndarray, x2: np.ndarray, points: str) -> np.ndarray:
    values = np.asarray(kernel(x1, x2), dtype=np.float64)
    expected = (x1.shape[0], x2.shape[0])
    if values.shape != expected:
        raise ValueError(f"kernel returned shape {values.shape} for {points}, expected {expected}: kernel(x1, x2) must be (n1, n2)")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"kernel returned NaN or inf for {points}: check the kernel and the inputs")
    return values


def gram_modes(kernel: Callable, x, y, x_test, *, rtol: float | None = None) -> GramModes:
    """Diagonalise the training Gram and map its modes to the test points.

    Parameters
    ----------
    kernel : callable
        ``kernel(x1, x2)`` returning the (n1, n2) prior covariance of f.
    x : array (n, d); y : array (n,); x_test : array (m, d)
    rtol : float, optional
        Eigenvalues at or below ``rtol * kappa_max`` count as zero; default n times the float64
        machine epsilon.

    Returns
    -------
    GramModes
    """
    gram = _evaluate_kernel(kernel, x, x, "the training inputs")
    gram = 0.5 * (gram + gram.T)
    eigenvalues, vectors = np.linalg.eigh(gram)
    eigenvalues, vectors = eigenvalues[::-1], vectors[:, ::-1]
    largest = float(eigenvalues[0])
    if largest <= 0:
        raise ValueError("the kernel's Gram on the training inputs has no positive eigenvalue: check the kernel")
    if eigenvalues[-1] < -NEGATIVE_TOLERANCE * largest:
        raise ValueError(
            f"the kernel's Gram on the training inputs is not positive semi-definite (smallest eigenvalue "
            f"{eigenvalues[-1]:.3g}, largest {largest:.3g}): pass a covariance kernel"
        )
    tolerance = (x.shape[0] * np.finfo(np.float64).eps if rtol is None else rtol) * largest
    keep = eigenvalues > tolerance
    kappa, kept_vectors = eigenvalues[keep], vectors[:, keep]

    cross = _evaluate_kernel(kernel, x_test, x, "(x_test, x)")
    test_map = (cross @ kept_vectors) / np.sqrt(kappa)
    test_gram = _evaluate_kernel(kernel, x_test, x_test, "x_test")
    residual = test_gram - test_map @ test_map.T
    return GramModes(
        eigenvalues=np.maximum(eigenvalues, 0.0),
        kappa=kappa,
        projected_targets=kept_vectors.T @ y,
        test_map=test_map,
        residual=0.5 * (residual + residual.T),
    )


def mode_posterior(kappa: np.ndarray, projected_targets: np.ndarray, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Return the posterior means m_k and variances v_k of the whitened mode coordinates a_k.

    Notes
    -----
    With f(X) = U diag(sqrt(kappa)) a, a ~ N(0, I) and y ~ N(f(X), sigma^2 I) the modes decouple:

    .. math:: v_k = \\frac{1}{1 + \\kappa_k / \\sigma^2}, \\qquad
              m_k = v_k \\sqrt{\\kappa_k}\\, (U^T y)_k / \\sigma^2.
    """
    variances = 1.0 / (1.0 + kappa / noise**2)
    means = variances * np.sqrt(kappa) * projected_targets / noise**2
    return means, variances


def shell_moments(modes: GramModes, means, variances, stiff, *, prescription: str, residual: str, covariance: bool = True):
    """Return the mean (m,) and covariance (m, m) (or variance (m,)) of f(x*) at one cutoff.

    Stiff modes keep their posterior N(m_k, v_k); sloppy ones are N(0, 1) under ``prior`` and 0
    under ``marginalize`` and ``prune``. The residual keeps its prior covariance unless ``residual``
    is "drop".
    """
    weights = np.where(stiff, variances, 1.0 if prescription == "prior" else 0.0)
    test_map = modes.test_map
    mean = test_map[:, stiff] @ means[stiff]
    keep_residual = residual == "prior"
    if covariance:
        result = (test_map * weights) @ test_map.T
        if keep_residual:
            result = result + modes.residual
        return mean, 0.5 * (result + result.T)
    variance = np.sum(test_map**2 * weights, axis=1)
    if keep_residual:
        variance = variance + np.diag(modes.residual)
    return mean, variance


def gaussian_flow_statistics(means, variances, trained_mean, trained_variance, y_test, noise) -> dict[str, tuple]:
    """Return the closed-form ``flow`` variables from Gaussian predictives of f.

    ``means`` and ``variances`` have shape (K, m) (one row per cutoff), the trained ones (m,).
    Each statistic is the infinite-sample limit of its namesake in ``information_shell_flow``.
    """
    variances = np.maximum(variances, 0.0)
    trained_variance = np.maximum(trained_variance, 0.0)
    predictive_variance = variances + noise**2
    trained_predictive_variance = trained_variance + noise**2
    num_cutoffs = means.shape[0]

    def expected_mse(mean, variance):
        return np.mean((mean - y_test) ** 2 + variance, axis=-1)

    def log_density(mean, variance):
        return np.sum(norm.logpdf(y_test, loc=mean, scale=np.sqrt(variance)), axis=-1)

    return {
        "test_mse": (("cutoff",), expected_mse(means, variances)),
        "test_mse_se": (("cutoff",), np.zeros(num_cutoffs)),
        "predictive_sd": (("cutoff",), np.sqrt(predictive_variance).mean(axis=-1)),
        "f_sd": (("cutoff",), np.sqrt(variances).mean(axis=-1)),
        "log_predictive_density": (("cutoff",), log_density(means, predictive_variance)),
        "kl_from_trained": (
            ("cutoff",),
            np.mean(gaussian_kl(means, predictive_variance, trained_mean, trained_predictive_variance), axis=-1),
        ),
        "trained_test_mse": ((), expected_mse(trained_mean, trained_variance)),
        "trained_test_mse_se": ((), 0.0),
        "trained_predictive_sd": ((), np.sqrt(trained_predictive_variance).mean()),
        "trained_log_predictive_density": ((), log_density(trained_mean, trained_predictive_variance)),
    }


def _sample_residual(key, residual: np.ndarray, num_samples: int) -> np.ndarray:
    """Draw (S, m) samples of N(0, residual), clipping negative eigenvalues from rounding to zero."""
    values, vectors = np.linalg.eigh(residual)
    factor = vectors * np.sqrt(np.maximum(values, 0.0))
    draws = np.asarray(jax.random.normal(key, (num_samples, residual.shape[0]), dtype=jnp.float64))
    return draws @ factor.T


class _GramSpectrum(NamedTuple):
    """The spectrum that ``build_flow_tree`` stores: eigenvalues of the metric in the Gram eigenbasis."""

    eigenvalues: np.ndarray
    basis: str = "eigen"


def _check_kernel(kernel) -> Callable:
    if not callable(kernel):
        raise TypeError(
            f"kernel must be a callable kernel(x1, x2) -> (n1, n2), got {type(kernel).__name__}: pass e.g. "
            "MLP(...).kernel or brgnnft.brg.infinite_width_kernel(model)"
        )
    return kernel


@in_float64
def nngp_shell_flow(
    kernel,
    x,
    y,
    noise: float,
    *,
    cutoffs,
    x_test,
    y_test,
    prescription: str = "prior",
    num_samples: int | None = None,
    key=None,
    readout_variance: float = 1.0,
    residual: str = "prior",
    covariance: bool = True,
    rtol: float | None = None,
    seed: int | None = None,
):
    """Run the information-shell flow of a Gaussian-process posterior in closed form.

    This is the flow of a trained infinite-width network whose NNGP kernel is ``kernel``. It
    returns the layout of :func:`brgnnft.brg.information_shell_flow`, with every statistic of the
    ``flow`` group computed exactly rather than from samples.

    Parameters
    ----------
    kernel : callable
        ``kernel(x1, x2)`` returning the (n1, n2) prior covariance of f, e.g. ``MLP(...).kernel``
        or :func:`infinite_width_kernel`.
    x : array (n, d); y : array (n,)
        Training data.
    noise : float
        Observation standard deviation sigma.
    cutoffs : sequence of float
        The grid of Lambda > 0 (sorted ascending in the output).
    x_test : array (m, d); y_test : array (m,)
    prescription : {"prior", "marginalize", "prune"}
        Sloppy modes redrawn from the prior N(0, 1), or set to zero (marginalize and prune agree
        for this zero-mean prior).
    num_samples : int, optional
        Draw this many exact samples of the coarse-grained f at the test points, so that the
        ``posterior``, ``posterior_predictive``, ``log_likelihood`` and ``trained`` groups and
        ``member_mse`` exist and :func:`brgnnft.brg.critical_cutoff` and the flow plots work.
    key : jax.random key
        Required with ``num_samples``.
    readout_variance : float
        Prior variance s^2 of the readout weights in whose coordinates the cutoff is read: the
        Fisher eigenvalues are kappa_k / (s^2 sigma^2). The default 1 reads them in the whitened
        mode coordinates a_k. Pass ``model.readout_variance`` to compare with the flow of a
        random-features network or a frozen cos-net (see Notes).
    residual : {"prior", "drop"}
        Keep the part of f(x*) that is independent of f(X) at its prior covariance at every
        cutoff ("prior"), or remove it at every cutoff ("drop"), which is what a finite network's
        ``marginalize`` and ``prune`` flows do (see Notes).
    covariance : bool
        Store the (cutoff, obs_id, obs_id2) ``predictive_covariance``; with False only its
        diagonal ``predictive_variance`` is stored, for large test sets.
    rtol : float, optional
        Gram eigenvalues at or below ``rtol * kappa_max`` count as zero; default n times the
        float64 machine epsilon.
    seed : int, optional
        Recorded in the attributes.

    Returns
    -------
    DataTree
        Groups ``flow``, ``spectrum``, ``observed_data`` and ``constant_data`` (the test set) and,
        with ``num_samples``, ``posterior``, ``posterior_predictive``, ``log_likelihood`` and
        ``trained`` as in ``information_shell_flow``. Besides the variables of that layout the
        ``flow`` group contains ``predictive_mean`` (cutoff, obs_id), ``predictive_variance``
        (cutoff, obs_id) and ``predictive_covariance`` (cutoff, obs_id, obs_id2) of f, the trained
        ``trained_predictive_mean``, ``trained_predictive_variance`` and
        ``trained_predictive_covariance``, and ``num_stiff``. ``test_mse_se`` is 0 because every
        statistic is exact; ``member_mse`` comes from the samples.

    Notes
    -----
    Expand the training Gram K(X, X) = U diag(kappa) U^T. The prior is f(X) = U diag(sqrt(kappa)) a
    with a ~ N(0, I), the Fisher metric of the whole data set is I = diag(kappa) / sigma^2 in the
    coordinates a, and the posterior of a_k is N(m_k, v_k) (:func:`mode_posterior`). Modes with
    kappa_k / (s^2 sigma^2) >= Lambda are stiff. At a test point,

    .. math::

        f(x_*) = B a + r(x_*), \\qquad B = K(x_*, X)\\, U \\operatorname{diag}(\\kappa^{-1/2}),

    where r is independent of f(X) with the prior conditional covariance
    R = K(x_*, x_*) - K(x_*, X) K(X, X)^{-1} K(X, x_*). The data never see r, so its posterior is
    its prior, and it is not a direction of the metric in the coordinates a. With
    ``residual="prior"`` (the default) r keeps that prior at every cutoff and for every
    prescription. The coarse-grained predictive of f is Gaussian with

    .. math::

        \\mu_\\Lambda = \\sum_{k\\ \\mathrm{stiff}} m_k b_k, \\qquad
        \\Sigma_\\Lambda = \\sum_{k\\ \\mathrm{stiff}} v_k b_k b_k^T
            + [\\text{prior}] \\sum_{k\\ \\mathrm{sloppy}} b_k b_k^T + R.

    With no mode coarse grained this is the GP posterior
    K_*^T (K + sigma^2 I)^{-1} y, K_** - K_*^T (K + sigma^2 I)^{-1} K_*. The cutoffs refer to the
    metric of the whole data set (``fisher_per_datum=False`` in ``information_shell_flow``), and
    ``fraction_coarse_grained`` is 1 - num_stiff / n, the fraction of the n Gram modes removed.

    Integrating out modes. At the training points the ``prior`` prescription's predictive of y is
    the posterior predictive of a GP with the stiff kernel K_> = sum_stiff kappa_k u_k u_k^T and
    the noise covariance sigma^2 I + K_<, K_< = sum_sloppy kappa_k u_k u_k^T. The removed modes
    renormalise the noise, whose trace grows from n sigma^2 to n sigma^2 + sum_sloppy kappa_k
    (the unlearnable modes of arXiv:2405.06008). ``marginalize`` gives the GP with kernel K_> and
    noise sigma^2 I. Both leave the posterior of the stiff modes unchanged.

    Samples. The posterior draws of a, the prior replacements of the ``prior`` prescription and the
    draws of r are shared by all cutoffs, so the sampled flow is nested like that of
    ``information_shell_flow``.

    Finite networks. For a model f = Phi(x) a with a ~ N(0, s^2 I) (random features, a frozen
    cos-net) the kernel is K = s^2 Phi Phi^T. Its readout Fisher Phi^T Phi / sigma^2 has the same
    nonzero eigenvalues as Phi Phi^T / sigma^2 = K / (s^2 sigma^2), so with
    ``readout_variance=s**2`` the cutoffs of both flows select the same modes. The readout
    directions outside the row space of Phi form the null space of that metric and carry r.
    They are sloppy at every cutoff, so a finite ``prior`` flow redraws r from its prior (as
    ``residual="prior"`` does), and finite ``marginalize`` and ``prune`` flows set r to zero (as
    ``residual="drop"`` does). With the empirical kernel s^2 Phi Phi^T (:func:`empirical_kernel`)
    the two flows then agree exactly in distribution.

    References
    ----------
    J. N. Howard, M. S. Klinger, A. Maiti, A. G. Stapleton, arXiv:2405.17538; C. E. Rasmussen,
    C. K. I. Williams, "Gaussian Processes for Machine Learning", MIT Press (2006), chapter 2.

    Examples
    --------
    >>> import numpy as np
    >>> from brgnnft.models import MLP
    >>> from brgnnft.brg import nngp_shell_flow
    >>> x = np.linspace(-1, 1, 8)[:, None]
    >>> flow = nngp_shell_flow(MLP(hidden=(64,)).kernel, x, np.sin(3 * x[:, 0]), 0.1,
    ...                        cutoffs=[1.0, 100.0], x_test=x[::2], y_test=np.sin(3 * x[::2, 0]))
    >>> flow["flow"]["predictive_mean"].shape
    (2, 4)
    """
    kernel = _check_kernel(kernel)
    x = check_inputs(x, "x").astype(np.float64)
    y = check_targets(y, x.shape[0], "y").astype(np.float64)
    if y.ndim != 1:
        raise ValueError(f"y must have shape (n,), got {y.shape}: the Gaussian-process flow has one output")
    noise = check_positive("noise", noise)
    cutoffs = check_cutoffs(cutoffs)
    x_test = check_inputs(x_test, "x_test").astype(np.float64)
    y_test = check_targets(y_test, x_test.shape[0], "y_test").astype(np.float64)
    if y_test.ndim != 1:
        raise ValueError(f"y_test must have shape (m,), got {y_test.shape}")
    if x_test.shape[1] != x.shape[1]:
        raise ValueError(f"x_test has {x_test.shape[1]} features but x has {x.shape[1]}: pass points of the same dimension")
    check_option("prescription", prescription, PRESCRIPTIONS)
    check_option("residual", residual, RESIDUALS)
    readout_variance = check_positive("readout_variance", readout_variance)
    if rtol is not None and check_positive("rtol", rtol) >= 1:
        raise ValueError(f"rtol is relative to the largest eigenvalue and must be < 1, got {rtol!r}")
    if num_samples is not None:
        num_samples = check_positive_int("num_samples", num_samples)
        if key is None:
            raise ValueError("num_samples needs key=jax.random.key(...) for the exact samples")
        check_key(key)

    modes = gram_modes(kernel, x, y, x_test, rtol=rtol)
    means, variances = mode_posterior(modes.kappa, modes.projected_targets, noise)
    fisher_scale = readout_variance * noise**2
    stiff_sets = [modes.kappa / fisher_scale >= cutoff for cutoff in cutoffs]
    logger.info(
        "nngp_shell_flow: %d of %d Gram modes above the rank tolerance, %d cutoffs", modes.kappa.size, x.shape[0], len(cutoffs)
    )
    flow = _closed_form_flow_group(
        modes, means, variances, stiff_sets, cutoffs, y_test, noise,
        prescription=prescription, residual=residual, covariance=covariance, num_data=x.shape[0],
    )

    attrs = {
        "scheme": "information_shell",
        "analytic": "nngp_shell_flow",
        "prescription": prescription,
        "basis": "eigen",
        "reference": "exact",
        "residual": residual,
        "readout_variance": readout_variance,
        "noise": noise,
        "num_data": int(x.shape[0]),
        "num_modes": int(modes.kappa.size),
        "num_samples": 0 if num_samples is None else num_samples,
        "seed": -1 if seed is None else int(seed),
        **package_versions(),
    }
    spectrum = _GramSpectrum(modes.eigenvalues / fisher_scale)
    if num_samples is None:
        return _closed_form_tree(flow, spectrum, x_test, y_test, attrs)

    key_samples, key_predictive = jax.random.split(key)
    f, trained_f = _sample_flow(
        modes, means, variances, stiff_sets, prescription=prescription, residual=residual, num_samples=num_samples,
        key=key_samples,
    )
    splits = [ShellSplit(float(cutoff), int(count), x.shape[0]) for cutoff, count in zip(cutoffs, flow["num_stiff"].values)]
    tree = build_flow_tree(f, trained_f, y_test, x_test, noise, splits, spectrum, 1, num_samples, attrs, key=key_predictive)
    sampled = tree["flow"].to_dataset()
    tree["flow"] = flow.assign(member_mse=sampled["member_mse"], trained_member_mse=sampled["trained_member_mse"])
    return tree


def _closed_form_flow_group(modes, means, variances, stiff_sets, cutoffs, y_test, noise, *, prescription, residual, covariance, num_data):
    """Return the ``flow`` group: the predictive moments of f at every cutoff and their statistics."""
    moments = [
        shell_moments(modes, means, variances, stiff, prescription=prescription, residual=residual, covariance=covariance)
        for stiff in stiff_sets
    ]
    # The trained theory keeps every mode and the residual, whatever the prescription.
    all_stiff = np.ones(modes.kappa.size, dtype=bool)
    trained_mean, trained_spread = shell_moments(
        modes, means, variances, all_stiff, prescription=prescription, residual="prior", covariance=covariance
    )

    predictive_mean = np.stack([moment[0] for moment in moments])
    spreads = np.stack([moment[1] for moment in moments])
    predictive_variance = np.diagonal(spreads, axis1=-2, axis2=-1).copy() if covariance else spreads
    trained_variance = np.diag(trained_spread).copy() if covariance else trained_spread

    num_stiff = np.array([int(stiff.sum()) for stiff in stiff_sets])
    statistics = gaussian_flow_statistics(predictive_mean, predictive_variance, trained_mean, trained_variance, y_test, noise)
    statistics.update({
        "num_stiff": (("cutoff",), num_stiff),
        "fraction_coarse_grained": (("cutoff",), 1.0 - num_stiff / num_data),
        "predictive_mean": (("cutoff", "obs_id"), predictive_mean),
        "predictive_variance": (("cutoff", "obs_id"), predictive_variance),
        "trained_predictive_mean": (("obs_id",), trained_mean),
        "trained_predictive_variance": (("obs_id",), trained_variance),
    })
    coords = {"cutoff": cutoffs, "obs_id": np.arange(y_test.shape[0])}
    if covariance:
        statistics["predictive_covariance"] = (("cutoff", "obs_id", "obs_id2"), spreads)
        statistics["trained_predictive_covariance"] = (("obs_id", "obs_id2"), trained_spread)
        coords["obs_id2"] = np.arange(y_test.shape[0])
    return xr.Dataset(statistics, coords=coords)


def _sample_flow(modes, means, variances, stiff_sets, *, prescription, residual, num_samples, key):
    """Return exact samples of the coarse-grained f (K, S, m) and of the trained f (S, m).

    The posterior draws of the modes, their prior replacements and the residual draws are shared
    by all cutoffs, so the flow is nested.
    """
    key_posterior, key_prior, key_residual = jax.random.split(key, 3)
    shape = (num_samples, modes.kappa.size)
    coordinates = means + np.sqrt(variances) * np.asarray(jax.random.normal(key_posterior, shape, dtype=jnp.float64))
    replacement = np.zeros_like(coordinates)
    if prescription == "prior":
        replacement = np.asarray(jax.random.normal(key_prior, shape, dtype=jnp.float64))
    residual_draws = _sample_residual(key_residual, modes.residual, num_samples)

    trained_f = coordinates @ modes.test_map.T + residual_draws
    kept_residual = residual_draws if residual == "prior" else 0.0
    f = np.stack([np.where(stiff, coordinates, replacement) @ modes.test_map.T + kept_residual for stiff in stiff_sets])
    return f, trained_f


def _closed_form_tree(flow: xr.Dataset, spectrum: _GramSpectrum, x_test, y_test, attrs) -> xr.DataTree:
    num_points = x_test.shape[0]
    obs = {"obs_id": np.arange(num_points)}
    eigenvalues = xr.Dataset({"eigenvalues": (("direction",), spectrum.eigenvalues)}, attrs={"basis": spectrum.basis})
    return xr.DataTree.from_dict({
        "/": xr.Dataset(attrs=attrs),
        "flow": flow,
        "spectrum": eigenvalues,
        "observed_data": xr.Dataset({"y": (("obs_id",), y_test)}, coords=obs),
        "constant_data": xr.Dataset(
            {"x": (("obs_id", "feature"), x_test)}, coords={**obs, "feature": np.arange(x_test.shape[1])}
        ),
    })


def random_features_kernel(model: RandomFeatures) -> Callable:
    """Return the NNGP kernel of a random-features network: the limit of infinitely wide hidden layers.

    Parameters
    ----------
    model : RandomFeatures
        Built with ``fan_in_scaling=True`` (without it the prior variance of f grows with the width
        and there is no infinite-width limit; use :func:`empirical_kernel`).

    Returns
    -------
    callable
        ``kernel(x1, x2=None)`` returning the (n1, n2) kernel as a NumPy array.

    Notes
    -----
    With a ~ N(0, s_a^2 / P) and Phi the last hidden layer,
    E[f(x) f(x')] = s_a^2 E[phi(u) phi(u')] as P -> infinity, with (u, u') the NNGP of the
    hidden layers. ``nngp_kernel`` with the hidden activations returns
    sigma_b^2 + sigma_w^2 E[phi(u) phi(u')], so the kernel is
    s_a^2 (nngp_kernel - sigma_b^2) / sigma_w^2. A finite network's kernel differs from it by
    O(P^{-1/2}).
    """
    if not isinstance(model, RandomFeatures):
        raise TypeError(f"random_features_kernel needs a RandomFeatures model, got {type(model).__name__}")
    if not model.fan_in_scaling:
        raise ValueError(
            f"{model!r} has fan_in_scaling=False, so the prior variance of f grows with the width and there is no "
            "infinite-width kernel: use empirical_kernel(model), the kernel of the finite network"
        )
    # nngp_kernel maps the library's own activation functions to their closed forms.
    activations = tuple(model.activations)
    bias_var = model.bias_var if model.bias else 0.0

    def kernel(x1, x2=None):
        # Passing x2=None for a Gram lets nngp_kernel keep its diagonal exact.
        x2 = None if x2 is None or x2 is x1 else jnp.asarray(x2)
        last_layer = nngp_kernel(
            jnp.asarray(x1), x2, activations=activations, weight_var=model.weight_var,
            bias_var=bias_var, bias=model.bias,
        )
        return model.readout_var * (np.asarray(last_layer, dtype=np.float64) - bias_var) / model.weight_var

    return kernel


def empirical_kernel(model) -> Callable:
    """Return the kernel s^2 Phi(x1) Phi(x2)^T of a finite network with a linear Bayesian readout.

    Parameters
    ----------
    model : RandomFeatures or a frozen CosNet (any model with ``features(x)`` and ``readout_variance``).

    Returns
    -------
    callable
        ``kernel(x1, x2=None)`` returning the (n1, n2) prior covariance of f as a NumPy array.
    """
    if not (hasattr(model, "features") and hasattr(model, "readout_variance")):
        raise TypeError(
            f"empirical_kernel needs a model with a linear readout (features(x) and readout_variance), got {model!r}"
        )
    if getattr(model, "is_linear", True) is False:
        raise ValueError(f"{model!r} is not frozen, so it has no fixed features: build it with frozen=True")

    def kernel(x1, x2=None):
        features1 = np.asarray(model.features(jnp.asarray(x1)), dtype=np.float64)
        features2 = features1 if x2 is None else np.asarray(model.features(jnp.asarray(x2)), dtype=np.float64)
        return model.readout_variance * features1 @ features2.T

    return kernel


def infinite_width_kernel(model) -> Callable:
    """Return the infinite-width kernel of a random-features network or a cos-net.

    RandomFeatures: :func:`random_features_kernel`. CosNet: ``model.kernel``, the two-point
    function averaged over the momenta and phases. For other models pass their kernel (for an
    MLP, ``model.kernel``) to :func:`nngp_shell_flow` directly.
    """
    if isinstance(model, RandomFeatures):
        return random_features_kernel(model)
    if isinstance(model, CosNet):
        return model.kernel
    raise TypeError(
        f"infinite_width_kernel supports RandomFeatures and CosNet, got {type(model).__name__}: pass the kernel "
        "(for an MLP, model.kernel) to nngp_shell_flow directly"
    )
