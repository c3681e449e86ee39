"""The ``paper`` preset: frozen features, the SGD replica, the Fisher diagonal and the flow tree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from brgnnft.brg import fisher_information
from brgnnft.brg import paper as paper_module
from brgnnft.brg.paper import (
    PAPER_CUTOFFS,
    fisher_diagonal_readout,
    paper_features,
    paper_flow,
    paper_hidden_weights,
    paper_table_rows,
    train_readout_sgd,
)
from brgnnft.inference import load_dataset
from brgnnft.models import RandomFeatures

NUM_MEMBERS = 4
FLOW_SEED = 3


def numpy_sgd(features, y, initial_readout, *, learning_rate, num_epochs):
    """The original training loop in weight space: batch size 1, data in order, (f - y)^2 loss."""
    readout = np.array(initial_readout, dtype=np.float64)
    for _ in range(num_epochs):
        for phi, target in zip(features, y):
            residual = phi @ readout - target
            readout = readout - learning_rate * 2.0 * residual * phi
    return readout


@pytest.fixture(scope="module")
def paper_data():
    return load_dataset("paper", key=jax.random.key(0))


@pytest.fixture(scope="module")
def flow():
    return paper_flow(key=jax.random.key(FLOW_SEED), num_members=NUM_MEMBERS, seed=FLOW_SEED, progress=False)


def test_features_match_random_features(paper_data):
    x = jnp.asarray(paper_data.x_train[:20])
    for seed in (0, 12345):
        expected = RandomFeatures.paper(seed=seed).features(x)
        np.testing.assert_array_equal(paper_features(paper_hidden_weights(seed), x), expected)


def test_features_batched_over_seeds(paper_data):
    x = jnp.asarray(paper_data.x_test[:10])
    seeds = jnp.array([5, 6, 7], dtype=jnp.int32)
    batched = jax.vmap(lambda seed: paper_features(paper_hidden_weights(seed), x))(seeds)
    for index, seed in enumerate((5, 6, 7)):
        np.testing.assert_array_equal(batched[index], RandomFeatures.paper(seed=seed).features(x))


def test_sgd_matches_numpy_loop_small():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(7, 13))
    y = rng.normal(size=7)
    initial = rng.normal(size=13)
    expected = numpy_sgd(features, y, initial, learning_rate=0.01, num_epochs=5)
    result = train_readout_sgd(features, y, initial, learning_rate=0.01, num_epochs=5)
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-12)


def test_sgd_matches_numpy_loop_paper_features(paper_data):
    features = np.asarray(RandomFeatures.paper(seed=2).features(jnp.asarray(paper_data.x_train)))
    initial = np.asarray(jax.random.normal(jax.random.key(4), (features.shape[1],)))
    expected = numpy_sgd(features, paper_data.y_train, initial, learning_rate=1e-6, num_epochs=2)
    result = train_readout_sgd(features, paper_data.y_train, initial, num_epochs=2)
    assert np.max(np.abs(expected - initial)) > 1e-3  # the steps moved the weights
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-12)


def test_sgd_same_under_jit():
    rng = np.random.default_rng(2)
    features, y, initial = rng.normal(size=(6, 9)), rng.normal(size=6), rng.normal(size=9)
    plain = train_readout_sgd(features, y, initial, learning_rate=0.02, num_epochs=4)
    jitted = jax.jit(lambda f, t, a: train_readout_sgd(f, t, a, learning_rate=0.02, num_epochs=4))(features, y, initial)
    np.testing.assert_allclose(jitted, plain, rtol=0, atol=1e-14)


def test_members_batched_match_loop(paper_data):
    key = jax.random.key(9)
    seeds, weights, initial, _ = paper_module._member_draws(key, 3, 2000)
    x_train, y_train = jnp.asarray(paper_data.x_train), jnp.asarray(paper_data.y_train)
    residual_sums = paper_module._train_members(weights, initial, x_train, y_train, num_epochs=3)
    for member in range(3):
        features = RandomFeatures.paper(seed=int(seeds[member])).features(x_train)
        expected = train_readout_sgd(features, y_train, initial[member], num_epochs=3)
        batched = initial[member] - 2.0 * 1e-6 * features.T @ residual_sums[member]
        np.testing.assert_allclose(batched, expected, rtol=0, atol=1e-12)


def test_fisher_diagonal_matches_fisher_information(paper_data):
    model = RandomFeatures.paper(noise=1.0, seed=8)
    x = jnp.asarray(paper_data.x_fisher)
    params = {"a": jnp.asarray(np.random.default_rng(3).normal(size=2000))}
    info = fisher_information(model, params, x, basis="diagonal", per_datum=True, progress=False)
    np.testing.assert_allclose(fisher_diagonal_readout(model.features(x)), info.diagonal["a"], rtol=1e-12, atol=0)


def test_flow_layout(flow):
    assert set(flow.children) >= {
        "posterior", "posterior_predictive", "log_likelihood", "observed_data", "constant_data",
        "flow", "trained", "spectrum", "members",
    }
    kept = flow.attrs["num_members_kept"]
    assert flow["posterior"]["f"].dims == ("cutoff", "chain", "draw", "obs_id")
    assert flow["posterior"]["f"].shape == (25, 1, kept, 200)
    np.testing.assert_array_equal(flow["flow"]["cutoff"].values, np.array(PAPER_CUTOFFS))
    assert flow.attrs["preset"] == "paper"
    assert flow.attrs["basis"] == "diagonal"
    assert flow.attrs["prescription"] == "prior"
    assert flow.attrs["fisher_num_data"] == 200
    assert flow["members"]["seed"].shape == (NUM_MEMBERS,)


def test_flow_nested(flow):
    member_stiff = flow["flow"]["member_num_stiff"].values
    assert np.all(np.diff(member_stiff, axis=0) <= 0)
    fraction = flow["flow"]["fraction_coarse_grained"].values
    assert np.all(np.diff(fraction) >= 0)
    np.testing.assert_allclose(fraction, 1 - member_stiff.mean(axis=(1, 2)) / 2000, rtol=0, atol=1e-12)


def test_flow_outputs_match_independent_computation(flow):
    key_data, key_members, _ = jax.random.split(jax.random.key(FLOW_SEED), 3)
    data = load_dataset("paper", key=key_data)
    seeds, _, initial, replacement = paper_module._member_draws(key_members, NUM_MEMBERS, 2000)
    kept = np.flatnonzero(flow["members"]["kept"].values)
    draw = 0
    member = kept[draw]
    model = RandomFeatures.paper(seed=int(seeds[member]))
    readout = train_readout_sgd(model.features(jnp.asarray(data.x_train)), data.y_train, initial[member])
    test_features = np.asarray(model.features(jnp.asarray(data.x_test)))
    diagonal = np.mean(np.asarray(model.features(jnp.asarray(data.x_train))) ** 2, axis=0)

    np.testing.assert_allclose(flow["members"]["readout"].values[member], readout, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(flow["trained"]["f"].values[0, draw], test_features @ readout, rtol=1e-9, atol=1e-9)
    for index in (0, 9, 24):
        cutoff = PAPER_CUTOFFS[index]
        coarse = np.where(diagonal >= cutoff, readout, replacement[member])
        expected = test_features @ coarse
        np.testing.assert_allclose(flow["posterior"]["f"].values[index, 0, draw], expected, rtol=1e-9, atol=1e-9)


def test_flow_statistics_consistent(flow):
    member_mse = flow["flow"]["member_mse"].values.reshape(25, -1)
    np.testing.assert_allclose(flow["flow"]["median_test_mse"].values, np.median(member_mse, axis=1), rtol=1e-12)
    np.testing.assert_allclose(flow["flow"]["test_mse"].values, member_mse.mean(axis=1), rtol=1e-12)
    kept = flow["members"]["kept"].values.astype(bool)
    trained = flow["members"]["trained_test_mse"].values[kept]
    np.testing.assert_allclose(float(flow["flow"]["trained_median_test_mse"]), np.median(trained), rtol=1e-12)


def test_member_draws_independent_of_count(flow):
    # Sizes 3 and NUM_MEMBERS are compiled already by the tests above.
    small = paper_module._member_draws(jax.random.key(5), 3, 2000)
    large = paper_module._member_draws(jax.random.key(5), NUM_MEMBERS, 2000)
    for part_small, part_large in zip(jax.tree.leaves(small), jax.tree.leaves(large), strict=True):
        np.testing.assert_array_equal(part_small, part_large[:3])


def test_table_rows(flow):
    rows = paper_table_rows(flow)
    assert len(rows) == 26
    assert rows[0][0] == "trained"
    assert rows[0][3] == 0.0
    assert [row[0] for row in rows[1:]] == list(PAPER_CUTOFFS)


def test_ten_fisher_points_give_more_redrawn(flow):
    published = paper_flow(key=jax.random.key(FLOW_SEED), num_members=NUM_MEMBERS, fisher_points="10", progress=False)
    assert published.attrs["fisher_num_data"] == 10
    # The same members: only the Fisher points differ, so training and the trained outputs agree.
    np.testing.assert_array_equal(published["trained"]["f"].values, flow["trained"]["f"].values)
    fraction_10 = published["flow"]["fraction_coarse_grained"].values[0]
    fraction_train = flow["flow"]["fraction_coarse_grained"].values[0]
    assert fraction_10 > fraction_train


def test_divergent_members_dropped(monkeypatch, flow):
    trained = flow["members"]["trained_test_mse"].values
    threshold = float(np.median(trained))
    monkeypatch.setattr(paper_module, "DIVERGENCE_THRESHOLD", threshold)
    dropped = paper_flow(key=jax.random.key(FLOW_SEED), num_members=NUM_MEMBERS, progress=False)
    expected_kept = int(np.sum(trained < threshold))
    assert dropped.attrs["num_members_kept"] == expected_kept
    assert dropped.attrs["num_members_dropped"] == NUM_MEMBERS - expected_kept
    assert dropped["posterior"]["f"].shape[2] == expected_kept

    kept_all = paper_flow(key=jax.random.key(FLOW_SEED), num_members=NUM_MEMBERS, keep_divergent=True, progress=False)
    assert kept_all.attrs["num_members_kept"] == NUM_MEMBERS


def test_all_members_divergent_raises(monkeypatch):
    monkeypatch.setattr(paper_module, "DIVERGENCE_THRESHOLD", 1e-12)
    with pytest.raises(ValueError, match="all 4 members diverged"):
        paper_flow(key=jax.random.key(FLOW_SEED), num_members=NUM_MEMBERS, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"fisher_points": "20"}, ValueError, "invalid fisher_points='20'"),
        ({"num_members": 0}, ValueError, "num_members must be a positive integer"),
        ({"num_epochs": 1.5}, TypeError, "num_epochs must be a positive integer"),
        ({"cutoffs": (1.0, -2.0)}, ValueError, "cutoffs must be finite and > 0, got -2.0"),
        ({"cutoffs": (1.0, 1.0)}, ValueError, "cutoffs contain duplicates"),
    ],
)
def test_paper_flow_invalid_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        paper_flow(key=jax.random.key(0), **kwargs)


def test_paper_flow_rejects_integer_key():
    with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
        paper_flow(key=0)
