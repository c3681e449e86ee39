"""Couplings of the field theory an ensemble defines: free action, quartic coupling, and the exact
finite-width four-point function of single-hidden-layer networks."""

import math

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

from brgnnft.models._checks import check_inputs, check_key, check_positive, check_positive_int
from brgnnft.models.correlators import (
    DEFAULT_NUM_BLOCKS,
    Estimate,
    check_estimator_options,
    check_tensor_size,
    apply_to_ensemble,
    correlator,
    jackknife_replicates,
    tuple_layout,
)
from brgnnft.models.kernels import (
    LayerActivation,
    check_variance,
    layer_expectation,
    resolve_kernel_activation,
)


def _check_kernel_matrix(kernel, num_points: int | None = None, name: str = "kernel") -> np.ndarray:
    matrix = np.asarray(kernel, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"{name} must be a square (M, M) matrix, got shape {matrix.shape}")
    if num_points is not None and matrix.shape[0] != num_points:
        raise ValueError(
            f"{name} has shape {matrix.shape} but {num_points} points are selected: "
            f"evaluate the kernel on the same points"
        )
    if not np.all(np.isfinite(matrix)):
        raise ValueError(f"{name} contains NaN or inf")
    if not np.allclose(matrix, matrix.T, rtol=1e-10, atol=1e-12 * np.abs(matrix).max()):
        raise ValueError(f"{name} is not symmetric: pass a covariance matrix")
    try:
        np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        raise ValueError(
            f"{name} is not positive definite: drop duplicate points or add a small jitter to its diagonal"
        ) from None
    return matrix


class FreeAction:
    """The free (Gaussian) action S[phi] = phi^T K^{-1} phi / 2 on a finite set of M points.

    Parameters
    ----------
    kernel : array (M, M)
        Two-point function K of the free theory, symmetric positive definite (e.g. the NNGP
        kernel on the points).

    Notes
    -----
    exp(-S[phi]) / Z with :math:`\\log Z = \\frac12 \\log\\det(2\\pi K)` (:attr:`log_normalizer`)
    is the density of N(0, K). Calls are pure JAX and batch over leading axes of phi.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from brgnnft.models import FreeAction
    >>> action = FreeAction(jnp.array([[2.0, 0.5], [0.5, 1.0]]))
    >>> float(action(jnp.zeros(2)))
    0.0
    """

    def __init__(self, kernel):
        self.kernel = jnp.asarray(_check_kernel_matrix(kernel))
        self.cholesky = jnp.linalg.cholesky(self.kernel)
        num_points = self.kernel.shape[0]
        log_det = 2.0 * jnp.sum(jnp.log(jnp.diag(self.cholesky)))
        self.log_normalizer = 0.5 * (num_points * math.log(2.0 * math.pi) + log_det)

    def __call__(self, phi):
        """Return S[phi] for phi of shape (..., M); the result has shape (...)."""
        phi = jnp.asarray(phi)
        num_points = self.kernel.shape[0]
        if phi.ndim == 0 or phi.shape[-1] != num_points:
            raise ValueError(f"phi must have shape (..., {num_points}), got {phi.shape}")
        flat = phi.reshape(-1, num_points).T
        whitened = jsl.solve_triangular(self.cholesky, flat, lower=True)
        return 0.5 * jnp.sum(whitened**2, axis=0).reshape(phi.shape[:-1])


def free_action(kernel) -> FreeAction:
    """Return the free action S[phi] = phi^T K^{-1} phi / 2 of the kernel K as a callable.

    See :class:`FreeAction`.
    """
    return FreeAction(kernel)


def amputate(four_point: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Contract every leg of a (..., M, M, M, M) tensor with the (M, M) matrix ``precision``."""
    result = four_point
    for _ in range(4):
        # Contracting the first leg and appending the new index last cycles through all four legs.
        result = np.tensordot(result, precision, axes=([-4], [0]))
    return result


def quartic_coupling(
    samples,
    points=None,
    *,
    kernel=None,
    num_blocks: int = DEFAULT_NUM_BLOCKS,
    chunk_size: int | None = None,
    progress: bool = True,
    obs_dim: str = "obs_id",
) -> Estimate:
    """Estimate the leading-order quartic coupling lambda on a set of points, with standard errors.

    Parameters
    ----------
    samples, points, num_blocks, chunk_size, progress, obs_dim
        As in :func:`brgnnft.models.connected_correlator`.
    kernel : array (M, M), optional
        Free two-point function K on the selected points (e.g. the NNGP kernel). When None, the
        ensemble's own connected two-point function (its covariance) is used, recomputed in every
        jackknife replicate.

    Returns
    -------
    Estimate
        ``value`` and ``standard_error`` of shape (..., M, M, M, M).

    Notes
    -----
    To leading order in the connected four-point function (Edgeworth expansion of the field
    density about the Gaussian of covariance K), the action gains
    :math:`\\frac{1}{4!}\\sum \\lambda_{ijkl} \\phi_i \\phi_j \\phi_k \\phi_l` with

    .. math:: \\lambda(x_1, \\ldots, x_4) = -\\sum_{y_1 \\ldots y_4} G_c^{(4)}(y_1, \\ldots, y_4)
              \\prod_{i=1}^4 K^{-1}(y_i, x_i),

    the connected four-point function with each leg amputated. The standard error is the block
    jackknife of :func:`connected_correlator` carried through the amputation.

    References
    ----------
    .. [1] M. Demirtas, J. Halverson, A. Maiti, M. D. Schwartz, K. Stoner, "Neural Network Field
       Theories: Non-Gaussianity, Actions, and Locality", arXiv:2307.03223.
    .. [2] J. Halverson, A. Maiti, K. Stoner, "Neural Networks and Quantum Field Theory",
       arXiv:2008.08601.
    """
    num_blocks, chunk_size, show = check_estimator_options(num_blocks, chunk_size, progress)
    fixed_precision = None
    if kernel is not None:
        num_selected = None if points is None else len(points)
        fixed_precision = np.linalg.inv(_check_kernel_matrix(kernel, num_selected))

    def estimate(array: np.ndarray):
        num_points = array.shape[-1]
        check_tensor_size(num_points, 4, copies=4)
        if fixed_precision is not None and fixed_precision.shape[0] != num_points:
            raise ValueError(
                f"kernel has shape {fixed_precision.shape} but {num_points} points are selected: "
                "evaluate the kernel on the same points"
            )
        replicates, layout, blocks = jackknife_replicates(
            array, [2, 4], connected=True, num_blocks=num_blocks, chunk_size=chunk_size, progress=show
        )

        def coupling(row: int) -> np.ndarray:
            precision = fixed_precision
            if precision is None:
                precision = np.linalg.inv(_check_kernel_matrix(layout.expand(replicates[2][row], 2), name="covariance"))
            return -amputate(layout.expand(replicates[4][row], 4), precision)

        # Running mean and sum of squared deviations (Welford) over the B leave-one-out values.
        mean = np.zeros((num_points,) * 4)
        squares = np.zeros_like(mean)
        for count, row in enumerate(range(1, blocks + 1), start=1):
            value = coupling(row)
            delta = value - mean
            mean += delta / count
            squares += delta * (value - mean)
        standard_error = np.sqrt((blocks - 1) / blocks * squares)
        return coupling(0), standard_error, blocks

    return apply_to_ensemble(samples, points, 4, estimate, obs_dim=obs_dim)


# ---------------------------------------------------------------------------------------------
# Exact finite-width four-point function of a single hidden layer.


def _sign_vectors(num_legs: int, *, balanced: bool) -> np.ndarray:
    signs = np.array(list(np.ndindex((2,) * num_legs))) * 2 - 1
    if balanced:
        signs = signs[signs.sum(axis=1) == 0]
    return signs.astype(np.float64)


def _closed_form_four_point_moment(name: str, covariance: np.ndarray, quadruples: np.ndarray) -> np.ndarray | None:
    """E[g_i g_j g_k g_l] for the preactivation covariance ``covariance``, or None if no closed form.

    ``quadruples`` is (Q, 4) point indices. Closed forms: identity (Isserlis); cos and cosnet
    (cos(z + c), c ~ U[-pi, pi]) from cos(z) = Re exp(i z), which gives
    2^-4 sum_s exp(-s^T K s / 2) over sign vectors s (only those with sum 0 for cosnet); gaussnet
    exp(z - K_zz) from the Gaussian moment generating function.
    """
    block = covariance[quadruples[:, :, None], quadruples[:, None, :]]
    if name == "identity":
        return block[:, 0, 1] * block[:, 2, 3] + block[:, 0, 2] * block[:, 1, 3] + block[:, 0, 3] * block[:, 1, 2]
    if name in ("cos", "cosnet"):
        signs = _sign_vectors(4, balanced=name == "cosnet")
        quadratic = np.einsum("sa,qab,sb->qs", signs, block, signs)
        return np.exp(-0.5 * quadratic).sum(axis=1) / 16.0
    if name == "gaussnet":
        diagonal = np.einsum("qaa->q", block)
        return np.exp(0.5 * block.sum(axis=(1, 2)) - diagonal)
    return None


def _neuron_samples(activation: LayerActivation, preactivations: jax.Array, phases: jax.Array, variances: jax.Array):
    """Return g = phi(z) for preactivation draws z (D, M), with the kernel-only layers built in."""
    if activation.name == "cosnet":
        return jnp.cos(preactivations + phases[:, None])
    if activation.name == "gaussnet":
        return jnp.exp(preactivations - variances[None, :])
    return activation.function(preactivations)


def single_layer_connected_four_point(
    x,
    *,
    width: int,
    activation="relu",
    weight_var: float = 1.0,
    bias_var: float = 1.0,
    bias: bool = True,
    readout_var: float | None = None,
    method: str = "auto",
    key=None,
    num_draws: int = 1_000_000,
) -> Estimate:
    """Compute the exact connected four-point function of a single-hidden-layer network of width N.

    The network is f(x) = sum_{i <= N} a_i g(x; w_i, b_i) (+ an independent Gaussian output bias,
    which leaves G_c^(4) unchanged) with g = phi(w.x + b), w ~ N(0, sigma_w^2 / d),
    b ~ N(0, sigma_b^2) and a_i ~ N(0, sigma_a^2 / N): ``MLP(hidden=(N,), ...)`` with
    sigma_a^2 = ``weight_var``.

    Parameters
    ----------
    x : array (M, d)
        Points.
    width : int
        Hidden width N.
    activation : str or callable
        As in :func:`brgnnft.models.nngp_kernel`, including "cosnet" and "gaussnet".
    weight_var, bias_var, bias
        Prior of the hidden layer, as in :class:`brgnnft.models.MLP`.
    readout_var : float, optional
        sigma_a^2; defaults to ``weight_var``, the MLP's readout prior.
    method : {"auto", "monte_carlo"}
        How the four-point neuron moment E_w[g_1 g_2 g_3 g_4] is computed. "auto" uses the
        closed form for "identity", "cos", "cosnet" and "gaussnet" and Monte Carlo otherwise.
    key : jax.random key
        Needed when Monte Carlo is used.
    num_draws : int
        Monte Carlo draws of (w, b).

    Returns
    -------
    Estimate
        ``value`` (M, M, M, M) and ``standard_error``: zero for a closed form, else the Monte
        Carlo standard error (block jackknife over draws) of the four-point neuron moment,
        propagated through the formula. ``num_samples`` is the number of draws (0 for a closed
        form).

    Notes
    -----
    N times the fourth cumulant of one neuron's contribution a_i g_i, with
    E a^4 = 3 (sigma_a^2 / N)^2:

    .. math:: G_c^{(4)}(1234) = \\frac{\\sigma_a^4}{N} \\Big[3\\, E_w(g_1 g_2 g_3 g_4)
              - \\big(E_w(g_1 g_2) E_w(g_3 g_4) + E_w(g_1 g_3) E_w(g_2 g_4)
              + E_w(g_1 g_4) E_w(g_2 g_3)\\big)\\Big].

    The pair moments E_w(g_i g_j) are the NNGP layer expectations (closed form, or
    Gauss-Hermite quadrature for activations without one).

    References
    ----------
    .. [1] J. Halverson, A. Maiti, K. Stoner, "Neural Networks and Quantum Field Theory",
       arXiv:2008.08601.
    .. [2] J. N. Howard, M. S. Klinger, A. Maiti, A. G. Stapleton, "Bayesian RG Flow in Neural
       Network Field Theories", arXiv:2405.17538.
    """
    x = np.asarray(check_inputs(x, "x"), dtype=np.float64)
    width = check_positive_int("width", width)
    layer = resolve_kernel_activation(activation)
    weight_var = check_positive("weight_var", weight_var)
    bias_var = check_variance("bias_var", bias_var) if bias else 0.0
    readout_var = weight_var if readout_var is None else check_positive("readout_var", readout_var)
    if method not in ("auto", "monte_carlo"):
        raise ValueError(f"invalid method={method!r}: expected one of 'auto', 'monte_carlo'")
    num_points, input_dim = x.shape
    check_tensor_size(num_points, 4, copies=2)

    covariance = bias_var + weight_var * (x @ x.T) / input_dim
    diagonal = np.diag(covariance)
    pair = np.asarray(
        layer_expectation(layer, jnp.asarray(diagonal[:, None]), jnp.asarray(covariance), jnp.asarray(diagonal[None, :]))
    )

    four_point = None
    if method == "auto":
        layout = tuple_layout(num_points, 4)
        moment = _closed_form_four_point_moment(layer.name, covariance, layout.tuples[4])
        if moment is not None:
            four_point = Estimate(layout.expand(moment, 4), np.zeros((num_points,) * 4), 0, 0)
    if four_point is None:
        four_point = _monte_carlo_four_point_moment(
            layer, x, weight_var=weight_var, bias_var=bias_var, key=key, num_draws=num_draws
        )

    disconnected = (
        np.einsum("ij,kl->ijkl", pair, pair) + np.einsum("ik,jl->ijkl", pair, pair) + np.einsum("il,jk->ijkl", pair, pair)
    )
    scale = readout_var**2 / width
    value = scale * (3.0 * four_point.value - disconnected)
    standard_error = 3.0 * scale * four_point.standard_error
    return Estimate(value, standard_error, four_point.num_samples, four_point.num_blocks)


def _monte_carlo_four_point_moment(layer: LayerActivation, x: np.ndarray, *, weight_var, bias_var, key, num_draws) -> Estimate:
    if key is None:
        raise ValueError(
            f"the four-point neuron moment of activation {layer.name!r} has no closed form and needs Monte "
            "Carlo: pass key=jax.random.key(0) (or any seed)"
        )
    key = check_key(key)
    num_draws = check_positive_int("num_draws", num_draws)
    num_points, input_dim = x.shape
    key_weights, key_biases, key_phases = jax.random.split(key, 3)

    weights = jnp.sqrt(weight_var / input_dim) * jax.random.normal(key_weights, (num_draws, input_dim))
    biases = jnp.sqrt(bias_var) * jax.random.normal(key_biases, (num_draws,))
    phases = jax.random.uniform(key_phases, (num_draws,), minval=-jnp.pi, maxval=jnp.pi)
    variances = bias_var + weight_var * jnp.sum(jnp.asarray(x) ** 2, axis=1) / input_dim
    preactivations = weights @ jnp.asarray(x).T + biases[:, None]
    neurons = np.asarray(_neuron_samples(layer, preactivations, phases, variances))
    return correlator(neurons, order=4, progress=False)
