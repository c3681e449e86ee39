"""Training-time snapshots of a randomised-MAP ensemble as a flow from the prior to the trained theory."""

import jax
import numpy as np
import pytest

from brgnnft.brg import fisher_information
from brgnnft.inference import ensemble, training_flow
from brgnnft.inference.training_flow import recorded_steps
from brgnnft.models import MLP, RandomFeatures

NOISE = 0.3


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(16, 1))
    y = np.sin(2 * x[:, 0]) + NOISE * rng.normal(size=16)
    x_test = np.linspace(-1.8, 1.8, 5)[:, None]
    return x, y, x_test, np.sin(2 * x_test[:, 0])


@pytest.fixture(scope="module")
def model():
    return RandomFeatures(hidden=(6,), activation="tanh", noise=NOISE, seed=0)


@pytest.fixture(scope="module")
def flow(model, data):
    x, y, x_test, y_test = data
    return training_flow(model, x, y, x_test=x_test, y_test=y_test, key=jax.random.key(1), num_members=16,
                         num_steps=300, record_every=100, learning_rate=1e-2, cutoff=10.0, progress=False)


def test_recorded_steps_include_the_last():
    np.testing.assert_array_equal(recorded_steps(1000, 300), [0, 300, 600, 900, 1000])
    np.testing.assert_array_equal(recorded_steps(200, 100), [0, 100, 200])


def test_flow_starts_at_anchors_and_ends_at_ensemble(flow, model, data):
    # training_flow splits its key as ensemble() does. Step 0 is then ensemble()'s prior anchors, and
    # the last step is the ensemble that ensemble() trains with the same settings.
    x, y, _, _ = data
    key_anchor = jax.random.split(jax.random.key(1), 4)[0]
    anchors = np.asarray(model.sample_params(key_anchor, 1, 16)["a"])
    trained = ensemble(model, x, y, key=jax.random.key(1), num_members=16, num_steps=300, learning_rate=1e-2,
                       progress=False)
    readout = flow["posterior"]["a"].values

    np.testing.assert_array_equal(flow["flow"]["training_step"].values, [0, 100, 200, 300])
    np.testing.assert_allclose(readout[0, 0], anchors, rtol=1e-12)
    np.testing.assert_allclose(readout[-1, 0], trained["posterior"]["a"].values[0], rtol=1e-8, atol=1e-10)


def test_training_lowers_loss_mse_and_spread(flow):
    statistics = flow["flow"]
    assert statistics["loss"].values[-1] < statistics["loss"].values[0]
    assert statistics["test_mse"].values[-1] < statistics["test_mse"].values[0]
    first, last = statistics["connected_two_point"].values[[0, -1]]
    assert np.trace(last) < np.trace(first)


def test_linear_model_keeps_its_stiff_count(flow, model, data):
    # The metric of a linear model does not depend on its parameters.
    x = data[0]
    eigenvalues = fisher_information(model, {"a": np.zeros(6)}, x, progress=False).eigenvalues
    np.testing.assert_array_equal(flow["flow"]["num_stiff"].values, [np.sum(eigenvalues >= 10.0)] * 4)


def test_network_stiff_count_uses_snapshot_metric(data):
    x, y, x_test, y_test = data
    network = MLP(hidden=(3,), activation="tanh", noise=NOISE)
    flow = training_flow(network, x, y, x_test=x_test, y_test=y_test, key=jax.random.key(2), num_members=2,
                         num_steps=50, record_every=50, cutoff=10.0, fisher_members=2, progress=False)

    for index in range(2):
        counts = []
        for member in range(2):
            params = {name: flow["posterior"][name].values[index, 0, member] for name in network.param_shapes(1)}
            eigenvalues = fisher_information(network, params, x, progress=False).eigenvalues
            counts.append(np.sum(eigenvalues >= 10.0))
        assert flow["flow"]["num_stiff"].values[index] == pytest.approx(np.mean(counts))
    assert flow["posterior"]["w1"].dims == ("training_step", "chain", "draw", "w1_dim_0", "w1_dim_1")


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"record_every": 500}, ValueError, "record_every=500 exceeds num_steps=300"),
        ({"num_members": 1}, ValueError, "num_members must be >= 2"),
        ({"num_steps": 0}, ValueError, "num_steps must be a positive integer"),
        ({"cutoff": -1.0}, ValueError, "cutoff must be a finite number > 0"),
        ({"key": 2}, TypeError, "key must be a JAX PRNG key"),
    ],
)
def test_training_flow_rejects_bad_options(model, data, options, error, match):
    x, y, x_test, y_test = data
    arguments = {"x_test": x_test, "y_test": y_test, "key": jax.random.key(0), "num_steps": 300,
                 "progress": False, **options}
    with pytest.raises(error, match=match):
        training_flow(model, x, y, **arguments)


def test_training_flow_rejects_unsupported_models(data):
    x, y, x_test, y_test = data
    arguments = {"x_test": x_test, "y_test": y_test, "key": jax.random.key(0), "progress": False}
    with pytest.raises(ValueError, match="training_flow trains by randomised MAP, which needs the Gaussian"):
        training_flow(MLP(hidden=(2,), likelihood="bernoulli"), x, (y > 0).astype(float), **arguments)
    with pytest.raises(ValueError, match="has noise=None"):
        training_flow(MLP(hidden=(2,), noise=None), x, y, **arguments)
