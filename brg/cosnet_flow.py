"""The cos-net flow as Wilson's momentum-shell renormalization of a free scalar field.

A frozen cos-net f(x) = sum_i a_i A(b_i) cos(b_i . x + c_i) with ball momenta |b_i| <= R and
A(b)^2 proportional to 1 / (b^2 + m^2) is a free scalar field of mass m with a sharp momentum
cutoff R (:class:`brgnnft.models.CosNet`). On dense data the Fisher information of the amplitude
a_i falls with the momentum, I_ii = C / (b_i^2 + m^2), so the information shell of the diagonal
basis at a cutoff Lambda is the momentum shell |p| > k(Lambda), k(Lambda)^2 = C / Lambda - m^2.
This module contains that dictionary, the closed-form coarse-grained propagator and running
couplings, the flow that records the coarse-grained readout, and the fit of Z and m^2 to it.

References
----------
J. N. Howard, M. S. Klinger, A. Maiti, A. G. Stapleton, "Bayesian RG Flow in Neural Network Field
Theories", arXiv:2405.17538. J. Halverson, "Building Quantum Field Theories Out of Neurons",
arXiv:2112.04527. K. G. Wilson, J. Kogut, "The renormalization group and the epsilon expansion",
Phys. Rep. 12, 75 (1974).
"""

import logging
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from scipy.optimize import least_squares
from tqdm.auto import tqdm

from brgnnft.brg._flatten import in_float64
from brgnnft.brg.coarse_grain import PRESCRIPTIONS, ShellCoarseGrainer, posterior_params, split_at
from brgnnft.brg.fisher import fisher_information
from brgnnft.brg.flow import build_flow_tree, check_cutoffs
from brgnnft.inference._layout import package_versions
from brgnnft.models import CosNet
from brgnnft.models._checks import check_inputs, check_key, check_option, check_positive, check_positive_int, check_targets
from brgnnft.models.cosnet import ball_volume

logger = logging.getLogger(__name__)

# The fit of Z and m^2 needs one degree of freedom beyond its two parameters.
MIN_FIT_BINS = 3
DEFAULT_BINS = 20


def check_cosnet(model) -> CosNet:
    """Return ``model`` if it is a frozen CosNet with ball momenta, else raise naming the fix."""
    if not isinstance(model, CosNet):
        raise TypeError(f"the momentum-shell dictionary needs a CosNet, got {type(model).__name__}")
    if not model.frozen:
        raise ValueError(f"{model!r} is not frozen: build it with frozen=True so that only the readout a is Bayesian")
    if model.momenta != "ball":
        raise ValueError(
            f"{model!r} has momenta={model.momenta!r}, whose amplitudes are all 1, so every neuron has the same Fisher "
            "information and the information shell is no momentum shell: build it with momenta='ball'"
        )
    return model


def _noise_of(model: CosNet, noise) -> float:
    return float(model.noise) if noise is None else check_positive("noise", noise)


def dense_data_constant(model: CosNet, num_data: int, *, noise: float | None = None) -> float:
    """Return C in the dense-data Fisher information I_ii = C / (b_i^2 + m^2) of a cos-net's readout.

    Parameters
    ----------
    model : CosNet
        Frozen, with ball momenta.
    num_data : int
        Number n of training inputs, spread densely over a box (a uniform grid, say).
    noise : float, optional
        Observation standard deviation sigma; default ``model.noise``.

    Notes
    -----
    I_ii = sum_j A(b_i)^2 cos^2(b_i . x_j + c_i) / sigma^2. On dense data the squared cosine
    averages to 1/2 once |b_i| L >> 1 for a box of side L, so I_ii ~ n A(b_i)^2 / (2 sigma^2), and
    with A(b)^2 = 2 V_d(R) / (sigma_a^2 (2 pi)^d (b^2 + m^2)):

    .. math:: C = \\frac{n\\, V_d(R)}{\\sigma^2 \\sigma_a^2 (2\\pi)^d}.

    The box side drops out. For a uniform one-dimensional grid of spacing Delta the relative
    deviation of I_ii from C / (b_i^2 + m^2) is at most |sin(n b_i Delta) / (n sin(b_i Delta))|.
    """
    model = check_cosnet(model)
    num_data = check_positive_int("num_data", num_data)
    sigma = _noise_of(model, noise)
    volume = ball_volume(model.dim, model.cutoff)
    return num_data * volume / (sigma**2 * model.readout_var * (2 * math.pi) ** model.dim)


def momentum_cutoff(model: CosNet, cutoffs, *, num_data: int, noise: float | None = None) -> np.ndarray:
    """Return the momentum k(Lambda) below which neurons are stiff at the information cutoff Lambda.

    k(Lambda)^2 = C / Lambda - m^2 (:func:`dense_data_constant`), clipped to [0, R]: 0 when even the
    zero-momentum neuron is sloppy (Lambda > C / m^2), R when no neuron is (Lambda <= C / (R^2 + m^2)).
    """
    constant = dense_data_constant(model, num_data, noise=noise)
    cutoffs = np.asarray(cutoffs, dtype=np.float64)
    if np.any(~np.isfinite(cutoffs) | (cutoffs <= 0)):
        raise ValueError(f"cutoffs must be finite and > 0, got {cutoffs!r}")
    squared = constant / cutoffs - model.mass**2
    return np.clip(np.sqrt(np.maximum(squared, 0.0)), 0.0, model.cutoff)


def information_cutoff(model: CosNet, momenta, *, num_data: int, noise: float | None = None) -> np.ndarray:
    """Return the information cutoff Lambda(k) = C / (k^2 + m^2) that makes |p| = k the shell edge."""
    constant = dense_data_constant(model, num_data, noise=noise)
    momenta = np.asarray(momenta, dtype=np.float64)
    if np.any(~np.isfinite(momenta) | (momenta < 0)):
        raise ValueError(f"momenta must be finite and >= 0, got {momenta!r}")
    return constant / (momenta**2 + model.mass**2)


def shell_propagator(model: CosNet, p, cutoff: float, *, num_data: int, noise: float | None = None, prescription: str = "marginalize") -> np.ndarray:
    """Return the coarse-grained momentum-space propagator G_Lambda(p) of the free theory.

    Parameters
    ----------
    model : CosNet
    p : array (..., dim)
        Momenta.
    cutoff : float
        Information cutoff Lambda.
    num_data : int; noise : float, optional
        As for :func:`dense_data_constant`.
    prescription : {"marginalize", "prune", "prior"}

    Returns
    -------
    ndarray of shape p.shape[:-1]

    Notes
    -----
    This is the flow of the prior ensemble, the free scalar with G(p) = 1 / (p^2 + m^2) for
    |p| <= R. The shell k(Lambda) < |p| <= R is sloppy. ``marginalize`` and ``prune`` set its
    amplitudes to zero, which is Wilson's momentum-shell integration:
    G_Lambda(p) = G(p) for |p| <= k(Lambda) and 0 above. ``prior`` redraws them from the prior,
    so every momentum keeps the prior propagator G(p).
    """
    model = check_cosnet(model)
    check_option("prescription", prescription, PRESCRIPTIONS)
    cutoff = check_positive("cutoff", cutoff)
    propagator = np.asarray(model.propagator(p))
    if prescription == "prior":
        return propagator
    edge = momentum_cutoff(model, cutoff, num_data=num_data, noise=noise)
    magnitude = np.linalg.norm(np.asarray(p, dtype=np.float64), axis=-1)
    return np.where(magnitude <= edge, propagator, 0.0)


def momentum_shell_couplings(model: CosNet, cutoffs, *, num_data: int, noise: float | None = None) -> xr.Dataset:
    """Return the closed-form running couplings of the free theory under momentum-shell ERG.

    Parameters
    ----------
    model : CosNet
    cutoffs : sequence of float
        Information cutoffs Lambda.
    num_data : int; noise : float, optional
        As for :func:`dense_data_constant`.

    Returns
    -------
    Dataset over ``cutoff`` with ``momentum_cutoff`` k, ``scale`` s = R / k, ``Z`` and
    ``mass_squared`` before rescaling (1 and m^2: the stiff band keeps the free propagator),
    ``rescaled_Z`` = s^{-(d+2)}, ``rescaled_mass_squared`` = s^2 m^2, and
    ``field_normalisation`` = s^{(d+2)/2}. Where k = 0 (every neuron sloppy) the rescaled values
    are NaN.

    Notes
    -----
    With G_Lambda(p)^{-1} = Z (p^2 + m^2) on |p| <= k, the action is
    S = (1/2) int_{|p| <= k} d^dp / (2 pi)^d Z (p^2 + m^2) |phi(p)|^2. Rescaling the momenta
    p = p' / s restores the cutoff R and gives
    S = (1/2) int_{|p'| <= R} d^dp' / (2 pi)^d Z s^{-(d+2)} (p'^2 + s^2 m^2) |phi(p' / s)|^2,
    so m'^2 = s^2 m^2 and Z' = Z s^{-(d+2)}; multiplying the field by the field normalisation
    s^{(d+2)/2} brings Z' back to Z. The mass is relevant with RG eigenvalue 2 around the Gaussian
    fixed point.
    """
    model = check_cosnet(model)
    cutoffs = check_cutoffs(cutoffs)
    edge = momentum_cutoff(model, cutoffs, num_data=num_data, noise=noise)
    with np.errstate(divide="ignore"):
        scale = np.where(edge > 0, model.cutoff / np.where(edge > 0, edge, 1.0), np.nan)
    exponent = model.dim + 2
    return xr.Dataset(
        {
            "momentum_cutoff": (("cutoff",), edge),
            "scale": (("cutoff",), scale),
            "Z": (("cutoff",), np.ones_like(cutoffs)),
            "mass_squared": (("cutoff",), np.full_like(cutoffs, model.mass**2)),
            "rescaled_Z": (("cutoff",), scale ** (-exponent)),
            "rescaled_mass_squared": (("cutoff",), scale**2 * model.mass**2),
            "field_normalisation": (("cutoff",), scale ** (exponent / 2)),
        },
        coords={"cutoff": cutoffs},
    )


def _progress_enabled(progress: bool) -> bool:
    return progress and sys.stderr.isatty()


@in_float64
def cosnet_shell_flow(
    samples,
    model: CosNet,
    *,
    cutoffs,
    x_test,
    y_test,
    prescription: str = "marginalize",
    key,
    group: str = "posterior",
    seed: int | None = None,
    progress: bool = True,
):
    """Run the information-shell flow of a frozen cos-net in the neuron (diagonal) basis, keeping the readout.

    Parameters
    ----------
    samples : DataTree
        Output of a ``brgnnft.inference`` route for ``model``: ``conjugate`` for the trained theory,
        or ``prior_samples`` (with ``group="prior"``) for the free theory. Its ``constant_data``
        inputs are where the Fisher information is evaluated.
    model : CosNet
        Frozen, with ball momenta.
    cutoffs : sequence of float
        The grid of Lambda > 0.
    x_test : array (m, d); y_test : array (m,)
    prescription : {"marginalize", "prune", "prior"}
        ``marginalize`` (the default) is the prescription that matches Wilson's momentum-shell
        integration.
    key : jax.random key
    group : {"posterior", "prior"}
        The group of ``samples`` to coarse grain.
    seed : int, optional
        Recorded in the attributes.
    progress : bool
        Show a progress bar over cutoffs (only on a terminal).

    Returns
    -------
    DataTree
        The layout of :func:`brgnnft.brg.information_shell_flow` with ``basis="diagonal"``, plus the
        coarse-grained readout ``a`` (cutoff, chain, draw, neuron) in ``posterior``, the
        uncoarse-grained ``a`` (chain, draw, neuron) in ``trained``, and a ``momentum`` group
        with, per neuron, ``momentum`` |b_i|, ``fisher_diagonal`` I_ii,
        ``dense_data_fisher`` C / (b_i^2 + m^2) and ``stiff`` (cutoff, neuron), and per cutoff
        ``momentum_cutoff`` k(Lambda). Root attributes ``cosnet_num_data`` and
        ``cosnet_dense_data_constant`` record n and C.
    """
    model = check_cosnet(model)
    check_key(key)
    check_option("prescription", prescription, PRESCRIPTIONS)
    check_option("group", group, ("posterior", "prior"))
    cutoffs = check_cutoffs(cutoffs)
    x_test = check_inputs(x_test, "x_test").astype(np.float64)
    y_test = check_targets(y_test, x_test.shape[0], "y_test").astype(np.float64)
    if x_test.shape[1] != model.dim:
        raise ValueError(f"x_test has {x_test.shape[1]} features but the cos-net has dim={model.dim}")
    if "constant_data" not in samples.children:
        raise ValueError("samples has no constant_data group: pass the output of a brgnnft.inference route")
    x_train = np.asarray(samples["constant_data"]["x"].values, dtype=np.float64)
    key_replace, key_predictive = jax.random.split(key)

    theta = posterior_params(samples, model, model.dim, group=group)["a"]
    chains, draws = samples[group]["a"].shape[:2]
    fisher = fisher_information(
        model, {"a": np.zeros(model.width)}, x_train, basis="diagonal", noise=model.noise, progress=progress
    )
    variances = np.full(model.width, model.readout_variance)
    grainer = ShellCoarseGrainer(fisher, theta, variances, prescription=prescription, key=key_replace)
    features = np.asarray(model.features(jnp.asarray(x_test)), dtype=np.float64)

    splits, readouts = [], []
    for cutoff in tqdm(cutoffs, desc="cos-net flow", unit="cutoff", disable=not _progress_enabled(progress)):
        split = split_at(fisher, cutoff)
        splits.append(split)
        readouts.append(grainer(split))
    a = np.stack(readouts)
    f = a @ features.T
    trained_f = theta @ features.T

    num_data = x_train.shape[0]
    constant = dense_data_constant(model, num_data)
    attrs = {
        "scheme": "information_shell",
        "prescription": prescription,
        "basis": "diagonal",
        "reference": "constant metric",
        "samples_group": group,
        "seed": -1 if seed is None else int(seed),
        "num_params": model.width,
        "cosnet_num_data": num_data,
        "cosnet_dense_data_constant": constant,
        **fisher.attrs,
        **package_versions(),
    }
    tree = build_flow_tree(f, trained_f, y_test, x_test, model.noise, splits, fisher, chains, draws, attrs, key=key_predictive)

    neuron_dims = ("cutoff", "chain", "draw", "neuron")
    tree["posterior"] = tree["posterior"].to_dataset().assign(a=(neuron_dims, a.reshape(len(cutoffs), chains, draws, -1)))
    tree["trained"] = tree["trained"].to_dataset().assign(a=(neuron_dims[1:], theta.reshape(chains, draws, -1)))
    momentum = np.linalg.norm(np.asarray(model.b, dtype=np.float64), axis=-1)
    tree["momentum"] = xr.Dataset(
        {
            "momentum": (("neuron",), momentum),
            "fisher_diagonal": (("neuron",), fisher.diagonal_vector()),
            "dense_data_fisher": (("neuron",), constant / (momentum**2 + model.mass**2)),
            "stiff": (("cutoff", "neuron"), np.stack([split.stiff_mask for split in splits])),
            "momentum_cutoff": (("cutoff",), momentum_cutoff(model, cutoffs, num_data=num_data)),
        },
        coords={"cutoff": cutoffs, "neuron": np.arange(model.width)},
    )
    return tree


def _check_cosnet_flow(flow) -> None:
    if not isinstance(flow, xr.DataTree):
        raise TypeError(f"flow must be the DataTree of cosnet_shell_flow, got {type(flow).__name__}")
    if "momentum" not in flow.children or "a" not in flow["posterior"].data_vars:
        raise ValueError(
            "the flow is missing the coarse-grained readout 'a' or the 'momentum' group: run cosnet_shell_flow, "
            "which records both (information_shell_flow records only f)"
        )


def _momentum_bins(bins, radius: float) -> np.ndarray:
    if isinstance(bins, (int, np.integer)) and not isinstance(bins, bool):
        return np.linspace(0.0, radius, check_positive_int("bins", bins) + 1)
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0) or edges[0] < 0:
        raise ValueError(f"bins must be a number of bins or increasing edges >= 0, got {bins!r}")
    return edges


def momentum_propagator(flow, model: CosNet, *, bins=DEFAULT_BINS) -> xr.Dataset:
    """Estimate the momentum-space propagator G_Lambda(p) of a cos-net flow, bin by bin in |p|.

    Parameters
    ----------
    flow : DataTree from :func:`cosnet_shell_flow`.
    model : CosNet
        The model of the flow.
    bins : int or array of edges
        Number of equal bins over [0, R], or increasing bin edges of |p|.

    Returns
    -------
    Dataset over (``cutoff``, ``momentum_bin``). Per cutoff and bin: the estimate ``propagator``
    and its Monte Carlo standard error ``propagator_se``, the closed form ``closed_form`` of the
    free theory (:func:`shell_propagator`) averaged over the bin's neurons, and ``stiff_fraction``
    (the fraction of the bin's neurons that the flow kept). Per bin ``momentum`` (centre),
    ``momentum_low``, ``momentum_high``, ``num_neurons``, ``free_propagator`` (G(p) averaged over
    the bin) and ``trained_propagator`` with ``trained_propagator_se`` (the flow's samples before
    coarse graining). Bins without neurons are NaN.

    Notes
    -----
    Averaged over its phase, neuron i adds (1/2) E[a_i^2] A(b_i)^2 cos(b_i . (x - y)) to the
    two-point function. With N neurons of density 1 / V_d(R) in the ball this is the propagator

    .. math:: G(p) = \\frac{N (2\\pi)^d}{2 V_d(R)} A(p)^2\\, E[a_p^2],

    which is 1 / (p^2 + m^2) under the prior E[a^2] = sigma_a^2 / N. The estimate of a bin is
    the mean over its neurons of N (2 pi)^d A(b_i)^2 a_i^2 / (2 V_d(R)), averaged over samples. Its
    standard error is the standard deviation over samples of the per-sample bin mean divided by
    sqrt(S), so correlations between neurons are accounted for.
    """
    _check_cosnet_flow(flow)
    model = check_cosnet(model)
    edges = _momentum_bins(bins, model.cutoff)
    momentum = flow["momentum"]["momentum"].values
    if momentum.size != model.width:
        raise ValueError(f"the flow has {momentum.size} neurons but {model!r} has {model.width}: pass the flow's model")
    cutoffs = flow["flow"]["cutoff"].values
    coarse = flow["posterior"]["a"].values
    coarse = coarse.reshape(coarse.shape[0], -1, coarse.shape[-1])
    trained = flow["trained"]["a"].values.reshape(-1, model.width)

    weights = model.width * (2 * math.pi) ** model.dim * np.asarray(model.amplitude(jnp.asarray(model.b))) ** 2
    weights = weights / (2 * ball_volume(model.dim, model.cutoff))
    index = _bin_index(momentum, edges)
    membership = (index[:, None] == np.arange(edges.size - 1)[None, :]).astype(np.float64)
    counts = membership.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        averaging = membership / counts

    def binned(readout):
        per_sample = (weights * readout**2) @ averaging
        estimate = per_sample.mean(axis=-2)
        error = per_sample.std(axis=-2, ddof=1) / np.sqrt(per_sample.shape[-2])
        return estimate, error

    estimate, error = binned(coarse)
    trained_estimate, trained_error = binned(trained)
    num_data = int(flow.attrs["cosnet_num_data"])
    prescription = str(flow.attrs["prescription"])
    b = np.asarray(model.b, dtype=np.float64)
    closed = np.stack([
        shell_propagator(model, b, cutoff, num_data=num_data, prescription=prescription) @ averaging for cutoff in cutoffs
    ])
    with np.errstate(invalid="ignore", divide="ignore"):
        stiff = (flow["momentum"]["stiff"].values.astype(np.float64) @ membership) / counts

    return xr.Dataset(
        {
            "propagator": (("cutoff", "momentum_bin"), estimate),
            "propagator_se": (("cutoff", "momentum_bin"), error),
            "closed_form": (("cutoff", "momentum_bin"), closed),
            "stiff_fraction": (("cutoff", "momentum_bin"), stiff),
            "momentum_cutoff": (("cutoff",), flow["momentum"]["momentum_cutoff"].values),
            "momentum": (("momentum_bin",), 0.5 * (edges[:-1] + edges[1:])),
            "momentum_low": (("momentum_bin",), edges[:-1]),
            "momentum_high": (("momentum_bin",), edges[1:]),
            "num_neurons": (("momentum_bin",), counts.astype(np.int64)),
            "free_propagator": (("momentum_bin",), np.asarray(model.propagator(b)) @ averaging),
            "trained_propagator": (("momentum_bin",), trained_estimate),
            "trained_propagator_se": (("momentum_bin",), trained_error),
        },
        coords={"cutoff": cutoffs, "momentum_bin": np.arange(edges.size - 1)},
        attrs={"prescription": prescription, "samples_group": flow.attrs.get("samples_group", "posterior")},
    )


def _bin_index(momentum: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Return the bin of each momentum, -1 outside the edges; a momentum on the last edge is in the last bin."""
    index = np.clip(np.searchsorted(edges, momentum, side="right") - 1, 0, edges.size - 2)
    return np.where((momentum >= edges[0]) & (momentum <= edges[-1]), index, -1)


def _bin_squares(momentum: np.ndarray, edges: np.ndarray) -> list[np.ndarray]:
    """Return the squared momenta of the neurons in each bin."""
    index = _bin_index(momentum, edges)
    return [momentum[index == position] ** 2 for position in range(edges.size - 1)]


def fit_propagator(squares: list[np.ndarray], values: np.ndarray, errors: np.ndarray) -> dict[str, float]:
    """Fit G = 1 / (Z (p^2 + m^2)), averaged over each bin's neurons, by weighted least squares.

    Parameters
    ----------
    squares : list of arrays
        p_i^2 of the neurons of each fitted bin.
    values, errors : arrays (B,)
        Bin estimates of G and their standard errors.

    Returns
    -------
    dict with ``Z``, ``Z_se``, ``mass_squared``, ``mass_squared_se``, ``chi_squared`` and
    ``degrees_of_freedom``; NaN when fewer than 3 bins are given.

    Notes
    -----
    The model of bin b is mean_{i in b} 1 / (Z (p_i^2 + m^2)), the exact average over the bin's
    neurons of G^{-1} = Z (p^2 + m^2), so wide bins cause no bias. The start point is the linear
    weighted fit of 1 / G against the bin mean of p^2, and the standard errors come from the
    inverse of J^T J of the weighted residuals (the Gaussian approximation at the optimum).
    """
    count = len(squares)
    if count < MIN_FIT_BINS:
        return dict.fromkeys(("Z", "Z_se", "mass_squared", "mass_squared_se", "chi_squared", "degrees_of_freedom"), math.nan)

    mean_squares = np.array([group.mean() for group in squares])
    inverse = 1.0 / values
    inverse_weights = values**2 / errors
    design = np.stack([mean_squares, np.ones(count)], axis=1) * inverse_weights[:, None]
    slope, intercept = np.linalg.lstsq(design, inverse * inverse_weights, rcond=None)[0]
    lowest = min(float(group.min()) for group in squares)
    floor = -lowest + 1e-12 * max(1.0, abs(lowest))
    start = np.array([max(slope, 1e-12), max(intercept / max(slope, 1e-12), floor + 1e-9)])

    def residuals(params):
        z, mass_squared = params
        model = np.array([np.mean(1.0 / (z * (group + mass_squared))) for group in squares])
        return (values - model) / errors

    def jacobian(params):
        z, mass_squared = params
        d_z = np.array([np.mean(1.0 / (z**2 * (group + mass_squared))) for group in squares])
        d_mass = np.array([np.mean(1.0 / (z * (group + mass_squared) ** 2)) for group in squares])
        return np.stack([d_z, d_mass], axis=1) / errors[:, None]

    result = least_squares(residuals, start, jac=jacobian, bounds=([1e-12, floor], [np.inf, np.inf]), method="trf")
    covariance = np.linalg.pinv(result.jac.T @ result.jac)
    return {
        "Z": float(result.x[0]),
        "Z_se": float(np.sqrt(covariance[0, 0])),
        "mass_squared": float(result.x[1]),
        "mass_squared_se": float(np.sqrt(covariance[1, 1])),
        "chi_squared": float(np.sum(result.fun**2)),
        "degrees_of_freedom": float(count - 2),
    }


def running_couplings(flow, model: CosNet, *, bins=DEFAULT_BINS) -> xr.Dataset:
    """Fit the running Z(Lambda) and m^2(Lambda) of a cos-net flow and set them beside the closed forms.

    Parameters
    ----------
    flow : DataTree from :func:`cosnet_shell_flow`.
    model : CosNet
    bins : int or array of edges
        As for :func:`momentum_propagator`.

    Returns
    -------
    Dataset over ``cutoff``: the fitted ``Z``, ``Z_se``, ``mass_squared``, ``mass_squared_se``,
    ``chi_squared``, ``degrees_of_freedom`` and ``num_bins_fitted``; after rescaling by
    s = R / k(Lambda), ``rescaled_Z`` = Z s^{-(d+2)} and ``rescaled_mass_squared`` = s^2 m^2 with
    their ``_se``; and the closed forms of the free theory from :func:`momentum_shell_couplings`
    as ``closed_form_Z``, ``closed_form_mass_squared``, ``closed_form_rescaled_Z``,
    ``closed_form_rescaled_mass_squared``, with ``momentum_cutoff``, ``scale`` and
    ``field_normalisation``.

    Notes
    -----
    The fit (:func:`fit_propagator`) runs on the stiff band: the bins whose neurons the flow kept
    at that cutoff, each with a nonzero standard error. It needs at least 3 such bins, so the
    values are NaN at cutoffs with fewer. The closed forms describe the prior ensemble (the free
    theory, ``samples_group="prior"``); for a trained ensemble they are the free-theory reference
    the fitted couplings depart from.
    """
    _check_cosnet_flow(flow)
    model = check_cosnet(model)
    propagator = momentum_propagator(flow, model, bins=bins)
    edges = np.append(propagator["momentum_low"].values, propagator["momentum_high"].values[-1])
    squares = _bin_squares(flow["momentum"]["momentum"].values, edges)
    cutoffs = propagator["cutoff"].values

    fits, counts = [], []
    for position in range(cutoffs.size):
        values = propagator["propagator"].values[position]
        errors = propagator["propagator_se"].values[position]
        stiff = propagator["stiff_fraction"].values[position]
        usable = (stiff == 1.0) & (errors > 0) & np.isfinite(values) & (values > 0)
        chosen = np.flatnonzero(usable)
        counts.append(chosen.size)
        fits.append(fit_propagator([squares[i] for i in chosen], values[chosen], errors[chosen]))

    closed = momentum_shell_couplings(model, cutoffs, num_data=int(flow.attrs["cosnet_num_data"]))
    scale = closed["scale"].values
    exponent = model.dim + 2
    fitted = {name: np.array([fit[name] for fit in fits]) for name in fits[0]}
    variables = {name: (("cutoff",), values) for name, values in fitted.items()}
    variables.update({
        "num_bins_fitted": (("cutoff",), np.array(counts)),
        "rescaled_Z": (("cutoff",), fitted["Z"] * scale ** (-exponent)),
        "rescaled_Z_se": (("cutoff",), fitted["Z_se"] * scale ** (-exponent)),
        "rescaled_mass_squared": (("cutoff",), fitted["mass_squared"] * scale**2),
        "rescaled_mass_squared_se": (("cutoff",), fitted["mass_squared_se"] * scale**2),
        "momentum_cutoff": (("cutoff",), closed["momentum_cutoff"].values),
        "scale": (("cutoff",), scale),
        "field_normalisation": (("cutoff",), closed["field_normalisation"].values),
        "closed_form_Z": (("cutoff",), closed["Z"].values),
        "closed_form_mass_squared": (("cutoff",), closed["mass_squared"].values),
        "closed_form_rescaled_Z": (("cutoff",), closed["rescaled_Z"].values),
        "closed_form_rescaled_mass_squared": (("cutoff",), closed["rescaled_mass_squared"].values),
    })
    return xr.Dataset(variables, coords={"cutoff": cutoffs}, attrs=dict(propagator.attrs))
