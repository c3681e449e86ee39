"""Pure JAX functions of the Fisher metric at one parameter value: matrix, Gram, diagonal, products.

Unlike :func:`brgnnft.brg.fisher_information` these return JAX arrays and contain no NumPy or SciPy
step, so they run under ``jax.jit`` (close over the model and x) and ``jax.vmap`` over parameter
samples. They compute in float64, and the checks that need concrete values (finite inputs) run only
outside such transforms.
"""

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from brgnnft.brg._flatten import in_float64
from brgnnft.brg.fisher_jacobian import build_jacobian, prepare_problem


@in_float64
def fisher_matrix(model, params, x, *, noise=None, per_datum: bool = False, structured: bool = False) -> jax.Array:
    """Return the Fisher information I(theta), shape (P, P), in the flatten order of the sites.

    Parameters
    ----------
    model, params, x, noise, per_datum
        As for :func:`brgnnft.brg.fisher_information`; ``params`` is one parameter value.
    structured : bool
        Form I from the factored Jacobian of dense layers; the default (False) uses autodiff
        Jacobians, the independent reference.

    Notes
    -----
    I = sum_i J_i^T H_out(f(x_i)) J_i (divided by n when ``per_datum``).
    """
    problem = prepare_problem(model, params, x, noise=noise, per_datum=per_datum)
    jacobian = build_jacobian(problem, structured=structured)
    return jacobian.dense()


@in_float64
def fisher_gram(model, params, x, *, noise=None, per_datum: bool = False, structured: bool = True) -> jax.Array:
    """Return the NTK Gram Theta = J~ J~^T, shape (n K, n K), rows ordered (datum, output).

    J~ = L^T J with L L^T = H_out, so the nonzero eigenvalues of Theta are those of I. For the
    Gaussian likelihood Theta = J J^T / sigma^2, the empirical NTK over sigma^2.
    """
    problem = prepare_problem(model, params, x, noise=noise, per_datum=per_datum)
    return build_jacobian(problem, structured=structured).gram()


@in_float64
def fisher_diagonal(model, params, x, *, noise=None, per_datum: bool = False, structured: bool = True) -> dict:
    """Return the diagonal I_AA in the parameter layout (site name to array of the site's shape)."""
    problem = prepare_problem(model, params, x, noise=noise, per_datum=per_datum)
    diagonal = build_jacobian(problem, structured=structured).diagonal()
    return problem.layout.unflatten(diagonal)


@in_float64
def fisher_vector_product(model, params, x, vector, *, noise=None, per_datum: bool = False, structured: bool = True):
    """Return I v without forming I: J~^T (J~ v) by a forward then a reverse pass (or factor products).

    ``vector`` is a dict of sites (returns a dict) or flat vectors (..., P) (returns (..., P));
    leading axes of either are batched.
    """
    problem = prepare_problem(model, params, x, noise=noise, per_datum=per_datum)
    jacobian = build_jacobian(problem, structured=structured)
    if isinstance(vector, Mapping):
        flat = problem.layout.flatten(vector).astype(jnp.float64)
        return problem.layout.unflatten(jacobian.rmatvec(jacobian.matvec(flat)))
    flat = jnp.asarray(vector, dtype=jnp.float64)
    if flat.ndim == 0 or flat.shape[-1] != problem.layout.size:
        raise ValueError(f"vector has shape {flat.shape}, expected (..., {problem.layout.size}) or a dict of sites")
    return jacobian.rmatvec(jacobian.matvec(flat))

