"""Couplings: the free action, the amputated quartic coupling, and the exact finite-width G_c^(4)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from brgnnft.models import (
    FreeAction,
    connected_correlator,
    free_action,
    quartic_coupling,
    single_layer_connected_four_point,
)

RNG = np.random.default_rng(1)
KERNEL = np.array([[1.0, 0.5, 0.1], [0.5, 1.2, 0.3], [0.1, 0.3, 0.9]])


def unique_entries(tensor):
    order, size = tensor.ndim, tensor.shape[0]
    return np.array([tensor[index] for index in itertools.combinations_with_replacement(range(size), order)])


def bonferroni_threshold(num_tests: int, num_blocks: int, level: float = 1e-3) -> float:
    """|estimate| / SE threshold for ``num_tests`` jackknife t-statistics at family-wise ``level``."""
    return stats.t.ppf(1 - level / (2 * num_tests), df=num_blocks - 1)


# ---------------------------------------------------------------------------------------------
# Free action.


def test_free_action_is_gaussian_log_density():
    action = free_action(KERNEL)
    phi = RNG.normal(size=(5, 3))
    expected = stats.multivariate_normal(np.zeros(3), KERNEL).logpdf(phi)
    np.testing.assert_allclose(-action(phi) - action.log_normalizer, expected, rtol=1e-12)


def test_free_action_batches_and_jits():
    action = FreeAction(KERNEL)
    phi = jnp.asarray(RNG.normal(size=(2, 4, 3)))
    batched = action(phi)
    assert batched.shape == (2, 4)
    np.testing.assert_allclose(jax.jit(action)(phi), batched, rtol=1e-13)
    np.testing.assert_allclose(action(phi[1, 2]), 0.5 * phi[1, 2] @ np.linalg.solve(KERNEL, phi[1, 2]), rtol=1e-12)


def test_free_action_rejects_bad_kernels_and_fields():
    with pytest.raises(ValueError, match=r"must be a square \(M, M\) matrix, got shape \(3,\)"):
        FreeAction(np.ones(3))
    with pytest.raises(ValueError, match="is not symmetric"):
        FreeAction(np.array([[1.0, 0.2], [0.3, 1.0]]))
    with pytest.raises(ValueError, match="is not positive definite"):
        FreeAction(np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match=r"phi must have shape \(..., 3\), got \(2,\)"):
        FreeAction(KERNEL)(jnp.ones(2))


# ---------------------------------------------------------------------------------------------
# Quartic coupling.

SKEWED = RNG.standard_gamma(2.0, size=(4000, 3)) @ np.linalg.cholesky(KERNEL).T


def amputated(four_point, kernel):
    precision = np.linalg.inv(kernel)
    return -np.einsum("abcd,ai,bj,ck,dl->ijkl", four_point, precision, precision, precision, precision)


def test_quartic_coupling_amputates_with_fixed_kernel():
    connected = connected_correlator(SKEWED, order=4, progress=False).value
    coupling = quartic_coupling(SKEWED, kernel=KERNEL, progress=False)
    expected = amputated(connected, KERNEL)
    np.testing.assert_allclose(coupling.value, expected, rtol=1e-10, atol=1e-10 * np.abs(expected).max())
    assert np.all(coupling.standard_error > 0)


def test_quartic_coupling_defaults_to_sample_covariance():
    connected = connected_correlator(SKEWED, order=4, progress=False).value
    coupling = quartic_coupling(SKEWED, progress=False)
    expected = amputated(connected, np.cov(SKEWED.T, bias=True))
    np.testing.assert_allclose(coupling.value, expected, rtol=1e-10, atol=1e-10 * np.abs(expected).max())


def test_quartic_coupling_vanishes_for_gaussian_field():
    gaussian = RNG.multivariate_normal(np.zeros(3), KERNEL, size=40_000)
    coupling = quartic_coupling(gaussian, kernel=KERNEL, progress=False)
    z = unique_entries(np.abs(coupling.value) / coupling.standard_error)
    assert np.all(z < bonferroni_threshold(z.size, coupling.num_blocks))


def test_quartic_coupling_with_points_and_kernel():
    coupling = quartic_coupling(SKEWED, points=[0, 2], kernel=KERNEL[np.ix_([0, 2], [0, 2])], progress=False)
    assert coupling.value.shape == (2, 2, 2, 2)


def test_quartic_coupling_rejects_mismatched_kernel():
    with pytest.raises(ValueError, match=r"kernel has shape \(2, 2\) but 3 points are selected"):
        quartic_coupling(SKEWED, kernel=KERNEL[:2, :2], progress=False)
    with pytest.raises(ValueError, match=r"kernel has shape \(3, 3\) but 2 points are selected"):
        quartic_coupling(SKEWED, points=[0, 1], kernel=KERNEL, progress=False)
    with pytest.raises(ValueError, match="kernel is not positive definite"):
        quartic_coupling(SKEWED, kernel=-KERNEL, progress=False)


# ---------------------------------------------------------------------------------------------
# Exact finite-width G_c^(4) of one hidden layer.

X = np.array([[1.0, 0.0], [0.6, 0.8]])


@pytest.mark.parametrize("activation", ["identity", "cos", "cosnet", "gaussnet"])
def test_closed_form_neuron_moments_match_monte_carlo(activation):
    # Small pre-activation variances (k = 0.25 at these points): the gaussnet neuron's fourth
    # power exp(4z - 4k) is log-normal with relative variance exp(8k) - 1, whose Monte Carlo mean
    # and standard error are unreliable once that is large.
    kwargs = {"width": 10, "activation": activation, "weight_var": 0.3, "bias_var": 0.1}
    closed = single_layer_connected_four_point(X, **kwargs)
    sampled = single_layer_connected_four_point(X, method="monte_carlo", key=jax.random.key(2), num_draws=200_000, **kwargs)
    assert closed.num_samples == 0
    np.testing.assert_array_equal(closed.standard_error, 0.0)
    z = unique_entries(np.abs(closed.value - sampled.value) / sampled.standard_error)
    assert np.all(z < bonferroni_threshold(z.size, sampled.num_blocks))


def sample_single_layer_relu(key: int, width: int, num_samples: int, chunk: int = 20_000) -> np.ndarray:
    """f (S, M) of f(x) = sum_i a_i relu(w_i . x), w_i ~ N(0, I / 2), a_i ~ N(0, 1 / N), at X."""
    rng = np.random.default_rng(key)
    outputs = []
    for start in range(0, num_samples, chunk):
        size = min(chunk, num_samples - start)
        weights = rng.standard_normal((size, width, 2)) * np.sqrt(1.0 / 2)
        readout = rng.standard_normal((size, width)) * np.sqrt(1.0 / width)
        hidden = np.maximum(weights @ X.T, 0.0)
        outputs.append(np.einsum("swm,sw->sm", hidden, readout))
    return np.concatenate(outputs)


def test_single_layer_four_point_matches_samples_and_scales_as_inverse_width():
    # S = 1000 N members keep the signal-to-noise of G_c^(4) ~ 1/N above about 6 at N = 256.
    widths = [8, 16, 32, 64, 128, 256]
    estimates, errors = [], []
    for width in widths:
        f = sample_single_layer_relu(width, width, 1000 * width)
        sampled = connected_correlator(f, order=4, progress=False)
        exact = single_layer_connected_four_point(X, width=width, bias=False, key=jax.random.key(width))
        standard_error = np.sqrt(sampled.standard_error**2 + exact.standard_error**2)
        z = unique_entries(np.abs(sampled.value - exact.value) / standard_error)
        assert np.all(z < bonferroni_threshold(z.size * len(widths), sampled.num_blocks)), (width, z)
        estimates.append(sampled.value[0, 0, 0, 0])
        errors.append(sampled.standard_error[0, 0, 0, 0])

    # Weighted least squares of log G against log N, with SE(log G) = SE(G) / G.
    estimates, errors = np.array(estimates), np.array(errors)
    assert np.all(estimates > 4 * errors)
    design = np.stack([np.ones(len(widths)), np.log(widths)], axis=1)
    weights = (estimates / errors) ** 2
    normal_matrix = design.T @ (weights[:, None] * design)
    intercept, slope = np.linalg.solve(normal_matrix, design.T @ (weights * np.log(estimates)))
    slope_error = np.sqrt(np.linalg.inv(normal_matrix)[1, 1])
    assert slope_error < 0.1
    assert abs(slope + 1.0) < 4 * slope_error


def test_single_layer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="has no closed form and needs Monte Carlo: pass key="):
        single_layer_connected_four_point(X, width=4, activation="relu")
    with pytest.raises(ValueError, match="invalid method='exact'"):
        single_layer_connected_four_point(X, width=4, method="exact")
    with pytest.raises(ValueError, match="width must be a positive integer"):
        single_layer_connected_four_point(X, width=0, activation="cos")
    with pytest.raises(TypeError, match="key must be a JAX PRNG key, got the integer 3"):
        single_layer_connected_four_point(X, width=4, activation="relu", key=3)
