"""Training as an IR to UV flow, first view: posteriors conditioned on more and more data.

The data-count flow conditions the prior on T = 0, ..., n observations, either on nested subsets
(the first T rows of the data) or through the tempered likelihood p(y | theta)^beta with
beta = T / n on all n rows. With a Laplace (or exact Gaussian) posterior the precision is

.. math:: \\Sigma_T^{-1} = \\Sigma_0^{-1} + T \\bar I,

with Ibar the per-datum Fisher metric (of the T rows used, or of all n rows when tempered). The
number of Fisher directions above a fixed cutoff therefore grows with T. Training resolves the
theory from the prior (IR) to the trained network (UV), the reverse of BRG coarse graining.

Posteriors are exact for models linear in their Bayesian parameters (random features, a frozen
cos-net) and for the NNGP, and come from randomised-MAP ensembles or NUTS otherwise.

The helpers below that build flow statistics and the flow DataTree are shared with
:mod:`brgnnft.inference.training_flow`. They repeat a little of ``brgnnft.brg`` (the output-space
Fisher, the predictive statistics) because ``inference`` may not import ``brg``.

References
----------
D. S. Berman, M. S. Klinger, "The Inverse of Exact Renormalization Group Flows as Statistical
Inference", Entropy 26, 389 (2024), arXiv:2212.11379. J. N. Howard, M. S. Klinger, A. Maiti,
A. G. Stapleton, "Bayesian RG Flow in Neural Network Field Theories", arXiv:2405.17538.
"""

import copy
import logging
import math

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jax.flatten_util import ravel_pytree
from scipy.special import logsumexp

from brgnnft.inference._layout import package_versions
from brgnnft.inference._validate import check_data, check_fixed_noise, check_model
from brgnnft.inference.conjugate import sample_linear_posterior
from brgnnft.inference.ensemble import ensemble
from brgnnft.inference.nuts import nuts
from brgnnft.models._checks import (
    check_inputs,
    check_option,
    check_positive,
    check_positive_int,
    check_targets,
)
from brgnnft.models._likelihoods import observation_distribution
from brgnnft.models.correlators import connected_correlator, correlator

logger = logging.getLogger(__name__)

MODES = ("nested", "tempered")
METHODS = ("auto", "exact", "ensemble", "nuts")

# Test points whose two-point functions a flow records when none are named.
DEFAULT_NUM_POINTS = 4


# ---------------------------------------------------------------- checks


def check_counts(counts, num_data: int) -> np.ndarray:
    """Return the data counts as an ascending int array of distinct values in [0, n], or raise."""
    values = np.asarray(counts).reshape(-1) if np.ndim(counts) <= 1 else None
    if values is None or values.size == 0:
        raise ValueError(f"counts must be a non-empty 1-D sequence of integers in [0, {num_data}], got {counts!r}")
    if not np.issubdtype(values.dtype, np.integer):
        raise TypeError(f"counts must be integers (numbers of data points), got dtype {values.dtype}")
    bad = values[(values < 0) | (values > num_data)]
    if bad.size:
        raise ValueError(f"counts must lie in [0, {num_data}] (the number of data points), got {int(bad[0])}")
    if len(np.unique(values)) != len(values):
        raise ValueError("counts contain duplicates: pass each data count once")
    return np.sort(values).astype(np.int64)


def check_points(points, num_points: int) -> np.ndarray:
    """Return positions of test points for the two-point functions (default up to four, spread out)."""
    if points is None:
        count = min(DEFAULT_NUM_POINTS, num_points)
        return np.unique(np.round(np.linspace(0, num_points - 1, count)).astype(np.int64))
    positions = np.atleast_1d(np.asarray(points))
    if positions.size == 0 or not np.issubdtype(positions.dtype, np.integer):
        raise TypeError(f"points must be integer positions of test points, got {points!r}")
    if positions.min() < 0 or positions.max() >= num_points:
        raise ValueError(f"points must lie in [0, {num_points - 1}] (positions in x_test), got {points!r}")
    return positions.astype(np.int64)


def check_test_data(x_test, y_test, input_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the test set as float64 arrays after checking its shape against the training inputs."""
    x_test = check_inputs(x_test, "x_test").astype(np.float64)
    y_test = check_targets(y_test, x_test.shape[0], "y_test").astype(np.float64)
    if x_test.shape[1] != input_dim:
        raise ValueError(f"x_test has {x_test.shape[1]} features but x has {input_dim}")
    if y_test.ndim != 1:
        raise ValueError(f"y_test must have shape (m,), got {y_test.shape}: flows support one output")
    return x_test, y_test


# ---------------------------------------------------------------- Fisher spectrum


def _output_fisher_factor(likelihood: str, f, noise):
    """Return L (n, K, K) with L L^T the Fisher of p(y | f) in output space (as brgnnft.brg.likelihoods)."""
    eye = jnp.broadcast_to(jnp.eye(f.shape[-1], dtype=f.dtype), f.shape + (f.shape[-1],))
    if likelihood == "gaussian":
        return eye / noise
    if likelihood == "bernoulli":
        return jnp.exp(0.5 * (jax.nn.log_sigmoid(f) + jax.nn.log_sigmoid(-f)))[..., None]
    if likelihood == "poisson":
        return jnp.exp(0.5 * f)[..., None]
    log_p = jax.nn.log_softmax(f, axis=-1)
    p, s = jnp.exp(log_p), jnp.exp(0.5 * log_p)
    return s[..., :, None] * eye - p[..., :, None] * s[..., None, :]


def fisher_eigenvalues(model, params: dict, x, *, noise=None, weight: float = 1.0) -> np.ndarray:
    """Return the eigenvalues of the (n K, n K) Gram of weight * I(theta) on inputs x, descending.

    I = sum_i J_i^T H_out J_i is the Fisher metric of the whole set x at one parameter value
    (a dict of sites without sample axes). By the NTK duality the nonzero eigenvalues of the
    Gram J~ J~^T, J~ = L^T J, are those of I, at a cost of O(n^2 P) rather than O(P^3). The
    Gram's other eigenvalues are zero up to rounding.
    """
    x = jnp.asarray(x, dtype=jnp.float64)
    if x.shape[0] == 0:
        return np.zeros(0)
    if _is_linear(model):
        # f = Phi a, so J = Phi at every parameter value and the Gram is Phi Phi^T / sigma^2.
        features = np.asarray(model.features(x), dtype=np.float64)
        return np.linalg.eigvalsh(weight * features @ features.T / noise**2)[::-1]
    flat, unravel = ravel_pytree({name: jnp.asarray(value, dtype=jnp.float64) for name, value in params.items()})
    likelihood = getattr(model, "likelihood", "gaussian")

    def outputs(vector):
        return jnp.reshape(model.apply(unravel(vector), x), (x.shape[0], -1))

    jacobian = jax.jacfwd(outputs)(flat)
    factor = _output_fisher_factor(likelihood, outputs(flat), noise)
    weighted = jnp.einsum("nkj,nkp->njp", factor, jacobian).reshape(-1, flat.size)
    eigenvalues = np.linalg.eigvalsh(np.asarray(weight * weighted @ weighted.T))
    return eigenvalues[::-1]


def mean_stiff_count(model, params: dict, x, *, noise, cutoff: float, weight: float = 1.0, max_members: int = 16) -> float:
    """Return the mean over up to ``max_members`` samples of #{Fisher eigenvalues >= cutoff}.

    ``params`` contains (S, ...) samples, and the members used are spread evenly over the S.
    """
    count = next(iter(params.values())).shape[0]
    chosen = np.unique(np.round(np.linspace(0, count - 1, min(count, max_members))).astype(int))
    counts = [
        np.sum(fisher_eigenvalues(model, {name: value[index] for name, value in params.items()}, x,
                                  noise=noise, weight=weight) >= cutoff)
        for index in chosen
    ]
    return float(np.mean(counts))


# ---------------------------------------------------------------- flow statistics and tree


def _mean_and_variance_of_y(likelihood: str, f: np.ndarray, noise):
    """Return E[y | f] and Var[y | f] elementwise for the scalar-output likelihoods."""
    if likelihood == "gaussian":
        return f, np.full_like(f, noise**2)
    if likelihood == "bernoulli":
        p = 1.0 / (1.0 + np.exp(-f))
        return p, p * (1 - p)
    rate = np.exp(f)
    return rate, rate


def flow_variables(f: np.ndarray, y_test: np.ndarray, model, noise, *, dim: str, points: np.ndarray) -> dict:
    """Return the ``flow`` group's per-scale variables from outputs f (K, S, m) at the test points.

    ``test_mse`` is the mean over members of each member's MSE of E[y | f] (f itself for the
    Gaussian likelihood); ``predictive_sd`` the mean over test points of the predictive standard
    deviation of y; ``log_predictive_density`` sum_i log mean_s p(y_i | f_s); ``two_point`` and
    ``connected_two_point`` the correlators E[f f] and Cov(f, f) at the chosen points, with their
    jackknife standard errors.
    """
    likelihood = getattr(model, "likelihood", "gaussian")
    mean_y, variance_y = _mean_and_variance_of_y(likelihood, f, noise)
    member_mse = np.mean((mean_y - y_test) ** 2, axis=-1)
    count = f.shape[-2]
    distribution = observation_distribution(likelihood, jnp.asarray(f), noise)
    log_likelihood = np.asarray(distribution.log_prob(jnp.asarray(y_test)))
    log_density = np.sum(logsumexp(log_likelihood, axis=-2) - np.log(count), axis=-1)
    predictive_variance = mean_y.var(axis=-2, ddof=1) + variance_y.mean(axis=-2)
    two_point = correlator(f, points=points, order=2, progress=False)
    connected = connected_correlator(f, points=points, order=2, progress=False)

    scale = (dim,)
    legs = (dim, "point_1", "point_2")
    return {
        "test_mse": (scale, member_mse.mean(axis=-1)),
        "test_mse_se": (scale, member_mse.std(axis=-1, ddof=1) / math.sqrt(count)),
        "member_mse": (scale + ("member",), member_mse),
        "predictive_sd": (scale, np.sqrt(predictive_variance).mean(axis=-1)),
        "f_sd": (scale, f.std(axis=-2, ddof=1).mean(axis=-1)),
        "log_predictive_density": (scale, log_density),
        "two_point": (legs, two_point.value),
        "two_point_se": (legs, two_point.standard_error),
        "connected_two_point": (legs, connected.value),
        "connected_two_point_se": (legs, connected.standard_error),
    }, log_likelihood


def prior_two_point(model, x_points) -> tuple[np.ndarray | None, str]:
    """Return the prior two-point function E[f(x) f(x')] at the points and where it comes from.

    The value is exact for models linear in their parameters (s^2 Phi Phi^T) and for the NNGP (its
    kernel). Networks that define ``kernel`` get the infinite-width NNGP kernel, others None.
    """
    x_points = jnp.asarray(x_points)
    if getattr(model, "linear_site", None) and hasattr(model, "features"):
        features = np.asarray(model.features(x_points))
        return model.readout_variance * features @ features.T, "exact prior of the linear readout"
    if getattr(model, "is_gaussian_process", False):
        return np.asarray(model.kernel(x_points, x_points)), "kernel of the Gaussian process"
    if hasattr(model, "kernel"):
        return np.asarray(model.kernel(x_points, x_points)), "infinite-width NNGP kernel"
    return None, "none"


def build_inference_flow_tree(
    *,
    dim: str,
    scale: np.ndarray,
    f: np.ndarray,
    params: dict,
    model,
    x_test: np.ndarray,
    y_test: np.ndarray,
    noise,
    points: np.ndarray,
    variables: dict,
    attrs: dict,
    chains: int,
    draws: int,
    key,
    scale_coords: dict | None = None,
):
    """Assemble a training flow DataTree from outputs f (K, S, m) and parameters (K, S, ...).

    Groups: ``posterior`` (``f`` and the parameter sites with dims (dim, chain, draw, ...)),
    ``posterior_predictive`` and ``log_likelihood`` (``y`` at the test points), ``observed_data``
    and ``constant_data`` (the test set), and ``flow`` (per-scale statistics, ``variables``, and
    the prior two-point function when known).
    """
    num_scales, num_members, num_points = f.shape
    statistics, log_likelihood = flow_variables(f, y_test, model, noise, dim=dim, points=points)
    distribution = observation_distribution(getattr(model, "likelihood", "gaussian"), jnp.asarray(f), noise)
    predictive = np.asarray(distribution.sample(key))

    coords = {dim: scale, **(scale_coords or {})}
    sample_coords = {**coords, "chain": np.arange(chains), "draw": np.arange(draws), "obs_id": np.arange(num_points)}
    sample_dims = (dim, "chain", "draw", "obs_id")
    sample_shape = (num_scales, chains, draws, num_points)

    posterior = xr.Dataset({"f": (sample_dims, f.reshape(sample_shape))}, coords=sample_coords)
    for name, value in params.items():
        value = np.asarray(value)
        event_dims = tuple(f"{name}_dim_{axis}" for axis in range(value.ndim - 2))
        posterior[name] = ((dim, "chain", "draw") + event_dims, value.reshape((num_scales, chains, draws) + value.shape[2:]))

    member_mse = statistics.pop("member_mse")[1]
    flow = xr.Dataset(
        {**statistics, **{name: ((dim,), np.asarray(value)) for name, value in variables.items()}},
        coords={**coords, "point_1": points, "point_2": points},
    )
    flow["member_mse"] = ((dim, "chain", "draw"), member_mse.reshape(num_scales, chains, draws))
    flow = flow.assign_coords(chain=np.arange(chains), draw=np.arange(draws))
    prior, source = prior_two_point(model, x_test[points])
    if prior is not None:
        flow["prior_two_point"] = (("point_1", "point_2"), prior)
    flow.attrs["prior_two_point_source"] = source

    return xr.DataTree.from_dict(
        {
            "/": xr.Dataset(attrs={"model": repr(model), **attrs, **package_versions()}),
            "posterior": posterior,
            "posterior_predictive": xr.Dataset({"y": (sample_dims, predictive.reshape(sample_shape))}, coords=sample_coords),
            "log_likelihood": xr.Dataset({"y": (sample_dims, log_likelihood.reshape(sample_shape))}, coords=sample_coords),
            "observed_data": xr.Dataset({"y": (("obs_id",), y_test)}, coords={"obs_id": np.arange(num_points)}),
            "constant_data": xr.Dataset(
                {"x": (("obs_id", "feature"), x_test)},
                coords={"obs_id": np.arange(num_points), "feature": np.arange(x_test.shape[1])},
            ),
            "flow": flow,
        }
    )


# ---------------------------------------------------------------- exact posteriors


def _is_linear(model) -> bool:
    return bool(getattr(model, "linear_site", None)) and getattr(model, "is_linear", True) and hasattr(model, "features")


def _tempered(model, beta: float):
    """Return a copy of the Gaussian model whose likelihood is raised to the power beta."""
    tempered = copy.copy(model)
    tempered.noise = model.noise / math.sqrt(beta)
    return tempered


def _rows_and_noise(model, x, y, count: int, mode: str):
    """Return (x_T, y_T, noise_T, weight): the data, noise and Fisher weight of data count T."""
    if mode == "nested":
        return x[:count], y[:count], getattr(model, "noise", None), 1.0
    beta = count / x.shape[0]
    noise = getattr(model, "noise", None)
    if noise is not None:
        # beta = 0 is the prior: the likelihood is flat, as with infinite noise.
        noise = noise / math.sqrt(beta) if beta > 0 else math.inf
    return x, y, noise, beta


def data_count_moments(model, x, y, counts, *, mode: str = "nested") -> list[tuple[np.ndarray, np.ndarray]]:
    """Return the exact posterior mean (P,) and precision (P, P) of a linear model at each data count.

    Parameters
    ----------
    model : a model linear in its Bayesian readout (``RandomFeatures``, a frozen ``CosNet``).
    x : array (n, d); y : array (n,)
    counts : sequence of int in [0, n]
    mode : {"nested", "tempered"}

    Returns
    -------
    list of (mean, precision), one per count in ascending order.

    Notes
    -----
    Nested: Sigma_T^-1 = I / s^2 + Phi_T^T Phi_T / sigma^2 with Phi_T the features of the first T
    rows. Tempered: Sigma_T^-1 = I / s^2 + beta Phi^T Phi / sigma^2 with beta = T / n, which is
    Sigma_0^-1 + T Ibar for the per-datum metric Ibar = Phi^T Phi / (n sigma^2) of all rows.
    """
    if not _is_linear(model):
        raise TypeError(f"data_count_moments needs a model linear in its Bayesian parameters, got {model!r}")
    check_option("mode", mode, MODES)
    x = check_inputs(x).astype(np.float64)
    y = check_targets(y, x.shape[0]).astype(np.float64)
    counts = check_counts(counts, x.shape[0])
    features = np.asarray(model.features(jnp.asarray(x)), dtype=np.float64)
    prior_precision = np.eye(features.shape[1]) / model.readout_variance
    moments = []
    for count in counts:
        weight = 1.0 if mode == "nested" else count / x.shape[0]
        rows = features[:count] if mode == "nested" else features
        targets = y[:count] if mode == "nested" else y
        precision = prior_precision + weight * rows.T @ rows / model.noise**2
        mean = np.linalg.solve(precision, weight * rows.T @ targets / model.noise**2)
        moments.append((mean, precision))
    return moments


def _exact_linear(model, x, y, count, mode, *, key, num_samples):
    """Return readout samples (S, P) of the exact posterior at data count T (the prior at T = 0)."""
    if count == 0:
        return {model.linear_site: np.asarray(model.sample_params(key, x.shape[1], num_samples)[model.linear_site])}
    rows, targets, noise, _ = _rows_and_noise(model, x, y, count, mode)
    features = model.features(jnp.asarray(rows))
    readout = sample_linear_posterior(features, targets, noise, model.readout_variance, key=key, num_samples=num_samples)
    return {model.linear_site: np.asarray(readout)}


def _exact_gaussian_process(model, x, y, count, mode, x_test, *, key, num_samples):
    """Return f samples (S, m) at the test points from the exact GP posterior at data count T."""
    if count == 0:
        mean = np.zeros(x_test.shape[0])
        covariance = np.asarray(model.kernel(jnp.asarray(x_test), jnp.asarray(x_test)))
    else:
        rows, targets, noise, _ = _rows_and_noise(model, x, y, count, mode)
        moments = model.posterior_moments(rows, targets, x_test, noise=noise)
        mean, covariance = np.asarray(moments.mean), np.asarray(moments.covariance)
    # A relative jitter keeps the Cholesky factor of a covariance that is singular in exact arithmetic.
    jitter = 1e-10 * max(float(np.mean(np.diag(covariance))), 1e-300)
    factor = np.linalg.cholesky(covariance + jitter * np.eye(mean.size))
    draws = np.asarray(jax.random.normal(key, (num_samples, mean.size), dtype=jnp.float64))
    return mean + draws @ factor.T


def _gaussian_process_stiff_count(model, x, count, mode, cutoff) -> float:
    """Return #{kappa_k / sigma_T^2 >= cutoff}: the stiff modes of the GP (the metric diag(kappa) / sigma^2)."""
    if count == 0:
        return 0.0
    rows, _, noise, _ = _rows_and_noise(model, x, np.zeros(x.shape[0]), count, mode)
    kappa = np.linalg.eigvalsh(np.asarray(model.kernel(jnp.asarray(rows), jnp.asarray(rows))))
    return float(np.sum(kappa / noise**2 >= cutoff))


# ---------------------------------------------------------------- sampled posteriors


def _sampled_posterior(model, x, y, count, mode, method, *, key, num_samples, options, progress):
    """Return parameter samples (chains, draws, ...) from an ensemble or NUTS at data count T."""
    input_dim = x.shape[1]
    chains = 1 if method == "ensemble" else options["num_chains"]
    draws = num_samples if method == "ensemble" else math.ceil(num_samples / chains)
    if count == 0:
        prior = model.sample_params(key, input_dim, chains * draws)
        return {name: np.asarray(value).reshape((chains, draws) + np.shape(value)[1:]) for name, value in prior.items()}

    rows, targets, _, beta = _rows_and_noise(model, x, y, count, mode)
    conditioned = model if mode == "nested" else _tempered(model, beta)
    if method == "ensemble":
        tree = ensemble(conditioned, rows, targets, key=key, num_members=num_samples, num_steps=options["num_steps"],
                        learning_rate=options["learning_rate"], progress=progress)
    else:
        tree = nuts(conditioned, rows, targets, key=key, num_warmup=options["num_warmup"], num_samples=draws,
                    num_chains=chains, progress=progress)
    return {name: np.asarray(tree["posterior"][name].values) for name in model.param_shapes(input_dim)}


def _resolve_method(model, method: str) -> str:
    check_option("method", method, METHODS)
    exact_possible = _is_linear(model) or getattr(model, "is_gaussian_process", False)
    if method == "auto":
        if exact_possible:
            return "exact"
        return "ensemble" if getattr(model, "likelihood", "gaussian") == "gaussian" else "nuts"
    if method == "exact" and not exact_possible:
        raise ValueError(
            f"method='exact' needs a model linear in its Bayesian parameters or an NNGP, got {model!r}: "
            "use method='ensemble' or method='nuts'"
        )
    if getattr(model, "is_gaussian_process", False) and method != "exact":
        raise ValueError(f"an NNGP has no parameters to sample: use method='exact', got method={method!r}")
    return method


def data_count_flow(
    model,
    x,
    y,
    *,
    x_test,
    y_test,
    counts,
    key,
    mode: str = "nested",
    method: str = "auto",
    cutoff: float = 1.0,
    points=None,
    num_samples: int = 500,
    num_steps: int = 2000,
    learning_rate: float = 1e-3,
    num_warmup: int = 300,
    num_chains: int = 2,
    fisher_members: int = 16,
    progress: bool = True,
):
    """Run the data-count flow: posteriors on T = counts data points, from the prior to the trained theory.

    Parameters
    ----------
    model : a brgnnft model with one output (and a fixed noise for the Gaussian likelihood), or an NNGP.
    x : array (n, d); y : array (n,)
        Training data. Nested subsets are the first T rows: shuffle first for a random nesting.
    x_test : array (m, d); y_test : array (m,)
    counts : sequence of int in [0, n]
        The data counts T (sorted ascending); T = 0 is the prior.
    key : jax.random key
    mode : {"nested", "tempered"}
        Condition on the first T rows, or on all n rows with the likelihood raised to beta = T / n
        (the Gaussian likelihood only: the noise becomes sigma / sqrt(beta)).
    method : {"auto", "exact", "ensemble", "nuts"}
        "auto" is exact for linear models and the NNGP, else a randomised-MAP ensemble for the
        Gaussian likelihood and NUTS for the others.
    cutoff : float
        Lambda: a Fisher direction of the T-point metric (tempered: beta times the n-point metric)
        with eigenvalue >= Lambda counts as stiff.
    points : sequence of int, optional
        Positions in x_test of the two-point functions; default up to four spread over the set.
    num_samples : int
        Posterior draws (ensemble members; NUTS draws over all chains, rounded up per chain).
    num_steps, learning_rate : ensemble settings.
    num_warmup, num_chains : NUTS settings.
    fisher_members : int
        Samples at which the Fisher spectrum of a nonlinear model is computed; ``num_stiff`` is
        the mean count over them. Linear models and the NNGP have one spectrum.
    progress : bool

    Returns
    -------
    DataTree
        Dimension ``data_count`` (coordinate T, and ``beta`` = T / n). ``posterior`` contains ``f``
        at the test points and the parameter sites, and ``flow`` contains ``num_stiff``, ``test_mse``,
        ``test_mse_se``, ``member_mse``, ``predictive_sd``, ``f_sd``, ``log_predictive_density``,
        ``two_point`` and ``connected_two_point`` (with standard errors) at ``point_1``,
        ``point_2``, and ``prior_two_point`` where it is known.

    Notes
    -----
    With the Laplace approximation the posterior precision is Sigma_0^-1 + T Ibar, exact for
    linear-Gaussian models (see :func:`data_count_moments`), so num_stiff grows with T.

    Examples
    --------
    >>> import jax, numpy as np
    >>> from brgnnft.models import RandomFeatures
    >>> from brgnnft.inference import data_count_flow
    >>> x = np.linspace(-2, 2, 40)[:, None]; y = np.sin(2 * x[:, 0])
    >>> flow = data_count_flow(RandomFeatures(hidden=(32,), noise=0.1), x, y, x_test=x, y_test=y,
    ...                        counts=[0, 5, 40], key=jax.random.key(0), num_samples=100, progress=False)
    >>> flow["flow"]["num_stiff"].values.tolist()
    [0.0, 2.0, 9.0]
    """
    is_gaussian_process = getattr(model, "is_gaussian_process", False)
    if not is_gaussian_process:
        check_model(model)
    x, y = check_data(model, x, y, key, require_y=True)
    x, y = x.astype(np.float64), y.astype(np.float64)
    x_test, y_test = check_test_data(x_test, y_test, x.shape[1])
    check_option("mode", mode, MODES)
    method = _resolve_method(model, method)
    counts = check_counts(counts, x.shape[0])
    cutoff = check_positive("cutoff", cutoff)
    points = check_points(points, x_test.shape[0])
    num_samples = check_positive_int("num_samples", num_samples)
    fisher_members = check_positive_int("fisher_members", fisher_members)
    likelihood = getattr(model, "likelihood", "gaussian")
    if likelihood == "gaussian":
        check_fixed_noise(model, "data_count_flow")
    if mode == "tempered" and likelihood != "gaussian":
        raise ValueError(
            f"mode='tempered' rescales the Gaussian noise to sigma / sqrt(beta), got likelihood={likelihood!r}: "
            "use mode='nested'"
        )
    if getattr(model, "out_dim", 1) != 1:
        raise ValueError(f"data_count_flow supports one output per datum, got out_dim={model.out_dim}")
    options = {"num_steps": check_positive_int("num_steps", num_steps), "learning_rate": check_positive("learning_rate", learning_rate),
               "num_warmup": check_positive_int("num_warmup", num_warmup), "num_chains": check_positive_int("num_chains", num_chains)}
    key_predictive, *count_keys = jax.random.split(key, len(counts) + 1)
    logger.info("data-count flow over %d counts (%s, %s)", len(counts), mode, method)

    outputs, samples, stiff = [], [], []
    for count_key, count in zip(count_keys, counts):
        count = int(count)
        rows, _, _, weight = _rows_and_noise(model, x, y, count, mode)
        if is_gaussian_process:
            outputs.append(_exact_gaussian_process(model, x, y, count, mode, x_test, key=count_key, num_samples=num_samples))
            stiff.append(_gaussian_process_stiff_count(model, x, count, mode, cutoff))
            continue
        if method == "exact":
            params = _exact_linear(model, x, y, count, mode, key=count_key, num_samples=num_samples)
            params = {name: value[None] for name, value in params.items()}
        else:
            params = _sampled_posterior(model, x, y, count, mode, method, key=count_key, num_samples=num_samples,
                                        options=options, progress=progress)
        flat = {name: value.reshape((-1,) + value.shape[2:]) for name, value in params.items()}
        outputs.append(np.asarray(model.apply({name: jnp.asarray(value) for name, value in flat.items()}, jnp.asarray(x_test))))
        samples.append(params)
        fisher_rows = rows if count else rows[:0]
        members = 1 if method == "exact" else fisher_members
        fisher_noise = getattr(model, "noise", None)
        stiff.append(mean_stiff_count(model, flat, fisher_rows, noise=fisher_noise, cutoff=cutoff, weight=weight,
                                      max_members=members))

    f = np.stack(outputs)
    chains, draws = (1, f.shape[1]) if not samples else next(iter(samples[0].values())).shape[:2]
    params = {name: np.stack([sample[name] for sample in samples]) for name in (samples[0] if samples else {})}
    attrs = {"scheme": "data_count", "mode": mode, "method": method, "cutoff": cutoff, "num_data": int(x.shape[0]),
             "likelihood": likelihood}
    return build_inference_flow_tree(
        dim="data_count",
        scale=counts,
        f=f,
        params={name: value.reshape((len(counts), chains * draws) + value.shape[3:]) for name, value in params.items()},
        model=model,
        x_test=x_test,
        y_test=y_test,
        noise=getattr(model, "noise", None),
        points=points,
        variables={"num_stiff": np.asarray(stiff)},
        attrs=attrs,
        chains=chains,
        draws=draws,
        key=key_predictive,
        scale_coords={"beta": ("data_count", counts / x.shape[0])},
    )
