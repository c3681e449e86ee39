"""Training as an IR to UV flow, second view: snapshots of an ensemble during optimisation.

Every member starts at a prior draw (the IR: the ensemble is the prior's field theory) and is
optimised by randomised MAP (:func:`brgnnft.inference.randomised_map_loss`) toward a posterior
sample (the UV: the trained theory). Recording the members every k steps gives a flow along the
training step with the same statistics as the data-count flow: the number of Fisher directions above
a fixed cutoff, test MSE and the two-point functions of f.

For a model linear in its parameters the Fisher metric does not depend on them, so ``num_stiff``
stays constant along this flow, and the IR to UV direction shows in the test MSE and the
correlators only. For a network the metric, and with it ``num_stiff``, changes as the features move.
"""

import logging
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from brgnnft.inference._validate import check_data, check_fixed_noise, check_model
from brgnnft.inference.data_count import (
    build_inference_flow_tree,
    check_points,
    check_test_data,
    mean_stiff_count,
)
from brgnnft.inference.ensemble import default_optimizer, prepare_member_training
from brgnnft.models._checks import check_positive, check_positive_int

logger = logging.getLogger(__name__)


def _progress_enabled(progress: bool) -> bool:
    return progress and sys.stderr.isatty()


def recorded_steps(num_steps: int, record_every: int) -> np.ndarray:
    """Return the recorded steps 0, k, 2k, ... and ``num_steps`` itself (last, if k does not divide it)."""
    steps = list(range(0, num_steps + 1, record_every))
    if steps[-1] != num_steps:
        steps.append(num_steps)
    return np.asarray(steps, dtype=np.int64)


def training_flow(
    model,
    x,
    y,
    *,
    x_test,
    y_test,
    key,
    num_members: int = 32,
    num_steps: int = 2000,
    record_every: int = 100,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-3,
    cutoff: float = 1.0,
    points=None,
    fisher_members: int = 16,
    progress: bool = True,
):
    """Train a randomised-MAP ensemble from prior draws and record it every ``record_every`` steps.

    Parameters
    ----------
    model : a brgnnft model with one output, a Gaussian likelihood and a fixed noise.
    x : array (n, d); y : array (n,)
    x_test : array (m, d); y_test : array (m,)
    key : jax.random key
    num_members : int
        Ensemble size S.
    num_steps : int
        Optimiser steps.
    record_every : int
        k: snapshots at steps 0, k, 2k, ... and at ``num_steps``.
    optimizer : optax.GradientTransformation, optional
        Default Adam with a cosine decay of the step from ``learning_rate`` to a thousandth of it,
        as in :func:`brgnnft.inference.ensemble`.
    cutoff : float
        Lambda: a direction of the Fisher metric of the training set, at a member's snapshot
        parameters, with eigenvalue >= Lambda counts as stiff.
    points : sequence of int, optional
        Positions in x_test of the two-point functions; default up to four spread over the set.
    fisher_members : int
        Members whose Fisher spectrum is computed at every snapshot; ``num_stiff`` is the mean count.
    progress : bool
        Show a progress bar over snapshots (only on a terminal).

    Returns
    -------
    DataTree
        Dimension ``training_step`` with the groups and ``flow`` variables of
        :func:`brgnnft.inference.data_count_flow`, plus ``loss`` (the mean randomised-MAP loss over
        members) in ``flow``. Step 0 is the prior ensemble.

    Examples
    --------
    >>> import jax, numpy as np
    >>> from brgnnft.models import RandomFeatures
    >>> from brgnnft.inference import training_flow
    >>> x = np.linspace(-2, 2, 40)[:, None]; y = np.sin(2 * x[:, 0])
    >>> flow = training_flow(RandomFeatures(hidden=(32,), noise=0.1), x, y, x_test=x, y_test=y,
    ...                      key=jax.random.key(0), num_members=8, num_steps=200, record_every=100,
    ...                      progress=False)
    >>> flow["flow"]["training_step"].values.tolist()
    [0, 100, 200]
    """
    check_model(model)
    x, y = check_data(model, x, y, key, require_y=True)
    x, y = x.astype(np.float64), y.astype(np.float64)
    noise = check_fixed_noise(model, "training_flow")
    if getattr(model, "likelihood", "gaussian") != "gaussian":
        raise ValueError(f"training_flow trains by randomised MAP, which needs the Gaussian likelihood, got {model.likelihood!r}")
    if getattr(model, "out_dim", 1) != 1:
        raise ValueError(f"training_flow supports one output per datum, got out_dim={model.out_dim}")
    x_test, y_test = check_test_data(x_test, y_test, x.shape[1])
    num_members = check_positive_int("num_members", num_members)
    if num_members < 2:
        raise ValueError(f"num_members must be >= 2 for ensemble statistics, got {num_members}")
    num_steps = check_positive_int("num_steps", num_steps)
    record_every = check_positive_int("record_every", record_every)
    if record_every > num_steps:
        raise ValueError(f"record_every={record_every} exceeds num_steps={num_steps}: record at most every num_steps steps")
    learning_rate = check_positive("learning_rate", learning_rate)
    cutoff = check_positive("cutoff", cutoff)
    points = check_points(points, x_test.shape[0])
    fisher_members = check_positive_int("fisher_members", fisher_members)
    optimizer = default_optimizer(learning_rate, num_steps) if optimizer is None else optimizer
    # The same split as ensemble(), so the last snapshot is the ensemble that ensemble() returns
    # for the same key and settings.
    key_anchor, key_noise, _, key_predictive = jax.random.split(key, 4)

    training = prepare_member_training(
        model, x, y, noise, num_members=num_members, optimizer=optimizer, key_anchor=key_anchor, key_noise=key_noise
    )
    anchors, y_perturbed, loss_and_grad = training.anchors, training.targets, training.loss_and_grad
    run_block = training.run_block

    mean_loss = jax.jit(lambda params: jnp.mean(loss_and_grad(params, anchors, y_perturbed)[0]))
    steps = recorded_steps(num_steps, record_every)
    carry = training.initial_carry
    snapshots = []
    logger.info("training %d members for %d steps, recording %d snapshots", num_members, num_steps, len(steps))
    for index, recorded in enumerate(tqdm(steps, desc="training flow", unit="snapshot",
                                          disable=not _progress_enabled(progress))):
        if index:
            carry = run_block(carry, int(recorded - steps[index - 1]))
        snapshots.append({name: np.asarray(value) for name, value in carry[0].items()})

    outputs, stiff, losses = [], [], []
    for params in snapshots:
        outputs.append(np.asarray(model.apply({name: jnp.asarray(value) for name, value in params.items()}, jnp.asarray(x_test))))
        stiff.append(mean_stiff_count(model, params, x, noise=noise, cutoff=cutoff, max_members=fisher_members))
        losses.append(float(mean_loss({name: jnp.asarray(value) for name, value in params.items()})))

    params = {name: np.stack([snapshot[name] for snapshot in snapshots]) for name in snapshots[0]}
    attrs = {"scheme": "training_time", "cutoff": cutoff, "num_data": int(x.shape[0]), "num_steps": num_steps,
             "record_every": record_every, "likelihood": "gaussian"}
    return build_inference_flow_tree(
        dim="training_step",
        scale=steps,
        f=np.stack(outputs),
        params=params,
        model=model,
        x_test=x_test,
        y_test=y_test,
        noise=noise,
        points=points,
        variables={"num_stiff": np.asarray(stiff), "loss": np.asarray(losses)},
        attrs=attrs,
        chains=1,
        draws=num_members,
        key=key_predictive,
    )
