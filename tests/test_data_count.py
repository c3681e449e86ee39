"""The data-count flow: exact posteriors on T data points, the stiff count, correlators and errors.

Oracles: the closed-form precision Sigma_0^-1 + T Ibar with Ibar from ``brgnnft.brg``'s Fisher
metric (an independent code path), Bayesian linear regression, the GP posterior of the NNGP
model, and the exact prior two-point function.
"""

import math

import jax
import numpy as np
import pytest
import scipy.linalg
import scipy.stats

from brgnnft.brg import fisher_information
from brgnnft.inference import data_count_flow, data_count_moments, fisher_eigenvalues, linear_posterior_moments
from brgnnft.models import MLP, NNGP, RandomFeatures

NOISE = 0.1
# Significance level of every goodness-of-fit assertion. The three flow test files make about 40
# of them, so the chance that any one fails by chance on a correct implementation is about 0.4 %.
ALPHA = 1e-4


def gaussian_fit_pvalues(samples, mean, covariance):
    """Return p-values of S |zbar|^2 ~ chi2(P) and of the whitened second-moment statistic ~ chi2(P(P+1)/2)."""
    count, size = samples.shape
    factor = np.linalg.cholesky(covariance)
    z = scipy.linalg.solve_triangular(factor, (samples - mean).T, lower=True).T
    second = z.T @ z / count
    upper = np.triu_indices(size, k=1)
    covariance_statistic = count * np.sum((np.diag(second) - 1) ** 2) / 2 + count * np.sum(second[upper] ** 2)
    return (
        scipy.stats.chi2.sf(count * np.sum(z.mean(axis=0) ** 2), size),
        scipy.stats.chi2.sf(covariance_statistic, size * (size + 1) // 2),
    )


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(20, 1))
    y = np.sin(2 * x[:, 0]) + NOISE * rng.normal(size=20)
    x_test = np.array([[-1.5], [0.1], [1.2]])
    y_test = np.sin(2 * x_test[:, 0])
    return x, y, x_test, y_test


@pytest.fixture(scope="module")
def model():
    return RandomFeatures(hidden=(5,), activation="tanh", noise=NOISE, seed=0)


@pytest.mark.parametrize("mode", ["nested", "tempered"])
def test_moments_have_closed_form_precision(model, data, mode):
    x, y, _, _ = data
    counts = [0, 3, 20]
    moments = data_count_moments(model, x, y, counts, mode=mode)
    prior_precision = np.eye(5) / model.readout_variance

    for count, (mean, precision) in zip(counts, moments):
        rows = x[:count] if mode == "nested" else x
        if count == 0:
            np.testing.assert_allclose(precision, prior_precision, rtol=1e-12)
            np.testing.assert_allclose(mean, 0.0, atol=1e-12)
            continue
        per_datum = fisher_information(model, {"a": np.zeros(5)}, rows, per_datum=True, method="dense",
                                       progress=False).to_dense()
        np.testing.assert_allclose(precision, prior_precision + count * per_datum, rtol=1e-10)
        if mode == "nested":
            features = np.asarray(model.features(x[:count]))
            expected_mean, _ = linear_posterior_moments(features, y[:count], NOISE, model.readout_variance)
            np.testing.assert_allclose(mean, expected_mean, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("mode", ["nested", "tempered"])
def test_flow_samples_follow_exact_posterior(model, data, mode):
    x, y, x_test, y_test = data
    counts = [0, 3, 20]
    flow = data_count_flow(model, x, y, x_test=x_test, y_test=y_test, counts=counts, mode=mode,
                           key=jax.random.key(1), num_samples=3000, progress=False)
    readout = flow["posterior"]["a"].values

    assert readout.shape == (3, 1, 3000, 5)
    for index, (mean, precision) in enumerate(data_count_moments(model, x, y, counts, mode=mode)):
        mean_p, covariance_p = gaussian_fit_pvalues(readout[index, 0], mean, np.linalg.inv(precision))
        assert mean_p > ALPHA
        assert covariance_p > ALPHA
    np.testing.assert_allclose(flow["flow"]["beta"].values, np.array(counts) / 20)


@pytest.mark.parametrize("mode", ["nested", "tempered"])
def test_num_stiff_grows_with_count(model, data, mode):
    x, y, x_test, y_test = data
    counts = [0, 2, 5, 20]
    cutoff = 50.0
    flow = data_count_flow(model, x, y, x_test=x_test, y_test=y_test, counts=counts, mode=mode, cutoff=cutoff,
                           key=jax.random.key(2), num_samples=50, progress=False)
    stiff = flow["flow"]["num_stiff"].values

    expected = [0.0]
    for count in counts[1:]:
        rows = x[:count] if mode == "nested" else x
        weight = 1.0 if mode == "nested" else count / 20
        eigenvalues = weight * fisher_information(model, {"a": np.zeros(5)}, rows, progress=False).eigenvalues
        expected.append(float(np.sum(eigenvalues >= cutoff)))
    np.testing.assert_array_equal(stiff, expected)
    assert np.all(np.diff(stiff) >= 0)
    assert stiff[-1] > stiff[1]


def test_nngp_flow_follows_gp_posterior(data):
    x, y, x_test, y_test = data
    gp = NNGP(MLP(hidden=(64,), activation="relu").kernel, noise=NOISE)
    flow = data_count_flow(gp, x, y, x_test=x_test, y_test=y_test, counts=[0, 20], cutoff=1.0,
                           key=jax.random.key(3), num_samples=3000, progress=False)
    f = flow["posterior"]["f"].values
    posterior = gp.posterior_moments(x, y, x_test)
    prior_covariance = np.asarray(gp.kernel(x_test, x_test))

    for samples, mean, covariance in ((f[0, 0], np.zeros(3), prior_covariance),
                                      (f[1, 0], np.asarray(posterior.mean), np.asarray(posterior.covariance))):
        mean_p, covariance_p = gaussian_fit_pvalues(samples, mean, covariance)
        assert mean_p > ALPHA
        assert covariance_p > ALPHA
    kappa = np.linalg.eigvalsh(np.asarray(gp.kernel(x, x)))
    np.testing.assert_array_equal(flow["flow"]["num_stiff"].values, [0.0, np.sum(kappa / NOISE**2 >= 1.0)])
    assert flow["flow"].attrs["prior_two_point_source"] == "kernel of the Gaussian process"


def test_two_point_functions_run_from_prior_to_trained(model, data):
    x, y, x_test, y_test = data
    flow = data_count_flow(model, x, y, x_test=x_test, y_test=y_test, counts=[0, 20],
                           key=jax.random.key(4), num_samples=2000, progress=False)
    statistics = flow["flow"]
    prior = np.asarray(model.features(x_test)) @ np.asarray(model.features(x_test)).T * model.readout_variance
    f = flow["posterior"]["f"].values

    np.testing.assert_allclose(statistics["prior_two_point"].values, prior, rtol=1e-12)
    error = statistics["two_point_se"].values[0]
    assert np.all(np.abs(statistics["two_point"].values[0] - prior) < 4 * error)
    # The trained two-point function is the ensemble average of f f at the last count.
    np.testing.assert_allclose(statistics["two_point"].values[1], f[1, 0].T @ f[1, 0] / 2000, rtol=1e-10)
    np.testing.assert_allclose(statistics["connected_two_point"].values[1], np.cov(f[1, 0].T, bias=True), rtol=1e-8)
    assert np.trace(statistics["connected_two_point"].values[1]) < 0.1 * np.trace(prior)


def test_statistics_by_hand(model, data):
    x, y, x_test, y_test = data
    flow = data_count_flow(model, x, y, x_test=x_test, y_test=y_test, counts=[0, 20],
                           key=jax.random.key(5), num_samples=200, progress=False)
    f = flow["posterior"]["f"].values[:, 0]
    mse = np.mean((f - y_test) ** 2, axis=-1)
    log_density = np.log(np.mean(scipy.stats.norm.pdf(y_test, loc=f, scale=NOISE), axis=1)).sum(axis=-1)

    np.testing.assert_allclose(flow["flow"]["test_mse"].values, mse.mean(axis=-1), rtol=1e-12)
    np.testing.assert_allclose(flow["flow"]["test_mse_se"].values, mse.std(axis=-1, ddof=1) / math.sqrt(200), rtol=1e-12)
    np.testing.assert_allclose(flow["flow"]["log_predictive_density"].values, log_density, rtol=1e-10)
    predictive_sd = np.sqrt(f.var(axis=1, ddof=1) + NOISE**2).mean(axis=-1)
    np.testing.assert_allclose(flow["flow"]["predictive_sd"].values, predictive_sd, rtol=1e-12)
    assert flow["posterior_predictive"]["y"].dims == ("data_count", "chain", "draw", "obs_id")


def test_ensemble_route_matches_exact_for_linear_model(model, data):
    # Randomised-MAP members are exact posterior draws for a linear model, and its metric is constant.
    # A noise of 1 keeps the loss well conditioned, so that every member converges in 1000 steps.
    x, y, x_test, y_test = data
    model = RandomFeatures(hidden=(5,), activation="tanh", noise=1.0, seed=0)
    options = {"x_test": x_test, "y_test": y_test, "counts": [0, 20], "progress": False}
    exact = data_count_flow(model, x, y, key=jax.random.key(6), num_samples=2000, **options)
    sampled = data_count_flow(model, x, y, key=jax.random.key(7), method="ensemble", num_samples=64,
                              num_steps=1000, learning_rate=1e-2, **options)

    np.testing.assert_array_equal(sampled["flow"]["num_stiff"].values, exact["flow"]["num_stiff"].values)
    for point in range(3):
        first = exact["posterior"]["f"].values[1, 0, :, point]
        second = sampled["posterior"]["f"].values[1, 0, :, point]
        assert scipy.stats.ks_2samp(first, second).pvalue > ALPHA


def test_nuts_route_for_bernoulli_network():
    rng = np.random.default_rng(8)
    x = rng.uniform(-2, 2, size=(8, 1))
    y = (x[:, 0] > 0).astype(float)
    network = MLP(hidden=(), likelihood="bernoulli")
    flow = data_count_flow(network, x, y, x_test=x[:3], y_test=y[:3], counts=[0, 8], key=jax.random.key(9),
                           num_samples=20, num_warmup=20, num_chains=1, fisher_members=4, progress=False)

    assert flow.attrs["method"] == "nuts"
    assert flow["posterior"]["w1"].dims == ("data_count", "chain", "draw", "w1_dim_0", "w1_dim_1")
    assert flow["posterior"]["f"].shape == (2, 1, 20, 3)
    assert flow["flow"]["num_stiff"].values[0] == 0.0
    # Two parameters, so at most two stiff directions.
    assert 0.0 <= flow["flow"]["num_stiff"].values[1] <= 2.0


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_fisher_eigenvalues_match_brg_metric(likelihood):
    network = MLP(hidden=(3,), activation="tanh", likelihood=likelihood, noise=0.5 if likelihood == "gaussian" else None)
    params = {name: np.asarray(value) for name, value in network.sample_params(jax.random.key(10), 2).items()}
    x = np.random.default_rng(11).normal(size=(6, 2))
    expected = fisher_information(network, params, x, method="dense", progress=False).eigenvalues

    values = fisher_eigenvalues(network, params, x, noise=network.noise)
    np.testing.assert_allclose(values[: expected.size], expected, rtol=1e-9)
    assert np.all(np.abs(values[expected.size:]) < 1e-9 * expected[0])


# errors


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"counts": [0, 30]}, ValueError, r"counts must lie in \[0, 20\] \(the number of data points\), got 30"),
        ({"counts": [-1, 3]}, ValueError, r"counts must lie in \[0, 20\]"),
        ({"counts": [3, 3]}, ValueError, "counts contain duplicates"),
        ({"counts": []}, ValueError, "counts must be a non-empty 1-D sequence"),
        ({"counts": [0.5, 2.0]}, TypeError, "counts must be integers"),
        ({"mode": "annealed"}, ValueError, "invalid mode='annealed'"),
        ({"method": "vi"}, ValueError, "invalid method='vi'"),
        ({"cutoff": 0.0}, ValueError, "cutoff must be a finite number > 0"),
        ({"points": [0, 5]}, ValueError, r"points must lie in \[0, 2\]"),
        ({"points": [0.5]}, TypeError, "points must be integer positions"),
        ({"x_test": np.zeros((3, 2))}, ValueError, "x_test has 2 features but x has 1"),
        ({"key": 1}, TypeError, "key must be a JAX PRNG key"),
    ],
)
def test_flow_rejects_bad_options(model, data, options, error, match):
    x, y, x_test, y_test = data
    arguments = {"x_test": x_test, "y_test": y_test, "counts": [0, 2], "key": jax.random.key(0),
                 "num_samples": 10, "progress": False, **options}
    with pytest.raises(error, match=match):
        data_count_flow(model, x, y, **arguments)


def test_flow_rejects_bad_model_combinations(data):
    x, y, x_test, y_test = data
    arguments = {"x_test": x_test, "y_test": y_test, "counts": [0, 2], "key": jax.random.key(0), "progress": False}
    with pytest.raises(ValueError, match="method='exact' needs a model linear in its Bayesian parameters"):
        data_count_flow(MLP(hidden=(2,)), x, y, method="exact", **arguments)
    with pytest.raises(ValueError, match="an NNGP has no parameters to sample"):
        data_count_flow(NNGP(MLP().kernel), x, y, method="ensemble", **arguments)
    bernoulli = MLP(hidden=(2,), likelihood="bernoulli")
    with pytest.raises(ValueError, match="mode='tempered' rescales the Gaussian noise"):
        data_count_flow(bernoulli, x, (y > 0).astype(float), mode="tempered", **arguments)
    with pytest.raises(ValueError, match="has noise=None"):
        data_count_flow(MLP(hidden=(2,), noise=None), x, y, **arguments)
    with pytest.raises(TypeError, match="data_count_moments needs a model linear"):
        data_count_moments(MLP(hidden=(2,)), x, y, [0, 2])
