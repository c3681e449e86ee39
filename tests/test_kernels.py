"""NNGP and NTK kernels and the NNGP model: closed forms, quadrature and Monte Carlo agree."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from scipy import stats

from brgnnft.models import MLP, NNGP, nngp_kernel, ntk_kernel
from brgnnft.models.kernels import LayerActivation, layer_expectation, quadrature_expectation
from brgnnft.models.ntk import derivative_expectation, elementwise_derivative

X = np.array([[0.3, -1.0], [1.2, 0.5], [-0.7, 0.2], [0.1, 0.9]])
WEIGHT_VAR, BIAS_VAR = 1.5, 0.3

# Pointwise functions, written here independently of the library, for quadrature and sampling.
FUNCTIONS = {
    "relu": lambda u: jnp.maximum(u, 0.0),
    "erf": jax.scipy.special.erf,
    "cos": jnp.cos,
    "identity": lambda u: u,
}


def covariance_triples():
    """A few (k11, k12, k22) with correlations from -0.9 to 0.99 and unequal variances."""
    k11 = jnp.array([0.5, 1.0, 2.0, 1.3, 0.8])
    k22 = jnp.array([1.5, 1.0, 0.4, 1.3, 2.2])
    rho = jnp.array([-0.9, 0.0, 0.5, 0.99, 0.3])
    return k11, rho * jnp.sqrt(k11 * k22), k22


@pytest.mark.parametrize("name", ["erf", "cos", "identity"])
def test_closed_form_matches_quadrature(name):
    k11, k12, k22 = covariance_triples()
    closed = layer_expectation(LayerActivation(name, None), k11, k12, k22)
    quadrature = quadrature_expectation(FUNCTIONS[name], k11, k12, k22, order=96)
    np.testing.assert_allclose(closed, quadrature, rtol=0, atol=1e-8)


def test_cosnet_closed_form_matches_quadrature_over_phase():
    # cos(u + c) cos(v + c) is a trigonometric polynomial of degree 2 in c, so the mean over
    # 8 equally spaced phases is the exact phase average.
    k11, k12, k22 = covariance_triples()
    phases = 2 * np.pi * np.arange(8) / 8
    quadrature = sum(
        quadrature_expectation(lambda u, c=c: jnp.cos(u + c), k11, k12, k22, order=96) for c in phases
    ) / len(phases)
    closed = layer_expectation(LayerActivation("cosnet", None), k11, k12, k22)
    np.testing.assert_allclose(closed, quadrature, rtol=0, atol=1e-8)


def test_gaussnet_closed_form_matches_quadrature():
    k11, k12, k22 = covariance_triples()
    quadrature = quadrature_expectation(jnp.exp, k11, k12, k22, order=96) * jnp.exp(-k11 - k22)
    closed = layer_expectation(LayerActivation("gaussnet", None), k11, k12, k22)
    np.testing.assert_allclose(closed, quadrature, rtol=0, atol=1e-8)


@pytest.mark.parametrize("name", ["relu", "erf", "cos", "identity"])
def test_deep_closed_form_matches_quadrature_kernel(name):
    # A lambda has no closed form, so nngp_kernel integrates it by quadrature in every layer.
    closed = nngp_kernel(X, activations=(name,) * 2, weight_var=WEIGHT_VAR, bias_var=BIAS_VAR)
    function = FUNCTIONS[name]
    quadrature, error = nngp_kernel(
        X, activations=(lambda u: function(u),) * 2, weight_var=WEIGHT_VAR, bias_var=BIAS_VAR,
        quadrature_order=64, return_error=True,
    )
    if name == "relu":
        # The kink makes the Gauss-Hermite error fall only like C / q, so the difference between
        # orders q and 2q is about half the error at order q.
        assert np.max(np.abs(closed - quadrature)) < 3 * float(error)
    else:
        np.testing.assert_allclose(closed, quadrature, rtol=0, atol=1e-8)


def test_return_error_is_zero_for_closed_forms():
    kernel, error = nngp_kernel(X, activations=("relu", "erf"), return_error=True)
    assert float(error) == 0.0
    np.testing.assert_array_equal(kernel, nngp_kernel(X, activations=("relu", "erf")))


def test_return_error_compares_orders_q_and_2q():
    coarse, error = nngp_kernel(X, activations=("tanh", "tanh"), quadrature_order=8, return_error=True)
    fine = nngp_kernel(X, activations=("tanh", "tanh"), quadrature_order=16)
    assert float(error) > 0
    np.testing.assert_allclose(float(error), np.max(np.abs(coarse - fine)), rtol=1e-12)


def test_linear_model_and_no_bias():
    kernel = nngp_kernel(X, activations=(), weight_var=2.0, bias_var=0.5)
    np.testing.assert_allclose(kernel, 0.5 + 2.0 * X @ X.T / 2, rtol=1e-14)
    no_bias = nngp_kernel(X, activations=(), weight_var=2.0, bias_var=0.5, bias=False)
    np.testing.assert_allclose(no_bias, 2.0 * X @ X.T / 2, rtol=1e-14)
    wider = nngp_kernel(X, activations=(), weight_var=2.0, bias=False, input_dim=4)
    np.testing.assert_allclose(wider, 2.0 * X @ X.T / 4, rtol=1e-14)


def test_deep_linear_kernel_closed_form():
    # With identity activations and no bias, K^(L) = sigma_w^(2L) x.x' / d and the NTK is L times it.
    depth = 4
    ntk, nngp = ntk_kernel(X, activations=("identity",) * (depth - 1), weight_var=1.3, bias=False, return_nngp=True)
    expected = 1.3**depth * X @ X.T / 2
    np.testing.assert_allclose(nngp, expected, rtol=1e-13)
    np.testing.assert_allclose(ntk, depth * expected, rtol=1e-13)


def test_kernel_is_symmetric_and_cross_blocks_agree():
    # The quadrature treats u and v differently, so symmetry holds up to its error.
    x2 = X[:2] + 0.1
    full, error = nngp_kernel(np.concatenate([X, x2]), activations=("relu", "tanh"), return_error=True)
    cross = nngp_kernel(X, x2, activations=("relu", "tanh"))
    assert np.max(np.abs(full - full.T)) < 2 * float(error)
    # The two paths round k11 differently, and sqrt(1 - rho^2) amplifies that near rho = 1.
    np.testing.assert_allclose(cross, full[:4, 4:], rtol=1e-9)


def test_kernel_under_jit_and_vmap():
    def kernel(x):
        return nngp_kernel(x, activations=("relu", "erf"), weight_var=WEIGHT_VAR)

    eager = kernel(jnp.asarray(X))
    np.testing.assert_allclose(jax.jit(kernel)(jnp.asarray(X)), eager, rtol=1e-13)

    batch = jnp.stack([jnp.asarray(X), 2.0 * jnp.asarray(X), -jnp.asarray(X)])
    looped = jnp.stack([kernel(x) for x in batch])
    np.testing.assert_allclose(jax.vmap(kernel)(batch), looped, rtol=1e-13)


def test_mlp_kernel_delegates():
    model = MLP(hidden=(16, 16), activation=("relu", "tanh"), weight_var=WEIGHT_VAR, bias_var=BIAS_VAR)
    expected = nngp_kernel(X, activations=("relu", "tanh"), weight_var=WEIGHT_VAR, bias_var=BIAS_VAR)
    np.testing.assert_allclose(model.kernel(X, X), expected, rtol=1e-13)


# ---------------------------------------------------------------------------------------------
# Monte Carlo over finite networks.


def assert_within_standard_errors(products, expected, num_se=4.0):
    """Check the mean of (S, n, n) products against ``expected`` within num_se standard errors."""
    products = np.asarray(products)
    estimate = products.mean(axis=0)
    standard_error = products.std(axis=0, ddof=1) / math.sqrt(products.shape[0])
    z = np.abs(estimate - np.asarray(expected)) / standard_error
    assert np.all(z < num_se), f"largest deviation {z.max():.2f} standard errors"


@pytest.mark.parametrize("name", ["relu", "erf", "cos", "identity"])
def test_one_hidden_layer_matches_monte_carlo(name):
    # One hidden layer: each neuron's pre-activation is exactly Gaussian, so E[f f'] equals the
    # kernel at any width, and a narrow network suffices.
    model = MLP(hidden=(32,), activation=name, weight_var=WEIGHT_VAR, bias_var=BIAS_VAR)
    params = model.sample_params(jax.random.key(3), input_dim=2, num_samples=8000)
    f = model.apply(params, jnp.asarray(X))
    assert_within_standard_errors(f[:, :, None] * f[:, None, :], model.kernel(X, X))


@pytest.mark.parametrize("name", ["cosnet", "gaussnet"])
def test_kernel_only_layers_match_monte_carlo(name):
    width, num_samples = 32, 8000
    key_w, key_b, key_c, key_a = jax.random.split(jax.random.key(4), 4)
    x = jnp.asarray(X)
    w = jnp.sqrt(WEIGHT_VAR / 2) * jax.random.normal(key_w, (num_samples, 2, width))
    b = jnp.sqrt(BIAS_VAR) * jax.random.normal(key_b, (num_samples, 1, width))
    z = jnp.einsum("nd,sdw->snw", x, w) + b
    if name == "cosnet":
        phase = jax.random.uniform(key_c, (num_samples, 1, width), minval=-jnp.pi, maxval=jnp.pi)
        g = jnp.cos(z + phase)
    else:
        variance = BIAS_VAR + WEIGHT_VAR * jnp.sum(x**2, axis=1) / 2
        g = jnp.exp(z - variance[None, :, None])
    a = jnp.sqrt(WEIGHT_VAR / width) * jax.random.normal(key_a, (num_samples, width, 1))
    f = (g @ a)[..., 0]
    expected = nngp_kernel(X, activations=(name,), weight_var=WEIGHT_VAR, bias=False)
    assert_within_standard_errors(f[:, :, None] * f[:, None, :], expected)


def sample_deep_outputs(key, x, *, activation, depth, width, num_samples):
    """Outputs f (S, n) of finite fully connected networks, drawn layer by layer.

    Given the layer's input h (n, N), the pre-activations z = h W + b of a layer with
    W ~ N(0, sigma_w^2 / N), b ~ N(0, sigma_b^2) are N independent columns, each
    N(0, sigma_b^2 + sigma_w^2 h h^T / N). Drawing them through that (n, n) covariance is the
    same distribution as drawing W, at O(n^2 N) instead of O(N^2) cost per layer.
    """
    n, d = x.shape
    keys = jax.random.split(key, depth)

    def layer_covariance(h, fan_in):
        return BIAS_VAR + WEIGHT_VAR * h @ h.T / fan_in + 1e-12 * jnp.eye(n)

    def one_network(network_keys):
        h = x
        fan_in = d
        for layer in range(depth - 1):
            cholesky = jnp.linalg.cholesky(layer_covariance(h, fan_in))
            z = cholesky @ jax.random.normal(network_keys[layer], (n, width))
            h = FUNCTIONS[activation](z)
            fan_in = width
        cholesky = jnp.linalg.cholesky(layer_covariance(h, fan_in))
        return cholesky @ jax.random.normal(network_keys[-1], (n,))

    network_keys = jax.vmap(lambda k: jax.random.split(k, depth))(jax.random.split(keys[0], num_samples))
    return jax.jit(jax.vmap(one_network))(network_keys)


@pytest.mark.parametrize("depth", [3, 4])
def test_deep_relu_matches_monte_carlo(depth):
    # Finite width biases E[f f'] by O(1/N), far below the Monte Carlo standard error
    # (about 3% here) at N = 512.
    f = sample_deep_outputs(jax.random.key(5), jnp.asarray(X), activation="relu", depth=depth, width=512, num_samples=2000)
    expected = nngp_kernel(X, activations=("relu",) * (depth - 1), weight_var=WEIGHT_VAR, bias_var=BIAS_VAR)
    assert_within_standard_errors(f[:, :, None] * f[:, None, :], expected)


# ---------------------------------------------------------------------------------------------
# Neural tangent kernel.


@pytest.mark.parametrize("name", ["relu", "erf", "cos", "identity"])
def test_derivative_closed_form_matches_quadrature(name):
    k11, k12, k22 = covariance_triples()
    closed = derivative_expectation(LayerActivation(name, None), k11, k12, k22)
    derivative = elementwise_derivative(FUNCTIONS[name])
    quadrature = quadrature_expectation(derivative, k11, k12, k22, order=96)
    if name == "relu":
        # The step function converges like C / q; compare with the q vs 2q difference.
        finer = quadrature_expectation(derivative, k11, k12, k22, order=192)
        assert np.max(np.abs(closed - quadrature)) < 3 * np.max(np.abs(finer - quadrature))
    else:
        np.testing.assert_allclose(closed, quadrature, rtol=0, atol=1e-8)


def empirical_ntk(model, params, x):
    """Jacobian Gram J Sigma_0 J^T of one parameter sample, Sigma_0 the prior covariance."""
    variances = model.prior_variance(x.shape[1])
    jacobian = jax.jacrev(lambda p: model.apply(p, x))(params)
    n = x.shape[0]
    return sum(variances[name] * jacobian[name].reshape(n, -1) @ jacobian[name].reshape(n, -1).T for name in jacobian)


@pytest.mark.parametrize("name", ["relu", "erf"])
def test_one_layer_ntk_matches_empirical_mean(name):
    # With one hidden layer the mean of the empirical NTK equals the limit at any width.
    model = MLP(hidden=(64,), activation=name, weight_var=WEIGHT_VAR, bias_var=BIAS_VAR)
    x = jnp.asarray(X)
    params = model.sample_params(jax.random.key(6), input_dim=2, num_samples=400)
    grams = jax.jit(jax.vmap(lambda p: empirical_ntk(model, p, x)))(params)
    expected = ntk_kernel(X, activations=(name,), weight_var=WEIGHT_VAR, bias_var=BIAS_VAR)
    assert_within_standard_errors(grams, expected)


def test_two_layer_relu_ntk_matches_empirical_mean():
    # The O(1/N) finite-width bias at N = 256 is below the standard error of 32 draws
    # (about 1.5% of the kernel).
    model = MLP(hidden=(256, 256), activation="relu", weight_var=WEIGHT_VAR, bias_var=BIAS_VAR)
    x = jnp.asarray(X)
    params = model.sample_params(jax.random.key(7), input_dim=2, num_samples=32)
    grams = jax.lax.map(lambda p: empirical_ntk(model, p, x), params)
    expected = ntk_kernel(X, activations=("relu", "relu"), weight_var=WEIGHT_VAR, bias_var=BIAS_VAR)
    assert_within_standard_errors(grams, expected)


# ---------------------------------------------------------------------------------------------
# Argument checks.


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"activations": ("swish",)}, ValueError, "invalid activation 'swish'"),
        ({"activations": "relu"}, TypeError, "one entry per hidden layer"),
        ({"activations": ("relu",), "weight_var": -1.0}, ValueError, "weight_var must be a finite number >= 0"),
        ({"activations": ("relu",), "bias_var": "a"}, TypeError, "bias_var must be a non-negative number"),
        ({"activations": ("tanh",), "quadrature_order": 0}, ValueError, "quadrature_order must be a positive integer"),
        ({"activations": ("relu",), "input_dim": 0}, ValueError, "input_dim must be a positive integer"),
    ],
)
def test_kernel_rejects_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        nngp_kernel(X, **kwargs)
    with pytest.raises(error, match=match):
        ntk_kernel(X, **kwargs)


def test_kernel_rejects_bad_points():
    with pytest.raises(ValueError, match=r"x1 must be 2-D with shape \(n, d\), got shape \(4,\)"):
        nngp_kernel(X[:, 0], activations=("relu",))
    with pytest.raises(ValueError, match="same number of features"):
        nngp_kernel(X, X[:, :1], activations=("relu",))
    with pytest.raises(ValueError, match="x2 contains NaN or inf"):
        nngp_kernel(X, np.full((2, 2), np.nan), activations=("relu",))
    with pytest.raises(TypeError, match="x1 must be numeric"):
        nngp_kernel(np.array([["a", "b"]]), activations=("relu",))


def test_bias_var_ignored_without_bias():
    kernel = nngp_kernel(X, activations=("relu",), bias_var=0.0, bias=False)
    assert np.all(np.isfinite(kernel))


# ---------------------------------------------------------------------------------------------
# The NNGP model.

X_TRAIN = np.linspace(-1.5, 1.5, 7).reshape(-1, 1)
Y_TRAIN = np.sin(2.0 * X_TRAIN[:, 0])
X_TEST = np.array([[-2.0], [0.25], [1.0]])


def relu_kernel(x1, x2):
    return nngp_kernel(x1, x2, activations=("relu",), weight_var=WEIGHT_VAR, bias_var=BIAS_VAR)


def test_posterior_moments_match_textbook_formulas():
    noise = 0.2
    gp = NNGP(relu_kernel, noise=noise)
    moments = gp.posterior_moments(X_TRAIN, Y_TRAIN, X_TEST)

    train = np.asarray(relu_kernel(X_TRAIN, X_TRAIN)) + noise**2 * np.eye(len(X_TRAIN))
    cross = np.asarray(relu_kernel(X_TRAIN, X_TEST))
    test = np.asarray(relu_kernel(X_TEST, X_TEST))
    mean = cross.T @ np.linalg.solve(train, Y_TRAIN)
    covariance = test - cross.T @ np.linalg.solve(train, cross)

    np.testing.assert_allclose(moments.mean, mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(moments.covariance, covariance, rtol=1e-9, atol=1e-12)


def test_posterior_moments_noise_override_and_missing_noise():
    gp = NNGP(relu_kernel, noise=None)
    with pytest.raises(ValueError, match="needs a fixed noise"):
        gp.posterior_moments(X_TRAIN, Y_TRAIN, X_TEST)
    explicit = gp.posterior_moments(X_TRAIN, Y_TRAIN, X_TEST, noise=0.2)
    fixed = NNGP(relu_kernel, noise=0.2).posterior_moments(X_TRAIN, Y_TRAIN, X_TEST)
    np.testing.assert_allclose(explicit.mean, fixed.mean, rtol=1e-14)


def test_posterior_moments_reject_bad_shapes():
    gp = NNGP(relu_kernel, noise=0.2)
    with pytest.raises(ValueError, match="x_new has 2 features but x has 1"):
        gp.posterior_moments(X_TRAIN, Y_TRAIN, np.ones((2, 2)))
    with pytest.raises(ValueError, match="y has shape"):
        gp.posterior_moments(X_TRAIN, Y_TRAIN[:3], X_TEST)
    with pytest.raises(ValueError, match=r"y must have shape \(n,\)"):
        gp.posterior_moments(X_TRAIN, np.ones((7, 2)), X_TEST)


def test_model_samples_f_with_kernel_covariance():
    gp = NNGP(relu_kernel, noise=0.3, jitter=1e-6)
    x = jnp.asarray(X_TRAIN)
    trace = numpyro.handlers.trace(numpyro.handlers.seed(gp, jax.random.key(0))).get_trace(x, jnp.asarray(Y_TRAIN))
    assert set(trace) >= {"f", "y"}
    assert trace["f"]["value"].shape == (7,)
    assert trace["y"]["is_observed"]

    covariance = np.asarray(relu_kernel(x, x)) + 1e-6 * np.eye(7)
    f = np.asarray(trace["f"]["value"])
    expected = stats.multivariate_normal(np.zeros(7), covariance).logpdf(f)
    np.testing.assert_allclose(trace["f"]["fn"].log_prob(trace["f"]["value"]), expected, rtol=1e-8)
    np.testing.assert_allclose(
        trace["y"]["fn"].log_prob(jnp.asarray(Y_TRAIN)).sum(),
        stats.norm(f, 0.3).logpdf(Y_TRAIN).sum(),
        rtol=1e-10,
    )


def test_model_puts_prior_on_missing_noise():
    gp = NNGP(relu_kernel, noise=None, noise_scale=2.0)
    trace = numpyro.handlers.trace(numpyro.handlers.seed(gp, jax.random.key(1))).get_trace(jnp.asarray(X_TRAIN))
    assert trace["noise"]["fn"].scale == 2.0
    assert gp.is_gaussian_process


def test_nngp_rejects_bad_arguments():
    with pytest.raises(TypeError, match="kernel must be a callable"):
        NNGP(np.eye(3))
    with pytest.raises(ValueError, match="noise must be a finite number > 0"):
        NNGP(relu_kernel, noise=-1.0)
    with pytest.raises(ValueError, match="jitter must be a finite number > 0"):
        NNGP(relu_kernel, jitter=0.0)
