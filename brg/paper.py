"""The ``paper`` preset: the numerical experiment of Howard, Klinger, Maiti and Stapleton, reproduced.

The original experiment (arXiv:2405.17538) trains the 2000 readout weights of a network with frozen
random hidden layers by plain SGD and computes the diagonal regression Fisher of the readout. It
then redraws every readout weight whose Fisher entry lies below a cutoff from its N(0, 1)
initialisation. This module replicates it for an ensemble of members, each with its own frozen
hidden layers, and returns the flow DataTree of :func:`brgnnft.brg.information_shell_flow`.

The general flow evaluates one Fisher metric for the whole posterior, but here every member has its
own feature map and so its own Fisher diagonal. The coarse graining is therefore done here, with a
0/1 mask per member and vectorised over members, and ``brgnnft.brg.flow.build_flow_tree``
assembles the tree.

Differences from the original code, all deliberate:

- Every random draw (data, hidden layers, initial readout, redraws) comes from one JAX key, and
  member ``i`` uses ``jax.random.fold_in(key, i)``, so the first members of a larger run are the
  members of a smaller one.
- The arithmetic is float64 (the original ran PyTorch in float32).
- The flow is nested: each member draws one replacement readout, and a weight redrawn at one cutoff
  keeps the same redrawn value at every larger one. The original redrew some weights again at
  alternate cutoffs, which leaves the distribution at each cutoff unchanged.
- The Fisher diagonal is computed on the 200 training inputs by default, and
  ``fisher_points="10"`` gives the published variant on 10 separate points.
"""

import logging
import sys
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from brgnnft.brg._flatten import in_float64
from brgnnft.brg.flow import build_flow_tree, check_cutoffs
from brgnnft.inference import load_dataset
from brgnnft.inference._layout import package_versions
from brgnnft.models import RandomFeatures
from brgnnft.models._checks import check_key, check_option, check_positive_int

logger = logging.getLogger(__name__)

# The 25 cutoffs of the original experiment's hyperparameters.
PAPER_CUTOFFS = (
    1e-4, 5e-3, 7.5e-3, 1e-2, 5e-2, 7.5e-2, 0.1, 0.5, 0.75, 1.0, 5.0, 7.5, 10.0, 50.0, 75.0,
    100.0, 500.0, 750.0, 1e3, 5e3, 7.5e3, 1e4, 5e4, 7.5e4, 1e5,
)
PAPER_LEARNING_RATE = 1e-6
PAPER_NUM_EPOCHS = 1000
# Members whose test MSE before coarse graining reaches this value (or is not finite) are dropped.
DIVERGENCE_THRESHOLD = 1e3
FISHER_POINTS = ("train", "10")
# Observation noise of the flow's predictive and log likelihood: the sigma = 1 of the regression
# Fisher. The original training has no noise term.
PAPER_NOISE = 1.0
# Members per batch of the feature computations, which bounds the memory of the (n, P) feature
# matrices held at once: the training, test and Fisher features of 10 members take up to 96 MB.
MEMBER_BATCH_SIZE = 10


class _MemberAverageSplit(NamedTuple):
    """Stiff set of one cutoff averaged over members, in the form ``build_flow_tree`` reads."""

    cutoff: float
    num_stiff: float
    fraction_coarse_grained: float


class _MemberSpectrum(NamedTuple):
    """Typical Fisher diagonal of the ensemble, in the form ``build_flow_tree`` reads."""

    basis: str
    values: np.ndarray

    def diagonal_vector(self) -> np.ndarray:
        return self.values


def paper_model(seed: int) -> RandomFeatures:
    """Return the network of one member: ``RandomFeatures.paper`` with frozen layers from ``seed``."""
    return RandomFeatures.paper(noise=PAPER_NOISE, seed=seed)


def paper_hidden_weights(seed) -> tuple[jax.Array, ...]:
    """Return the frozen hidden weights (2, 10), (10, 10), (10, 2000) of the member with ``seed``.

    The same draws as ``RandomFeatures.paper(seed=seed).hidden_params(2)``, but ``seed`` may be a
    traced integer, so the weights of many members come out of one ``jax.vmap``.
    """
    model = paper_model(0)
    widths = (2, *model.hidden)
    key = jax.random.key(seed)
    weights = []
    for layer in range(1, len(widths)):
        # The key sequence of RandomFeatures; its bias key goes unused because there are no biases.
        key, key_weight, _ = jax.random.split(key, 3)
        weights.append(jax.random.normal(key_weight, (widths[layer - 1], widths[layer])))
    return tuple(weights)


def paper_features(weights, x) -> jax.Array:
    """Return the frozen features Phi(x), shape (n, 2000), for hidden ``weights`` and inputs x (n, 2)."""
    h = x
    for weight, activation in zip(weights, paper_model(0).activations, strict=True):
        h = activation(h @ weight)
    return h


def _output_space_sgd(gram, outputs, y, *, learning_rate: float, num_epochs: int):
    """Run batch-size-1 SGD on the squared error in output space for M members at once.

    ``gram`` (n, n, M) contains each member's K = Phi Phi^T and ``outputs`` (n, M) the initial
    training outputs Phi a_0. Returns the residual sums r (n, M). The member axis is last so that
    each step reads one contiguous (n, M) slice of the Gram.

    The step on datum i, a <- a - 2 eta (f_i - y_i) phi_i, moves the training outputs f = Phi a by
    -2 eta (f_i - y_i) K[:, i], so the run is tracked in the n outputs instead of the P weights.
    Summing the residuals over all visits of datum i gives a_final = a_0 - 2 eta Phi^T r.
    """
    step_size = 2.0 * learning_rate
    indices = jnp.arange(y.shape[0])

    def step(outputs, inputs):
        gram_row, target, index = inputs
        residual = jax.lax.dynamic_index_in_dim(outputs, index, keepdims=False) - target
        return outputs - step_size * residual * gram_row, residual

    def epoch(carry, _):
        outputs, residual_sums = carry
        outputs, residuals = jax.lax.scan(step, outputs, (gram, y, indices))
        return (outputs, residual_sums + residuals), None

    (_, residual_sums), _ = jax.lax.scan(epoch, (outputs, jnp.zeros_like(outputs)), None, length=num_epochs)
    return residual_sums


def train_readout_sgd(
    features,
    y,
    initial_readout,
    *,
    learning_rate: float = PAPER_LEARNING_RATE,
    num_epochs: int = PAPER_NUM_EPOCHS,
) -> jax.Array:
    """Train a linear readout by the original experiment's SGD and return the final weights (P,).

    Batch size 1, the data in their stored order every epoch (the original iterates over its data
    set without shuffling), squared error (f(x_i) - y_i)^2 (PyTorch's MSELoss on one output), no
    momentum and no weight decay. Pure and jit-able, so ``jax.vmap`` trains many members at once.

    Parameters
    ----------
    features : array (n, P)
        Frozen features Phi of the training inputs.
    y : array (n,)
        Training targets.
    initial_readout : array (P,)
        Starting weights a_0.
    learning_rate : float
        eta of the update a <- a - eta * d/da (phi_i . a - y_i)^2.
    num_epochs : int
        Passes over the n data points (n * num_epochs steps).

    Returns
    -------
    array (P,)

    Notes
    -----
    The update is a <- a - 2 eta (phi_i . a - y_i) phi_i. It is tracked through the outputs
    f = Phi a, which move by -2 eta (f_i - y_i) K[:, i] with the Gram K = Phi Phi^T, so one step
    costs O(n) instead of O(P). The weights are recovered once at the end as
    a = a_0 - 2 eta Phi^T r, where r_i sums the residuals of every visit of datum i. The iterates are
    those of the weight-space loop in exact arithmetic, and in float64 they agree with it to rounding.
    Divergent training (2 eta |phi_i|^2 too large) gives inf or NaN, as in the original.

    References
    ----------
    J. N. Howard, M. S. Klinger, A. Maiti, A. G. Stapleton, "Bayesian RG Flow in Neural Network
    Field Theories", arXiv:2405.17538.
    """
    features = jnp.asarray(features)
    initial_readout = jnp.asarray(initial_readout)
    gram = (features @ features.T)[:, :, None]
    outputs = (features @ initial_readout)[:, None]
    residual_sums = _output_space_sgd(gram, outputs, jnp.asarray(y), learning_rate=learning_rate, num_epochs=num_epochs)
    return initial_readout - 2.0 * learning_rate * features.T @ residual_sums[:, 0]


def fisher_diagonal_readout(features) -> jax.Array:
    """Return the per-datum regression Fisher diagonal of the readout (sigma = 1), shape (P,).

    F_j = mean_i phi_j(x_i)^2 over the n rows of ``features`` (n, P). It does not depend on the
    readout weights, and it equals ``fisher_information(model, params, x, basis="diagonal",
    per_datum=True, noise=1)`` for the readout site.
    """
    return jnp.mean(jnp.asarray(features) ** 2, axis=0)


@partial(jax.jit, static_argnums=(1, 2))
def _member_draws(key, num_members: int, num_features: int):
    """Return each member's frozen-layer seed (M,), hidden weights, initial readout and replacement.

    Member i draws from ``jax.random.fold_in(key, i)``, so its draws do not depend on M. The
    readouts and replacements have shape (M, P), and the hidden weights are stacked over members.
    """

    def draw(index):
        key_seed, key_init, key_replace = jax.random.split(jax.random.fold_in(key, index), 3)
        seed = jax.random.randint(key_seed, (), 0, 2**31 - 1, dtype=jnp.int32)
        return (
            seed,
            paper_hidden_weights(seed),
            jax.random.normal(key_init, (num_features,), dtype=jnp.float64),
            jax.random.normal(key_replace, (num_features,), dtype=jnp.float64),
        )

    return jax.vmap(draw)(jnp.arange(num_members))


@jax.jit
def _gram_and_outputs(weights, initial_readouts, x_train):
    """Return the training Grams (n, n, M) and initial training outputs (n, M), member axis last."""

    def member(inputs):
        member_weights, initial_readout = inputs
        features = paper_features(member_weights, x_train)
        return features @ features.T, features @ initial_readout

    grams, outputs = jax.lax.map(member, (weights, initial_readouts), batch_size=MEMBER_BATCH_SIZE)
    return jnp.moveaxis(grams, 0, -1), outputs.T


@partial(jax.jit, static_argnames=("num_epochs",))
def _train_members(weights, initial_readouts, x_train, y_train, *, num_epochs: int):
    """Return the residual sums (M, n) of every member's SGD run."""
    grams, outputs = _gram_and_outputs(weights, initial_readouts, x_train)
    residual_sums = _output_space_sgd(grams, outputs, y_train, learning_rate=PAPER_LEARNING_RATE, num_epochs=num_epochs)
    return residual_sums.T


@jax.jit
def _coarse_grained_outputs(weights, initial_readouts, replacements, residual_sums, x_train, x_test, x_fisher, cutoffs):
    """Return each member's trained readout, Fisher diagonal, trained f and coarse-grained f.

    Shapes: readouts (M, P), diagonals (M, P), trained f (M, m), coarse-grained f (M, K, m) and
    stiff counts (M, K) for K cutoffs and m test points.
    """

    def member(inputs):
        member_weights, initial_readout, replacement, residuals = inputs
        train_features = paper_features(member_weights, x_train)
        test_features = paper_features(member_weights, x_test)
        readout = initial_readout - 2.0 * PAPER_LEARNING_RATE * train_features.T @ residuals
        diagonal = fisher_diagonal_readout(paper_features(member_weights, x_fisher))

        stiff = diagonal[None, :] >= cutoffs[:, None]
        coarse_readouts = jnp.where(stiff, readout[None, :], replacement[None, :])
        return readout, diagonal, test_features @ readout, coarse_readouts @ test_features.T, stiff.sum(axis=1)

    inputs = (weights, initial_readouts, replacements, residual_sums)
    return jax.lax.map(member, inputs, batch_size=MEMBER_BATCH_SIZE)


def _progress_enabled(progress: bool) -> bool:
    return progress and sys.stderr.isatty()


@in_float64
def paper_flow(
    *,
    key,
    num_members: int = 100,
    fisher_points: str = "train",
    keep_divergent: bool = False,
    num_epochs: int = PAPER_NUM_EPOCHS,
    cutoffs=PAPER_CUTOFFS,
    seed: int | None = None,
    progress: bool = True,
):
    """Run the original BRG-NNFT experiment for an ensemble and return its flow DataTree.

    Each member draws its own frozen hidden layers (``RandomFeatures.paper`` with a seed derived
    from ``key``) and an initial readout a_0 ~ N(0, I), trains the readout by
    :func:`train_readout_sgd` on the 200 training points of the ``paper`` data set, and is coarse
    grained in the diagonal basis of its own Fisher: readout weights with F_j < Lambda are replaced
    by N(0, 1) draws (the ``prior`` prescription). Each member draws its replacement readout once
    for all cutoffs, so the flow is nested.

    Parameters
    ----------
    key : jax.random key
        Source of every random draw: data points, hidden layers, initial readouts, replacements and
        the predictive draws.
    num_members : int
        Ensemble size before divergent members are dropped.
    fisher_points : {"train", "10"}
        Inputs of the Fisher diagonal: the 200 training inputs (default), or the 10 separate
        points of the original experiment, where units inactive on all 10 points get F_j = 0.
    keep_divergent : bool
        Keep members whose test MSE before coarse graining is >= 1e3 or not finite. By default
        they are dropped, as in the original, and their number is logged and stored.
    num_epochs : int
        SGD epochs (1000 in the original).
    cutoffs : sequence of float
        The Fisher cutoffs Lambda; the original 25 by default.
    seed : int, optional
        Recorded in the attributes so the run can be repeated.
    progress : bool
        Show a progress bar over the three stages (on a terminal only).

    Returns
    -------
    DataTree
        The flow layout of :func:`brgnnft.brg.information_shell_flow` with ``chain`` of length 1
        and ``draw`` = kept member. Per-member Fisher diagonals differ, so ``flow/num_stiff`` is
        the mean over members, ``flow/member_num_stiff`` (cutoff, chain, draw) contains each
        member's count, and ``spectrum/eigenvalues`` is the member median of the descending
        sorted diagonals. ``flow/median_test_mse`` (cutoff) and ``flow/trained_median_test_mse``
        give the medians the original results are best compared with. The ``members`` group
        (dim ``member``, every member including dropped ones) contains ``seed``,
        ``trained_test_mse`` and ``kept``, and ``readout`` and ``fisher_diagonal`` (member, feature)
        hold the trained weights and Fisher diagonals.

    Raises
    ------
    ValueError
        If no member is left after dropping the divergent ones, or for an invalid argument.
    """
    check_key(key)
    num_members = check_positive_int("num_members", num_members)
    num_epochs = check_positive_int("num_epochs", num_epochs)
    fisher_points = check_option("fisher_points", fisher_points, FISHER_POINTS)
    cutoffs = check_cutoffs(cutoffs)
    key_data, key_members, key_predictive = jax.random.split(key, 3)
    bar = tqdm(total=3, desc="paper preset", unit="stage", disable=not _progress_enabled(progress))

    data = load_dataset("paper", key=key_data)
    x_train, x_test = jnp.asarray(data.x_train), jnp.asarray(data.x_test)
    x_fisher = x_train if fisher_points == "train" else jnp.asarray(data.x_fisher)
    num_features = paper_model(0).num_features
    seeds, weights, initial_readouts, replacements = _member_draws(key_members, num_members, num_features)
    bar.update()

    residual_sums = _train_members(weights, initial_readouts, x_train, jnp.asarray(data.y_train), num_epochs=num_epochs)
    bar.update()

    readouts, diagonals, trained_f, coarse_f, num_stiff = (
        np.asarray(value)
        for value in _coarse_grained_outputs(
            weights, initial_readouts, replacements, residual_sums, x_train, x_test, x_fisher, jnp.asarray(cutoffs)
        )
    )
    bar.update()
    bar.close()

    trained_mse = np.mean((trained_f - data.y_test) ** 2, axis=-1)
    kept = np.ones(num_members, dtype=bool)
    divergent = ~(np.isfinite(trained_mse) & (trained_mse < DIVERGENCE_THRESHOLD))
    if divergent.any() and not keep_divergent:
        kept = ~divergent
        logger.warning(
            "dropped %d of %d members whose test MSE before coarse graining is >= %g or not finite",
            int(divergent.sum()), num_members, DIVERGENCE_THRESHOLD,
        )
    elif divergent.any():
        logger.warning(
            "kept %d divergent members (test MSE >= %g or not finite), so ensemble statistics may be "
            "inf or NaN", int(divergent.sum()), DIVERGENCE_THRESHOLD,
        )
    if not kept.any():
        raise ValueError(
            f"all {num_members} members diverged (test MSE >= {DIVERGENCE_THRESHOLD:g} or not finite): "
            "use more members, or pass keep_divergent=True (--keep-divergent on the command line)"
        )

    attrs = {
        "scheme": "information_shell",
        "preset": "paper",
        "prescription": "prior",
        "basis": "diagonal",
        "reference": "sgd_endpoint",
        "seed": -1 if seed is None else int(seed),
        "dataset": "paper",
        "num_params": num_features,
        "fisher_basis": "diagonal",
        "fisher_per_datum": 1,
        "fisher_likelihood": "gaussian",
        "fisher_noise": PAPER_NOISE,
        "fisher_points": "training inputs" if fisher_points == "train" else "10 separate points (as published)",
        "fisher_num_data": int(x_fisher.shape[0]),
        "fisher_per_member": 1,
        "learning_rate": PAPER_LEARNING_RATE,
        "num_epochs": num_epochs,
        "num_members": num_members,
        "num_members_kept": int(kept.sum()),
        "num_members_dropped": int(num_members - kept.sum()),
        "divergence_threshold": DIVERGENCE_THRESHOLD,
        "keep_divergent": int(keep_divergent),
        **package_versions(),
    }
    return _build_paper_tree(
        data, cutoffs, seeds, kept, trained_mse, readouts, diagonals, trained_f, coarse_f, num_stiff, attrs,
        key=key_predictive,
    )


def _build_paper_tree(data, cutoffs, seeds, kept, trained_mse, readouts, diagonals, trained_f, coarse_f, num_stiff,
                      attrs, *, key):
    """Assemble the flow DataTree of the kept members and add the per-member groups."""
    num_kept = int(kept.sum())
    num_features = diagonals.shape[1]
    f = np.moveaxis(coarse_f[kept], 0, 1)
    fraction = 1.0 - num_stiff[kept] / num_features
    splits = [
        _MemberAverageSplit(float(cutoff), float(np.mean(num_stiff[kept, index])), float(np.mean(fraction[:, index])))
        for index, cutoff in enumerate(cutoffs)
    ]
    typical_spectrum = np.median(-np.sort(-diagonals[kept], axis=1), axis=0)
    tree = build_flow_tree(
        f, trained_f[kept], data.y_test, data.x_test, PAPER_NOISE, splits, _MemberSpectrum("diagonal", typical_spectrum),
        1, num_kept, attrs, key=key,
    )

    flow = tree["flow"].to_dataset()
    flow["median_test_mse"] = ("cutoff", np.median(flow["member_mse"].values.reshape(len(cutoffs), -1), axis=-1))
    flow["trained_median_test_mse"] = ((), float(np.median(trained_mse[kept])))
    flow["member_num_stiff"] = (("cutoff", "chain", "draw"), num_stiff[kept].T.reshape(len(cutoffs), 1, num_kept))
    tree["flow"] = flow
    spectrum = tree["spectrum"].to_dataset()
    spectrum.attrs["description"] = "member median of each member's descending Fisher diagonal"
    tree["spectrum"] = spectrum
    tree["members"] = xr.Dataset(
        {
            "seed": ("member", np.asarray(seeds, dtype=np.int64)),
            "trained_test_mse": ("member", trained_mse),
            "kept": ("member", kept.astype(np.int8)),
            "readout": (("member", "feature"), readouts),
            "fisher_diagonal": (("member", "feature"), diagonals),
        },
        coords={"member": np.arange(len(kept)), "feature": np.arange(num_features)},
        attrs={"description": "every member of the run, dropped ones included. Draw d of the flow is the d-th kept member."},
    )
    return tree


def paper_table_rows(flow) -> list[tuple]:
    """Return the rows (cutoff or "trained", median MSE, mean MSE, fraction redrawn) of a paper flow.

    The first row is the trained ensemble before coarse graining, as in the original results.
    """
    statistics = flow["flow"]
    rows = [("trained", float(statistics["trained_median_test_mse"]), float(statistics["trained_test_mse"]), 0.0)]
    for index, cutoff in enumerate(statistics["cutoff"].values):
        rows.append((
            float(cutoff),
            float(statistics["median_test_mse"].values[index]),
            float(statistics["test_mse"].values[index]),
            float(statistics["fraction_coarse_grained"].values[index]),
        ))
    return rows
