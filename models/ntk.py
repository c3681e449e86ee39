"""Infinite-width neural tangent kernels (NTK) of fully connected networks.

The NTK recursion needs, beside the NNGP expectation E[phi(u) phi(v)], the expectation of the
derivatives E[phi'(u) phi'(v)] under the same Gaussian. This module contains the closed forms of the
derivative expectation, its Gauss-Hermite fallback and the recursion itself.
"""

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from brgnnft.models.kernels import (
    DEFAULT_QUADRATURE_ORDER,
    KernelConfig,
    LayerActivation,
    check_kernel_config,
    nngp_layers,
    quadrature_expectation,
)


def _relu_derivative_expectation(k11, k12, k22):
    # Arc-cosine kernel of degree 0: P(u > 0, v > 0) = (pi - theta) / (2 pi), with theta as in
    # the degree-1 kernel of brgnnft.models.kernels.
    theta = jnp.arctan2(jnp.sqrt(jnp.maximum(k11 * k22 - k12**2, 0.0)), k12)
    return (jnp.pi - theta) / (2.0 * jnp.pi)


def _erf_derivative_expectation(k11, k12, k22):
    # erf'(u) = (2 / sqrt(pi)) exp(-u^2), and E[exp(-u^2 - v^2)] = det(I + 2 Sigma)^(-1/2).
    determinant = (1.0 + 2.0 * k11) * (1.0 + 2.0 * k22) - 4.0 * k12**2
    return (4.0 / jnp.pi) / jnp.sqrt(determinant)


def _identity_derivative_expectation(k11, k12, k22):
    return jnp.ones_like(k12 * 1.0)


def _cos_derivative_expectation(k11, k12, k22):
    # sin u sin v = (cos(u - v) - cos(u + v)) / 2.
    return 0.5 * (jnp.exp(-0.5 * (k11 - 2.0 * k12 + k22)) - jnp.exp(-0.5 * (k11 + 2.0 * k12 + k22)))


def _cosnet_derivative_expectation(k11, k12, k22):
    # sin(u + c) sin(v + c) averages over the phase c to cos(u - v) / 2.
    return 0.5 * jnp.exp(-0.5 * (k11 - 2.0 * k12 + k22))


def _gaussnet_derivative_expectation(k11, k12, k22):
    # The normalisation does not depend on the parameters, so phi' = phi.
    return jnp.exp(-0.5 * (k11 - 2.0 * k12 + k22))


_DERIVATIVE_CLOSED_FORMS = {
    "relu": _relu_derivative_expectation,
    "erf": _erf_derivative_expectation,
    "identity": _identity_derivative_expectation,
    "cos": _cos_derivative_expectation,
    "cosnet": _cosnet_derivative_expectation,
    "gaussnet": _gaussnet_derivative_expectation,
}


def elementwise_derivative(function: Callable) -> Callable:
    """Return the elementwise derivative of a scalar activation, for arrays of any shape."""
    scalar_derivative = jax.grad(function)

    def derivative(u):
        return jax.vmap(scalar_derivative)(u.ravel()).reshape(u.shape)

    return derivative


def derivative_expectation(activation: LayerActivation, k11, k12, k22, *, quadrature_order: int = DEFAULT_QUADRATURE_ORDER):
    """Return E[phi'(u) phi'(v)] for (u, v) ~ N(0, [[k11, k12], [k12, k22]]), closed form if known."""
    closed_form = _DERIVATIVE_CLOSED_FORMS.get(activation.name)
    if closed_form is not None:
        return closed_form(k11, k12, k22)
    return quadrature_expectation(
        elementwise_derivative(activation.function), k11, k12, k22, order=quadrature_order
    )


@functools.partial(jax.jit, static_argnames=("config", "quadrature_order", "symmetric"))
def _ntk_recursion(x1, x2, config: KernelConfig, quadrature_order: int, symmetric: bool):
    nngp = nngp_layers(x1, x2, config, quadrature_order=quadrature_order, symmetric=symmetric)
    tangent = nngp[0][1]
    for layer, activation in enumerate(config.activations):
        k11, k12, k22 = nngp[layer]
        slope = derivative_expectation(activation, k11, k12, k22, quadrature_order=quadrature_order)
        tangent = nngp[layer + 1][1] + config.weight_var * slope * tangent
    return nngp[-1][1], tangent


def ntk_kernel(
    x1,
    x2=None,
    *,
    activations: Sequence,
    weight_var: float = 1.0,
    bias_var: float = 1.0,
    bias: bool = True,
    input_dim: int | None = None,
    quadrature_order: int = DEFAULT_QUADRATURE_ORDER,
    return_nngp: bool = False,
):
    """Compute the infinite-width neural tangent kernel of a fully connected network's output.

    The kernel is the limit of the Jacobian Gram J Sigma_0 J^T, where J is the Jacobian of f
    with respect to the parameters and Sigma_0 their (diagonal) prior covariance. Equivalently,
    it is the usual NTK of the network in the NTK parametrisation
    W_l = sqrt(sigma_w^2 / N_{l-1}) omega_l with omega_l ~ N(0, 1).

    Parameters
    ----------
    x1 : array (n1, d)
    x2 : array (n2, d), optional
        Defaults to ``x1``.
    activations, weight_var, bias_var, bias, input_dim, quadrature_order
        As in :func:`brgnnft.models.nngp_kernel`. The derivative has closed forms for "relu",
        "erf", "identity", "cos", "cosnet" and "gaussnet"; other activations are differentiated
        with ``jax.grad`` and integrated by Gauss-Hermite quadrature.
    return_nngp : bool
        Also return the NNGP kernel, which the recursion computes anyway.

    Returns
    -------
    ntk : array (n1, n2)
    nngp : array (n1, n2), only with ``return_nngp=True``

    Notes
    -----
    With :math:`K^{(l)}` the NNGP recursion and
    :math:`\\dot K^{(l)} = \\mathbb{E}_{(u,v) \\sim N(0, \\Sigma_l)}[\\phi_l'(u) \\phi_l'(v)]`,

    .. math::

        \\Theta^{(1)} = K^{(1)}, \\qquad
        \\Theta^{(l+1)} = K^{(l+1)} + \\sigma_w^2\\, \\dot K^{(l)}\\, \\Theta^{(l)}.

    Closed forms of :math:`\\dot K`: ReLU :math:`(\\pi - \\theta) / 2\\pi` (arc-cosine kernel of
    degree 0); erf :math:`(4/\\pi) / \\sqrt{(1 + 2K_{11})(1 + 2K_{22}) - 4K_{12}^2}`.

    References
    ----------
    .. [1] A. Jacot, F. Gabriel, C. Hongler, "Neural Tangent Kernel", arXiv:1806.07572.
    .. [2] J. Lee et al., "Wide Neural Networks of Any Depth Evolve as Linear Models Under
       Gradient Descent", arXiv:1902.06720.
    .. [3] Y. Cho, L. Saul, "Kernel Methods for Deep Learning", NIPS 2009.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from brgnnft.models import ntk_kernel
    >>> x = jnp.linspace(-1.0, 1.0, 4).reshape(-1, 1)
    >>> ntk_kernel(x, activations=("relu",)).shape
    (4, 4)
    """
    symmetric = x2 is None or x2 is x1
    x2 = x1 if x2 is None else x2
    x1, x2, config = check_kernel_config(
        x1, x2, activations=activations, weight_var=weight_var, bias_var=bias_var, bias=bias,
        input_dim=input_dim, quadrature_order=quadrature_order,
    )
    nngp, tangent = _ntk_recursion(x1, x2, config, quadrature_order=config.quadrature_order, symmetric=symmetric)
    if return_nngp:
        return tangent, nngp
    return tangent
