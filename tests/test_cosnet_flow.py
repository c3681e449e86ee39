"""The cos-net flow as momentum-shell renormalization: dictionary, propagator and running couplings.

The network is a frozen cos-net with ball momenta on a dense uniform grid, so the Fisher diagonal
follows C / (b^2 + m^2) within the exact Dirichlet-kernel bound and the information shell is a
momentum shell. Estimates are compared with the closed forms within their Monte Carlo standard
errors, with a Bonferroni threshold over the number of comparisons.
"""

import math

import jax
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure
from scipy.stats import norm

from brgnnft.brg import (
    cosnet_shell_flow,
    dense_data_constant,
    fisher_information,
    information_cutoff,
    momentum_cutoff,
    momentum_propagator,
    momentum_shell_couplings,
    plot_running_couplings,
    plot_shell_propagator,
    running_couplings,
    shell_propagator,
)
from brgnnft.inference import conjugate, load, prior_samples, save
from brgnnft.models import MLP, CosNet

NOISE = 0.1
MASS = 1.0
RADIUS = 10.0
WIDTH = 1000
NUM_DATA = 1000
# Box side L: with |b| L >> 1 the squared cosines average to 1/2 and with n > R L / pi the grid
# does not alias any momentum.
BOX = 200.0
NUM_SAMPLES = 400
BINS = 10
# Shell edges at bin edges, so every bin is wholly stiff or wholly sloppy.
SHELL_MOMENTA = np.array([10.0, 8.0, 6.0, 4.0, 2.0])
FAMILY_ERROR_RATE = 0.01


def bonferroni_z(count: int) -> float:
    """Return the two-sided z threshold that keeps the chance of any false failure among ``count`` checks at 1 %."""
    return float(norm.isf(FAMILY_ERROR_RATE / (2 * count)))


@pytest.fixture(scope="module")
def model():
    return CosNet(WIDTH, dim=1, mass=MASS, cutoff=RADIUS, noise=NOISE, seed=0)


@pytest.fixture(scope="module")
def grid():
    return (np.arange(NUM_DATA) * BOX / NUM_DATA)[:, None]


@pytest.fixture(scope="module")
def test_points():
    x_test = np.linspace(0.0, 5.0, 7)[:, None]
    return x_test, np.sin(x_test[:, 0])


@pytest.fixture(scope="module")
def cutoffs(model):
    return information_cutoff(model, SHELL_MOMENTA, num_data=NUM_DATA)


@pytest.fixture(scope="module")
def free_flow(model, grid, test_points, cutoffs):
    tree = prior_samples(model, grid, key=jax.random.key(0), num_samples=NUM_SAMPLES)
    x_test, y_test = test_points
    return cosnet_shell_flow(tree, model, cutoffs=cutoffs, x_test=x_test, y_test=y_test, key=jax.random.key(1), group="prior", progress=False)


@pytest.fixture(scope="module")
def momentum(model):
    return np.abs(np.asarray(model.b)[:, 0])


def test_fisher_diagonal_within_dense_data_bound(model, grid, momentum):
    fisher = fisher_information(model, {"a": np.zeros(WIDTH)}, grid, basis="diagonal", progress=False)
    dense = dense_data_constant(model, NUM_DATA) / (momentum**2 + MASS**2)
    spacing = BOX / NUM_DATA
    bound = np.abs(np.sin(NUM_DATA * momentum * spacing) / (NUM_DATA * np.sin(momentum * spacing)))

    assert np.all(np.abs(fisher.diagonal_vector() / dense - 1) <= bound + 1e-12)
    expected = NUM_DATA * 2 * RADIUS / (NOISE**2 * model.readout_var * 2 * math.pi)
    assert dense_data_constant(model, NUM_DATA) == pytest.approx(expected, rel=1e-14)


def test_momentum_and_information_cutoffs_invert(model):
    momenta = np.array([0.0, 0.5, 3.0, RADIUS])
    constant = dense_data_constant(model, NUM_DATA)

    np.testing.assert_allclose(momentum_cutoff(model, information_cutoff(model, momenta, num_data=NUM_DATA), num_data=NUM_DATA), momenta, rtol=1e-12, atol=1e-7)
    assert momentum_cutoff(model, 2 * constant / MASS**2, num_data=NUM_DATA) == 0.0
    assert momentum_cutoff(model, constant / (4 * RADIUS**2), num_data=NUM_DATA) == RADIUS
    # halving sigma quadruples C, so k^2 = 4 C / C - m^2
    assert momentum_cutoff(model, constant, num_data=NUM_DATA, noise=NOISE / 2) == pytest.approx(math.sqrt(4 - MASS**2), rel=1e-12)


def test_stiff_set_is_momentum_ball(free_flow, momentum):
    stiff = free_flow["momentum"]["stiff"].values
    edges = free_flow["momentum"]["momentum_cutoff"].values

    np.testing.assert_allclose(np.sort(edges), np.sort(SHELL_MOMENTA), rtol=1e-12)
    np.testing.assert_array_equal(stiff, momentum[None, :] <= edges[:, None])
    np.testing.assert_array_equal(free_flow["flow"]["num_stiff"].values, stiff.sum(axis=1))


def test_marginalized_propagator_matches_closed_form(free_flow, model):
    propagator = momentum_propagator(free_flow, model, bins=BINS)
    estimate = propagator["propagator"].values
    error = propagator["propagator_se"].values
    closed = propagator["closed_form"].values
    removed = error == 0
    z = bonferroni_z(int((~removed).sum()))

    assert np.all(np.abs(estimate - closed)[~removed] <= z * error[~removed])
    np.testing.assert_array_equal(estimate[removed], 0.0)
    np.testing.assert_array_equal(closed[removed], 0.0)
    # each removed bin lies wholly above the shell edge k(Lambda)
    above = propagator["momentum_low"].values[None, :] >= propagator["momentum_cutoff"].values[:, None] - 1e-9
    np.testing.assert_array_equal(removed, above)
    np.testing.assert_allclose(propagator["free_propagator"].values, closed[0], rtol=1e-12)


def test_fitted_couplings_match_momentum_shell(free_flow, model):
    couplings = running_couplings(free_flow, model, bins=BINS)
    fitted = couplings["num_bins_fitted"].values >= 3
    z = bonferroni_z(4 * int(fitted.sum()))

    np.testing.assert_array_equal(couplings["num_bins_fitted"].values, np.sort(SHELL_MOMENTA)[::-1].astype(int))
    for name in ("Z", "mass_squared", "rescaled_Z", "rescaled_mass_squared"):
        deviation = np.abs(couplings[name].values - couplings[f"closed_form_{name}"].values)[fitted]
        assert np.all(deviation <= z * couplings[f"{name}_se"].values[fitted]), name
    assert np.all(np.isnan(couplings["Z"].values[~fitted]))
    np.testing.assert_allclose(couplings["closed_form_rescaled_mass_squared"].values, (RADIUS / couplings["momentum_cutoff"].values) ** 2 * MASS**2, rtol=1e-12)


def test_prior_prescription_restores_free_propagator_in_shell(model, grid, test_points, cutoffs):
    # Trained on data, the stiff band keeps the trained ensemble's propagator and the sloppy band
    # returns to the free propagator 1 / (p^2 + m^2).
    x_test, y_test = test_points
    posterior = conjugate(model, grid, np.sin(grid[:, 0]), key=jax.random.key(2), num_samples=NUM_SAMPLES)
    flow = cosnet_shell_flow(posterior, model, cutoffs=cutoffs, x_test=x_test, y_test=y_test, prescription="prior", key=jax.random.key(3), progress=False)
    propagator = momentum_propagator(flow, model, bins=BINS)
    stiff = propagator["stiff_fraction"].values == 1
    sloppy = propagator["stiff_fraction"].values == 0
    estimate = propagator["propagator"].values
    free = np.broadcast_to(propagator["free_propagator"].values, estimate.shape)
    trained = np.broadcast_to(propagator["trained_propagator"].values, estimate.shape)
    z = bonferroni_z(int(sloppy.sum()))

    assert np.all(stiff | sloppy)
    np.testing.assert_allclose(estimate[stiff], trained[stiff], rtol=1e-12)
    assert np.all(np.abs(estimate - free)[sloppy] <= z * propagator["propagator_se"].values[sloppy])
    np.testing.assert_allclose(propagator["closed_form"].values, free, rtol=1e-12)


def test_shell_propagator_prescriptions(model):
    p = np.array([[0.0], [3.0], [5.0], [9.0], [11.0]])
    free = 1.0 / (p[:, 0] ** 2 + MASS**2) * (np.abs(p[:, 0]) <= RADIUS)
    cutoff = float(information_cutoff(model, 4.0, num_data=NUM_DATA))

    np.testing.assert_allclose(shell_propagator(model, p, cutoff, num_data=NUM_DATA, prescription="prior"), free)
    for prescription in ("marginalize", "prune"):
        expected = np.where(np.abs(p[:, 0]) <= 4.0, free, 0.0)
        np.testing.assert_allclose(shell_propagator(model, p, cutoff, num_data=NUM_DATA, prescription=prescription), expected)


def test_momentum_shell_couplings_closed_form(model):
    cutoff = float(information_cutoff(model, RADIUS / 2, num_data=NUM_DATA))
    couplings = momentum_shell_couplings(model, [cutoff], num_data=NUM_DATA)

    assert float(couplings["scale"][0]) == pytest.approx(2.0, rel=1e-12)
    assert float(couplings["rescaled_mass_squared"][0]) == pytest.approx(4 * MASS**2, rel=1e-12)
    assert float(couplings["rescaled_Z"][0]) == pytest.approx(2.0**-3, rel=1e-12)
    assert float(couplings["field_normalisation"][0]) == pytest.approx(2.0**1.5, rel=1e-12)
    beyond = momentum_shell_couplings(model, [10 * dense_data_constant(model, NUM_DATA)], num_data=NUM_DATA)
    assert np.isnan(float(beyond["scale"][0]))


def test_flow_layout(free_flow, cutoffs, model, tmp_path):
    assert free_flow["posterior"]["a"].dims == ("cutoff", "chain", "draw", "neuron")
    assert free_flow["posterior"]["f"].dims == ("cutoff", "chain", "draw", "obs_id")
    assert free_flow["trained"]["a"].dims == ("chain", "draw", "neuron")
    assert free_flow.attrs["basis"] == "diagonal"
    assert free_flow.attrs["cosnet_num_data"] == NUM_DATA
    np.testing.assert_allclose(free_flow["flow"]["cutoff"].values, np.sort(cutoffs))
    save(free_flow, tmp_path / "cosnet_flow.nc")
    loaded = load(tmp_path / "cosnet_flow.nc")
    np.testing.assert_array_equal(loaded["momentum"]["stiff"].values, free_flow["momentum"]["stiff"].values)
    np.testing.assert_array_equal(running_couplings(loaded, model, bins=BINS)["Z"].values, running_couplings(free_flow, model, bins=BINS)["Z"].values)


def test_plots_of_propagator_and_couplings(free_flow, model):
    propagator = momentum_propagator(free_flow, model, bins=BINS)
    couplings = running_couplings(free_flow, model, bins=BINS)
    figure = plot_shell_propagator(propagator, cutoffs=propagator["cutoff"].values[:2])
    coupling_figure = plot_running_couplings(couplings)

    assert isinstance(figure, Figure)
    assert len(figure.axes[0].collections) + len(figure.axes[0].patches) >= 2
    assert len(coupling_figure.axes) == 3
    with pytest.raises(ValueError, match="is not on the grid of the propagator"):
        plot_shell_propagator(propagator, cutoffs=[123.0])
    with pytest.raises(TypeError, match="must be the Dataset returned by momentum_propagator"):
        plot_shell_propagator(free_flow)
    with pytest.raises(ValueError, match="lacks the variables"):
        plot_running_couplings(propagator)
    plt.close(figure)
    plt.close(coupling_figure)


def test_errors(model, free_flow, test_points):
    x_test, y_test = test_points
    with pytest.raises(TypeError, match="needs a CosNet"):
        dense_data_constant(MLP(hidden=(4,)), 10)
    with pytest.raises(ValueError, match="build it with frozen=True"):
        dense_data_constant(CosNet(4, frozen=False), 10)
    with pytest.raises(ValueError, match="build it with momenta='ball'"):
        dense_data_constant(CosNet(4, momenta="gaussian"), 10)
    with pytest.raises(ValueError, match="num_data must be a positive integer"):
        dense_data_constant(model, 0)
    with pytest.raises(ValueError, match="cutoffs must be finite and > 0"):
        momentum_cutoff(model, [-1.0], num_data=NUM_DATA)
    with pytest.raises(ValueError, match="momenta must be finite and >= 0"):
        information_cutoff(model, [-1.0], num_data=NUM_DATA)
    with pytest.raises(ValueError, match="invalid prescription='jeffreys'"):
        shell_propagator(model, np.zeros((1, 1)), 1.0, num_data=NUM_DATA, prescription="jeffreys")
    with pytest.raises(ValueError, match="bins must be a number of bins or increasing edges"):
        momentum_propagator(free_flow, model, bins=[3.0, 1.0])
    with pytest.raises(ValueError, match="the flow has 1000 neurons"):
        momentum_propagator(free_flow, CosNet(10, dim=1, noise=NOISE), bins=BINS)
    with pytest.raises(TypeError, match="flow must be the DataTree of cosnet_shell_flow"):
        running_couplings(free_flow["flow"].to_dataset(), model)
    with pytest.raises(ValueError, match="invalid group='trained'"):
        cosnet_shell_flow(free_flow, model, cutoffs=[1.0], x_test=x_test, y_test=y_test, key=jax.random.key(0), group="trained")
    with pytest.raises(ValueError, match="x_test has 2 features but the cos-net has dim=1"):
        cosnet_shell_flow(free_flow, model, cutoffs=[1.0], x_test=np.zeros((2, 2)), y_test=np.zeros(2), key=jax.random.key(0))


def test_running_couplings_needs_readout(model, free_flow):
    # information_shell_flow records f only, like this flow without its momentum group
    flow = free_flow.drop_nodes("momentum")

    with pytest.raises(ValueError, match="is missing the coarse-grained readout"):
        running_couplings(flow, model)
