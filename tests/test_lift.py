"""Flax and Equinox networks lifted into the model contract."""

import equinox as eqx
import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from brgnnft.inference import ensemble, nuts
from brgnnft.models import from_equinox, from_flax


class LinenNet(linen.Module):
    @linen.compact
    def __call__(self, x):
        return linen.Dense(1)(jnp.tanh(linen.Dense(4)(x)))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 2))
    return x, np.tanh(x[:, 0]) + 0.1 * rng.normal(size=10)


def check_nuts_output(model, data):
    x, y = data
    tree = nuts(model, x, y, key=jax.random.key(0), num_warmup=30, num_samples=20, num_chains=1, progress=False)
    f = tree["posterior"]["f"]

    assert f.dims == ("chain", "draw", "obs_id")
    assert f.shape == (1, 20, 10)
    return tree


def test_flax_linen_samples_under_nuts(data):
    model = from_flax(LinenNet(), prior=1.0, noise=0.2)
    tree = check_nuts_output(model, data)

    assert set(model.param_shapes(2)) == {
        "net.Dense_0.kernel", "net.Dense_0.bias", "net.Dense_1.kernel", "net.Dense_1.bias",
    }
    params = {name: tree["posterior"][name].values[0] for name in model.param_shapes(2)}
    np.testing.assert_allclose(model.apply(params, jnp.asarray(data[0])), tree["posterior"]["f"].values[0],
                               rtol=1e-10)


def test_flax_nnx_samples_under_nuts(data):
    network = nnx.Sequential(nnx.Linear(2, 4, rngs=nnx.Rngs(0)), jnp.tanh, nnx.Linear(4, 1, rngs=nnx.Rngs(1)))
    check_nuts_output(from_flax(network, prior=1.0, noise=0.2), data)


def test_equinox_samples_under_nuts(data):
    network = eqx.nn.MLP(2, 1, width_size=4, depth=1, activation=jnp.tanh, key=jax.random.key(0))
    model = from_equinox(network, prior=1.0, noise=0.2)
    check_nuts_output(model, data)

    assert all(value == 1.0 for value in model.prior_variance(2).values())


def test_lifted_model_trains_as_ensemble(data):
    x, y = data
    model = from_flax(LinenNet(), prior=1.0, noise=0.2)
    tree = ensemble(model, x, y, key=jax.random.key(1), num_members=2, num_steps=50, progress=False)

    assert tree["posterior"]["f"].shape == (1, 2, 10)


def test_lifted_model_rejects_non_gaussian_prior_for_ensemble(data):
    import numpyro.distributions as dist

    x, y = data
    model = from_flax(LinenNet(), prior=dist.Laplace(0.0, 1.0), noise=0.2)
    with pytest.raises(ValueError, match="not a zero-mean Normal"):
        ensemble(model, x, y, key=jax.random.key(1), num_members=2, num_steps=5, progress=False)
