"""Diffusion coarse graining: exact transitions, the SDE integrator, the heat flow and the flow layout.

References used as oracles: the closed-form Ornstein-Uhlenbeck transition through scipy's matrix
exponential, the Jeffreys density of a Bernoulli logit in closed form (its normaliser checked by
quadrature), and the Laplace-Beltrami operator written in divergence form.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import scipy.stats

from brgnnft.brg import (
    ExactDiffusion,
    LangevinSDE,
    coarse_grain,
    critical_cutoff,
    diffuse,
    diffusion_flow,
    fisher_information,
    flow_at,
    flow_times,
    information_shell_flow,
    integrate_sde,
    langevin_drift,
    plot_flow,
    plot_predictive,
    relaxation_rates,
)
from brgnnft.brg.coarse_grain import prior_variance_vector
from brgnnft.brg.diffusion import local_metric
from brgnnft.inference import conjugate, from_samples, load, save
from brgnnft.models import MLP, RandomFeatures

NOISE = 0.1
# Significance level of every goodness-of-fit assertion. The three flow test files make about 40
# of them, so the chance that any one fails by chance on a correct implementation is about 0.4 %.
ALPHA = 1e-4


def gaussian_fit_pvalues(samples, mean, covariance):
    """Return p-values of two tests that samples (S, P) come from N(mean, covariance).

    Whitened by the Cholesky factor, z = L^-1 (theta - mean) is N(0, I) under the null, so
    S |zbar|^2 ~ chi2(P), and with C = z^T z / S the statistic sum_i S (C_ii - 1)^2 / 2 +
    sum_{i<j} S C_ij^2 is asymptotically chi2(P (P + 1) / 2).
    """
    count, size = samples.shape
    factor = np.linalg.cholesky(covariance)
    z = scipy.linalg.solve_triangular(factor, (samples - mean).T, lower=True).T
    mean_statistic = count * np.sum(z.mean(axis=0) ** 2)
    second = z.T @ z / count
    upper = np.triu_indices(size, k=1)
    covariance_statistic = count * np.sum((np.diag(second) - 1) ** 2) / 2 + count * np.sum(second[upper] ** 2)
    return (
        scipy.stats.chi2.sf(mean_statistic, size),
        scipy.stats.chi2.sf(covariance_statistic, size * (size + 1) // 2),
    )


def ou_transition(metric, prior_variance, start, time):
    """Return mean and covariance at ``time`` of the OU process with D = metric^-1, from a point."""
    prior = np.diag(prior_variance)
    drift = 0.5 * np.linalg.inv(metric) @ np.linalg.inv(prior)
    decay = scipy.linalg.expm(-drift * time)
    return decay @ start, prior - decay @ prior @ decay.T


def point_posterior(model, x, y, point, count):
    """Return a posterior DataTree whose ``count`` samples all sit at ``point`` (a dict of sites)."""
    samples = {name: np.broadcast_to(np.asarray(value), (1, count) + np.shape(value)).copy() for name, value in point.items()}
    return from_samples(model, x, y, samples, key=jax.random.key(0))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(20, 1))
    y = np.sin(2 * x[:, 0]) + NOISE * rng.normal(size=20)
    x_test = rng.uniform(-2, 2, size=(15, 1))
    y_test = np.sin(2 * x_test[:, 0]) + NOISE * rng.normal(size=15)
    return x, y, x_test, y_test


@pytest.fixture(scope="module")
def wide_features(data):
    """Random features with more parameters (24) than data points (12), so the metric has a null space."""
    x, y = data[0][:12], data[1][:12]
    model = RandomFeatures(hidden=(24,), activation="tanh", noise=NOISE, seed=1)
    fisher = fisher_information(model, {"a": np.zeros(24)}, x, progress=False)
    return model, x, y, fisher


@pytest.fixture(scope="module")
def small_features(data):
    """Random features with P = 4 < n = 20, a full-rank metric, and an exact posterior."""
    x, y = data[0], data[1]
    model = RandomFeatures(hidden=(4,), activation="tanh", noise=NOISE, seed=0)
    fisher = fisher_information(model, {"a": np.zeros(4)}, x, progress=False)
    posterior = conjugate(model, x, y, key=jax.random.key(0), num_samples=3000)
    return model, x, y, fisher, posterior


@pytest.fixture(scope="module")
def small_mlp(data):
    """A 1-2-1 tanh network: seven parameters with an anisotropic prior (variances 1 and 1/2)."""
    x, y = data[0], data[1]
    model = MLP(hidden=(2,), activation="tanh", noise=NOISE)
    params = {name: np.asarray(value) for name, value in model.sample_params(jax.random.key(5), 1).items()}
    return model, x, y, params


@pytest.fixture(scope="module")
def logistic():
    """Logistic regression f = w x + b with a N(0, 1) prior: a metric that varies strongly with theta."""
    rng = np.random.default_rng(2)
    x = rng.uniform(-2, 2, size=(6, 1))
    y = (rng.uniform(size=6) < 0.5).astype(float)
    model = MLP(hidden=(), bias=True, likelihood="bernoulli")
    return model, x, y


# exact transitions against the closed form


@pytest.mark.parametrize("case", ["eigen_with_null_space", "dense_anisotropic", "diagonal"])
def test_exact_transition_matches_matrix_exponential(case, wide_features, small_mlp):
    if case == "eigen_with_null_space":
        model, x, y, fisher = wide_features
        point = {"a": np.linspace(-1.0, 1.0, 24)}
    else:
        model, x, y, point = small_mlp
        fisher = fisher_information(model, point, x, basis="eigen" if case == "dense_anisotropic" else "diagonal",
                                    progress=False)
    variances = prior_variance_vector(model, fisher.layout, x.shape[1])
    regularizer = 1e-3
    exact = ExactDiffusion(fisher, variances, regularizer=regularizer, heat=False)
    start = np.asarray(fisher.layout.flatten(point))
    time = 0.3 * float(np.median(variances)) * float(np.median(fisher.eigenvalues) / fisher.num_data)

    moved = exact.advance(jax.random.key(1), np.tile(start, (4000, 1)), time)
    if case == "diagonal":
        metric = np.diag(fisher.diagonal_vector() / fisher.num_data)
    else:
        metric = fisher.to_dense() / fisher.num_data
    mean, covariance = ou_transition(metric + regularizer * np.eye(start.size), variances, start, time)

    assert exact.route == {"eigen_with_null_space": "eigen", "dense_anisotropic": "dense", "diagonal": "diagonal"}[case]
    mean_p, covariance_p = gaussian_fit_pvalues(moved, mean, covariance)
    assert mean_p > ALPHA
    assert covariance_p > ALPHA


def test_exact_transitions_compose(small_features):
    # Two steps of t/2 must give the law of one step of t (the Markov property of the exact route).
    model, x, _, fisher, _ = small_features
    variances = prior_variance_vector(model, fisher.layout, 1)
    exact = ExactDiffusion(fisher, variances, regularizer=1.0, heat=False)
    start = np.tile([1.0, -2.0, 0.5, 3.0], (4000, 1))
    key_one, key_two = jax.random.split(jax.random.key(2))
    twice = exact.advance(key_two, exact.advance(key_one, start, 0.25), 0.25)
    mean, covariance = ou_transition(fisher.to_dense() / fisher.num_data + np.eye(4), variances, start[0], 0.5)

    mean_p, covariance_p = gaussian_fit_pvalues(twice, mean, covariance)
    assert mean_p > ALPHA
    assert covariance_p > ALPHA


# the SDE integrator against the exact transition


@pytest.mark.parametrize(("scheme", "step_size"), [("euler_maruyama", 1e-3), ("exponential", 0.5)])
def test_sde_constant_metric_matches_exact(small_features, scheme, step_size):
    # With regularizer 1 the fastest mode relaxes at rate about 4, so Euler-Maruyama with dt = 1e-3
    # has a bias near 0.2 % in the variance, below the 2 % Monte Carlo error of 4000 samples. The
    # exponential scheme is exact for a constant metric, so one step of 0.5 must do.
    model, _, _, fisher, _ = small_features
    variances = prior_variance_vector(model, fisher.layout, 1)
    metric = fisher.to_dense() / fisher.num_data + np.eye(4)
    start = np.tile([1.0, -2.0, 0.5, 3.0], (4000, 1))
    sde = LangevinSDE(metric, prior_variance=variances)

    result = integrate_sde(sde, start, [0.5], key=jax.random.key(3), step_size=step_size, scheme=scheme, progress=False)
    exact = ExactDiffusion(fisher, variances, regularizer=1.0, heat=False).advance(jax.random.key(4), start, 0.5)
    mean, covariance = ou_transition(metric, variances, start[0], 0.5)

    mean_p, covariance_p = gaussian_fit_pvalues(result.states[0], mean, covariance)
    assert mean_p > ALPHA
    assert covariance_p > ALPHA
    assert result.num_steps[0] == (500 if scheme == "euler_maruyama" else 1)
    for direction in np.linalg.eigh(metric)[1].T:
        assert scipy.stats.ks_2samp(result.states[0] @ direction, exact @ direction).pvalue > ALPHA


def test_local_metric_of_linear_model_matches_reference(small_features):
    # The metric of a model linear in its parameters does not depend on them, so the SDE with the
    # local metric (Jacobians by autodiff, div D computed and zero) must follow the exact route.
    model, _, _, fisher, posterior = small_features
    options = {"times": [0.05, 0.2], "fisher": fisher, "regularizer": 1.0, "progress": False}
    exact = diffuse(posterior, model, key=jax.random.key(5), **options)
    local = diffuse(posterior, model, key=jax.random.key(6), metric="local", step_size=0.01, **options)

    for index in range(2):
        for direction in np.eye(4):
            statistic = scipy.stats.ks_2samp(exact.theta[index] @ direction, local.theta[index] @ direction)
            assert statistic.pvalue > ALPHA
    np.testing.assert_array_equal(local.acceptance_rate, [1.0, 1.0])


def test_langevin_drift_vmap_and_jit_match_loop(logistic):
    model, x, _ = logistic
    fisher = fisher_information(model, {"w1": np.ones((1, 1)), "b1": np.zeros(1)}, x, progress=False)
    metric = local_metric(model, fisher.layout, x, noise=None, regularizer=0.1)
    sde = LangevinSDE(metric, prior_variance=np.ones(2))
    points = np.random.default_rng(1).normal(size=(2, 2))

    looped = np.stack([np.asarray(langevin_drift(sde, jnp.asarray(row))) for row in points])
    batched = np.asarray(jax.jit(jax.vmap(lambda row: langevin_drift(sde, row)))(jnp.asarray(points)))
    np.testing.assert_allclose(batched, looped, rtol=1e-10, atol=1e-12)


# fixed points and relaxation rates


@pytest.mark.parametrize("model_name", ["features", "mlp"])
def test_prior_is_fixed_point_of_exact_flow(model_name, wide_features, small_mlp):
    if model_name == "features":
        model, x, y, fisher = wide_features
    else:
        model, x, y, point = small_mlp
        fisher = fisher_information(model, point, x, progress=False)
    variances = prior_variance_vector(model, fisher.layout, 1)
    draws = model.sample_params(jax.random.key(7), 1, 4000)
    posterior = from_samples(model, x, y, {name: np.asarray(value)[None] for name, value in draws.items()},
                             key=jax.random.key(8))
    time = float(np.median(variances)) * float(np.median(fisher.eigenvalues)) / fisher.num_data

    moved = diffuse(posterior, model, times=[time], fisher=fisher, key=jax.random.key(9), progress=False)
    mean_p, covariance_p = gaussian_fit_pvalues(moved.theta[0], np.zeros(variances.size), np.diag(variances))
    assert mean_p > ALPHA
    assert covariance_p > ALPHA


def test_prior_is_fixed_point_of_local_metric_flow(logistic):
    # The Ito term 1/2 div D is what keeps the prior stationary here: without it the variances of
    # these samples fall to about 0.6 by t = 0.5.
    model, x, y = logistic
    draws = model.sample_params(jax.random.key(10), 1, 1000)
    posterior = from_samples(model, x, y, {name: np.asarray(value)[None] for name, value in draws.items()},
                             key=jax.random.key(11))

    moved = diffuse(posterior, model, times=[0.5], key=jax.random.key(12), metric="local",
                    reference="posterior_mean", step_size=5e-3, progress=False)
    mean_p, covariance_p = gaussian_fit_pvalues(moved.theta[0], np.zeros(2), np.eye(2))
    assert mean_p > ALPHA
    assert covariance_p > ALPHA
    for column in range(2):
        assert scipy.stats.kstest(moved.theta[0][:, column], "norm").pvalue > ALPHA


def test_modes_relax_at_theory_rates(wide_features):
    # Every sample starts at one point; along eigenmode A the coordinate then has mean
    # c_0 e^{-gamma t / 2} and variance s^2 (1 - e^{-gamma t}), gamma = 1 / (s^2 (lambda / n + delta)).
    model, x, y, fisher = wide_features
    s2 = model.readout_variance
    regularizer = 1e-4
    count = 4000
    start = fisher.eigenvectors.combine(np.full(fisher.rank, 2.0), flat=True)
    posterior = point_posterior(model, x, y, {"a": start}, count)
    per_datum = fisher.eigenvalues / fisher.num_data
    gamma = 1.0 / (s2 * (per_datum + regularizer))
    times = np.array([0.5, 2.0]) / float(np.median(gamma))

    moved = diffuse(posterior, model, times=times, fisher=fisher, regularizer=regularizer,
                    key=jax.random.key(13), progress=False)
    np.testing.assert_allclose(relaxation_rates(per_datum, s2, regularizer), gamma, rtol=1e-12)
    for index, time in enumerate(times):
        coordinates = fisher.eigenvectors.coordinates(moved.theta[index])
        expected_mean = 2.0 * np.exp(-0.5 * gamma * time)
        expected_variance = s2 * -np.expm1(-gamma * time)
        mean_error = np.sqrt(expected_variance / count)
        variance_error = expected_variance * math.sqrt(2 / (count - 1))
        assert np.all(np.abs(coordinates.mean(axis=0) - expected_mean) < 4 * mean_error)
        assert np.all(np.abs(coordinates.var(axis=0, ddof=1) - expected_variance) < 4 * variance_error)

        # The null space relaxes at 1 / (s^2 delta), so it contains fresh prior draws at these times.
        complement = moved.theta[index] - fisher.eigenvectors.combine(coordinates, flat=True)
        null_variance = np.sum(complement**2, axis=1).mean() / (24 - fisher.rank)
        assert abs(null_variance - s2) < 4 * s2 * math.sqrt(2 / (count * (24 - fisher.rank)))


# the heat flow


def jeffreys_cdf(theta):
    """CDF of the Jeffreys density sqrt(p (1 - p)) / pi of a Bernoulli logit theta, p = sigmoid(theta)."""
    return 2 / np.pi * np.arcsin(np.sqrt(scipy.special.expit(theta)))


def test_heat_flow_of_bernoulli_logit_relaxes_to_jeffreys():
    # f = theta on one input, so the per-datum metric is p (1 - p). The manifold has finite length
    # pi, and from theta = 0 the slowest mode excited decays as e^{-2 t}, so t = 3 leaves 0.25 %.
    model = MLP(hidden=(), bias=False, likelihood="bernoulli")
    x, y = np.ones((1, 1)), np.ones(1)
    posterior = point_posterior(model, x, y, {"w1": np.zeros((1, 1))}, 1000)
    normaliser, _ = scipy.integrate.quad(lambda t: math.sqrt(scipy.special.expit(t) * scipy.special.expit(-t)),
                                         -np.inf, np.inf)

    moved = diffuse(posterior, model, times=[3.0], key=jax.random.key(14), metric="local", heat=True,
                    regularizer=0.0, metropolis=True, reference="posterior_mean", step_size=5e-3, progress=False)
    assert normaliser == pytest.approx(np.pi, rel=1e-8)
    assert scipy.stats.kstest(moved.theta[0][:, 0], jeffreys_cdf).pvalue > ALPHA
    assert moved.acceptance_rate[0] > 0.9


def test_heat_drift_is_laplace_beltrami(logistic):
    # For Brownian motion on the manifold, b . grad phi + 1/2 D : hess phi must equal
    # 1/2 det(G)^{-1/2} div(det(G)^{1/2} D grad phi) for any test function phi.
    model, x, _ = logistic
    fisher = fisher_information(model, {"w1": np.ones((1, 1)), "b1": np.zeros(1)}, x, progress=False)
    metric = local_metric(model, fisher.layout, x, noise=None, regularizer=0.0)
    sde = LangevinSDE(metric, log_density=lambda point: 0.5 * jnp.linalg.slogdet(metric(point))[1])

    def phi(point):
        return jnp.sin(point[0]) + point[0] * point[1] ** 2

    def generator(point):
        diffusion = jnp.linalg.inv(metric(point))
        return langevin_drift(sde, point) @ jax.grad(phi)(point) + 0.5 * jnp.sum(diffusion * jax.hessian(phi)(point))

    def laplace_beltrami(point):
        def flux(inner):
            return jnp.sqrt(jnp.linalg.det(metric(inner))) * jnp.linalg.solve(metric(inner), jax.grad(phi)(inner))

        divergence = jnp.trace(jax.jacfwd(flux)(point))
        return 0.5 * divergence / jnp.sqrt(jnp.linalg.det(metric(point)))

    points = jnp.asarray([[0.3, -0.7], [1.5, 0.4], [-2.0, 1.0]])
    expected = jax.jit(jax.vmap(laplace_beltrami))(points)
    np.testing.assert_allclose(jax.jit(jax.vmap(generator))(points), expected, rtol=1e-9)


# the diffusion and the information shell


def test_diffusion_coarse_grains_shell_directions(data):
    # Modes far below Lambda(t) must be at the prior in both flows; modes far above it keep their
    # trained values in the shell and move by less than 0.1 s in the diffusion (gamma t < 0.01).
    x, y, _, _ = data
    model = RandomFeatures(hidden=(16,), activation="tanh", noise=NOISE, seed=3)
    posterior = conjugate(model, x, y, key=jax.random.key(15), num_samples=3000)
    fisher = fisher_information(model, {"a": np.zeros(16)}, x, progress=False)
    s2 = model.readout_variance
    cutoff = float(np.sqrt(fisher.eigenvalues[0] * fisher.eigenvalues[-1]))
    time = cutoff * s2 / fisher.num_data

    moved = diffuse(posterior, model, times=[time], fisher=fisher, key=jax.random.key(16), progress=False)
    shell, _, split = coarse_grain(posterior, model, fisher, cutoff, key=jax.random.key(17))
    diffused = fisher.eigenvectors.coordinates(moved.theta[0])
    kept = fisher.eigenvectors.coordinates(shell["a"])
    trained = fisher.eigenvectors.coordinates(moved.initial)
    far_sloppy = fisher.eigenvalues < cutoff / 100
    far_stiff = fisher.eigenvalues > cutoff * 100
    count = diffused.shape[0]

    assert moved.cutoff_equivalent[0] == pytest.approx(cutoff, rel=1e-12)
    assert far_sloppy.sum() >= 2
    assert far_stiff.sum() >= 2
    for coordinates in (diffused, kept):
        sloppy = coordinates[:, far_sloppy]
        assert np.all(np.abs(sloppy.mean(axis=0)) < 4 * np.sqrt(s2 / count))
        assert np.all(np.abs(sloppy.var(axis=0, ddof=1) - s2) < 4 * s2 * math.sqrt(2 / (count - 1)))
    np.testing.assert_allclose(kept[:, far_stiff], trained[:, far_stiff], rtol=1e-8, atol=1e-10)
    # Per sample, diffused - trained = (e^{-gamma t / 2} - 1) trained + s sqrt(1 - e^{-gamma t}) xi.
    moved_by = np.sqrt(np.mean((diffused[:, far_stiff] - trained[:, far_stiff]) ** 2, axis=0))
    trained_size = np.sqrt(np.mean(trained[:, far_stiff] ** 2, axis=0))
    assert np.all(moved_by < 0.005 * trained_size + math.sqrt(0.01 * s2) * (1 + 4 / math.sqrt(2 * count)))
    assert split.num_stiff == int(np.sum(fisher.eigenvalues >= cutoff))


@pytest.fixture(scope="module")
def flow(small_features, data):
    model, _, _, fisher, posterior = small_features
    _, _, x_test, y_test = data
    # Lambda(t) runs from 1/100 of the smallest eigenvalue to 100 times the largest.
    cutoffs = np.geomspace(fisher.eigenvalues[-1] / 100, fisher.eigenvalues[0] * 100, 7)
    times = cutoffs * model.readout_variance / fisher.num_data
    return diffusion_flow(posterior, model, times=times, x_test=x_test, y_test=y_test, fisher=fisher,
                          key=jax.random.key(18), seed=3, progress=False)


def test_flow_layout_and_cutoff_equivalent(flow, small_features, data):
    model, x, _, fisher, posterior = small_features
    times = flow["flow"]["flow_time"].values
    expected_cutoffs = x.shape[0] * times / model.readout_variance
    np.testing.assert_allclose(flow_times(expected_cutoffs, model, input_dim=1, num_data=20), times, rtol=1e-12)

    assert flow["posterior"]["f"].dims == ("flow_time", "chain", "draw", "obs_id")
    assert flow["posterior_predictive"]["y"].dims == ("flow_time", "chain", "draw", "obs_id")
    np.testing.assert_allclose(flow["flow"]["cutoff_equivalent"].values, expected_cutoffs, rtol=1e-12)
    np.testing.assert_allclose(flow["posterior"]["cutoff_equivalent"].values, expected_cutoffs, rtol=1e-12)
    assert flow.attrs["scheme"] == "diffusion"
    assert flow.attrs["cutoff_factor"] == x.shape[0]
    assert flow.attrs["seed"] == 3
    spectrum = flow["spectrum"]["eigenvalues"].values
    np.testing.assert_allclose(spectrum[: fisher.eigenvalues.size], fisher.eigenvalues, rtol=1e-12)
    assert np.all(spectrum[fisher.eigenvalues.size :] == 0)

    # num_stiff follows the shell's rule at Lambda(t); the smooth count is sum_A exp(-gamma_A t).
    _, _, x_test, y_test = data
    shell = information_shell_flow(posterior, model, cutoffs=expected_cutoffs, x_test=x_test, y_test=y_test,
                                   fisher=fisher, key=jax.random.key(19), progress=False)
    np.testing.assert_array_equal(flow["flow"]["num_stiff"].values, shell["flow"]["num_stiff"].values)
    assert np.all(np.diff(flow["flow"]["num_stiff_smooth"].values) <= 0)


def test_flow_test_mse_rises_to_prior(flow):
    # At the first time gamma t <= 0.01 for every mode; at the last one gamma t >= 100.
    statistics = flow["flow"]
    assert statistics["num_stiff_smooth"].values[0] == pytest.approx(4.0, abs=0.05)
    assert statistics["num_stiff_smooth"].values[-1] < 1e-10
    np.testing.assert_array_equal(statistics["num_stiff"].values[[0, -1]], [4, 0])
    assert statistics["test_mse"].values[-1] > 2 * float(statistics["trained_test_mse"])
    assert statistics["test_mse"].values[0] < statistics["test_mse"].values[-1]


def test_flow_works_with_critical_cutoff_plots_and_files(flow, tmp_path):
    result = critical_cutoff(flow, num_bootstrap=200)
    assert result.found
    assert result.value in flow["flow"]["cutoff_equivalent"].values

    figure = plot_flow(flow, critical=result)
    assert figure.axes[0].get_xlabel().startswith("effective cutoff Λ(t)")
    plot_predictive(flow, points=[0])
    at_start = flow_at(flow, 0)
    assert at_start["posterior"]["f"].dims == ("chain", "draw", "obs_id")

    save(flow, tmp_path / "diffusion.nc")
    loaded = load(tmp_path / "diffusion.nc")
    np.testing.assert_array_equal(loaded["flow"]["cutoff_equivalent"].values, flow["flow"]["cutoff_equivalent"].values)


# errors


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"times": [1.0, -1.0]}, ValueError, "times must be finite and > 0, got -1.0"),
        ({"times": []}, ValueError, "times must be a non-empty 1-D sequence"),
        ({"times": [1.0, 1.0]}, ValueError, "times contain duplicates"),
        ({"metric": "global"}, ValueError, "invalid metric='global'"),
        ({"basis": "pca"}, ValueError, "invalid basis='pca'"),
        ({"reference": "mode"}, ValueError, "invalid reference='mode'"),
        ({"regularizer": -1.0}, ValueError, "regularizer must be a finite number >= 0, got -1.0"),
        ({"regularizer": "small"}, TypeError, "regularizer must be a number >= 0, got 'small'"),
        ({"key": 3}, TypeError, "key must be a JAX PRNG key"),
        ({"metropolis": True}, ValueError, "step_size, scheme and metropolis set the SDE integrator"),
        ({"step_size": 0.0, "metric": "local"}, ValueError, "step_size must be a finite number > 0"),
        ({"basis": "diagonal"}, ValueError, "fisher was computed in basis 'eigen' but basis='diagonal'"),
    ],
)
def test_diffuse_rejects_bad_options(small_features, options, error, match):
    model, _, _, fisher, posterior = small_features
    arguments = {"times": [0.1], "key": jax.random.key(0), "fisher": fisher, "progress": False, **options}
    with pytest.raises(error, match=match):
        diffuse(posterior, model, **arguments)


def test_heat_flow_rejects_unregularised_null_space(wide_features):
    model, x, y, fisher = wide_features
    posterior = point_posterior(model, x, y, {"a": np.zeros(24)}, 4)
    with pytest.raises(ValueError, match="heat=True with regularizer=0 gives the directions of zero Fisher"):
        diffuse(posterior, model, times=[0.1], fisher=fisher, heat=True, regularizer=0.0,
                key=jax.random.key(0), progress=False)


def test_local_flow_reports_overflow():
    # Without the Metropolis correction, large heat-flow steps on the Bernoulli manifold throw
    # samples to where p (1 - p) underflows and the metric is no longer positive definite.
    model = MLP(hidden=(), bias=False, likelihood="bernoulli")
    posterior = point_posterior(model, np.ones((1, 1)), np.ones(1), {"w1": np.full((1, 1), 30.0)}, 8)
    with pytest.raises(FloatingPointError, match="the SDE produced NaN or inf"):
        diffuse(posterior, model, times=[1.0], key=jax.random.key(0), metric="local", heat=True,
                regularizer=0.0, reference="posterior_mean", step_size=0.5, progress=False)


def test_diffusion_flow_rejects_bad_test_data(small_features):
    model, _, _, fisher, posterior = small_features
    with pytest.raises(ValueError, match="x_test has 2 features but the training inputs have 1"):
        diffusion_flow(posterior, model, times=[0.1], x_test=np.zeros((3, 2)), y_test=np.zeros(3),
                       fisher=fisher, key=jax.random.key(0), progress=False)
    bernoulli = MLP(hidden=(), likelihood="bernoulli")
    with pytest.raises(ValueError, match="diffusion_flow evaluates Gaussian predictive statistics"):
        diffusion_flow(posterior, bernoulli, times=[0.1], x_test=np.zeros((3, 1)), y_test=np.zeros(3),
                       key=jax.random.key(0), progress=False)


def test_sde_rejects_bad_arguments():
    with pytest.raises(ValueError, match="prior_mean was given without prior_variance"):
        LangevinSDE(np.eye(2), prior_mean=np.zeros(2))
    with pytest.raises(ValueError, match="prior_variance must be a vector"):
        LangevinSDE(np.eye(2), prior_variance=np.array([1.0, -1.0]))
    flat = LangevinSDE(np.eye(2))
    with pytest.raises(ValueError, match="scheme='exponential' integrates the Gaussian factor"):
        integrate_sde(flat, np.zeros((3, 2)), [1.0], key=jax.random.key(0), step_size=0.1, scheme="exponential")
    with pytest.raises(ValueError, match="invalid scheme='midpoint'"):
        integrate_sde(flat, np.zeros((3, 2)), [1.0], key=jax.random.key(0), step_size=0.1, scheme="midpoint")
    with pytest.raises(ValueError, match=r"theta must have shape \(S, P\), got \(2,\)"):
        integrate_sde(flat, np.zeros(2), [1.0], key=jax.random.key(0), step_size=0.1)


def test_critical_cutoff_names_missing_scale(flow):
    broken = flow.copy()
    broken["flow"] = flow["flow"].to_dataset().drop_vars("cutoff_equivalent")
    with pytest.raises(ValueError, match="expected a 'cutoff' dimension, or 'flow_time' with the coordinate"):
        critical_cutoff(broken)
