"""Fisher information spectra: every method against the dense autodiff matrix and closed forms."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from brgnnft.brg import (
    CoordinateBasis,
    GramBasis,
    fisher_diagonal,
    fisher_gram,
    fisher_information,
    fisher_matrix,
    fisher_vector_product,
    flatten_params,
    kl_divergence,
    posterior_fisher,
)
from brgnnft.inference import prior_samples
from brgnnft.models import MLP, CosNet, RandomFeatures

EPS = np.finfo(np.float64).eps

# Shared models and inputs: JAX compiles once per model object and input shape, so tests that reuse
# them stay fast.
TANH = MLP(hidden=(5, 4), activation="tanh", noise=0.3)
RELU = MLP(hidden=(5,), activation="relu", noise=0.3)
X = np.random.default_rng(0).normal(size=(6, 2))


def model_size(model, input_dim=2):
    return sum(int(np.prod(shape)) for shape in model.param_shapes(input_dim).values())


def eigh_descending(matrix):
    values, vectors = np.linalg.eigh(matrix)
    return values[::-1], vectors[:, ::-1]


def nonzero_spectrum(matrix):
    values, vectors = eigh_descending(matrix)
    keep = values > values[0] * matrix.shape[0] * EPS * 10
    return values[keep], vectors[:, keep]


NETWORKS = [
    pytest.param(hidden, activation, bias, id=f"{activation}-{len(hidden)}-{'bias' if bias else 'nobias'}")
    for hidden in [(5,), (4, 3), (3, 4, 3)]
    for activation in ["relu", "tanh"]
    for bias in [True, False]
]


@pytest.mark.parametrize("hidden, activation, bias", NETWORKS)
def test_gram_matches_dense(hidden, activation, bias):
    model = MLP(hidden=hidden, activation=activation, bias=bias, noise=0.3)
    params = model.sample_params(jax.random.key(3), input_dim=2)
    dense = fisher_information(model, params, X, method="dense", structured=False)
    gram = fisher_information(model, params, X, method="gram")

    # These spectra span up to 1e6, and float64 eigensolvers resolve eigenvalues to about
    # eps * P * lambda_max, so 1e-10 relative holds on every eigenvalue with room to spare.
    assert gram.rank == dense.rank
    np.testing.assert_allclose(gram.eigenvalues, dense.eigenvalues, rtol=1e-10, atol=0)
    angles = scipy.linalg.subspace_angles(gram.eigenvectors.matrix(), dense.eigenvectors.matrix())
    assert np.max(angles) < 1e-8


@pytest.mark.parametrize("model", [TANH, MLP(hidden=(3, 4), activation="relu", bias=False, noise=0.3)], ids=["tanh", "relu-nobias"])
def test_autodiff_gram_matches_dense(model):
    params = model.sample_params(jax.random.key(3), input_dim=2)
    dense = fisher_information(model, params, X, method="dense", structured=False)
    gram = fisher_information(model, params, X, method="gram", structured=False, chunk_size=4)
    assert not gram.jacobian.structured
    assert gram.rank == dense.rank
    np.testing.assert_allclose(gram.eigenvalues, dense.eigenvalues, rtol=1e-10, atol=0)
    angles = scipy.linalg.subspace_angles(gram.eigenvectors.matrix(), dense.eigenvectors.matrix())
    assert np.max(angles) < 1e-8


@pytest.mark.parametrize("model", [TANH, RELU], ids=["tanh", "relu"])
def test_diagonal_matches_dense(model):
    params = model.sample_params(jax.random.key(4), input_dim=2)
    x = X
    matrix = np.asarray(fisher_matrix(model, params, x))
    for structured in (True, False):
        info = fisher_information(model, params, x, basis="diagonal", structured=structured)
        assert info.method == "diagonal"
        np.testing.assert_allclose(info.diagonal_vector(), np.diag(matrix), rtol=1e-12, atol=1e-14 * np.max(matrix))
        order = np.argsort(-np.diag(matrix), kind="stable")
        np.testing.assert_allclose(info.eigenvalues, np.diag(matrix)[order][: info.rank], rtol=1e-12)


def test_lanczos_top_matches_dense():
    model = TANH
    params = model.sample_params(jax.random.key(5), input_dim=2)
    x = X
    dense = fisher_information(model, params, x, method="dense", structured=False)
    for structured in (True, False):
        lanczos = fisher_information(model, params, x, method="lanczos", num_eigenvalues=4, structured=structured)
        assert lanczos.method == "lanczos"
        np.testing.assert_allclose(lanczos.eigenvalues, dense.eigenvalues[:4], rtol=1e-10)
        angles = scipy.linalg.subspace_angles(lanczos.eigenvectors.matrix(), dense.eigenvectors.matrix()[:, :4])
        assert np.max(angles) < 1e-6


def test_top_k_matches_full_spectrum():
    model = TANH
    params = model.sample_params(jax.random.key(6), input_dim=2)
    x = X
    full = fisher_information(model, params, x, method="gram")
    for method in ("gram", "dense"):
        top = fisher_information(model, params, x, method=method, num_eigenvalues=3)
        np.testing.assert_allclose(top.eigenvalues, full.eigenvalues[:3], rtol=1e-10)


def test_linear_gaussian_closed_form():
    model = RandomFeatures(hidden=(7, 9), activation="tanh", noise=0.4, seed=2)
    params = model.sample_params(jax.random.key(0), input_dim=2)
    x = X
    features = np.asarray(model.features(jnp.asarray(x)))
    expected = features.T @ features / 0.4**2

    matrix = np.asarray(fisher_matrix(model, params, x))
    assert np.max(np.abs(matrix - expected)) <= 1e-12 * np.max(np.abs(expected))
    info = fisher_information(model, params, x, method="gram")
    assert np.max(np.abs(info.to_dense() - expected)) <= 1e-12 * np.max(np.abs(expected))
    values, _ = nonzero_spectrum(expected)
    np.testing.assert_allclose(info.eigenvalues, values, rtol=1e-10)
    np.testing.assert_allclose(info.diagonal["a"], np.diag(expected), rtol=1e-12)


def test_generic_model_uses_autodiff():
    model = CosNet(width=6, dim=2, frozen=False, noise=0.5, seed=1)
    params = model.sample_params(jax.random.key(1), input_dim=2)
    x = X
    dense = fisher_information(model, params, x, method="dense")
    gram = fisher_information(model, params, x, method="gram", chunk_size=2)
    assert not gram.jacobian.structured
    np.testing.assert_allclose(gram.eigenvalues, dense.eigenvalues, rtol=1e-10)
    np.testing.assert_allclose(gram.diagonal_vector(), dense.diagonal_vector(), rtol=1e-12)


def test_eigenvectors_are_orthonormal_eigenvectors():
    model = TANH
    params = model.sample_params(jax.random.key(7), input_dim=2)
    x = X
    info = fisher_information(model, params, x, method="gram")
    assert isinstance(info.eigenvectors, GramBasis)
    vectors = info.eigenvectors.matrix()
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(info.rank), atol=1e-10)
    products = np.asarray(fisher_vector_product(model, params, x, vectors.T))
    np.testing.assert_allclose(products, info.eigenvalues[:, None] * vectors.T, atol=1e-9 * info.eigenvalues[0])

    as_dict = info.eigenvectors.materialize()
    _, layout = flatten_params(params, shapes=model.param_shapes(2))
    for name, value in layout.unflatten(vectors.T).items():
        np.testing.assert_array_equal(as_dict[name], np.asarray(value))


def test_basis_operator_round_trips():
    model = RELU
    params = model.sample_params(jax.random.key(8), input_dim=2)
    x = X
    basis = fisher_information(model, params, x, method="gram").eigenvectors
    samples = model.sample_params(jax.random.key(9), input_dim=2, num_samples=4)
    coefficients = basis.coordinates(samples)
    assert coefficients.shape == (4, basis.size)

    np.testing.assert_allclose(basis.coordinates(basis.combine(coefficients)), coefficients, atol=1e-10)
    projected = basis.project(samples)
    twice = basis.project(projected)
    for name in samples:
        assert projected[name].shape == samples[name].shape
        np.testing.assert_allclose(twice[name], projected[name], atol=1e-10)

    flat, _ = flatten_params(samples, shapes=model.param_shapes(2))
    expected = np.asarray(flat) @ basis.matrix()
    np.testing.assert_allclose(coefficients, expected, atol=1e-10)

    stiff = basis.select(np.arange(basis.size) < 2)
    assert stiff.size == 2
    np.testing.assert_allclose(stiff.coordinates(samples), coefficients[:, :2], atol=1e-12)


def test_coordinate_basis_masks_parameters():
    model = RELU
    params = model.sample_params(jax.random.key(10), input_dim=2)
    x = X
    info = fisher_information(model, params, x, basis="diagonal")
    basis = info.eigenvectors
    assert isinstance(basis, CoordinateBasis)
    assert np.all(np.diff(info.eigenvalues) <= 0)

    stiff = basis.select(info.eigenvalues >= info.eigenvalues[2])
    mask = stiff.mask()
    projected = stiff.project(params)
    for name in params:
        np.testing.assert_array_equal(projected[name], np.where(mask[name], params[name], 0.0))
    assert sum(int(value.sum()) for value in mask.values()) == 3


def test_per_datum_divides_by_n():
    model = TANH
    params = model.sample_params(jax.random.key(11), input_dim=2)
    x = X
    whole = fisher_information(model, params, x, method="gram")
    per_datum = fisher_information(model, params, x, method="gram", per_datum=True)
    assert per_datum.per_datum and not whole.per_datum
    np.testing.assert_allclose(per_datum.eigenvalues, whole.eigenvalues / 6, rtol=1e-12)


def test_noise_site_sets_sigma():
    model = MLP(hidden=(4,), activation="tanh", noise=None)
    params = model.sample_params(jax.random.key(12), input_dim=2)
    x = X
    explicit = fisher_information(model, params, x, noise=0.5, method="gram")
    from_site = fisher_information(model, {**params, "noise": 0.5}, x, method="gram")
    np.testing.assert_allclose(from_site.eigenvalues, explicit.eigenvalues, rtol=1e-13)
    doubled = fisher_information(model, params, x, noise=0.25, method="gram")
    np.testing.assert_allclose(doubled.eigenvalues, 4 * explicit.eigenvalues, rtol=1e-12)


def test_auto_method_choice(caplog):
    model = TANH
    params = model.sample_params(jax.random.key(13), input_dim=2)
    few = X[:3]
    many = np.random.default_rng(1).normal(size=(50, 2))
    assert model_size(model) < 50
    with caplog.at_level(logging.INFO, logger="brgnnft.brg.fisher"):
        assert fisher_information(model, params, few).method == "gram"
    assert "method='auto' chose 'gram'" in caplog.text
    assert fisher_information(model, params, many).method == "dense"
    tight = fisher_information(model, params, many, num_eigenvalues=2, max_memory_bytes=1000)
    assert tight.method == "lanczos"
    assert tight.attrs["fisher_method"] == "lanczos"


def test_posterior_average_matches_mean_matrix():
    model = TANH
    x = X
    tree = prior_samples(model, x, key=jax.random.key(14), num_samples=6)
    info = posterior_fisher(model, tree, group="prior", num_samples=3, method="gram")
    assert info.reference == "posterior average"
    assert info.num_samples == 3

    draws = {name: np.asarray(tree["prior"][name].values)[0] for name in model.param_shapes(2)}
    chosen = [0, 2, 5]
    matrices = [np.asarray(fisher_matrix(model, {k: v[i] for k, v in draws.items()}, x)) for i in chosen]
    values, _ = nonzero_spectrum(np.mean(matrices, axis=0))
    np.testing.assert_allclose(info.eigenvalues, values, rtol=1e-10)
    np.testing.assert_allclose(info.reference_params["w1"], draws["w1"][chosen])

    dense = posterior_fisher(model, {k: v[chosen] for k, v in draws.items()}, x, method="dense", structured=False)
    np.testing.assert_allclose(dense.eigenvalues, values, rtol=1e-10)


def test_quadratic_form_matches_matrix():
    model = TANH
    params = model.sample_params(jax.random.key(15), input_dim=2)
    x = X
    info = fisher_information(model, params, x, num_eigenvalues=2)
    deltas = model.sample_params(jax.random.key(16), input_dim=2, num_samples=3)
    flat, _ = flatten_params(deltas, shapes=model.param_shapes(2))
    matrix = np.asarray(fisher_matrix(model, params, x))
    expected = 0.5 * np.einsum("sp,pq,sq->s", flat, matrix, flat)
    np.testing.assert_allclose(info.quadratic_form(deltas), expected, rtol=1e-12)
    np.testing.assert_allclose(info.quadratic_form(np.asarray(flat)), expected, rtol=1e-12)


def test_gaussian_kl_closed_form_and_quadratic_limit():
    model = TANH
    params = model.sample_params(jax.random.key(17), input_dim=2)
    x = X
    direction = model.sample_params(jax.random.key(18), input_dim=2)
    shifted = {name: params[name] + direction[name] for name in params}
    difference = np.asarray(model.apply(shifted, x) - model.apply(params, x))
    assert kl_divergence(model, params, direction, x) == pytest.approx(np.sum(difference**2) / (2 * 0.09), rel=1e-13)

    info = fisher_information(model, params, x)
    # KL = Q + O(t^3) for a shift t * direction, so the relative gap shrinks linearly in t.
    gaps = []
    for scale in (1e-2, 1e-3):
        delta = {name: scale * value for name, value in direction.items()}
        gaps.append(abs(kl_divergence(model, params, delta, x) / info.quadratic_form(delta) - 1))
    assert gaps[1] < gaps[0] / 5


def test_kl_equals_quadratic_form_for_linear_model():
    model = RandomFeatures(hidden=(8,), activation="relu", noise=0.2, seed=3)
    params = model.sample_params(jax.random.key(19), input_dim=2)
    x = X
    deltas = model.sample_params(jax.random.key(20), input_dim=2, num_samples=3)
    info = fisher_information(model, params, x)
    np.testing.assert_allclose(kl_divergence(model, params, deltas, x), info.quadratic_form(deltas), rtol=1e-12)


def test_distinguishability_length():
    model = TANH
    params = model.sample_params(jax.random.key(21), input_dim=2)
    info = fisher_information(model, params, X)
    np.testing.assert_allclose(info.distinguishability_length() ** -2, info.eigenvalues, rtol=1e-13)
    # A shift of one distinguishability length along v_A costs half a nat.
    unit = info.eigenvectors.combine(np.eye(info.rank)[0] * info.distinguishability_length()[0])
    assert info.quadratic_form(unit) == pytest.approx(0.5, rel=1e-9)


PURE_FUNCTIONS = [fisher_matrix, fisher_gram, fisher_diagonal]


@pytest.mark.parametrize("function", PURE_FUNCTIONS, ids=lambda f: f.__name__)
def test_pure_functions_under_jit(function):
    model = TANH
    params = model.sample_params(jax.random.key(22), input_dim=2)
    x = X
    eager = function(model, params, x)
    compiled = jax.jit(lambda sample: function(model, sample, x))(params)
    for expected, actual in zip(jax.tree.leaves(eager), jax.tree.leaves(compiled)):
        np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-13 * float(np.max(np.abs(expected))))


@pytest.mark.parametrize("function", PURE_FUNCTIONS, ids=lambda f: f.__name__)
def test_pure_functions_vmap_over_samples(function):
    model = RELU
    samples = model.sample_params(jax.random.key(23), input_dim=2, num_samples=3)
    x = X
    batched = jax.vmap(lambda sample: function(model, sample, x))(samples)
    for index in range(3):
        single = function(model, {name: value[index] for name, value in samples.items()}, x)
        for expected, actual in zip(jax.tree.leaves(single), jax.tree.leaves(batched)):
            np.testing.assert_allclose(actual[index], expected, rtol=1e-12, atol=1e-13 * float(np.max(np.abs(expected))))


def test_fisher_vector_product_jit_and_vmap():
    model = TANH
    params = model.sample_params(jax.random.key(24), input_dim=2)
    vectors = model.sample_params(jax.random.key(25), input_dim=2, num_samples=3)
    x = X
    matrix = np.asarray(fisher_matrix(model, params, x))
    flat, layout = flatten_params(vectors, shapes=model.param_shapes(2))
    expected = np.asarray(flat) @ matrix

    for structured in (True, False):
        product = fisher_vector_product(model, params, x, vectors, structured=structured)
        np.testing.assert_allclose(np.asarray(layout.flatten(product)), expected, rtol=1e-11, atol=1e-12)
    compiled = jax.jit(lambda sample, vector: fisher_vector_product(model, sample, x, vector))(params, flat)
    np.testing.assert_allclose(compiled, expected, rtol=1e-11, atol=1e-12)
    mapped = jax.vmap(lambda vector: fisher_vector_product(model, params, x, vector, structured=False))(flat)
    np.testing.assert_allclose(mapped, expected, rtol=1e-11, atol=1e-12)


def test_result_arrays_are_float64_numpy():
    model = TANH
    params = {name: np.asarray(value, dtype=np.float32) for name, value in model.sample_params(jax.random.key(26), input_dim=2).items()}
    info = fisher_information(model, params, X.astype(np.float32))
    assert isinstance(info.eigenvalues, np.ndarray) and info.eigenvalues.dtype == np.float64
    assert all(value.dtype == np.float64 for value in info.diagonal.values())
    assert info.reference_params["w1"].dtype == np.float64


def test_gram_row_blocks_match(monkeypatch):
    from brgnnft.brg import fisher_jacobian

    params = TANH.sample_params(jax.random.key(27), input_dim=2)
    jacobian = fisher_jacobian.build_jacobian(fisher_jacobian.prepare_problem(TANH, params, X))
    single = np.asarray(jacobian.gram())
    # Blocks of 4 rows: the unjitted function rereads CHUNK_BYTES.
    monkeypatch.setattr(fisher_jacobian, "CHUNK_BYTES", 16 * X.shape[0] * 4)
    blocked = np.asarray(fisher_jacobian._factored_gram.__wrapped__(jacobian.layout, jacobian.factors))
    dense = np.asarray(jacobian.jacobian())
    np.testing.assert_allclose(blocked, dense @ dense.T, rtol=1e-12, atol=1e-14 * np.max(single))
    np.testing.assert_allclose(single, dense @ dense.T, rtol=1e-12, atol=1e-14 * np.max(single))
