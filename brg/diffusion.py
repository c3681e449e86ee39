"""Diffusion coarse graining: the Fisher-metric Ornstein-Uhlenbeck flow of posterior samples to the prior.

Every posterior sample theta is moved by the diffusion

.. math::

    d\\theta = -\\tfrac12 D \\Sigma_0^{-1} (\\theta - \\mu_0)\\, dt + D^{1/2} dW,
    \\qquad D = (\\bar I + \\delta)^{-1},

with Ibar the per-datum Fisher metric and delta > 0 a regulator for directions of zero Fisher
information. The prior N(mu_0, Sigma_0) is its fixed point. For an isotropic prior of variance s^2,
Fisher eigenmode A relaxes at rate gamma_A = 1 / (s^2 (lambda_A + delta)) (lambda_A the per-datum
eigenvalue): its covariance moves to the prior's as e^{-gamma_A t} and its mean as e^{-gamma_A t / 2}.
Sloppy directions forget the data first, so the flow is a smooth-regulator version of the
information shell (:func:`brgnnft.brg.information_shell_flow`).

Two ways to run it:

- ``metric="reference"``: the metric is frozen at the reference point (MAP or posterior mean), the
  transitions are Gaussian and are sampled exactly, with no time steps, in the Fisher eigenbasis
  (the diagonal basis uses the diagonal of the metric).
- ``metric="local"``: D(theta) follows each sample and the SDE integrator of
  :mod:`brgnnft.brg.sde` advances it, with the Ito drift correction 1/2 div D that keeps the prior
  stationary.

``heat=True`` drops the drift towards the prior: Brownian motion on the statistical manifold, whose
stationary density is proportional to sqrt(det(Ibar + delta)), the Jeffreys prior. With a frozen
metric this is a Gaussian random walk with covariance D t and no stationary density.

References
----------
D. S. Berman, M. S. Klinger, "The Inverse of Exact Renormalization Group Flows as Statistical
Inference", Entropy 26, 389 (2024), arXiv:2212.11379. D. S. Berman, M. S. Klinger, A. G.
Stapleton, "Bayesian Renormalization", arXiv:2305.10491. J. N. Howard, M. S. Klinger, A. Maiti,
A. G. Stapleton, "Bayesian RG Flow in Neural Network Field Theories", arXiv:2405.17538.
"""

import logging
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from brgnnft.brg._flatten import ParamLayout, in_float64
from brgnnft.brg.coarse_grain import posterior_params, prior_variance_vector, split_at
from brgnnft.brg.fisher import fisher_information
from brgnnft.brg.flow import REFERENCES, _noise_samples, build_flow_tree
from brgnnft.brg.likelihoods import output_fisher_factor
from brgnnft.brg.reference import reference_point
from brgnnft.brg.sde import LangevinSDE, check_times, integrate_sde, resolve_scheme
from brgnnft.inference._layout import package_versions
from brgnnft.models._checks import (
    check_inputs,
    check_key,
    check_option,
    check_positive,
    check_positive_int,
    check_targets,
)

logger = logging.getLogger(__name__)

METRICS = ("reference", "local")

# Default regulator delta, relative to the largest per-datum Fisher eigenvalue. Directions of zero
# Fisher information then relax a million times faster than the stiffest one, as in the
# information shell, where the null space is coarse grained at every cutoff.
DEFAULT_RELATIVE_REGULARIZER = 1e-6

# Steps per shortest interval between flow times when ``metric="local"`` and no step size is given.
DEFAULT_STEPS_PER_INTERVAL = 100


def _safe_reciprocal(numerator, denominator):
    """Return numerator / denominator elementwise, inf where the denominator is 0."""
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast_shapes(np.shape(numerator), denominator.shape), np.inf)
    return np.divide(numerator, denominator, out=out, where=denominator > 0)


def relaxation_rates(eigenvalues, prior_variance, regularizer) -> np.ndarray:
    """Return gamma_A = 1 / (s^2 (lambda_A + delta)), the rate at which mode A relaxes to the prior.

    ``eigenvalues`` are per-datum Fisher eigenvalues; a zero denominator gives an infinite rate.
    The covariance of the mode approaches the prior's as e^{-gamma t}, its mean as e^{-gamma t / 2}.
    """
    return _safe_reciprocal(1.0, np.asarray(prior_variance) * (np.asarray(eigenvalues) + regularizer))


def _step_factors(whitened, dt, heat):
    """Return (decay, noise SD) of one exact step for whitened metric eigenvalues mu = s^2 (lambda + delta).

    In prior-whitened coordinates the mode has rate 1 / mu: the OU step is u -> e^{-dt / (2 mu)} u
    + sqrt(1 - e^{-dt / mu}) xi, the heat step u -> u + sqrt(dt / mu) xi.
    """
    ratio = _safe_reciprocal(dt, whitened)
    if heat:
        return np.ones_like(ratio), np.sqrt(ratio)
    return np.exp(-0.5 * ratio), np.sqrt(-np.expm1(-ratio))


def _orthonormalized(vectors: np.ndarray) -> np.ndarray:
    """Return V (V^T V)^{-1/2}: the orthonormal columns closest to V (Loewdin orthogonalisation).

    Eigenvectors from the NTK duality, J~^T u_A / sqrt(lambda_A), are orthonormal only up to
    rounding amplified by the condition number. The exact transitions split theta into V V^T theta
    and its complement, which must be orthogonal projections for the prior to stay stationary.
    """
    if vectors.shape[1] == 0:
        return vectors
    values, rotation = np.linalg.eigh(vectors.T @ vectors)
    return vectors @ (rotation / np.sqrt(values)) @ rotation.T


class ExactDiffusion:
    """Exact Gaussian transitions of the diffusion with the metric frozen at the reference point.

    Three routes, chosen from the Fisher basis and the prior:

    - ``"diagonal"`` (diagonal basis): every parameter is its own mode, mu_j = v_j (Ibar_jj + delta).
    - ``"eigen"`` (eigenbasis, isotropic prior s^2): the r Fisher eigenmodes, mu_A = s^2 (lambda_A +
      delta), and their orthogonal complement with mu = s^2 delta. It forms the (P, r) eigenvectors
      but no P x P matrix.
    - ``"dense"`` (eigenbasis, anisotropic prior): the eigenmodes of the prior-whitened metric
      S (Ibar + delta) S with S = diag(sqrt(v)), from a dense P x P eigendecomposition.

    Parameters
    ----------
    fisher : FisherInformation
        The metric at the reference point (whole data set or per datum; converted to per datum).
    prior_variance : array (P,)
        Zero-mean Gaussian prior variances in the layout's order.
    regularizer : float
        delta >= 0 on the per-datum scale.
    heat : bool
        Brownian motion without the drift to the prior.
    max_memory_bytes : float
        Ceiling for the dense route's P x P matrices.
    """

    def __init__(self, fisher, prior_variance, *, regularizer: float, heat: bool, max_memory_bytes: float = 2e9):
        self.fisher = fisher
        self.heat = bool(heat)
        self.regularizer = float(regularizer)
        self.prior_variance = np.asarray(prior_variance, dtype=np.float64)
        num_params = self.prior_variance.size
        per_datum_scale = 1.0 if fisher.per_datum else float(fisher.num_data)
        isotropic = bool(np.allclose(self.prior_variance, self.prior_variance[0], rtol=1e-12, atol=0.0))

        if fisher.basis == "diagonal":
            self.route = "diagonal"
            self.metric_values = fisher.diagonal_vector() / per_datum_scale
            self.whitened = self.prior_variance * (self.metric_values + self.regularizer)
            self.null_whitened = None
        elif isotropic:
            self.route = "eigen"
            self.metric_values = np.asarray(fisher.eigenvalues) / per_datum_scale
            self.whitened = self.prior_variance[0] * (self.metric_values + self.regularizer)
            self.null_whitened = self.prior_variance[0] * self.regularizer
            self.vectors = _orthonormalized(fisher.eigenvectors.matrix())
        else:
            self.route = "dense"
            needed = 3 * 8.0 * num_params**2
            if needed > max_memory_bytes:
                raise MemoryError(
                    f"an anisotropic prior needs the dense {num_params} x {num_params} whitened metric (about "
                    f"{needed / 1e9:.2f} GB), above max_memory_bytes={max_memory_bytes:.3g}: use basis='diagonal'"
                )
            directions = fisher.eigenvectors.matrix()
            metric = (directions * (np.asarray(fisher.eigenvalues) / per_datum_scale)) @ directions.T
            scale = np.sqrt(self.prior_variance)
            whitened = scale[:, None] * (metric + self.regularizer * np.eye(num_params)) * scale[None, :]
            eigenvalues, self.vectors = np.linalg.eigh(whitened)
            self.whitened = np.maximum(eigenvalues, 0.0)
            self.null_whitened = None
        self.num_null = num_params - self.whitened.size

        if self.heat and (np.any(self.whitened <= 0) or (self.num_null and self.null_whitened <= 0)):
            raise ValueError(
                "heat=True with regularizer=0 gives the directions of zero Fisher information an infinite "
                "diffusion coefficient: pass regularizer > 0"
            )

    def rates(self) -> np.ndarray:
        """Return the relaxation rate 1 / mu of every one of the P directions (inf for mu = 0)."""
        rates = _safe_reciprocal(1.0, self.whitened)
        if self.num_null:
            rates = np.concatenate([rates, np.full(self.num_null, _safe_reciprocal(1.0, self.null_whitened))])
        return rates

    def advance(self, key, theta: np.ndarray, dt: float) -> np.ndarray:
        """Return samples theta (S, P) moved by the exact transition over time dt."""
        noise = np.asarray(jax.random.normal(key, theta.shape, dtype=jnp.float64))
        decay, noise_sd = _step_factors(self.whitened, dt, self.heat)
        scale = np.sqrt(self.prior_variance)

        if self.route == "diagonal":
            return scale * (decay * theta / scale + noise_sd * noise)
        if self.route == "dense":
            coordinates = (theta / scale) @ self.vectors
            return scale * ((decay * coordinates + noise_sd * (noise @ self.vectors)) @ self.vectors.T)

        coordinates = theta @ self.vectors
        noise_coordinates = noise @ self.vectors
        moved = (decay * coordinates + scale[0] * noise_sd * noise_coordinates) @ self.vectors.T
        if self.num_null:
            null_decay, null_sd = _step_factors(np.array([self.null_whitened]), dt, self.heat)
            complement = theta - coordinates @ self.vectors.T
            noise_complement = noise - noise_coordinates @ self.vectors.T
            moved = moved + null_decay[0] * complement + scale[0] * null_sd[0] * noise_complement
        return moved


def local_metric(model, layout: ParamLayout, x, *, noise, regularizer: float, diagonal: bool = False):
    """Return theta (P,) -> Ibar(theta) + delta I, the per-datum Fisher metric at theta, in JAX.

    Ibar(theta) = (1/n) sum_i J_i^T H_out J_i on the inputs x (n, d), with H_out the likelihood's
    Fisher in output space (:func:`brgnnft.brg.likelihoods.output_fisher_factor`). With ``diagonal``
    only its diagonal is kept, the metric of the diagonal basis.
    """
    x = jnp.asarray(x, dtype=jnp.float64)
    num_data = x.shape[0]
    likelihood = getattr(model, "likelihood", "gaussian")
    eye = jnp.eye(layout.size, dtype=jnp.float64)

    def outputs(theta):
        return jnp.reshape(model.apply(layout.unflatten(theta), x), (num_data, -1))

    def metric(theta):
        jacobian = jax.jacfwd(outputs)(theta)
        factor = output_fisher_factor(likelihood, outputs(theta), noise=noise)
        weighted = jnp.einsum("nkj,nkp->njp", factor, jacobian).reshape(-1, layout.size)
        value = weighted.T @ weighted / num_data
        if diagonal:
            value = jnp.diag(jnp.diag(value))
        return value + regularizer * eye

    return metric


class Diffusion(NamedTuple):
    """Posterior samples moved by the diffusion, with everything needed to read them.

    Attributes
    ----------
    theta : ndarray (K, S, P)
        Flat samples at each flow time, in the order of ``layout``.
    initial : ndarray (S, P)
        The trained samples (flow time 0).
    times : ndarray (K,)
    cutoff_equivalent : ndarray (K,)
        Lambda(t) = c t / s^2 on the scale of ``fisher``'s eigenvalues (c = n for the metric of the
        whole data set, 1 per datum).
    fisher : FisherInformation
        The metric at the reference point (spectrum and stiff counts).
    rates : ndarray (P,)
        Relaxation rates of the frozen-metric modes, 1 / (s^2 (lambda_A + delta)).
    regularizer, prior_variance_scale, cutoff_factor : float
        delta, s^2 and c.
    acceptance_rate : ndarray (K,)
        Metropolis acceptance per interval (1 without Metropolis or for exact transitions).
    transition : str
        "exact" for the frozen metric, else the SDE scheme used ("exponential" or "euler_maruyama").
    layout : ParamLayout
    """

    theta: np.ndarray
    initial: np.ndarray
    times: np.ndarray
    cutoff_equivalent: np.ndarray
    fisher: object
    rates: np.ndarray
    regularizer: float
    prior_variance_scale: float
    cutoff_factor: float
    acceptance_rate: np.ndarray
    transition: str
    layout: ParamLayout

    def params(self) -> dict[str, np.ndarray]:
        """Return the samples as a dict of site name to (K, S, ...) arrays."""
        return {name: np.asarray(value) for name, value in self.layout.unflatten(self.theta).items()}

    def num_stiff_smooth(self) -> np.ndarray:
        """Return sum_A e^{-gamma_A t} over all P directions at each time: the smooth count of stiff modes."""
        return np.exp(-np.outer(self.times, self.rates)).sum(axis=1)


def prior_variance_scale(variances) -> float:
    """Return s^2 of Lambda(t) = c t / s^2: the prior variance, or the harmonic mean of anisotropic ones."""
    variances = np.asarray(variances, dtype=np.float64)
    if np.allclose(variances, variances[0], rtol=1e-12, atol=0.0):
        return float(variances[0])
    return float(variances.size / np.sum(1.0 / variances))


def flow_times(cutoffs, model, *, input_dim: int, num_data: int, per_datum: bool = False) -> np.ndarray:
    """Return the flow times t = Lambda s^2 / c at which the diffusion reaches the given cutoffs.

    The inverse of ``cutoff_equivalent`` in :func:`diffuse`, with c = n (``num_data``) for the metric
    of the whole data set, the default of both flows, and c = 1 with ``per_datum``. It lets one
    grid of cutoffs drive both the information shell and the diffusion.
    """
    cutoffs = np.sort(np.asarray(cutoffs, dtype=np.float64).reshape(-1))
    if cutoffs.size == 0 or not np.all(np.isfinite(cutoffs) & (cutoffs > 0)):
        raise ValueError(f"cutoffs must be a non-empty sequence of finite numbers > 0, got {cutoffs!r}")
    num_data = check_positive_int("num_data", num_data)
    layout = ParamLayout.from_shapes(model.param_shapes(input_dim))
    scale = prior_variance_scale(prior_variance_vector(model, layout, input_dim))
    return cutoffs * scale / (1.0 if per_datum else float(num_data))


def _default_regularizer(fisher) -> float:
    values = fisher.diagonal_vector() if fisher.basis == "diagonal" else np.asarray(fisher.eigenvalues)
    largest = float(np.max(values, initial=0.0)) / (1.0 if fisher.per_datum else fisher.num_data)
    return DEFAULT_RELATIVE_REGULARIZER * (largest if largest > 0 else 1.0)


def _check_regularizer(regularizer):
    if regularizer is None:
        return None
    try:
        value = float(regularizer)
    except (TypeError, ValueError):
        raise TypeError(f"regularizer must be a number >= 0, got {regularizer!r}") from None
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"regularizer must be a finite number >= 0, got {regularizer!r}")
    return value


@in_float64
def diffuse(
    posterior,
    model,
    *,
    times,
    key,
    fisher=None,
    regularizer: float | None = None,
    metric: str = "reference",
    heat: bool = False,
    reference: str = "map",
    basis: str = "eigen",
    fisher_x=None,
    step_size: float | None = None,
    scheme: str = "auto",
    metropolis: bool = False,
    progress: bool = True,
) -> Diffusion:
    """Move every posterior sample by the Fisher-metric diffusion to each of the flow times.

    Parameters
    ----------
    posterior : DataTree
        Output of a ``brgnnft.inference`` route.
    model : the model that produced it (a zero-mean Gaussian prior, as every library model has).
    times : sequence of float
        Flow times t > 0 (sorted ascending). The samples follow one path through all of them.
    key : jax.random key
    fisher : FisherInformation, optional
        The metric at the reference point; by default computed there on ``fisher_x``, for the whole
        data set. It fixes the frozen metric, the spectrum and the stiff counts.
    regularizer : float, optional
        delta >= 0 on the per-datum scale; default 1e-6 times the largest per-datum eigenvalue.
    metric : {"reference", "local"}
        Freeze the metric at the reference point (exact transitions) or let it follow each sample
        (SDE integrator, O(S P^3) per step, for small models).
    heat : bool
        Brownian motion on the statistical manifold, without the drift to the prior.
    reference : {"map", "posterior_mean"}
        Where the metric is evaluated when ``fisher`` is not given.
    basis : {"eigen", "diagonal"}
        Full metric, or its diagonal (the parameter-basis proxy).
    fisher_x : array (n_F, d), optional
        Inputs of the metric; default the training inputs.
    step_size : float, optional
        Largest SDE step for ``metric="local"``; default the shortest interval between flow times
        (the first counted from 0) divided by 100.
    scheme : {"auto", "exponential", "euler_maruyama"}
        SDE scheme for ``metric="local"`` (see :func:`brgnnft.brg.sde.integrate_sde`).
    metropolis : bool
        Metropolis-adjust every SDE step, so the stationary density is exact for any step size.
    progress : bool

    Returns
    -------
    Diffusion

    Notes
    -----
    The flow time t corresponds to the information cutoff Lambda(t) = c t / s^2: mode A has relaxed
    (its covariance keeps less than 1/e of its distance from the prior's) once gamma_A t > 1, that
    is lambda_A + delta < t / s^2 per datum, and the delta shift is dropped, which holds for
    t >> delta s^2. Here c = n when ``fisher`` is the metric of the whole data set (the default of
    both flows) and c = 1 when it is per datum, so Lambda(t) is on the scale of ``fisher``'s
    eigenvalues. s^2 is the prior variance for an isotropic prior. An anisotropic prior makes the
    flow order directions by the prior-whitened metric, and s^2 is then the harmonic mean of the
    prior variances, so Lambda(t) is only a guide (NOTE: no test checks that case).
    """
    check_key(key)
    times = check_times(times)
    check_option("metric", metric, METRICS)
    check_option("reference", reference, REFERENCES)
    check_option("basis", basis, ("eigen", "diagonal"))
    regularizer = _check_regularizer(regularizer)
    if step_size is not None:
        step_size = check_positive("step_size", step_size)
    if fisher is not None and fisher.basis != basis:
        raise ValueError(f"fisher was computed in basis {fisher.basis!r} but basis={basis!r}: make them agree")
    if metric == "reference" and (metropolis or scheme != "auto" or step_size is not None):
        raise ValueError(
            "step_size, scheme and metropolis set the SDE integrator, which only metric='local' uses: "
            "metric='reference' samples the transitions exactly"
        )
    x_train = np.asarray(posterior["constant_data"]["x"].values, dtype=np.float64)
    y_train = np.asarray(posterior["observed_data"]["y"].values, dtype=np.float64)
    input_dim = x_train.shape[1]
    key_transition = key

    samples = posterior_params(posterior, model, input_dim)
    layout = fisher.layout if fisher is not None else ParamLayout.from_shapes(model.param_shapes(input_dim))
    theta = np.asarray(layout.flatten(samples), dtype=np.float64)
    variances = prior_variance_vector(model, layout, input_dim)
    noise = _noise_samples(posterior, model, theta.shape[0]) if model.likelihood == "gaussian" else None
    point_noise = noise if noise is None or np.ndim(noise) == 0 else float(np.mean(noise))
    metric_x = x_train if fisher_x is None else check_inputs(fisher_x, "fisher_x").astype(np.float64)

    if fisher is None:
        center = reference_point(model, theta, layout, variances, x_train, y_train, point_noise, reference=reference)
        fisher = fisher_information(
            model, layout.unflatten(jnp.asarray(center)), metric_x, basis=basis, noise=point_noise, progress=progress
        )
    if regularizer is None:
        regularizer = _default_regularizer(fisher)
    exact = ExactDiffusion(fisher, variances, regularizer=regularizer, heat=heat)

    if metric == "reference":
        states, previous = [], 0.0
        for step_key, time in zip(jax.random.split(key_transition, len(times)), times):
            theta_now = exact.advance(step_key, states[-1] if states else theta, time - previous)
            states.append(theta_now)
            previous = time
        moved, acceptance, transition = np.stack(states), np.ones(len(times)), "exact"
    else:
        metric_function = local_metric(
            model, layout, metric_x, noise=point_noise, regularizer=regularizer, diagonal=basis == "diagonal"
        )
        if heat:
            sde = LangevinSDE(metric_function, log_density=lambda point: 0.5 * jnp.linalg.slogdet(metric_function(point))[1])
        else:
            sde = LangevinSDE(metric_function, prior_mean=np.zeros_like(variances), prior_variance=variances)
        transition = resolve_scheme(sde, scheme)
        if step_size is None:
            step_size = float(np.min(np.diff(np.concatenate([[0.0], times])))) / DEFAULT_STEPS_PER_INTERVAL
        result = integrate_sde(
            sde, theta, times, key=key_transition, step_size=step_size, scheme=transition, metropolis=metropolis,
            progress=progress,
        )
        moved, acceptance = result.states, result.acceptance_rate
        if not np.all(np.isfinite(moved)):
            raise FloatingPointError(
                "the SDE produced NaN or inf (the metric lost positive definiteness or a step overshot): pass "
                "regularizer > 0, a smaller step_size, or metropolis=True"
            )

    prior_scale = prior_variance_scale(variances)
    cutoff_factor = 1.0 if fisher.per_datum else float(fisher.num_data)
    return Diffusion(
        theta=moved,
        initial=theta,
        times=times,
        cutoff_equivalent=cutoff_factor * times / prior_scale,
        fisher=fisher,
        rates=exact.rates(),
        regularizer=float(regularizer),
        prior_variance_scale=prior_scale,
        cutoff_factor=cutoff_factor,
        acceptance_rate=np.asarray(acceptance),
        transition=transition,
        layout=layout,
    )


@in_float64
def diffusion_flow(
    posterior,
    model,
    *,
    times,
    x_test,
    y_test,
    key,
    fisher=None,
    regularizer: float | None = None,
    metric: str = "reference",
    heat: bool = False,
    reference: str = "map",
    basis: str = "eigen",
    fisher_x=None,
    step_size: float | None = None,
    scheme: str = "auto",
    metropolis: bool = False,
    seed: int | None = None,
    progress: bool = True,
):
    """Run the diffusion coarse graining of a posterior over flow times and evaluate it at test points.

    Arguments as for :func:`diffuse`, plus the test set (``x_test`` (m, d), ``y_test`` (m,)) and
    ``seed``, recorded in the attributes. The likelihood must be Gaussian, as for the
    information-shell flow, since the flow statistics are Gaussian predictive quantities.

    Returns
    -------
    DataTree
        The layout of :func:`brgnnft.brg.information_shell_flow` with the scale dimension
        ``flow_time`` in place of ``cutoff`` and the coordinate ``cutoff_equivalent`` = Lambda(t)
        beside it, so :func:`brgnnft.brg.critical_cutoff` and the plots work on it (in units of
        Lambda). The ``flow`` group adds ``num_stiff_smooth`` (sum over directions of
        e^{-gamma_A t}) and ``acceptance_rate``. ``num_stiff`` and ``fraction_coarse_grained`` use the
        information shell's rule at Lambda(t): directions with eigenvalue >= Lambda(t) are stiff.
        Root attributes record ``scheme`` = "diffusion", ``metric``, ``heat``, ``regularizer``,
        ``prior_variance_scale``, ``cutoff_factor``, ``cutoff_relation``, ``transition`` ("exact"
        or the SDE scheme) and, for the local metric, ``metropolis``.

    Examples
    --------
    >>> import jax, numpy as np
    >>> from brgnnft.models import RandomFeatures
    >>> from brgnnft.inference import conjugate
    >>> from brgnnft.brg import diffusion_flow
    >>> x = np.linspace(-2, 2, 30)[:, None]; y = np.sin(2 * x[:, 0])
    >>> model = RandomFeatures(hidden=(32,), noise=0.1, seed=0)
    >>> posterior = conjugate(model, x, y, key=jax.random.key(0), num_samples=100)
    >>> flow = diffusion_flow(posterior, model, times=np.logspace(-4, 0, 5), x_test=x, y_test=y,
    ...                       key=jax.random.key(1), reference="posterior_mean", progress=False)
    >>> flow["flow"]["test_mse"].dims
    ('flow_time',)
    """
    check_key(key)
    x_test = check_inputs(x_test, "x_test").astype(np.float64)
    y_test = check_targets(y_test, x_test.shape[0], "y_test").astype(np.float64)
    if getattr(model, "likelihood", "gaussian") != "gaussian":
        raise ValueError(
            f"diffusion_flow evaluates Gaussian predictive statistics, got likelihood={model.likelihood!r}: "
            "use diffuse() for the moved parameters of other likelihoods"
        )
    input_dim = int(posterior["constant_data"]["x"].shape[1])
    if x_test.shape[1] != input_dim:
        raise ValueError(f"x_test has {x_test.shape[1]} features but the training inputs have {input_dim}")
    key_diffusion, key_predictive = jax.random.split(key)

    diffusion = diffuse(
        posterior, model, times=times, key=key_diffusion, fisher=fisher, regularizer=regularizer, metric=metric,
        heat=heat, reference=reference, basis=basis, fisher_x=fisher_x, step_size=step_size, scheme=scheme,
        metropolis=metropolis, progress=progress,
    )
    chains, draws = posterior["posterior"]["f"].shape[:2]
    noise = _noise_samples(posterior, model, diffusion.initial.shape[0])

    def evaluate(flat):
        params = {name: jnp.asarray(value) for name, value in diffusion.layout.unflatten(flat).items()}
        return np.asarray(model.apply(params, jnp.asarray(x_test)))

    trained_f = evaluate(diffusion.initial)
    f = np.stack([evaluate(theta) for theta in diffusion.theta])
    splits = [split_at(diffusion.fisher, cutoff) for cutoff in diffusion.cutoff_equivalent]
    scale_name = "per-datum metric" if diffusion.cutoff_factor == 1.0 else f"metric of the whole data set, n = {diffusion.cutoff_factor:g}"
    attrs = {
        "scheme": "diffusion",
        "metric": metric,
        "heat": int(bool(heat)),
        "basis": diffusion.fisher.basis,
        "reference": "given" if fisher is not None else reference,
        "regularizer": diffusion.regularizer,
        "prior_variance_scale": diffusion.prior_variance_scale,
        "cutoff_factor": diffusion.cutoff_factor,
        "cutoff_relation": f"cutoff_equivalent = cutoff_factor * flow_time / prior_variance_scale ({scale_name})",
        "seed": -1 if seed is None else int(seed),
        "num_params": diffusion.fisher.num_params,
        **diffusion.fisher.attrs,
        **package_versions(),
    }
    attrs["transition"] = diffusion.transition
    if metric == "local":
        attrs["metropolis"] = int(bool(metropolis))
    tree = build_flow_tree(
        f, trained_f, y_test, x_test, noise, splits, diffusion.fisher, chains, draws, attrs,
        key=key_predictive, dim="flow_time", scale=diffusion.times,
    )
    statistics = tree["flow"].to_dataset()
    statistics["num_stiff_smooth"] = ("flow_time", diffusion.num_stiff_smooth())
    statistics["acceptance_rate"] = ("flow_time", diffusion.acceptance_rate)
    tree["flow"] = statistics
    return tree
