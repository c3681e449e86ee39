"""Randomised-MAP ensembles: posterior samples by sample-then-optimise, batched over members."""

import logging
import sys
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from brgnnft.inference._layout import add_chain_axis, build_datatree
from brgnnft.inference._validate import check_data, check_fixed_noise, check_model
from brgnnft.inference.prior import draw_prior
from brgnnft.models._checks import check_positive, check_positive_int

logger = logging.getLogger(__name__)


def randomised_map_loss(model, params, anchor, x, y_perturbed, noise, prior_variance):
    """Return the randomised-MAP objective of one member.

    .. math::

        L(\\theta) = \\frac{1}{2\\sigma^2} |\\tilde y - f_\\theta(X)|^2
                   + \\frac12 \\sum_A (\\theta_A - \\theta_{0A})^2 / s_A^2
    """
    residual = y_perturbed - model.apply(params, x)
    data_term = 0.5 * jnp.sum(residual**2) / noise**2
    prior_term = sum(0.5 * jnp.sum((params[name] - anchor[name]) ** 2) / prior_variance[name] for name in params)
    return data_term + prior_term


class MemberTraining(NamedTuple):
    """Everything needed to train randomised-MAP members together.

    ``run_block(carry, length)`` advances every member by ``length`` optimiser steps (jitted, the
    length static) from ``carry = (params, optimizer_state)``, starting at ``initial_carry``.
    """

    anchors: dict
    targets: jax.Array
    loss_and_grad: Callable
    run_block: Callable
    initial_carry: tuple


def default_optimizer(learning_rate: float, num_steps: int) -> optax.GradientTransformation:
    """Return Adam with a cosine decay of the step from ``learning_rate`` to a thousandth of it."""
    # A decaying step lets Adam settle on the optimum instead of circling it at a distance
    # proportional to the learning rate.
    return optax.adam(optax.cosine_decay_schedule(learning_rate, num_steps, alpha=1e-3))


def prepare_member_training(model, x, y, noise, *, num_members, optimizer, key_anchor, key_noise) -> MemberTraining:
    """Draw the anchors and perturbed targets of every member and build the batched training step.

    Members are sharded over a ``member`` mesh axis when their number divides evenly over
    ``jax.devices()``.
    """
    input_dim = x.shape[1]
    prior_variance = {name: jnp.asarray(value) for name, value in model.prior_variance(input_dim).items()}
    x_device = jnp.asarray(x)
    anchors = model.sample_params(key_anchor, input_dim, num_members)
    targets = jnp.asarray(y) + noise * jax.random.normal(key_noise, (num_members,) + y.shape)
    mesh = _member_mesh(num_members)
    if mesh is not None:
        sharding = NamedSharding(mesh, PartitionSpec("member"))
        anchors = jax.device_put(anchors, sharding)
        targets = jax.device_put(targets, sharding)

    def member_loss(params, anchor, member_targets):
        return randomised_map_loss(model, params, anchor, x_device, member_targets, noise, prior_variance)

    loss_and_grad = jax.vmap(jax.value_and_grad(member_loss))

    def step(carry, _):
        params, opt_state = carry
        _, grads = loss_and_grad(params, anchors, targets)
        updates, opt_state = jax.vmap(optimizer.update)(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    run_block = jax.jit(lambda carry, length: jax.lax.scan(step, carry, length=length)[0], static_argnums=1)
    initial_carry = (anchors, jax.vmap(optimizer.init)(anchors))
    return MemberTraining(anchors, targets, loss_and_grad, run_block, initial_carry)


def _member_mesh(num_members: int):
    devices = jax.devices()
    if len(devices) == 1 or num_members % len(devices):
        return None
    return Mesh(np.array(devices), ("member",))


def _progress_enabled(progress: bool) -> bool:
    return progress and sys.stderr.isatty()


def ensemble(
    model,
    x,
    y,
    *,
    key,
    num_members: int = 64,
    num_steps: int = 2000,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-3,
    tolerance: float = 1e-3,
    num_prior_samples: int = 0,
    progress: bool = True,
):
    """Sample the posterior by randomised MAP (sample-then-optimise), all members at once.

    Member s draws an anchor theta_0 from the prior and perturbed targets y + sigma eps, then
    minimises :func:`randomised_map_loss` from the anchor. For models linear in their parameters
    every member is an exact posterior draw; for nonlinear networks the ensemble approximates the
    posterior.

    Members are trained together with ``jax.vmap``; when the number of members divides evenly
    over ``jax.devices()`` they are sharded over a ``member`` mesh axis.

    Parameters
    ----------
    model : a brgnnft model with a fixed Gaussian noise and zero-mean Gaussian prior.
    x : array (n, d); y : array (n,)
    key : jax.random key
    num_members : int
        Ensemble size S (the ``draw`` dimension; ``chain`` has length 1).
    num_steps : int
        Optimiser steps per member.
    optimizer : optax.GradientTransformation, optional
        Defaults to :func:`default_optimizer`: Adam with a cosine decay of the step from
        ``learning_rate`` to a thousandth of it over ``num_steps``.
    tolerance : float
        A member counts as converged when the gradient norm of its loss, relative to that at
        its anchor, has fallen below ``tolerance``.
    num_prior_samples : int
        If > 0, add ``prior`` and ``prior_predictive`` groups.
    progress : bool
        Show a progress bar over optimisation steps (only on a terminal).

    Returns
    -------
    DataTree of the common layout; ``sample_stats`` contains per member ``final_loss``,
    ``grad_norm`` (relative) and ``converged``.
    """
    check_model(model)
    x, y = check_data(model, x, y, key, require_y=True)
    noise = check_fixed_noise(model, "ensemble")
    num_members = check_positive_int("num_members", num_members)
    num_steps = check_positive_int("num_steps", num_steps)
    learning_rate = check_positive("learning_rate", learning_rate)
    if model.likelihood != "gaussian":
        raise ValueError(f"ensemble supports the Gaussian likelihood only, got {model.likelihood!r}: use nuts")
    optimizer = default_optimizer(learning_rate, num_steps) if optimizer is None else optimizer
    key_anchor, key_noise, key_prior, key_predictive = jax.random.split(key, 4)

    training = prepare_member_training(
        model, x, y, noise, num_members=num_members, optimizer=optimizer, key_anchor=key_anchor, key_noise=key_noise
    )
    anchors, y_perturbed, loss_and_grad = training.anchors, training.targets, training.loss_and_grad

    num_blocks = min(num_steps, 50)
    block_sizes = [num_steps // num_blocks + (block < num_steps % num_blocks) for block in range(num_blocks)]
    carry = training.initial_carry
    logger.info("training %d randomised-MAP members for %d steps", num_members, num_steps)
    for length in tqdm(block_sizes, desc="ensemble", unit="block", disable=not _progress_enabled(progress)):
        carry = training.run_block(carry, length)
    params = carry[0]

    _, initial_grad = loss_and_grad(anchors, anchors, y_perturbed)
    final_loss, final_grad = loss_and_grad(params, anchors, y_perturbed)
    relative_grad = _tree_norm(final_grad) / jnp.maximum(_tree_norm(initial_grad), 1e-300)
    converged = relative_grad < tolerance
    if not bool(jnp.all(converged)):
        logger.warning(
            "%d of %d members did not converge (relative gradient norm >= %g after %d steps): "
            "raise num_steps or the learning rate",
            int(jnp.sum(~converged)), num_members, tolerance, num_steps,
        )

    samples = {name: value for name, value in params.items()}
    samples["f"] = model.apply(params, jnp.asarray(x))
    sample_stats = {"final_loss": final_loss, "grad_norm": relative_grad, "converged": converged}
    prior = None
    if num_prior_samples:
        prior = add_chain_axis(draw_prior(model, x, key=key_prior, num_samples=num_prior_samples))
    attrs = {"inference": "ensemble", "num_steps": num_steps, "tolerance": tolerance}
    return build_datatree(
        model,
        x,
        y,
        key=key_predictive,
        posterior=add_chain_axis(samples),
        prior=prior,
        sample_stats=add_chain_axis(sample_stats),
        attrs=attrs,
    )


def _tree_norm(tree):
    leaves = jax.tree.leaves(tree)
    return jnp.sqrt(sum(jnp.sum(leaf.reshape(leaf.shape[0], -1) ** 2, axis=1) for leaf in leaves))
