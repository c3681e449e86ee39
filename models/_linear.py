"""The NumPyro model shared by networks that are linear in their Bayesian parameters.

A model of this kind has a fixed feature matrix Phi(x) of shape (n, P) and one Bayesian readout
site ``a`` of shape (P,) with prior N(0, readout_variance I), so f = Phi(x) a. The exact posterior
is then Gaussian (Bayesian linear regression), which `brgnnft.inference.conjugate` uses.
"""

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist


class LinearReadout:
    """Mixin for models f(x) = features(x) @ a with a ~ N(0, readout_variance I).

    Subclasses define ``features(x)`` (n, P), ``num_features`` and ``readout_variance``.
    """

    linear_site = "a"
    likelihood = "gaussian"
    out_dim = 1

    def param_shapes(self, input_dim: int) -> dict[str, tuple[int, ...]]:
        """Return the shape of the only Bayesian site, ``a``."""
        return {"a": (self.num_features,)}

    def prior_variance(self, input_dim: int) -> dict[str, float]:
        """Return the prior variance of the readout, the only Bayesian site."""
        return {"a": self.readout_variance}

    def sample_params(self, key, input_dim: int, num_samples: int | None = None):
        """Draw readout weights from the prior; with ``num_samples`` they get a leading (S,) axis."""
        import jax

        leading = () if num_samples is None else (num_samples,)
        draw = jax.random.normal(key, leading + (self.num_features,))
        return {"a": jnp.sqrt(self.readout_variance) * draw}

    def apply(self, params: dict, x):
        """Evaluate f = Phi(x) a on x (n, d); ``a`` of shape (..., P) gives f of shape (..., n)."""
        return jnp.einsum("np,...p->...n", self.features(x), params["a"])

    def __call__(self, x, y=None):
        n = x.shape[0]
        readout_std = jnp.sqrt(self.readout_variance)
        a = numpyro.sample("a", dist.Normal(0.0, readout_std).expand((self.num_features,)).to_event(1))
        f = numpyro.deterministic("f", self.features(x) @ a)
        with numpyro.plate("obs", n):
            numpyro.sample("y", dist.Normal(f, self.noise), obs=y)
