"""Inference routes: exactness against closed forms, agreement between routes, and the layout."""

import math

import arviz as az
import jax
import numpy as np
import pytest

from brgnnft.inference import (
    conjugate,
    ensemble,
    linear_posterior_moments,
    load,
    nuts,
    prior_samples,
    save,
)
from brgnnft.models import MLP, RandomFeatures

NOISE = 0.3


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(24, 1))
    y = np.sin(1.5 * x[:, 0]) + NOISE * rng.normal(size=24)
    return x, y


@pytest.fixture(scope="module")
def model():
    return RandomFeatures(hidden=(12,), activation="tanh", noise=NOISE, seed=1)


@pytest.fixture(scope="module")
def exact(model, data):
    x, y = data
    features = np.asarray(model.features(x))
    prior_variance = model.readout_variance
    precision = features.T @ features / NOISE**2 + np.eye(features.shape[1]) / prior_variance
    covariance = np.linalg.inv(precision)
    mean = covariance @ features.T @ y / NOISE**2
    f_mean = features @ mean
    f_var = np.einsum("np,pq,nq->n", features, covariance, features)
    return {"mean": mean, "covariance": covariance, "f_mean": f_mean, "f_var": f_var}


@pytest.fixture(scope="module")
def conjugate_tree(model, data):
    x, y = data
    return conjugate(model, x, y, key=jax.random.key(1), num_samples=4000, num_prior_samples=100)


def assert_moments_match(f, exact):
    """Check sample mean and variance of f (S, n) against exact moments within 4 standard errors."""
    num_samples = f.shape[0]
    mean_error = np.sqrt(exact["f_var"] / num_samples)
    assert np.all(np.abs(f.mean(axis=0) - exact["f_mean"]) < 4 * mean_error)
    # For Gaussian samples the variance estimate has standard error sigma^2 sqrt(2 / (S - 1)).
    var_error = exact["f_var"] * math.sqrt(2 / (num_samples - 1))
    assert np.all(np.abs(f.var(axis=0, ddof=1) - exact["f_var"]) < 4 * var_error)


def test_linear_posterior_moments_match_numpy(model, data, exact):
    x, y = data
    mean, covariance = linear_posterior_moments(model.features(x), y, NOISE, model.readout_variance)

    np.testing.assert_allclose(mean, exact["mean"], rtol=1e-10)
    np.testing.assert_allclose(covariance, exact["covariance"], rtol=1e-9, atol=1e-14)


def test_conjugate_samples_match_closed_form(conjugate_tree, exact):
    f = conjugate_tree["posterior"]["f"].values[0]
    a = conjugate_tree["posterior"]["a"].values[0]

    assert_moments_match(f, exact)
    a_error = np.sqrt(np.diag(exact["covariance"]) / a.shape[0])
    assert np.all(np.abs(a.mean(axis=0) - exact["mean"]) < 4 * a_error)


def test_conjugate_wide_model_uses_exact_posterior(data):
    # P > n: the dual (Matheron) sampler must agree with the primal closed form.
    x, y = data
    wide = RandomFeatures(hidden=(200,), activation="relu", noise=NOISE, seed=2)
    features = np.asarray(wide.features(x))
    mean, covariance = linear_posterior_moments(features, y, NOISE, wide.readout_variance)
    tree = conjugate(wide, x, y, key=jax.random.key(5), num_samples=4000)
    exact_wide = {"f_mean": features @ mean, "f_var": np.einsum("np,pq,nq->n", features, covariance, features)}

    assert_moments_match(tree["posterior"]["f"].values[0], exact_wide)


def test_conjugate_layout(conjugate_tree, data):
    x, y = data
    groups = set(conjugate_tree.children)

    assert {"posterior", "posterior_predictive", "log_likelihood", "observed_data", "constant_data"} <= groups
    assert {"prior", "prior_predictive"} <= groups
    assert conjugate_tree["posterior"]["f"].dims == ("chain", "draw", "obs_id")
    assert conjugate_tree["log_likelihood"]["y"].dims == ("chain", "draw", "obs_id")
    assert conjugate_tree["constant_data"]["x"].dims == ("obs_id", "feature")
    assert isinstance(conjugate_tree["posterior"]["f"].values, np.ndarray)
    np.testing.assert_array_equal(conjugate_tree["observed_data"]["y"].values, y)


def test_conjugate_log_likelihood_is_gaussian(conjugate_tree, data):
    _, y = data
    f = conjugate_tree["posterior"]["f"].values
    expected = -0.5 * ((y - f) / NOISE) ** 2 - math.log(NOISE) - 0.5 * math.log(2 * math.pi)

    np.testing.assert_allclose(conjugate_tree["log_likelihood"]["y"].values, expected, rtol=1e-10)


def test_conjugate_rejects_nonlinear_model(data):
    x, y = data
    with pytest.raises(TypeError, match="conjugate needs a model linear in its Bayesian parameters"):
        conjugate(MLP(hidden=(4,)), x, y, key=jax.random.key(0))


def test_ensemble_matches_conjugate(model, data, exact):
    x, y = data
    tree = ensemble(
        model, x, y, key=jax.random.key(2), num_members=1000, num_steps=3000, learning_rate=0.02, progress=False
    )

    assert bool(tree["sample_stats"]["converged"].all())
    assert tree["posterior"]["f"].shape == (1, 1000, 24)
    assert_moments_match(tree["posterior"]["f"].values[0], exact)


def test_ensemble_trains_mlp(data):
    x, y = data
    tree = ensemble(MLP(hidden=(16,), noise=NOISE), x, y, key=jax.random.key(3), num_members=4, num_steps=300,
                    learning_rate=0.01, progress=False)
    final = tree["sample_stats"]["final_loss"].values[0]

    assert final.shape == (4,)
    assert np.all(np.isfinite(final))
    assert set(tree["posterior"].data_vars) == {"w1", "b1", "w2", "b2", "f"}


def test_nuts_matches_conjugate(data, exact, model):
    x, y = data
    tree = nuts(model, x, y, key=jax.random.key(4), num_warmup=400, num_samples=1000, num_chains=2, progress=False)
    summary = az.summary(tree, var_names=["f"])
    f = tree["posterior"]["f"].values.reshape(-1, 24)
    ess = summary["ess_bulk"].to_numpy(dtype=float)

    assert np.all(summary["r_hat"].to_numpy(dtype=float) < 1.01)
    # Standard errors use the effective sample size, since NUTS draws are correlated.
    mean_error = np.sqrt(exact["f_var"] / ess)
    assert np.all(np.abs(f.mean(axis=0) - exact["f_mean"]) < 4 * mean_error)
    var_error = exact["f_var"] * np.sqrt(2 / (ess - 1))
    assert np.all(np.abs(f.var(axis=0, ddof=1) - exact["f_var"]) < 4 * var_error)
    assert {"diverging", "n_steps", "acceptance_rate", "energy"} <= set(tree["sample_stats"].data_vars)


def test_every_route_works_with_summary_and_loo(model, data, conjugate_tree):
    x, y = data
    trees = {
        "conjugate": conjugate_tree,
        "ensemble": ensemble(model, x, y, key=jax.random.key(6), num_members=400, num_steps=1500,
                             learning_rate=0.02, progress=False),
        "nuts": nuts(model, x, y, key=jax.random.key(7), num_warmup=200, num_samples=200, num_chains=2,
                     progress=False),
    }
    for name, tree in trees.items():
        summary = az.summary(tree, var_names=["f"])
        assert len(summary) == 24, name
        loo = az.loo(tree)
        assert np.isfinite(loo.elpd), name


def test_prior_samples_layout(model, data):
    x, _ = data
    tree = prior_samples(model, x, key=jax.random.key(0), num_samples=50)

    assert set(tree.children) == {"prior", "prior_predictive", "constant_data"}
    assert tree["prior"]["f"].shape == (1, 50, 24)
    assert tree["prior_predictive"]["y"].shape == (1, 50, 24)


def assert_trees_equal(first, second):
    assert set(first.children) == set(second.children)
    for group in first.children:
        left, right = first[group].to_dataset(), second[group].to_dataset()
        assert set(left.data_vars) == set(right.data_vars), group
        for name in left.data_vars:
            assert left[name].dims == right[name].dims, (group, name)
            np.testing.assert_array_equal(left[name].values, right[name].values)
        for coord in left.coords:
            np.testing.assert_array_equal(left[coord].values, right[coord].values)
        assert_attrs_equal(left.attrs, right.attrs)
    assert_attrs_equal(first.attrs, second.attrs)


def assert_attrs_equal(first, second):
    # NetCDF returns list attributes as arrays, so compare values as arrays.
    assert set(first) == set(second)
    for name in first:
        np.testing.assert_array_equal(np.asarray(first[name]), np.asarray(second[name]), err_msg=name)


def test_save_load_round_trip(conjugate_tree, tmp_path):
    path = save(conjugate_tree, tmp_path / "posterior.nc")
    loaded = load(path)

    assert_trees_equal(conjugate_tree, loaded)
    assert [p.name for p in tmp_path.iterdir()] == ["posterior.nc"]


def test_save_refuses_overwrite(conjugate_tree, tmp_path):
    path = tmp_path / "posterior.nc"
    save(conjugate_tree, path)
    before = path.read_bytes()

    with pytest.raises(FileExistsError, match="already exists: pass overwrite=True"):
        save(conjugate_tree, path)
    assert path.read_bytes() == before
    save(conjugate_tree, path, overwrite=True)


def test_save_into_missing_folder(conjugate_tree, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist: create it first"):
        save(conjugate_tree, tmp_path / "missing" / "posterior.nc")


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load(tmp_path / "absent.nc")


@pytest.mark.parametrize(
    ("x", "y", "error", "match"),
    [
        (np.zeros(5), np.zeros(5), ValueError, r"x must be 2-D with shape \(n, d\), got shape \(5,\)"),
        (np.zeros((5, 1)), np.zeros(4), ValueError, r"y has shape \(4,\) but x has 5 rows"),
        (np.array([[0.0], [np.nan], [1.0]]), np.zeros(3), ValueError, "x contains NaN or inf, first in row 1"),
        (np.zeros((3, 1)), np.array([0.0, 1.0, np.inf]), ValueError, "y contains NaN or inf, first in row 2"),
        (np.zeros((0, 1)), np.zeros(0), ValueError, "x has no rows"),
    ],
)
def test_routes_reject_bad_data(model, x, y, error, match):
    with pytest.raises(error, match=match):
        conjugate(model, x, y, key=jax.random.key(0))
    with pytest.raises(error, match=match):
        ensemble(model, x, y, key=jax.random.key(0), num_members=2, num_steps=1)


@pytest.mark.parametrize(
    ("key", "match"),
    [
        (0, "key must be a JAX PRNG key, got the integer 0"),
        ("seed", "key must be a JAX PRNG key, got str"),
        (np.zeros(3), "key must be a JAX PRNG key, got an array of dtype float64"),
    ],
)
def test_routes_reject_bad_key(model, data, key, match):
    x, y = data
    with pytest.raises(TypeError, match=match):
        prior_samples(model, x, key=key, num_samples=2)


def test_ensemble_needs_fixed_noise(data):
    x, y = data
    with pytest.raises(ValueError, match="needs a fixed observation noise, but the model has noise=None"):
        ensemble(MLP(hidden=(4,), noise=None), x, y, key=jax.random.key(0))


def test_nuts_rejects_unknown_chain_method(model, data):
    x, y = data
    with pytest.raises(ValueError, match="invalid chain_method='threads'"):
        nuts(model, x, y, key=jax.random.key(0), chain_method="threads")


def test_bad_sizes_are_rejected(model, data):
    x, y = data
    with pytest.raises(ValueError, match="num_members must be a positive integer"):
        ensemble(model, x, y, key=jax.random.key(0), num_members=0)
    with pytest.raises(TypeError, match="num_samples must be a positive integer, got 2.5"):
        conjugate(model, x, y, key=jax.random.key(0), num_samples=2.5)


def test_conjugate_gaussian_process_matches_textbook(data):
    from brgnnft.models import NNGP

    x, y = data
    kernel = MLP(hidden=(1,), activation="erf", weight_var=1.5, bias_var=0.2).kernel
    model = NNGP(kernel, noise=NOISE)
    tree = conjugate(model, x, y, key=jax.random.key(8), num_samples=4000)
    gram = np.asarray(kernel(x, x))
    # Rasmussen and Williams, eq. 2.25 and 2.26, at the training inputs
    solve = np.linalg.solve(gram + NOISE**2 * np.eye(len(y)), np.column_stack([y, gram]))
    exact = {"f_mean": gram @ solve[:, 0], "f_var": np.diag(gram - gram @ solve[:, 1:])}

    assert_moments_match(tree["posterior"]["f"].values[0], exact)
    assert set(tree["posterior"].data_vars) == {"f"}
    assert tree["log_likelihood"]["y"].shape == (1, 4000, 24)


def test_saved_file_has_new_file_permissions(conjugate_tree, tmp_path):
    import os

    from brgnnft.inference.io import new_file_mode

    path = save(conjugate_tree, tmp_path / "posterior.nc")

    assert os.stat(path).st_mode & 0o777 == new_file_mode()
