"""Infinite-width (NNGP) kernels of fully connected networks, by closed form or quadrature.

The kernel of a network with the 1/fan-in prior W_l ~ N(0, sigma_w^2 / N_{l-1}),
b_l ~ N(0, sigma_b^2) follows layer by layer from the Gaussian expectation
E[phi(u) phi(v)] with (u, v) ~ N(0, Sigma_l). This module computes that expectation, by closed
form where one exists and by two-dimensional Gauss-Hermite quadrature otherwise, and runs the
recursion. The neural tangent kernel, which needs the same expectation of phi', is in
``brgnnft.models.ntk``.
"""

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from brgnnft.models._checks import check_positive_int
from brgnnft.models.activations import ACTIVATIONS, resolve_activation

DEFAULT_QUADRATURE_ORDER = 64

# Names with a layer map that is not a pointwise activation: "cosnet" is cos(u + c) with a phase
# c ~ U[-pi, pi], and "gaussnet" is exp(u) / sqrt(E[exp(2u)]).
KERNEL_ONLY_ACTIVATIONS = ("cosnet", "gaussnet")

CLOSED_FORM_ACTIVATIONS = ("relu", "erf", "identity", "cos", "cosnet", "gaussnet")


class LayerActivation(NamedTuple):
    """One hidden layer's activation, as the kernel recursion uses it.

    ``name`` selects a closed form when it is one of ``CLOSED_FORM_ACTIVATIONS``; otherwise
    ``function`` is integrated by quadrature.
    """

    name: str
    function: Callable | None


def resolve_kernel_activation(activation) -> LayerActivation:
    """Return the :class:`LayerActivation` for a name or a callable.

    A callable gets a closed form only when it is the very function that ``ACTIVATIONS`` maps a
    closed-form name to (``jax.nn.relu``, ``jax.scipy.special.erf``, ``jnp.cos``, ...). Any other
    callable is integrated by quadrature, whatever its ``__name__``.
    """
    if isinstance(activation, str) and activation in KERNEL_ONLY_ACTIVATIONS:
        return LayerActivation(activation, None)
    if callable(activation):
        for name, function in ACTIVATIONS.items():
            if activation is function:
                return LayerActivation(name, function)
        return LayerActivation("quadrature", activation)
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        known = ", ".join(sorted((*ACTIVATIONS, *KERNEL_ONLY_ACTIVATIONS)))
        raise ValueError(f"invalid activation {activation!r}: use one of {known}, or pass a callable")
    name, function = resolve_activation(activation)
    return LayerActivation(name, function)


def gauss_hermite_rule(order: int) -> tuple[np.ndarray, np.ndarray]:
    """Return nodes and weights of the ``order``-point Gauss-Hermite rule for N(0, 1).

    ``sum(weights * g(nodes))`` approximates E[g(z)], z ~ N(0, 1), exactly for polynomials of
    degree below 2 * order.
    """
    nodes, weights = np.polynomial.hermite_e.hermegauss(order)
    return nodes, weights / np.sqrt(2.0 * np.pi)


def _correlation(k11, k12, k22):
    """Return the correlation k12 / sqrt(k11 k22), clipped to [-1, 1] against rounding."""
    return jnp.clip(k12 / jnp.sqrt(k11 * k22), -1.0, 1.0)


def _relu_expectation(k11, k12, k22):
    # Arc-cosine kernel of degree 1 (Cho and Saul 2009) with sqrt(k11 k22) sin(theta) written as
    # sqrt(k11 k22 - k12^2) and theta = atan2 of that and k12. This avoids the division, the
    # clip and the ill-conditioned arccos near theta = 0 (and ran faster in bench_kernels.py).
    sine_term = jnp.sqrt(jnp.maximum(k11 * k22 - k12**2, 0.0))
    theta = jnp.arctan2(sine_term, k12)
    return (sine_term + (jnp.pi - theta) * k12) / (2.0 * jnp.pi)


def _erf_expectation(k11, k12, k22):
    argument = 2.0 * k12 / jnp.sqrt((1.0 + 2.0 * k11) * (1.0 + 2.0 * k22))
    return (2.0 / jnp.pi) * jnp.arcsin(jnp.clip(argument, -1.0, 1.0))


def _identity_expectation(k11, k12, k22):
    return k12


def _cos_expectation(k11, k12, k22):
    # cos u cos v = (cos(u - v) + cos(u + v)) / 2 and E cos(s) = exp(-Var(s) / 2).
    return 0.5 * (jnp.exp(-0.5 * (k11 - 2.0 * k12 + k22)) + jnp.exp(-0.5 * (k11 + 2.0 * k12 + k22)))


def _cosnet_expectation(k11, k12, k22):
    # The uniform phase averages cos(u + v + 2c) away, leaving E cos(u - v) / 2.
    return 0.5 * jnp.exp(-0.5 * (k11 - 2.0 * k12 + k22))


def _gaussnet_expectation(k11, k12, k22):
    # exp(u - k11) exp(v - k22) has mean exp((k11 + 2 k12 + k22) / 2 - k11 - k22).
    return jnp.exp(-0.5 * (k11 - 2.0 * k12 + k22))


_CLOSED_FORMS = {
    "relu": _relu_expectation,
    "erf": _erf_expectation,
    "identity": _identity_expectation,
    "cos": _cos_expectation,
    "cosnet": _cosnet_expectation,
    "gaussnet": _gaussnet_expectation,
}


def quadrature_expectation(function: Callable, k11, k12, k22, *, order: int = DEFAULT_QUADRATURE_ORDER):
    """Compute E[g(u) g(v)] for (u, v) ~ N(0, [[k11, k12], [k12, k22]]) by Gauss-Hermite quadrature.

    Parameters
    ----------
    function : callable
        Elementwise function g, traceable by JAX.
    k11, k12, k22 : arrays broadcastable to one shape (...)
        Variances and covariance of (u, v).
    order : int
        Nodes per dimension q. The rule has q^2 nodes and is exact when g(u) g(v) is a
        polynomial of degree below 2q in each standard normal coordinate.

    Returns
    -------
    array (...)

    Notes
    -----
    With z1, z2 independent standard normal and rho the correlation,
    u = sqrt(k11) z1 and v = sqrt(k22) (rho z1 + sqrt(1 - rho^2) z2), so

    .. math:: E[g(u) g(v)] \\approx \\sum_{i,j} w_i w_j\\, g(\\sqrt{k_{11}} z_i)\\,
              g(\\sqrt{k_{22}}(\\rho z_i + \\sqrt{1-\\rho^2} z_j)).

    The sum runs as a scan over the q outer nodes with the inner nodes vectorised, so memory is
    q times the size of the output. For kinked functions such as ReLU the error falls only
    algebraically in q; :func:`nngp_kernel` with ``return_error=True`` reports it.
    """
    order = check_positive_int("quadrature_order", order)
    nodes, weights = gauss_hermite_rule(order)
    k11, k12, k22 = jnp.broadcast_arrays(jnp.asarray(k11), jnp.asarray(k12), jnp.asarray(k22))
    rho = _correlation(k11, k12, k22)
    scale1 = jnp.sqrt(k11)
    scale2 = jnp.sqrt(k22)
    complement = jnp.sqrt(jnp.maximum(1.0 - rho**2, 0.0))
    inner_nodes = jnp.asarray(nodes).reshape((order,) + (1,) * k11.ndim)
    inner_weights = jnp.asarray(weights).reshape((order,) + (1,) * k11.ndim)

    def add_outer_node(total, node_and_weight):
        node, weight = node_and_weight
        outer_value = function(scale1 * node)
        v = scale2[None] * (rho[None] * node + complement[None] * inner_nodes)
        inner_value = jnp.sum(inner_weights * function(v), axis=0)
        return total + weight * outer_value * inner_value, None

    total, _ = jax.lax.scan(
        add_outer_node,
        jnp.zeros_like(k12 * 1.0),
        (jnp.asarray(nodes, dtype=k12.dtype), jnp.asarray(weights, dtype=k12.dtype)),
    )
    return total


def layer_expectation(activation: LayerActivation, k11, k12, k22, *, quadrature_order: int = DEFAULT_QUADRATURE_ORDER):
    """Return E[phi(u) phi(v)] for (u, v) ~ N(0, [[k11, k12], [k12, k22]]), closed form if known."""
    closed_form = _CLOSED_FORMS.get(activation.name)
    if closed_form is not None:
        return closed_form(k11, k12, k22)
    return quadrature_expectation(activation.function, k11, k12, k22, order=quadrature_order)


def check_points(x, name: str):
    """Check that ``x`` is a numeric (n, d) array; works on JAX tracers, whose values stay unread."""
    if not hasattr(x, "shape"):
        x = np.asarray(x)
    if len(x.shape) != 2:
        raise ValueError(
            f"{name} must be 2-D with shape (n, d), got shape {tuple(x.shape)}: "
            f"reshape a single feature with {name}.reshape(-1, 1)"
        )
    if not jnp.issubdtype(x.dtype, jnp.number):
        raise TypeError(f"{name} must be numeric, got dtype {x.dtype}")
    if not isinstance(x, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(x))):
        raise ValueError(f"{name} contains NaN or inf: drop or impute such rows before calling")
    return jnp.asarray(x)


def check_variance(name: str, value) -> float:
    """Return ``value`` as a float if it is finite and >= 0, else raise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a non-negative number, got {value!r}") from None
    if not np.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


class KernelConfig(NamedTuple):
    """Validated configuration shared by the NNGP and NTK recursions."""

    activations: tuple[LayerActivation, ...]
    weight_var: float
    bias_var: float
    input_dim: int
    quadrature_order: int


def check_kernel_config(x1, x2, *, activations, weight_var, bias_var, bias, input_dim, quadrature_order):
    """Validate the arguments of the kernel recursions; return (x1, x2, KernelConfig)."""
    x1 = check_points(x1, "x1")
    x2 = check_points(x2, "x2")
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(
            f"x1 and x2 must have the same number of features, got x1 {tuple(x1.shape)} and "
            f"x2 {tuple(x2.shape)}"
        )
    if isinstance(activations, str) or callable(activations) or not isinstance(activations, Sequence):
        raise TypeError(
            f"activations must be a sequence with one entry per hidden layer, got {activations!r}: "
            f"wrap a single activation as ({activations!r},)"
        )
    resolved = tuple(resolve_kernel_activation(entry) for entry in activations)
    weight_var = check_variance("weight_var", weight_var)
    bias_var = check_variance("bias_var", bias_var) if bias else 0.0
    input_dim = x1.shape[1] if input_dim is None else check_positive_int("input_dim", input_dim)
    quadrature_order = check_positive_int("quadrature_order", quadrature_order)
    config = KernelConfig(resolved, weight_var, bias_var, input_dim, quadrature_order)
    return x1, x2, config


def _first_layer(x1, x2, config: KernelConfig, symmetric: bool):
    """Return (k11 (n1, 1), k12 (n1, n2), k22 (1, n2)) of the first layer's pre-activations."""
    scale = config.weight_var / config.input_dim
    k12 = config.bias_var + scale * (x1 @ x2.T)
    if symmetric:
        diagonal = jnp.diagonal(k12)
        return diagonal[:, None], k12, diagonal[None, :]
    k11 = config.bias_var + scale * jnp.sum(x1 * x1, axis=1, keepdims=True)
    k22 = config.bias_var + scale * jnp.sum(x2 * x2, axis=1, keepdims=True).T
    return k11, k12, k22


def _next_layer(activation, k11, k12, k22, config: KernelConfig, quadrature_order: int, symmetric: bool):
    """Map the pre-activation covariances of layer l to those of layer l + 1."""

    def propagate(a, b, c):
        return config.bias_var + config.weight_var * layer_expectation(
            activation, a, b, c, quadrature_order=quadrature_order
        )

    cross = propagate(k11, k12, k22)
    if not symmetric:
        return propagate(k11, k11, k11), cross, propagate(k22, k22, k22)

    # Write the variances into the diagonal so that k12 == k11 == k22 is exact there in the
    # next layer. A select on iota indices fuses with the elementwise map, unlike reading the
    # diagonal back out of ``cross``.
    variances = propagate(k11, k11, k11)
    rows = jax.lax.broadcasted_iota(jnp.int32, cross.shape, 0)
    columns = jax.lax.broadcasted_iota(jnp.int32, cross.shape, 1)
    cross = jnp.where(rows == columns, variances, cross)
    return variances, cross, variances.T


@functools.partial(jax.jit, static_argnames=("config", "quadrature_order", "symmetric"))
def nngp_layers(x1, x2, config: KernelConfig, *, quadrature_order: int | None = None, symmetric: bool = False):
    """Return the list of (k11, k12, k22) for layers 1..L, with shapes (n1, 1), (n1, n2), (1, n2).

    With ``symmetric=True`` (x2 is x1) the diagonal of the cross covariance is set to the
    variances, so that k12 == k11 == k22 is exact there. Otherwise rounding leaves
    k11 k22 - k12^2 at about 1e-16 k^2 where it should vanish, and the ReLU and arc-cosine forms,
    which take its square root, would be off by about 1e-8 relative on the diagonal.

    Jitted with the configuration static, so eager calls compile once per configuration and
    input shapes, and calls inside an outer ``jax.jit`` are inlined.
    """
    order = config.quadrature_order if quadrature_order is None else quadrature_order
    layers = [_first_layer(x1, x2, config, symmetric)]
    for activation in config.activations:
        layers.append(_next_layer(activation, *layers[-1], config, order, symmetric))
    return layers


def nngp_kernel(
    x1,
    x2=None,
    *,
    activations: Sequence,
    weight_var: float = 1.0,
    bias_var: float = 1.0,
    bias: bool = True,
    input_dim: int | None = None,
    quadrature_order: int = DEFAULT_QUADRATURE_ORDER,
    return_error: bool = False,
):
    """Compute the NNGP kernel of a fully connected network's output.

    Parameters
    ----------
    x1 : array (n1, d)
    x2 : array (n2, d), optional
        Defaults to ``x1``.
    activations : sequence of str or callable
        One entry per hidden layer (empty for a linear model). Names with closed forms: "relu",
        "erf", "identity", "cos", "cosnet" (cos(u + c) with c ~ U[-pi, pi]), "gaussnet"
        (exp(u) / sqrt(E[exp(2u)])). Other names from ``ACTIVATIONS`` ("tanh", "gelu",
        "sigmoid") and any other callable are integrated by Gauss-Hermite quadrature.
    weight_var, bias_var : float
        sigma_w^2 and sigma_b^2 of the prior W_l ~ N(0, sigma_w^2 / N_{l-1}), b_l ~ N(0, sigma_b^2).
    bias : bool
        Whether the layers have biases; with False, ``bias_var`` is ignored.
    input_dim : int, optional
        Fan-in d of the first layer; defaults to the number of columns of ``x1``.
    quadrature_order : int
        Gauss-Hermite nodes per dimension for activations without a closed form.
    return_error : bool
        Also return an error estimate of the quadrature: the largest absolute difference
        between the kernel at ``quadrature_order`` and at twice that order (0 when every layer
        has a closed form).

    Returns
    -------
    kernel : array (n1, n2)
    error : float array, only with ``return_error=True``

    Notes
    -----
    The recursion (Neal 1996; Lee et al. 2018; Matthews et al. 2018) is

    .. math::

        K^{(1)}(x, x') = \\sigma_b^2 + \\sigma_w^2 \\frac{x \\cdot x'}{d}, \\qquad
        K^{(l+1)}(x, x') = \\sigma_b^2 + \\sigma_w^2\\,
            \\mathbb{E}_{(u, v) \\sim N(0, \\Sigma_l)}[\\phi_l(u)\\, \\phi_l(v)],

    with :math:`\\Sigma_l` the 2x2 matrix of :math:`K^{(l)}` on (x, x'). Closed forms, with
    :math:`\\theta = \\arccos(K_{12} / \\sqrt{K_{11} K_{22}})`: ReLU
    :math:`(\\sqrt{K_{11}K_{22} - K_{12}^2} + (\\pi - \\theta) K_{12}) / 2\\pi`;
    erf :math:`(2/\\pi) \\arcsin(2 K_{12} / \\sqrt{(1 + 2K_{11})(1 + 2K_{22})})`;
    cos :math:`(e^{-(K_{11} - 2K_{12} + K_{22})/2} + e^{-(K_{11} + 2K_{12} + K_{22})/2}) / 2`;
    cosnet :math:`e^{-(K_{11} - 2K_{12} + K_{22})/2} / 2`; gaussnet
    :math:`e^{-(K_{11} - 2K_{12} + K_{22})/2}`.

    The function is pure and can be jitted with ``activations`` and the other keywords static.

    References
    ----------
    .. [1] J. Lee et al., "Deep Neural Networks as Gaussian Processes", arXiv:1711.00165.
    .. [2] A. G. de G. Matthews et al., "Gaussian Process Behaviour in Wide Deep Neural
       Networks", arXiv:1804.11271.
    .. [3] Y. Cho, L. Saul, "Kernel Methods for Deep Learning", NIPS 2009.
    .. [4] C. K. I. Williams, "Computing with Infinite Networks", NIPS 1997.
    .. [5] J. Halverson, "Building Quantum Field Theories Out of Neurons", arXiv:2112.04527.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from brgnnft.models import nngp_kernel
    >>> x = jnp.linspace(-1.0, 1.0, 5).reshape(-1, 1)
    >>> nngp_kernel(x, activations=("relu", "relu")).shape
    (5, 5)
    """
    symmetric = x2 is None or x2 is x1
    x2 = x1 if x2 is None else x2
    x1, x2, config = check_kernel_config(
        x1, x2, activations=activations, weight_var=weight_var, bias_var=bias_var, bias=bias,
        input_dim=input_dim, quadrature_order=quadrature_order,
    )
    kernel = nngp_layers(x1, x2, config, symmetric=symmetric)[-1][1]
    if not return_error:
        return kernel

    needs_quadrature = any(layer.name not in _CLOSED_FORMS for layer in config.activations)
    if not needs_quadrature:
        return kernel, jnp.zeros((), dtype=kernel.dtype)
    refined = nngp_layers(x1, x2, config, quadrature_order=2 * config.quadrature_order, symmetric=symmetric)[-1][1]
    return kernel, jnp.max(jnp.abs(refined - kernel))
