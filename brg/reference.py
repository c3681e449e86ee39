"""Reference points at which the Fisher metric of a flow is evaluated: the MAP or the posterior mean."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax

from brgnnft.brg._flatten import ParamLayout

logger = logging.getLogger(__name__)


def negative_log_joint(model, layout: ParamLayout, variances, x, y, noise):
    """Return theta (P,) -> -log p(y | theta) - log p(theta), up to constants (Gaussian likelihood)."""
    def loss(theta):
        params = layout.unflatten(theta)
        residual = y - model.apply(params, x)
        return 0.5 * jnp.sum(residual**2) / noise**2 + 0.5 * jnp.sum(theta**2 / variances)

    return loss


def find_map(model, samples_flat: np.ndarray, layout: ParamLayout, variances, x, y, noise, *, max_steps: int = 500):
    """Return the MAP estimate (P,), refined by L-BFGS from the sample of highest posterior density.

    Starting at the best posterior sample keeps the search inside the mode the samples occupy,
    which matters for networks whose posterior has symmetric copies of every mode.
    """
    loss = jax.jit(negative_log_joint(model, layout, jnp.asarray(variances), jnp.asarray(x), jnp.asarray(y), noise))
    start = samples_flat[int(np.argmin(np.asarray(jax.vmap(loss)(jnp.asarray(samples_flat)))))]

    optimizer = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry, _):
        theta, state = carry
        value, grad = value_and_grad(theta, state=state)
        updates, state = optimizer.update(grad, state, theta, value=value, grad=grad, value_fn=loss)
        return (optax.apply_updates(theta, updates), state), value

    theta = jnp.asarray(start)
    (theta, _), values = jax.lax.scan(step, (theta, optimizer.init(theta)), length=max_steps)
    logger.info("MAP search: negative log joint %.6g -> %.6g", float(values[0]), float(values[-1]))
    return np.asarray(theta)


def reference_point(model, samples_flat, layout, variances, x, y, noise, *, reference: str) -> np.ndarray:
    """Return the reference point (P,) of a flow: "map" or "posterior_mean"."""
    if reference == "posterior_mean":
        return samples_flat.mean(axis=0)
    if model.likelihood != "gaussian" or noise is None:
        raise ValueError(
            "reference='map' needs a Gaussian likelihood with a fixed noise: use reference='posterior_mean'"
        )
    return find_map(model, samples_flat, layout, variances, x, y, noise)
