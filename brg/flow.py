"""The information-shell BRG flow: coarse graining posterior samples over a grid of cutoffs."""

import logging
import sys

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from brgnnft.brg._flatten import ParamLayout, in_float64
from brgnnft.brg.coarse_grain import (
    PRESCRIPTIONS,
    ShellCoarseGrainer,
    posterior_params,
    prior_variance_vector,
    split_at,
)
from brgnnft.brg.fisher import fisher_information
from brgnnft.brg.flow_statistics import (
    gaussian_log_likelihood,
    log_predictive_density,
    mean_with_standard_error,
    member_mse,
    predictive_kl,
    predictive_variance,
)
from brgnnft.brg.reference import reference_point
from brgnnft.inference._layout import package_versions
from brgnnft.models._checks import check_inputs, check_key, check_option, check_targets

logger = logging.getLogger(__name__)

REFERENCES = ("map", "posterior_mean")


def check_cutoffs(cutoffs) -> np.ndarray:
    """Return the cutoffs as an ascending float64 array, or raise naming the bad value."""
    values = np.asarray(cutoffs, dtype=np.float64).reshape(-1) if np.ndim(cutoffs) <= 1 else None
    if values is None or values.size == 0:
        raise ValueError(f"cutoffs must be a non-empty 1-D sequence of positive numbers, got {cutoffs!r}")
    bad = values[~(np.isfinite(values) & (values > 0))]
    if bad.size:
        raise ValueError(f"cutoffs must be finite and > 0, got {float(bad[0])!r}: the cutoff is a Fisher eigenvalue scale")
    if len(np.unique(values)) != len(values):
        raise ValueError("cutoffs contain duplicates: pass each cutoff once")
    return np.sort(values)


def _noise_samples(posterior, model, num_members: int) -> np.ndarray | float:
    if getattr(model, "noise", None) is not None:
        return float(model.noise)
    if "noise" in posterior["posterior"].data_vars:
        return np.asarray(posterior["posterior"]["noise"].values, dtype=np.float64).reshape(num_members, 1)
    raise ValueError("the model has no fixed noise and the posterior no 'noise' site: build the model with noise=<value>")


def _progress_enabled(progress: bool) -> bool:
    return progress and sys.stderr.isatty()


@in_float64
def information_shell_flow(
    posterior,
    model,
    *,
    cutoffs,
    x_test,
    y_test,
    fisher=None,
    reference: str = "map",
    prescription: str = "prior",
    basis: str = "eigen",
    key,
    fisher_x=None,
    fisher_per_datum: bool = False,
    seed: int | None = None,
    progress: bool = True,
):
    """Run the information-shell BRG flow of a posterior over a grid of cutoffs.

    At every cutoff Lambda the sloppy directions (Fisher eigenvalue, or diagonal entry, below
    Lambda) of every posterior sample are replaced by the prescription, and the coarse-grained
    ensemble is evaluated at the test points. The replacement draws are shared across cutoffs, so
    the flow is nested: it runs from the trained theory (small Lambda) to the prior or the pruned
    model (large Lambda).

    Parameters
    ----------
    posterior : DataTree
        Output of a ``brgnnft.inference`` route (its ``constant_data`` and ``observed_data`` are the
        training data).
    model : the model that produced it.
    cutoffs : sequence of float
        The grid of Lambda > 0 (sorted ascending in the output).
    x_test : array (m, d); y_test : array (m,)
    fisher : FisherInformation, optional
        The metric to use; by default computed at the reference point on ``fisher_x``.
    reference : {"map", "posterior_mean"}
        Where the metric is evaluated: the MAP (found by L-BFGS from the best sample) or the mean of
        the samples.
    prescription : {"prior", "marginalize", "prune"}
    basis : {"eigen", "diagonal"}
    key : jax.random key
    fisher_x : array (n_F, d), optional
        Inputs of the metric; default the training inputs.
    fisher_per_datum : bool
        Use I / n instead of the metric of the whole data set (rescales every eigenvalue by 1/n).
    seed : int, optional
        Recorded in the attributes so the flow can be reproduced from them.
    progress : bool
        Show a progress bar over cutoffs (only on a terminal).

    Returns
    -------
    DataTree with these groups:

    - ``posterior`` (``f``), ``posterior_predictive`` and ``log_likelihood`` (``y``), all with dims
      (cutoff, chain, draw, obs_id);
    - ``observed_data`` and ``constant_data``: the test set;
    - ``flow``: the per-cutoff statistics below;
    - ``trained``: ``f`` and the predictive ``y`` before coarse graining;
    - ``spectrum``: the Fisher spectrum used.

    Notes
    -----
    Per cutoff the ``flow`` group holds: ``num_stiff`` (directions kept), ``fraction_coarse_grained``
    (1 - num_stiff / P), ``test_mse`` (mean over members of each member's test MSE) with its standard
    error ``test_mse_se``, ``member_mse``, ``predictive_sd`` and ``f_sd`` (mean over test points of the
    standard deviation of y and of f over members), ``log_predictive_density``
    (sum_i log mean_s p(y_i | f_s)), and ``kl_from_trained`` (mean over test points of the KL
    divergence of a Gaussian fit of the coarse-grained predictive from that of the trained one).

    References
    ----------
    J. N. Howard, M. S. Klinger, A. Maiti, A. G. Stapleton, arXiv:2405.17538.
    """
    check_key(key)
    check_option("prescription", prescription, PRESCRIPTIONS)
    check_option("reference", reference, REFERENCES)
    check_option("basis", basis, ("eigen", "diagonal"))
    cutoffs = check_cutoffs(cutoffs)
    x_test = check_inputs(x_test, "x_test").astype(np.float64)
    y_test = check_targets(y_test, x_test.shape[0], "y_test").astype(np.float64)
    if fisher is not None and fisher.basis != basis:
        raise ValueError(f"fisher was computed in basis {fisher.basis!r} but basis={basis!r}: make them agree")
    x_train = np.asarray(posterior["constant_data"]["x"].values, dtype=np.float64)
    y_train = np.asarray(posterior["observed_data"]["y"].values, dtype=np.float64)
    input_dim = x_train.shape[1]
    if x_test.shape[1] != input_dim:
        raise ValueError(f"x_test has {x_test.shape[1]} features but the training inputs have {input_dim}")
    key_replace, key_predictive = jax.random.split(key)

    samples = posterior_params(posterior, model, input_dim)
    chains, draws = posterior["posterior"]["f"].shape[:2]
    layout = fisher.layout if fisher is not None else ParamLayout.from_shapes(model.param_shapes(input_dim))
    theta = np.asarray(layout.flatten(samples))
    variances = prior_variance_vector(model, layout, input_dim)
    noise = _noise_samples(posterior, model, theta.shape[0])

    reference_used = "given"
    if fisher is None:
        reference_used = reference
        point_noise = noise if np.ndim(noise) == 0 else float(np.mean(noise))
        center = reference_point(model, theta, layout, variances, x_train, y_train, point_noise, reference=reference)
        fisher = fisher_information(
            model,
            layout.unflatten(jnp.asarray(center)),
            x_train if fisher_x is None else fisher_x,
            basis=basis,
            per_datum=fisher_per_datum,
            noise=point_noise,
            progress=progress,
        )
    logger.info("flow over %d cutoffs with %r", len(cutoffs), fisher)

    def evaluate(flat):
        params = {name: jnp.asarray(value) for name, value in layout.unflatten(flat).items()}
        return np.asarray(model.apply(params, jnp.asarray(x_test)))

    trained_f = evaluate(theta)
    grainer = ShellCoarseGrainer(fisher, theta, variances, prescription=prescription, key=key_replace)
    outputs, splits = [], []
    for cutoff in tqdm(cutoffs, desc="BRG flow", unit="cutoff", disable=not _progress_enabled(progress)):
        split = split_at(fisher, cutoff)
        splits.append(split)
        outputs.append(evaluate(grainer(split)))
    f = np.stack(outputs)

    attrs = {
        "scheme": "information_shell",
        "prescription": prescription,
        "basis": fisher.basis,
        "reference": reference_used,
        "seed": -1 if seed is None else int(seed),
        "num_params": fisher.num_params,
        **fisher.attrs,
        **package_versions(),
    }
    return build_flow_tree(
        f, trained_f, y_test, x_test, noise, splits, fisher, chains, draws, attrs, key=key_predictive
    )


def flow_statistics(f, trained_f, y_test, noise, splits, *, dim: str = "cutoff") -> dict[str, tuple]:
    """Return the ``flow`` group's variables as (dims, values) pairs, from f (K, S, m).

    ``dim`` names the scale dimension of the K values: ``cutoff``, or ``flow_time`` for a diffusion.
    """
    scale = (dim,)
    mse = member_mse(f, y_test)
    mse_mean, mse_error = mean_with_standard_error(mse)
    log_likelihood = gaussian_log_likelihood(f, y_test, noise)
    trained_mse = member_mse(trained_f, y_test)
    trained_mean, trained_error = mean_with_standard_error(trained_mse)
    trained_log_likelihood = gaussian_log_likelihood(trained_f, y_test, noise)
    return {
        "num_stiff": (scale, np.array([split.num_stiff for split in splits])),
        "fraction_coarse_grained": (scale, np.array([split.fraction_coarse_grained for split in splits])),
        "test_mse": (scale, mse_mean),
        "test_mse_se": (scale, mse_error),
        "predictive_sd": (scale, np.sqrt(predictive_variance(f, noise)).mean(axis=-1)),
        "f_sd": (scale, f.std(axis=-2, ddof=1).mean(axis=-1)),
        "log_predictive_density": (scale, log_predictive_density(log_likelihood)),
        "kl_from_trained": (scale, predictive_kl(f, trained_f[None], noise)),
        "trained_test_mse": ((), trained_mean),
        "trained_test_mse_se": ((), trained_error),
        "trained_predictive_sd": ((), np.sqrt(predictive_variance(trained_f, noise)).mean()),
        "trained_log_predictive_density": ((), log_predictive_density(trained_log_likelihood)),
    }


def build_flow_tree(
    f, trained_f, y_test, x_test, noise, splits, fisher, chains, draws, attrs, *, key, dim: str = "cutoff", scale=None
):
    """Assemble the flow DataTree from coarse-grained outputs f (K, S, m).

    The scale dimension is ``dim`` with coordinate values ``scale``; by default ``cutoff`` with the
    cutoffs of the splits. For any other ``dim`` (``flow_time`` of a diffusion) the cutoffs of the
    splits are recorded beside it as the coordinate ``cutoff_equivalent``.
    """
    num_cutoffs, num_members, num_points = f.shape
    cutoffs = np.array([split.cutoff for split in splits])
    scale_coords = {"cutoff": cutoffs}
    if dim != "cutoff":
        scale_coords = {dim: np.asarray(scale, dtype=np.float64), "cutoff_equivalent": (dim, cutoffs)}
    sample_shape = (num_cutoffs, chains, draws, num_points)
    noise_array = noise if np.ndim(noise) == 0 else noise.reshape(1, num_members, 1)
    key_coarse, key_trained = jax.random.split(key)
    y_predictive = f + noise_array * np.asarray(jax.random.normal(key_coarse, f.shape, dtype=jnp.float64))
    trained_noise = noise if np.ndim(noise) == 0 else noise.reshape(num_members, 1)
    trained_y = trained_f + trained_noise * np.asarray(jax.random.normal(key_trained, trained_f.shape, dtype=jnp.float64))
    log_likelihood = gaussian_log_likelihood(f, y_test, noise_array)

    coords = {**scale_coords, "chain": np.arange(chains), "draw": np.arange(draws), "obs_id": np.arange(num_points)}
    sample_dims = (dim, "chain", "draw", "obs_id")

    statistics = flow_statistics(f, trained_f, y_test, noise, splits, dim=dim)
    flow = xr.Dataset({name: value for name, value in statistics.items()}, coords=scale_coords)
    flow["member_mse"] = ((dim, "chain", "draw"), member_mse(f, y_test).reshape(num_cutoffs, chains, draws))
    flow["trained_member_mse"] = (("chain", "draw"), member_mse(trained_f, y_test).reshape(chains, draws))
    flow = flow.assign_coords(chain=np.arange(chains), draw=np.arange(draws))

    spectrum_values = fisher.diagonal_vector() if fisher.basis == "diagonal" else fisher.eigenvalues
    num_params = getattr(fisher, "num_params", None)
    if fisher.basis == "eigen" and num_params is not None and num_params > spectrum_values.size:
        # The directions left out of the eigenbasis are the null space of the metric, which is
        # sloppy at every cutoff: record them as zero eigenvalues so P directions are accounted for.
        spectrum_values = np.concatenate([spectrum_values, np.zeros(num_params - spectrum_values.size)])
    spectrum = xr.Dataset({"eigenvalues": (("direction",), np.sort(spectrum_values)[::-1])}, attrs={"basis": fisher.basis})

    tree = xr.DataTree.from_dict(
        {
            "/": xr.Dataset(attrs=attrs),
            "posterior": xr.Dataset({"f": (sample_dims, f.reshape(sample_shape))}, coords=coords),
            "posterior_predictive": xr.Dataset({"y": (sample_dims, y_predictive.reshape(sample_shape))}, coords=coords),
            "log_likelihood": xr.Dataset({"y": (sample_dims, log_likelihood.reshape(sample_shape))}, coords=coords),
            "observed_data": xr.Dataset({"y": (("obs_id",), y_test)}, coords={"obs_id": np.arange(num_points)}),
            "constant_data": xr.Dataset(
                {"x": (("obs_id", "feature"), x_test)},
                coords={"obs_id": np.arange(num_points), "feature": np.arange(x_test.shape[1])},
            ),
            "flow": flow,
            "trained": xr.Dataset(
                {
                    "f": (("chain", "draw", "obs_id"), trained_f.reshape(chains, draws, num_points)),
                    "y": (("chain", "draw", "obs_id"), trained_y.reshape(chains, draws, num_points)),
                },
                coords={"chain": np.arange(chains), "draw": np.arange(draws), "obs_id": np.arange(num_points)},
            ),
            "spectrum": spectrum,
        }
    )
    return tree


# Scale dimensions of flows: information-shell cutoffs, diffusion times, data counts, training steps.
SCALE_DIMS = ("cutoff", "flow_time", "data_count", "training_step")


def flow_at(flow, cutoff_index: int):
    """Return the flow at one scale (cutoff, flow time, ...) as an ordinary posterior DataTree.

    The result works with az.loo and az.compare. ``cutoff_index`` is the position along the flow's
    scale dimension, whichever of ``SCALE_DIMS`` it is.
    """
    return flow.isel({dim: cutoff_index for dim in SCALE_DIMS}, missing_dims="ignore")
