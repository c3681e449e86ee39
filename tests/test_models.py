"""Models: the prior they define, batching, and their input checks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from brgnnft.inference import prior_samples
from brgnnft.models import MLP, CosNet, RandomFeatures


def one_layer_kernel(x, activation, weight_var, bias_var):
    """Closed-form output covariance of a one-hidden-layer network, written independently."""
    d = x.shape[1]
    k = bias_var + weight_var * x @ x.T / d
    diag = np.diag(k)
    norm = np.sqrt(np.outer(diag, diag))
    if activation == "relu":
        cos = np.clip(k / norm, -1.0, 1.0)
        theta = np.arccos(cos)
        expectation = norm * (np.sin(theta) + (np.pi - theta) * cos) / (2 * np.pi)
    else:
        expectation = 2 / np.pi * np.arcsin(2 * k / np.sqrt(np.outer(1 + 2 * diag, 1 + 2 * diag)))
    return bias_var + weight_var * expectation


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_prior_covariance_matches_closed_form(activation):
    x = np.array([[-1.0, 0.5], [0.3, 0.2], [1.5, -0.7], [0.0, 2.0]])
    model = MLP(hidden=(64,), activation=activation, weight_var=1.5, bias_var=0.4)
    tree = prior_samples(model, x, key=jax.random.key(0), num_samples=20_000)
    f = tree["prior"]["f"].values[0]

    products = f[:, :, None] * f[:, None, :]
    estimate = products.mean(axis=0)
    standard_error = products.std(axis=0, ddof=1) / math.sqrt(f.shape[0])
    expected = one_layer_kernel(x, activation, 1.5, 0.4)

    assert np.all(np.abs(estimate - expected) < 4 * standard_error)
    np.testing.assert_allclose(np.asarray(model.kernel(x, x)), expected, rtol=1e-10)


def test_apply_batched_matches_loop():
    model = MLP(hidden=(8, 5), activation="tanh")
    params = model.sample_params(jax.random.key(1), input_dim=3, num_samples=4)
    x = jax.random.normal(jax.random.key(2), (6, 3))

    batched = model.apply(params, x)
    looped = jnp.stack([model.apply({k: v[s] for k, v in params.items()}, x) for s in range(4)])

    assert batched.shape == (4, 6)
    np.testing.assert_allclose(batched, looped, rtol=1e-12)
    np.testing.assert_allclose(jax.jit(model.apply)(params, x), batched, rtol=1e-12)


def test_apply_two_batch_dims_and_outputs():
    model = MLP(hidden=(4,), out_dim=3, likelihood="categorical")
    params = model.sample_params(jax.random.key(0), input_dim=2, num_samples=6)
    params = {k: v.reshape((2, 3) + v.shape[1:]) for k, v in params.items()}

    assert model.apply(params, jnp.ones((5, 2))).shape == (2, 3, 5, 3)


def test_mlp_sites_follow_contract():
    model = MLP(hidden=(7, 3), bias=False)

    assert model.param_shapes(2) == {"w1": (2, 7), "w2": (7, 3), "w3": (3, 1)}
    assert model.prior_variance(2) == {"w1": 0.5, "w2": 1 / 7, "w3": 1 / 3}


def test_mlp_noise_prior_adds_site():
    x = np.linspace(-1, 1, 4)[:, None]
    tree = prior_samples(MLP(hidden=(3,), noise=None), x, key=jax.random.key(0), num_samples=5)

    assert "noise" in tree["prior"].data_vars
    assert np.all(tree["prior"]["noise"].values > 0)


def test_random_features_are_frozen_by_seed():
    x = jax.random.normal(jax.random.key(0), (5, 2))
    first = RandomFeatures(hidden=(16, 32), seed=3).features(x)
    second = RandomFeatures(hidden=(16, 32), seed=3).features(x)
    other = RandomFeatures(hidden=(16, 32), seed=4).features(x)

    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first, other)
    assert first.shape == (5, 32)


def test_random_features_paper_network():
    model = RandomFeatures.paper(seed=0)
    params = model.hidden_params(2)

    assert model.param_shapes(2) == {"a": (2000,)}
    assert model.readout_variance == 1.0
    assert set(params) == {"w1", "w2", "w3"}
    assert params["w3"].shape == (10, 2000)
    # no 1/fan-in scaling: the frozen weights are standard normal
    assert abs(float(jnp.std(params["w3"])) - 1.0) < 0.05
    # without biases the network is positively homogeneous: f(2x) = 2 f(x)
    x = jnp.array([[0.3, -1.2], [1.0, 0.4]])
    np.testing.assert_allclose(model.features(2 * x), 2 * model.features(x), rtol=1e-12)


def free_propagator_1d(r, mass, cutoff):
    value, _ = integrate.quad(lambda p: np.cos(p * r) / (p**2 + mass**2), 0, cutoff, limit=200)
    return value / np.pi


def test_cosnet_kernel_is_free_propagator():
    model = CosNet(16, dim=1, mass=0.7, cutoff=6.0)
    x = np.array([[0.0], [0.4], [1.3], [3.0]])
    kernel = model.kernel(x, x)

    for i in range(4):
        for j in range(4):
            expected = free_propagator_1d(abs(x[i, 0] - x[j, 0]), 0.7, 6.0)
            assert kernel[i, j] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_cosnet_kernel_3d_matches_sinc_form():
    model = CosNet(16, dim=3, mass=1.2, cutoff=4.0)
    r = 0.8
    kernel = model.kernel(np.zeros((1, 3)), np.array([[r, 0.0, 0.0]]))[0, 0]
    # In three dimensions the angular average of exp(i p.r) is sin(pr)/(pr).
    value, _ = integrate.quad(lambda p: p**2 / (p**2 + 1.44) * np.sin(p * r) / (p * r), 0, 4.0)
    assert kernel == pytest.approx(value * 4 * np.pi / (2 * np.pi) ** 3, rel=1e-9)


@pytest.mark.parametrize("dim", [1, 2])
def test_cosnet_feature_covariance_is_kernel(dim):
    # Averaged over frozen draws, sigma_a^2/N Phi Phi^T is an unbiased estimate of the kernel.
    x = np.array([[0.0] * dim, [0.5] + [0.0] * (dim - 1), [1.0] * dim])
    estimates = []
    for seed in range(200):
        model = CosNet(64, dim=dim, mass=1.0, cutoff=5.0, seed=seed)
        features = np.asarray(model.features(jnp.asarray(x)))
        estimates.append(model.readout_variance * features @ features.T)
    estimates = np.array(estimates)
    mean = estimates.mean(axis=0)
    standard_error = estimates.std(axis=0, ddof=1) / math.sqrt(len(estimates))

    assert np.all(np.abs(mean - model.kernel(x, x)) < 4 * standard_error)


def test_cosnet_gaussian_momenta_kernel():
    model = CosNet(16, dim=2, momenta="gaussian", b_std=1.5, readout_var=2.0)
    x = np.array([[0.0, 0.0], [0.3, 0.4]])
    expected = 1.0 * np.exp(-0.5 * 1.5**2 * 0.25)

    assert model.kernel(x, x)[0, 1] == pytest.approx(expected, rel=1e-12)


def test_cosnet_unfrozen_has_all_sites():
    model = CosNet(8, dim=2, frozen=False)
    x = np.zeros((3, 2))
    tree = prior_samples(model, x, key=jax.random.key(0), num_samples=10)
    b = tree["prior"]["b"].values

    assert set(model.param_shapes(2)) == {"a", "b", "c"}
    assert b.shape == (1, 10, 8, 2)
    assert np.all(np.linalg.norm(b, axis=-1) <= model.cutoff)
    params = {name: tree["prior"][name].values[0] for name in ("a", "b", "c")}
    np.testing.assert_allclose(model.apply(params, jnp.asarray(x)), tree["prior"]["f"].values[0], rtol=1e-10)


def test_cosnet_propagator_momentum_space():
    model = CosNet(8, dim=1, mass=2.0, cutoff=3.0)
    p = np.array([[0.0], [1.0], [3.5]])

    np.testing.assert_allclose(model.propagator(p), [0.25, 0.2, 0.0])


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: MLP(hidden=(0,)), ValueError, "hidden width must be a positive integer"),
        (lambda: MLP(hidden=(4,), noise=0.0), ValueError, "noise must be a finite number > 0, got 0.0"),
        (lambda: MLP(hidden=(4,), noise=-1), ValueError, "noise must be a finite number > 0"),
        (lambda: MLP(hidden=(4,), activation="softplus"), ValueError, "unknown activation 'softplus': use one of"),
        (lambda: MLP(hidden=(4, 4), activation=("relu",)), ValueError, "one activation per hidden layer"),
        (lambda: MLP(hidden=(4,), likelihood="student"), ValueError, "invalid likelihood='student'"),
        (lambda: MLP(hidden=(4,), likelihood="categorical"), ValueError, "needs out_dim >= 2"),
        (lambda: RandomFeatures(hidden=(4,), seed=1.5), TypeError, "seed must be an integer"),
        (lambda: CosNet(0, dim=1), ValueError, "width must be a positive integer"),
        (lambda: CosNet(8, dim=1, momenta="cauchy"), ValueError, "invalid momenta='cauchy'"),
        (lambda: CosNet(8, dim=1, mass=-1.0), ValueError, "mass must be a finite number > 0"),
    ],
)
def test_model_rejects_bad_configuration(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_random_features_first_drawn_inside_trace():
    # The frozen layers may first be drawn while NumPyro traces the model; they must stay concrete.
    model = RandomFeatures(hidden=(8,), seed=5)
    x = np.linspace(-1, 1, 3)[:, None]
    tree = prior_samples(model, x, key=jax.random.key(0), num_samples=4)
    a = tree["prior"]["a"].values[0]

    np.testing.assert_allclose(tree["prior"]["f"].values[0], a @ np.asarray(model.features(x)).T, rtol=1e-12)

