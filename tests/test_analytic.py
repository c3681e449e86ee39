"""The closed-form information-shell flow of an infinite-width network (nngp_shell_flow).

References: Gaussian-process regression formulas written out here with NumPy, the arc-cosine
kernel of Cho and Saul, and Monte Carlo over exact posterior samples of wide random-features
networks, with tolerances from the Monte Carlo standard error.
"""

import math

import jax
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure
from scipy.stats import norm

from brgnnft.brg import (
    critical_cutoff,
    empirical_kernel,
    fisher_information,
    infinite_width_kernel,
    information_shell_flow,
    nngp_shell_flow,
    plot_analytic_comparison,
    plot_flow,
    random_features_kernel,
)
from brgnnft.inference import conjugate, load, save
from brgnnft.models import MLP, NNGP, CosNet, RandomFeatures

NOISE = 0.1
WIDTH = 4096
NUM_POSTERIOR = 1000
FAMILY_ERROR_RATE = 0.01


def bonferroni_z(count: int) -> float:
    """Return the two-sided z threshold that keeps the chance of any false failure among ``count`` checks at 1 %."""
    return float(norm.isf(FAMILY_ERROR_RATE / (2 * count)))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(20, 1))
    y = np.sin(2 * x[:, 0]) + NOISE * rng.normal(size=20)
    x_test = rng.uniform(-2, 2, size=(8, 1))
    y_test = np.sin(2 * x_test[:, 0]) + NOISE * rng.normal(size=8)
    return x, y, x_test, y_test


@pytest.fixture(scope="module")
def mlp_kernel():
    return MLP(hidden=(64,), activation="relu").kernel


@pytest.fixture(scope="module")
def wide_model():
    return RandomFeatures(hidden=(WIDTH,), activation="relu", noise=NOISE, seed=0)


@pytest.fixture(scope="module")
def wide_posterior(wide_model, data):
    x, y, _, _ = data
    return conjugate(wide_model, x, y, key=jax.random.key(0), num_samples=NUM_POSTERIOR)


@pytest.fixture(scope="module")
def wide_fisher(wide_model, data):
    return fisher_information(wide_model, {"a": np.zeros(WIDTH)}, data[0], progress=False)


@pytest.fixture(scope="module")
def spectrum_cutoffs(wide_fisher):
    # One cutoff between each pair of neighbouring Fisher eigenvalues, one below and one above the
    # spectrum, so every number of stiff modes from 0 to n occurs once.
    values = wide_fisher.eigenvalues
    between = np.sqrt(values[:-1] * values[1:])
    return np.concatenate([[values[-1] / 10], between, [values[0] * 10]])


@pytest.fixture(scope="module")
def wide_flow(wide_model, wide_posterior, wide_fisher, data, spectrum_cutoffs):
    """Return the finite network's flow for a prescription, computed once per prescription."""
    _, _, x_test, y_test = data
    flows = {}

    def run(prescription):
        if prescription not in flows:
            flows[prescription] = information_shell_flow(
                wide_posterior, wide_model, cutoffs=spectrum_cutoffs, x_test=x_test, y_test=y_test,
                fisher=wide_fisher, prescription=prescription, key=jax.random.key(1), progress=False,
            )
        return flows[prescription]

    return run


def run_analytic(kernel, data, cutoffs, **options):
    x, y, x_test, y_test = data
    return nngp_shell_flow(kernel, x, y, NOISE, cutoffs=cutoffs, x_test=x_test, y_test=y_test, **options)


def gp_posterior(gram, cross, test_gram, y, noise_covariance):
    """Return the GP posterior mean and covariance with a general noise covariance (Rasmussen and Williams, eq. 2.22-2.24)."""
    solved = np.linalg.solve(gram + noise_covariance, np.column_stack([y, cross.T]))
    return cross @ solved[:, 0], test_gram - cross @ solved[:, 1:]


def test_trained_moments_match_gp_posterior(mlp_kernel, data):
    x, y, x_test, _ = data
    flow = run_analytic(mlp_kernel, data, [1e-12])
    expected = NNGP(mlp_kernel, noise=NOISE).posterior_moments(x, y, x_test)

    for name in ("trained_predictive_mean", "predictive_mean"):
        values = flow["flow"][name].values.reshape(-1, x_test.shape[0])
        np.testing.assert_allclose(values[-1], np.asarray(expected.mean), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(flow["flow"]["trained_predictive_covariance"].values, np.asarray(expected.covariance), atol=1e-10)
    np.testing.assert_allclose(flow["flow"]["predictive_covariance"].values[0], np.asarray(expected.covariance), atol=1e-10)
    assert flow["flow"]["num_stiff"].values[0] == flow.attrs["num_modes"]


def test_no_stiff_modes_give_prior_or_residual(mlp_kernel, data):
    x, _, x_test, _ = data
    test_gram = np.asarray(mlp_kernel(x_test, x_test))
    cross = np.asarray(mlp_kernel(x_test, x))
    conditional = test_gram - cross @ np.linalg.solve(np.asarray(mlp_kernel(x, x)), cross.T)
    above = [1e30]

    prior = run_analytic(mlp_kernel, data, above, prescription="prior")
    marginal = run_analytic(mlp_kernel, data, above, prescription="marginalize")
    dropped = run_analytic(mlp_kernel, data, above, prescription="prune", residual="drop")

    np.testing.assert_allclose(prior["flow"]["predictive_mean"].values[0], 0.0, atol=1e-14)
    np.testing.assert_allclose(prior["flow"]["predictive_covariance"].values[0], test_gram, atol=1e-9)
    np.testing.assert_allclose(marginal["flow"]["predictive_covariance"].values[0], conditional, atol=1e-7)
    np.testing.assert_array_equal(dropped["flow"]["predictive_covariance"].values[0], 0.0)
    assert prior["flow"]["fraction_coarse_grained"].values[0] == 1.0


def test_prune_equals_marginalize(mlp_kernel, data):
    # The prior of the mode coordinates has mean zero, so setting sloppy modes to the prior mean
    # (prune) and dropping them (marginalize) give the same flow.
    cutoffs = [1e-2, 1.0, 1e2]
    pruned = run_analytic(mlp_kernel, data, cutoffs, prescription="prune")
    marginal = run_analytic(mlp_kernel, data, cutoffs, prescription="marginalize")

    for name in ("predictive_mean", "predictive_covariance", "test_mse"):
        np.testing.assert_array_equal(pruned["flow"][name].values, marginal["flow"][name].values)


def test_closed_form_statistics(mlp_kernel, data, tmp_path):
    _, _, _, y_test = data
    cutoffs = [1e-2, 1.0, 1e2, 1e4]
    flow = run_analytic(mlp_kernel, data, cutoffs, prescription="prior")
    diagonal_only = run_analytic(mlp_kernel, data, cutoffs, prescription="prior", covariance=False)
    statistics = flow["flow"]
    mean = statistics["predictive_mean"].values
    variance = np.diagonal(statistics["predictive_covariance"].values, axis1=1, axis2=2)
    trained_mean = statistics["trained_predictive_mean"].values
    trained_variance = np.diag(statistics["trained_predictive_covariance"].values)
    predictive = variance + NOISE**2
    trained_predictive = trained_variance + NOISE**2
    log_density = -0.5 * np.log(2 * np.pi * predictive) - 0.5 * (y_test - mean) ** 2 / predictive
    kl = 0.5 * (np.log(trained_predictive / predictive) + (predictive + (mean - trained_mean) ** 2) / trained_predictive - 1)

    np.testing.assert_allclose(statistics["test_mse"].values, np.mean((mean - y_test) ** 2 + variance, axis=1), rtol=1e-12)
    np.testing.assert_allclose(statistics["predictive_sd"].values, np.sqrt(predictive).mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(statistics["f_sd"].values, np.sqrt(np.maximum(variance, 0)).mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(statistics["log_predictive_density"].values, log_density.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(statistics["kl_from_trained"].values, kl.mean(axis=1), rtol=1e-9, atol=1e-14)
    np.testing.assert_array_equal(statistics["test_mse_se"].values, 0.0)
    np.testing.assert_allclose(diagonal_only["flow"]["predictive_variance"].values, variance, rtol=1e-10, atol=1e-14)
    assert "predictive_covariance" not in diagonal_only["flow"].data_vars
    assert "posterior" not in flow.children
    save(flow, tmp_path / "analytic_flow.nc")
    np.testing.assert_array_equal(load(tmp_path / "analytic_flow.nc")["flow"]["predictive_covariance"].values, statistics["predictive_covariance"].values)


def test_samples_match_closed_form(mlp_kernel, data):
    num_samples = 4000
    cutoffs = [1e-2, 1.0, 1e2, 1e4]
    flow = run_analytic(mlp_kernel, data, cutoffs, prescription="prior", num_samples=num_samples, key=jax.random.key(3))
    f = flow["posterior"]["f"].values[:, 0]
    mean = flow["flow"]["predictive_mean"].values
    variance = flow["flow"]["predictive_variance"].values
    z = bonferroni_z(2 * mean.size)

    assert np.all(np.abs(f.mean(axis=1) - mean) <= z * np.sqrt(variance / num_samples))
    assert np.all(np.abs(f.var(axis=1, ddof=1) - variance) <= z * variance * math.sqrt(2 / (num_samples - 1)))
    member_mse = flow["flow"]["member_mse"].values.reshape(len(cutoffs), -1)
    member_se = member_mse.std(axis=1, ddof=1) / math.sqrt(num_samples)
    assert np.all(np.abs(member_mse.mean(axis=1) - flow["flow"]["test_mse"].values) <= bonferroni_z(len(cutoffs)) * member_se)
    assert flow["posterior_predictive"]["y"].dims == ("cutoff", "chain", "draw", "obs_id")

    result = critical_cutoff(flow, num_bootstrap=200)
    assert result.found
    assert result.value in cutoffs
    plt.close(plot_flow(flow))


@pytest.mark.parametrize(("prescription", "residual"), [("prior", "prior"), ("marginalize", "drop")])
def test_wide_random_features_flow_matches_empirical_kernel(wide_model, wide_flow, data, spectrum_cutoffs, prescription, residual):
    finite = wide_flow(prescription)
    analytic = run_analytic(
        empirical_kernel(wide_model), data, spectrum_cutoffs, prescription=prescription, residual=residual,
        readout_variance=wide_model.readout_variance,
    )
    f = finite["posterior"]["f"].values[:, 0]
    mean = analytic["flow"]["predictive_mean"].values
    variance = analytic["flow"]["predictive_variance"].values
    z = bonferroni_z(2 * mean.size)
    # Where the closed form has no spread (every mode and the residual set to zero) f is exactly 0.
    degenerate = variance <= 1e-12 * variance.max()

    np.testing.assert_array_equal(finite["flow"]["num_stiff"].values, analytic["flow"]["num_stiff"].values)
    assert np.all(np.abs(f.mean(axis=1) - mean)[~degenerate] <= z * np.sqrt(variance / NUM_POSTERIOR)[~degenerate])
    relative_variance = f.var(axis=1, ddof=1)[~degenerate] / variance[~degenerate] - 1
    assert np.all(np.abs(relative_variance) <= z * math.sqrt(2 / (NUM_POSTERIOR - 1)))
    np.testing.assert_allclose(f[degenerate.nonzero()[0], :, degenerate.nonzero()[1]], 0.0, atol=1e-10)


def test_cutoffs_select_same_modes_as_readout_fisher(wide_model, wide_fisher, data, spectrum_cutoffs):
    analytic = run_analytic(empirical_kernel(wide_model), data, spectrum_cutoffs, readout_variance=wide_model.readout_variance)
    spectrum = analytic["spectrum"]["eigenvalues"].values
    finite = wide_fisher.eigenvalues

    np.testing.assert_allclose(spectrum[: finite.size], finite, rtol=1e-8, atol=1e-10 * finite[0])
    assert analytic["spectrum"].attrs["basis"] == "eigen"


def test_random_features_kernel_is_arc_cosine(data):
    x, _, x_test, _ = data
    model = RandomFeatures(hidden=(8,), activation="relu", noise=NOISE, weight_var=2.0, bias_var=0.5, readout_var=3.0)
    first = lambda a, b: 0.5 + 2.0 * a @ b.T  # noqa: E731 - the first-layer NNGP of d = 1 inputs
    k11, k22, k12 = np.diag(first(x, x))[:, None], np.diag(first(x_test, x_test))[None, :], first(x, x_test)
    theta = np.arccos(np.clip(k12 / np.sqrt(k11 * k22), -1, 1))
    expected = 3.0 * np.sqrt(k11 * k22) * (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (2 * np.pi)

    np.testing.assert_allclose(random_features_kernel(model)(x, x_test), expected, rtol=1e-10)
    assert infinite_width_kernel(model) is not None


def test_nngp_kernel_flow_close_at_width(data):
    # Each network's empirical kernel deviates from the NNGP kernel by O(WIDTH^-1/2). The spread of
    # the closed-form flow over independent networks measures that error, and the NNGP flow must
    # sit within the standard error of the mean over networks. The O(1/WIDTH) bias is 64 times
    # smaller than one network's deviation at this width, so it stays below that standard error.
    x, y, x_test, y_test = data
    reference_model = RandomFeatures(hidden=(WIDTH,), activation="relu", noise=NOISE)
    nngp = random_features_kernel(reference_model)
    scale = reference_model.readout_variance
    eigenvalues = np.linalg.eigvalsh(nngp(x))[::-1] / (scale * NOISE**2)
    # Cutoffs sit in the three widest gaps among the top eight modes, whose eigenvalues the
    # kernel error moves by far less than the gap.
    ratios = eigenvalues[:7] / eigenvalues[1:8]
    gaps = np.sort(np.argsort(ratios)[-3:])
    cutoffs = np.sqrt(eigenvalues[gaps] * eigenvalues[gaps + 1])
    reference = run_analytic(nngp, data, cutoffs, readout_variance=scale, covariance=False)

    networks = []
    for seed in range(16):
        model = RandomFeatures(hidden=(WIDTH,), activation="relu", noise=NOISE, seed=seed + 1)
        flow = run_analytic(empirical_kernel(model), data, cutoffs, readout_variance=scale, covariance=False)
        np.testing.assert_array_equal(flow["flow"]["num_stiff"].values, reference["flow"]["num_stiff"].values)
        networks.append([flow["flow"][name].values for name in ("predictive_mean", "predictive_variance")])
    networks = np.array(networks)
    spread = networks.std(axis=0, ddof=1)
    z = bonferroni_z(networks[0].size)

    for position, name in enumerate(("predictive_mean", "predictive_variance")):
        deviation = np.abs(networks[:, position].mean(axis=0) - reference["flow"][name].values)
        assert np.all(deviation <= z * spread[position] / math.sqrt(len(networks))), name


@pytest.mark.parametrize("prescription", ["prior", "marginalize"])
def test_removed_modes_renormalise_noise(mlp_kernel, data, prescription):
    # Integrating out the sloppy Gram modes (arXiv:2405.06008) at the training points: the prior
    # prescription's predictive of y is the posterior predictive of a GP with the stiff kernel K_>
    # and noise covariance sigma^2 I + K_<, whose trace is n sigma^2 + sum of removed kappa_k.
    # The marginalize prescription drops K_<: a GP with kernel K_> and noise sigma^2 I.
    x, y, _, _ = data
    gram = np.asarray(mlp_kernel(x, x))
    kappa, vectors = np.linalg.eigh(gram)
    cutoff = float(np.sqrt(kappa[-4] * kappa[-5])) / NOISE**2
    stiff = kappa / NOISE**2 >= cutoff
    stiff_kernel = (vectors[:, stiff] * kappa[stiff]) @ vectors[:, stiff].T
    removed_kernel = (vectors[:, ~stiff] * kappa[~stiff]) @ vectors[:, ~stiff].T
    flow = nngp_shell_flow(mlp_kernel, x, y, NOISE, cutoffs=[cutoff], x_test=x, y_test=y, prescription=prescription)
    mean = flow["flow"]["predictive_mean"].values[0]
    predictive = flow["flow"]["predictive_covariance"].values[0] + NOISE**2 * np.eye(len(y))

    noise_covariance = NOISE**2 * np.eye(len(y)) + (removed_kernel if prescription == "prior" else 0.0)
    stiff_mean, stiff_covariance = gp_posterior(stiff_kernel, stiff_kernel, stiff_kernel, y, noise_covariance)
    np.testing.assert_allclose(mean, stiff_mean, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(predictive, stiff_covariance + noise_covariance, atol=1e-9)
    if prescription == "prior":
        renormalised = np.trace(predictive) - np.trace(stiff_covariance)
        assert renormalised == pytest.approx(len(y) * NOISE**2 + kappa[~stiff].sum(), rel=1e-10)
    # the stiff modes' posterior does not depend on whether K_< is in the noise
    unchanged_mean, _ = gp_posterior(stiff_kernel, stiff_kernel, stiff_kernel, y, NOISE**2 * np.eye(len(y)) + removed_kernel)
    np.testing.assert_allclose(stiff_mean, unchanged_mean, rtol=1e-8, atol=1e-10)


def test_cosnet_kernel_is_infinite_width_kernel():
    model = CosNet(16, dim=1, mass=1.0, cutoff=5.0, noise=NOISE)

    assert infinite_width_kernel(model) == model.kernel


def test_plot_analytic_comparison(wide_model, wide_flow, data, spectrum_cutoffs):
    finite = wide_flow("prior")
    analytic = run_analytic(empirical_kernel(wide_model), data, spectrum_cutoffs, readout_variance=wide_model.readout_variance)
    figure = plot_analytic_comparison(finite, analytic)

    assert isinstance(figure, Figure)
    assert len(figure.axes) == 2
    assert all(len(ax.get_lines()) >= 2 for ax in figure.axes)
    plt.close(plot_analytic_comparison(finite, analytic["flow"].to_dataset()))
    with pytest.raises(TypeError, match="reference must be a flow DataTree or its 'flow' group"):
        plot_analytic_comparison(finite, {"flow": analytic})
    with pytest.raises(TypeError, match="flow must be a flow DataTree from information_shell_flow"):
        plot_analytic_comparison(finite["flow"].to_dataset(), analytic)
    with pytest.raises(ValueError, match="reference lacks the flow variables"):
        plot_analytic_comparison(finite, analytic["flow"].to_dataset().drop_vars("predictive_sd"))
    with pytest.raises(TypeError, match="sequence of 2 matplotlib Axes"):
        plot_analytic_comparison(finite, analytic, axes=figure.axes[:1])
    plt.close(figure)


def non_psd_kernel(x1, x2):
    return np.array([[1.0, 2.0], [2.0, 1.0]])[: len(x1), : len(x2)]


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"kernel": "rbf"}, TypeError, "kernel must be a callable"),
        ({"noise": 0.0}, ValueError, "noise must be a finite number > 0"),
        ({"prescription": "jeffreys"}, ValueError, "invalid prescription='jeffreys'"),
        ({"residual": "keep"}, ValueError, "invalid residual='keep'"),
        ({"num_samples": 10}, ValueError, "num_samples needs key"),
        ({"num_samples": 0, "key": jax.random.key(0)}, ValueError, "num_samples must be a positive integer"),
        ({"readout_variance": -1.0}, ValueError, "readout_variance must be a finite number > 0"),
        ({"rtol": 2.0}, ValueError, "rtol is relative to the largest eigenvalue"),
        ({"cutoffs": [0.0]}, ValueError, "cutoffs must be finite and > 0"),
        ({"x_test": np.zeros((3, 2)), "y_test": np.zeros(3)}, ValueError, "x_test has 2 features but x has 1"),
        ({"y": np.zeros(5)}, ValueError, "y has shape"),
        ({"kernel": lambda a, b: np.zeros((len(a), len(b) + 1))}, ValueError, "kernel returned shape"),
        ({"kernel": lambda a, b: np.full((len(a), len(b)), np.nan)}, ValueError, "kernel returned NaN or inf"),
        ({"kernel": lambda a, b: np.zeros((len(a), len(b)))}, ValueError, "has no positive eigenvalue"),
    ],
)
def test_nngp_shell_flow_errors(mlp_kernel, data, options, error, match):
    x, y, x_test, y_test = data
    arguments = {"kernel": mlp_kernel, "x": x, "y": y, "noise": NOISE, "cutoffs": [1.0], "x_test": x_test, "y_test": y_test}
    arguments.update(options)
    positional = [arguments.pop(name) for name in ("kernel", "x", "y", "noise")]
    with pytest.raises(error, match=match):
        nngp_shell_flow(*positional, **arguments)


def test_non_psd_kernel_is_rejected():
    points = np.array([[0.0], [1.0]])
    with pytest.raises(ValueError, match="not positive semi-definite"):
        nngp_shell_flow(non_psd_kernel, points, np.zeros(2), NOISE, cutoffs=[1.0], x_test=points, y_test=np.zeros(2))


def test_kernel_helpers_reject_other_models():
    with pytest.raises(ValueError, match="fan_in_scaling=False"):
        random_features_kernel(RandomFeatures.paper())
    with pytest.raises(TypeError, match="needs a RandomFeatures model"):
        random_features_kernel(MLP(hidden=(4,)))
    with pytest.raises(TypeError, match="needs a model with a linear readout"):
        empirical_kernel(MLP(hidden=(4,)))
    with pytest.raises(ValueError, match="build it with frozen=True"):
        empirical_kernel(CosNet(4, frozen=False))
    with pytest.raises(TypeError, match="infinite_width_kernel supports RandomFeatures and CosNet"):
        infinite_width_kernel(MLP(hidden=(4,)))
