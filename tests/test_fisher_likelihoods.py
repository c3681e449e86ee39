"""Output-space Fisher of each likelihood against autodiff expectations, and parameter flattening."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from brgnnft.brg import fisher_information, fisher_matrix, flatten_params, kl_divergence
from brgnnft.brg.likelihoods import output_fisher, output_fisher_factor, output_kl_divergence
from brgnnft.models import MLP

X = np.random.default_rng(0).normal(size=(5, 2))


def log_probabilities(likelihood, f, max_count=80):
    """Return log p(y | f) for every outcome y, shape (n, number of outcomes), and the outcomes."""
    if likelihood == "bernoulli":
        return jnp.stack([jax.nn.log_sigmoid(-f[:, 0]), jax.nn.log_sigmoid(f[:, 0])], axis=1)
    if likelihood == "categorical":
        return jax.nn.log_softmax(f, axis=-1)
    counts = jnp.arange(max_count + 1.0)
    rate = jnp.exp(f)
    return counts * f - rate - jax.scipy.special.gammaln(counts + 1.0)


@pytest.mark.parametrize(
    "likelihood, out_dim", [("bernoulli", 1), ("categorical", 3), ("poisson", 1)], ids=["bernoulli", "categorical", "poisson"]
)
def test_fisher_is_expected_hessian(likelihood, out_dim):
    model = MLP(hidden=(4,), activation="tanh", likelihood=likelihood, out_dim=out_dim)
    params = model.sample_params(jax.random.key(1), input_dim=2)
    flat, layout = flatten_params(params, shapes=model.param_shapes(2))
    flat = jnp.asarray(flat)

    def outputs(theta):
        return jnp.reshape(model.apply(layout.unflatten(theta), jnp.asarray(X)), (X.shape[0], -1))

    # E_y[-d^2 log p(y | theta) / d theta^2] at theta_0, the expectation taken exactly over every
    # outcome (Poisson counts up to 80: the rates here are below 5, where the tail mass beyond 80 is below 1e-60).
    reference = jax.lax.stop_gradient(jnp.exp(log_probabilities(likelihood, outputs(flat))))

    def expected_negative_log_likelihood(theta):
        return -jnp.sum(reference * log_probabilities(likelihood, outputs(theta)))

    hessian = np.asarray(jax.hessian(expected_negative_log_likelihood)(flat))
    matrix = np.asarray(fisher_matrix(model, params, X))
    np.testing.assert_allclose(matrix, hessian, rtol=1e-10, atol=1e-12 * np.max(np.abs(hessian)))

    gram = fisher_information(model, params, X, method="gram")
    values = np.linalg.eigvalsh(hessian)[::-1][: gram.rank]
    np.testing.assert_allclose(gram.eigenvalues, values, rtol=1e-9)


CASES = [("gaussian", 2), ("bernoulli", 1), ("categorical", 4), ("poisson", 1)]


@pytest.mark.parametrize("likelihood, outputs", CASES, ids=[case[0] for case in CASES])
def test_factor_squares_to_output_fisher(likelihood, outputs):
    f = np.random.default_rng(2).normal(scale=3.0, size=(3, 6, outputs))
    noise = np.array([0.5, 1.0, 2.0])
    factor = output_fisher_factor(likelihood, f, noise=noise)
    fisher = output_fisher(likelihood, f, noise=noise)
    np.testing.assert_allclose(factor @ jnp.swapaxes(factor, -1, -2), fisher, rtol=1e-13, atol=1e-15)


def test_output_fisher_closed_forms():
    f = np.array([[-30.0], [0.0], [2.0]])
    p = 1.0 / (1.0 + np.exp(-f))
    np.testing.assert_allclose(output_fisher("bernoulli", f)[:, 0, 0], p[:, 0] * (1 - p[:, 0]), rtol=1e-13)
    np.testing.assert_allclose(output_fisher("poisson", f)[:, 0, 0], np.exp(f[:, 0]), rtol=1e-13)
    np.testing.assert_allclose(output_fisher("gaussian", f, noise=0.5)[:, 0, 0], 4.0, rtol=1e-15)
    logits = np.array([[1.0, 2.0, 0.5]])
    q = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(output_fisher("categorical", logits)[0], np.diag(q[0]) - np.outer(q[0], q[0]), atol=1e-15)
    # The factor stays finite where p (1 - p) underflows in a naive product.
    assert np.all(np.isfinite(output_fisher_factor("bernoulli", np.array([[800.0]]))))


@pytest.mark.parametrize("likelihood, outputs", CASES[1:], ids=[case[0] for case in CASES[1:]])
def test_kl_matches_enumeration(likelihood, outputs):
    rng = np.random.default_rng(3)
    f_from, f_to = rng.normal(size=(2, 4, outputs))
    expected = np.sum(
        np.exp(log_probabilities(likelihood, f_from)) * (log_probabilities(likelihood, f_from) - log_probabilities(likelihood, f_to)),
        axis=-1,
    )
    np.testing.assert_allclose(output_kl_divergence(likelihood, f_from, f_to), expected, rtol=1e-12)


def test_kl_divergence_of_bernoulli_network():
    model = MLP(hidden=(4,), activation="tanh", likelihood="bernoulli")
    params = model.sample_params(jax.random.key(4), input_dim=2)
    delta = model.sample_params(jax.random.key(5), input_dim=2)
    shifted = {name: params[name] + delta[name] for name in params}
    f_from = np.asarray(model.apply(params, X))[:, None]
    f_to = np.asarray(model.apply(shifted, X))[:, None]
    log_from = np.asarray(log_probabilities("bernoulli", f_from))
    log_to = np.asarray(log_probabilities("bernoulli", f_to))
    expected = float(np.sum(np.exp(log_from) * (log_from - log_to)))
    assert kl_divergence(model, params, delta, X) == pytest.approx(expected, rel=1e-12)
    assert kl_divergence(model, params, delta, X, per_datum=True) == pytest.approx(expected / 5, rel=1e-12)


def test_flatten_order_matches_ravel_pytree():
    params = {"w2": np.arange(6.0).reshape(3, 2), "b1": np.array([7.0, 8.0, 9.0]), "w10": np.array([[1.5]])}
    flat, layout = flatten_params(params)
    assert layout.names == ("b1", "w10", "w2")
    expected, _ = ravel_pytree(params)
    np.testing.assert_array_equal(flat, expected)
    assert layout.offsets == (0, 3, 4)
    assert layout.size == 10


def test_flatten_round_trip_batched():
    shapes = {"w1": (2, 3), "b1": (3,), "w2": (3, 1)}
    rng = np.random.default_rng(4)
    samples = {name: rng.normal(size=(4, 5) + shape) for name, shape in shapes.items()}
    flat, layout = flatten_params(samples, shapes=shapes)
    assert flat.shape == (4, 5, 12)
    back = layout(flat)
    for name in shapes:
        np.testing.assert_array_equal(back[name], samples[name])
    for index in itertools.product(range(4), range(5)):
        single, _ = flatten_params({name: value[index] for name, value in samples.items()}, shapes=shapes)
        np.testing.assert_array_equal(flat[index], single)


def test_flatten_under_jit_and_vmap():
    shapes = {"w1": (2, 3), "b1": (3,)}
    samples = {name: np.random.default_rng(5).normal(size=(3,) + shape) for name, shape in shapes.items()}
    flat, layout = flatten_params(samples, shapes=shapes)
    mapped = jax.vmap(lambda sample: layout.flatten(sample))(samples)
    compiled = jax.jit(layout.flatten)(samples)
    np.testing.assert_array_equal(mapped, flat)
    np.testing.assert_array_equal(compiled, flat)
