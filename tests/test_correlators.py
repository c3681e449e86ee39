"""Correlators and connected correlators of ensembles: exact identities, Gaussian fields, layouts."""

import itertools
import math

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from brgnnft.models import connected_correlator, correlator
from brgnnft.models.correlators import TupleLayout, set_partitions

RNG = np.random.default_rng(0)
# A skewed, correlated, non-Gaussian ensemble: S = 3000 members at M = 3 points.
SKEWED = RNG.standard_gamma(2.0, size=(3000, 3)) @ RNG.normal(size=(3, 3))


def central(samples):
    return samples - samples.mean(axis=0)


def bonferroni_threshold(num_tests: int, num_blocks: int, level: float = 1e-3) -> float:
    """|estimate| / SE threshold for ``num_tests`` jackknife t-statistics at family-wise ``level``."""
    return stats.t.ppf(1 - level / (2 * num_tests), df=num_blocks - 1)


def unique_entries(tensor):
    """The entries of a symmetric (M,)*k tensor on sorted index tuples."""
    order, size = tensor.ndim, tensor.shape[0]
    return np.array([tensor[index] for index in itertools.combinations_with_replacement(range(size), order)])


# ---------------------------------------------------------------------------------------------
# Exact identities on a fixed sample.


def test_set_partitions_count_bell_numbers():
    assert [len(set_partitions(tuple(range(k)))) for k in range(1, 7)] == [1, 2, 5, 15, 52, 203]


def test_tuple_layout_ranks_and_expansion():
    layout = TupleLayout(4, 3)
    tuples = layout.tuples[3]
    assert tuples.shape == (math.comb(6, 3), 3)
    np.testing.assert_array_equal(layout.rank(tuples), np.arange(len(tuples)))
    full = layout.expand(np.arange(len(tuples), dtype=float), 3)
    for index in itertools.product(range(4), repeat=3):
        assert full[index] == layout.rank(np.array(sorted(index)))


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_raw_correlator_equals_einsum(order):
    letters = "ijkl"[:order]
    subscripts = ",".join(f"s{letter}" for letter in letters) + "->" + letters
    expected = np.einsum(subscripts, *[SKEWED] * order) / SKEWED.shape[0]
    estimate = correlator(SKEWED, order=order, progress=False)
    np.testing.assert_allclose(estimate.value, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())


def test_connected_two_point_is_covariance():
    estimate = connected_correlator(SKEWED, order=2, progress=False)
    np.testing.assert_allclose(estimate.value, np.cov(SKEWED.T, bias=True), rtol=1e-12)


def test_connected_four_point_formula():
    c = central(SKEWED)
    n = len(c)
    covariance = c.T @ c / n
    expected = (
        np.einsum("si,sj,sk,sl->ijkl", c, c, c, c) / n
        - np.einsum("ij,kl->ijkl", covariance, covariance)
        - np.einsum("ik,jl->ijkl", covariance, covariance)
        - np.einsum("il,jk->ijkl", covariance, covariance)
    )
    estimate = connected_correlator(SKEWED, order=4, progress=False)
    np.testing.assert_allclose(estimate.value, expected, rtol=1e-10, atol=1e-10 * np.abs(expected).max())


@pytest.mark.parametrize("order", [3, 5, 6])
def test_connected_correlator_sums_to_cumulant_of_sum(order):
    # Cumulants are multilinear, so summing the tensor over all legs gives the cumulant of
    # f_1 + ... + f_M, here from the scalar moment-cumulant formulas.
    g = central(SKEWED.sum(axis=1))
    mu = {k: np.mean(g**k) for k in range(2, 7)}
    scalar = {
        3: mu[3],
        5: mu[5] - 10 * mu[3] * mu[2],
        6: mu[6] - 15 * mu[4] * mu[2] - 10 * mu[3] ** 2 + 30 * mu[2] ** 3,
    }[order]
    estimate = connected_correlator(SKEWED, order=order, progress=False)
    np.testing.assert_allclose(estimate.value.sum(), scalar, rtol=1e-10)


def test_connected_correlator_is_shift_invariant():
    shifted = connected_correlator(SKEWED + np.array([5.0, -3.0, 1.0]), order=4, progress=False)
    plain = connected_correlator(SKEWED, order=4, progress=False)
    np.testing.assert_allclose(shifted.value, plain.value, rtol=1e-9, atol=1e-9 * np.abs(plain.value).max())
    np.testing.assert_allclose(shifted.standard_error, plain.standard_error, rtol=1e-7)


def test_chunk_size_does_not_change_result():
    reference = connected_correlator(SKEWED, order=4, progress=False)
    chunked = connected_correlator(SKEWED, order=4, chunk_size=7, progress=False)
    np.testing.assert_allclose(chunked.value, reference.value, rtol=1e-11, atol=1e-11 * np.abs(reference.value).max())
    np.testing.assert_allclose(chunked.standard_error, reference.standard_error, rtol=1e-9)


def test_points_select_obs_positions():
    selected = connected_correlator(SKEWED, points=[2, 0], order=4, progress=False)
    full = connected_correlator(SKEWED, order=4, progress=False)
    np.testing.assert_allclose(selected.value, full.value[np.ix_([2, 0], [2, 0], [2, 0], [2, 0])], rtol=1e-10)


def test_standard_error_of_raw_two_point_matches_iid_formula():
    # For i.i.d. members the jackknife SE estimates std(f_i f_j) / sqrt(S). With 32 blocks it
    # carries a relative error of about 1 / sqrt(2 * 31) = 0.13, so the ratio lies within
    # 1 +- 0.5 at 4 of those.
    products = SKEWED[:, :, None] * SKEWED[:, None, :]
    iid = products.std(axis=0) / math.sqrt(len(SKEWED))
    estimate = correlator(SKEWED, order=2, progress=False)
    assert estimate.num_blocks == 32
    ratio = estimate.standard_error / iid
    assert np.all((ratio > 0.5) & (ratio < 1.5))


# ---------------------------------------------------------------------------------------------
# Gaussian fields: the free theory.

KERNEL = np.array([[1.0, 0.6, 0.2, -0.1], [0.6, 1.5, 0.4, 0.0], [0.2, 0.4, 0.8, 0.3], [-0.1, 0.0, 0.3, 1.2]])
GAUSSIAN = RNG.multivariate_normal(np.zeros(4), KERNEL, size=40_000)


def test_gaussian_two_point_matches_kernel():
    estimate = correlator(GAUSSIAN, order=2, progress=False)
    z = unique_entries(np.abs(estimate.value - KERNEL) / estimate.standard_error)
    assert np.all(z < bonferroni_threshold(z.size, estimate.num_blocks))


def test_gaussian_four_point_matches_isserlis():
    isserlis = (
        np.einsum("ij,kl->ijkl", KERNEL, KERNEL)
        + np.einsum("ik,jl->ijkl", KERNEL, KERNEL)
        + np.einsum("il,jk->ijkl", KERNEL, KERNEL)
    )
    estimate = correlator(GAUSSIAN, order=4, progress=False)
    z = unique_entries(np.abs(estimate.value - isserlis) / estimate.standard_error)
    assert np.all(z < bonferroni_threshold(z.size, estimate.num_blocks))


@pytest.mark.parametrize("order", [3, 4, 6])
def test_gaussian_connected_correlators_vanish(order):
    estimate = connected_correlator(GAUSSIAN, order=order, progress=False)
    z = unique_entries(np.abs(estimate.value) / estimate.standard_error)
    assert np.all(z < bonferroni_threshold(z.size, estimate.num_blocks))


def test_non_gaussian_four_point_is_resolved():
    # Product of two Gaussians: excess kurtosis 6, so G_c^(4)(1111) = 6 var^2 is far from zero.
    product = RNG.normal(size=(20_000, 2)) * RNG.normal(size=(20_000, 1))
    estimate = connected_correlator(product, order=4, progress=False)
    assert abs(estimate.value[0, 0, 0, 0] - 6.0) < 4 * estimate.standard_error[0, 0, 0, 0]
    assert estimate.value[0, 0, 0, 0] > 10 * estimate.standard_error[0, 0, 0, 0]


# ---------------------------------------------------------------------------------------------
# Arrays with leading dims and xarray inputs.


def posterior_like(samples, num_chains=2):
    """Wrap (S, M) samples as f with dims (chain, draw, obs_id)."""
    values = samples.reshape(num_chains, -1, samples.shape[1])
    return xr.DataArray(
        values, dims=("chain", "draw", "obs_id"), coords={"obs_id": [10 * i for i in range(samples.shape[1])]}
    )


def test_leading_dims_pass_through():
    stacked = np.stack([SKEWED, 2.0 * SKEWED])
    estimate = connected_correlator(stacked, order=2, progress=False)
    assert estimate.value.shape == (2, 3, 3)
    np.testing.assert_allclose(estimate.value[1], 4.0 * estimate.value[0], rtol=1e-12)


def test_data_array_pools_chain_and_draw():
    f = posterior_like(SKEWED)
    estimate = connected_correlator(f, order=4, progress=False)
    plain = connected_correlator(SKEWED, order=4, progress=False)
    assert estimate.value.dims == ("obs_id_1", "obs_id_2", "obs_id_3", "obs_id_4")
    np.testing.assert_array_equal(estimate.value["obs_id_3"].values, [0, 10, 20])
    np.testing.assert_allclose(estimate.value.values, plain.value, rtol=1e-12)
    np.testing.assert_allclose(estimate.standard_error.values, plain.standard_error, rtol=1e-12)


def test_datatree_group_and_flow_dim():
    f = posterior_like(SKEWED)
    flow = xr.concat([f, 3.0 * f], dim=xr.DataArray([0.1, 1.0], dims="cutoff", name="cutoff"))
    tree = xr.DataTree.from_dict({"posterior": xr.Dataset({"f": flow})})

    estimate = correlator(tree["posterior"], points=[1, 2], order=2, progress=False)
    assert estimate.value.dims == ("cutoff", "obs_id_1", "obs_id_2")
    np.testing.assert_array_equal(estimate.value["cutoff"].values, [0.1, 1.0])
    np.testing.assert_array_equal(estimate.value["obs_id_1"].values, [10, 20])
    expected = correlator(SKEWED, points=[1, 2], order=2, progress=False).value
    np.testing.assert_allclose(estimate.value.sel(cutoff=1.0).values, 9.0 * expected, rtol=1e-12)
    assert estimate.num_samples == 3000


# ---------------------------------------------------------------------------------------------
# Argument checks.


@pytest.mark.parametrize(
    ("samples", "kwargs", "error", "match"),
    [
        (SKEWED, {"order": 7}, ValueError, "order must be from 1 to 6, got 7"),
        (SKEWED, {"order": 0}, ValueError, "order must be from 1 to 6, got 0"),
        (SKEWED, {"order": "4"}, TypeError, "order must be an integer"),
        (SKEWED[:, 0], {}, ValueError, r"samples must have shape \(..., S, M\)"),
        (SKEWED[:1], {}, ValueError, "1 ensemble member"),
        (np.full((5, 2), np.nan), {}, ValueError, "samples contains NaN or inf"),
        (np.array([["a", "b"], ["c", "d"]]), {}, TypeError, "samples must be numeric"),
        (SKEWED, {"points": [0, 3]}, ValueError, r"points \[0, 3\] out of range for 3 points"),
        (SKEWED, {"points": [0.5]}, TypeError, "points must be a nonempty 1-D sequence"),
        (SKEWED, {"num_blocks": 1}, ValueError, "num_blocks must be at least 2"),
        (SKEWED, {"chunk_size": 0}, ValueError, "chunk_size must be a positive integer"),
        (np.zeros((4, 200)), {"order": 4}, ValueError, "above the limit"),
    ],
)
def test_correlator_rejects_bad_arguments(samples, kwargs, error, match):
    kwargs = {"progress": False, **kwargs}
    with pytest.raises(error, match=match):
        connected_correlator(samples, **kwargs)


def test_correlator_rejects_bad_xarray_inputs():
    tree = xr.DataTree.from_dict({"posterior": xr.Dataset({"f": posterior_like(SKEWED)})})
    with pytest.raises(ValueError, match=r"samples has no variable 'f' \(it has groups \['posterior'\]"):
        correlator(tree, progress=False)
    no_obs = posterior_like(SKEWED).rename(obs_id="point")
    with pytest.raises(ValueError, match="expected sample dims among"):
        correlator(no_obs, progress=False)
    assert correlator(no_obs, obs_dim="point", progress=False).value.dims == ("point_1", "point_2")
