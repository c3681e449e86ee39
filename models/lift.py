"""Lift a user's Flax or Equinox network into the model contract of the library.

The lifted model places a prior on every parameter of the network through
``numpyro.contrib.module``. It records the output as the deterministic site ``f`` and observes
``y`` under a Gaussian likelihood, so it flows through inference, Fisher information and coarse
graining like the built-in models. Site names are the network's parameter paths joined by dots, prefixed by
``name`` (for example ``net.Dense_0.kernel``); slashes are replaced by dots so that the names stay
valid NetCDF variable names.
"""

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.contrib.module import random_eqx_module, random_flax_module, random_nnx_module
from numpyro.handlers import seed, substitute, trace
from numpyro.primitives import Messenger

from brgnnft.models._checks import check_positive


class _DotSiteNames(Messenger):
    """Replace '/' by '.' in site names (NumPyro's scope handler joins with '/')."""

    def process_message(self, msg):
        if isinstance(msg.get("name"), str):
            msg["name"] = msg["name"].replace("/", ".")


def _prior_from(prior):
    if isinstance(prior, (int, float)):
        return dist.Normal(0.0, check_positive("prior", prior))
    return prior


class LiftedModel:
    """A NumPyro model around a user network ``network_fn(x) -> f``, built inside the model.

    ``build`` is called inside the model with ``x`` and returns the callable network whose
    parameters are NumPyro sample sites. Use :func:`from_flax` or :func:`from_equinox`.
    """

    likelihood = "gaussian"

    def __init__(self, build, *, noise: float, name: str, out_dim: int = 1):
        self._build = build
        self.noise = check_positive("noise", noise)
        self.name = name
        self.out_dim = out_dim
        self._site_cache: dict[int, dict] = {}

    def __call__(self, x, y=None):
        with _DotSiteNames():
            network = self._build(x)
        output = network(x)
        f = numpyro.deterministic("f", output[..., 0] if output.shape[-1] == 1 else output)
        with numpyro.plate("obs", x.shape[0]):
            distribution = dist.Normal(f, self.noise)
            numpyro.sample("y", distribution.to_event(1) if f.ndim == 2 else distribution, obs=y)

    def _parameter_sites(self, input_dim: int) -> dict:
        if input_dim not in self._site_cache:
            x = jnp.zeros((1, input_dim))
            model_trace = trace(seed(self, jax.random.key(0))).get_trace(x)
            self._site_cache[input_dim] = {
                name: site
                for name, site in model_trace.items()
                if site["type"] == "sample" and name != "y"
            }
        return self._site_cache[input_dim]

    def param_shapes(self, input_dim: int) -> dict[str, tuple[int, ...]]:
        """Return the shape of every parameter site."""
        return {name: tuple(site["value"].shape) for name, site in self._parameter_sites(input_dim).items()}

    def prior_variance(self, input_dim: int) -> dict[str, float]:
        """Return the prior variance of every site; raise unless the prior is zero-mean Gaussian."""
        variances = {}
        for name, site in self._parameter_sites(input_dim).items():
            base = site["fn"]
            while hasattr(base, "base_dist"):
                base = base.base_dist
            if not isinstance(base, dist.Normal) or jnp.any(base.loc != 0):
                raise ValueError(
                    f"site {name!r} has prior {site['fn']}, not a zero-mean Normal: randomised-MAP "
                    "ensembles and coarse graining need one; pass prior=<standard deviation>"
                )
            variances[name] = float(jnp.mean(base.scale**2))
        return variances

    def sample_params(self, key, input_dim: int, num_samples: int | None = None):
        """Draw parameters from the prior; with ``num_samples`` they get a leading (S,) axis."""
        def draw(sample_key):
            model_trace = trace(seed(self, sample_key)).get_trace(jnp.zeros((1, input_dim)))
            return {name: model_trace[name]["value"] for name in self.param_shapes(input_dim)}

        if num_samples is None:
            return draw(key)
        return jax.vmap(draw)(jax.random.split(key, num_samples))

    def _apply_single(self, params: dict, x):
        conditioned = substitute(seed(self, jax.random.key(0)), data=params)
        return trace(conditioned).get_trace(x)["f"]["value"]

    def apply(self, params: dict, x):
        """Evaluate f on x (n, d), batched over leading sample dimensions of ``params``."""
        shapes = self.param_shapes(x.shape[-1])
        first = next(iter(shapes))
        function = self._apply_single
        for _ in range(jnp.ndim(params[first]) - len(shapes[first])):
            function = jax.vmap(function, in_axes=(0, None))
        return function(params, x)


def from_flax(module, *, prior=1.0, noise: float = 0.1, name: str = "net") -> LiftedModel:
    """Lift a Flax module (Linen or NNX) into a Bayesian model with site ``f`` and observed ``y``.

    Parameters
    ----------
    module : flax.linen.Module or flax.nnx.Module
        The network; its output's last axis has size 1 for a scalar ``f``.
    prior : float, numpyro Distribution, dict or callable
        A float is the standard deviation of an isotropic zero-mean Normal prior on every
        parameter. Anything else is passed to ``numpyro.contrib.module`` as its ``prior``.
    noise : float
        Observation standard deviation.
    """
    from flax import nnx

    prior = _prior_from(prior)
    if isinstance(module, nnx.Module):
        def build(x):
            return random_nnx_module(name, module, prior)
    else:
        def build(x):
            return random_flax_module(name, module, prior, input_shape=x.shape)
    return LiftedModel(build, noise=noise, name=name)


def from_equinox(module, *, prior=1.0, noise: float = 0.1, name: str = "net") -> LiftedModel:
    """Lift an Equinox module into a Bayesian model with site ``f`` and observed ``y``.

    The module maps one input of shape (d,) to an output of shape (1,) or (k,), as Equinox
    layers do, and it is vmapped over the rows of x.
    """
    prior = _prior_from(prior)

    def build(x):
        network = random_eqx_module(name, module, prior)
        return jax.vmap(network)

    return LiftedModel(build, noise=noise, name=name)
