"""The one DataTree layout that every inference route returns.

Groups: ``posterior`` (parameter sites and ``f``), ``posterior_predictive`` (``y``),
``log_likelihood`` (``y``), ``observed_data`` (``y``), ``constant_data`` (``x``), ``sample_stats``,
and, when requested, ``prior`` and ``prior_predictive``. Sample dimensions are ``(chain, draw)``;
``f`` and ``y`` run over ``obs_id`` and ``x`` over ``(obs_id, feature)``. Values are NumPy arrays.
"""

import importlib.metadata

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np

from brgnnft.models._likelihoods import observation_distribution


def package_versions() -> dict[str, str]:
    """Return the versions of brgnnft and the numerical stack, for reproducibility attributes."""
    versions = {}
    for package in ("brgnnft", "jax", "numpyro", "arviz"):
        try:
            versions[f"{package}_version"] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[f"{package}_version"] = "unknown"
    return versions


def output_dims(f: np.ndarray, leading: int) -> list[str]:
    """Return the dims of an f-like array after its ``leading`` sample dims."""
    return ["obs_id"] if f.ndim == leading + 1 else ["obs_id", "output"]


def _noise_per_draw(samples: dict, model):
    if getattr(model, "likelihood", "gaussian") != "gaussian":
        return None
    if "noise" in samples:
        return jnp.asarray(samples["noise"])[..., None]
    return model.noise


def predictive_groups(model, samples: dict, y, *, key) -> tuple[dict, dict]:
    """Return (predictive, log_likelihood) dicts of ``y`` for samples of shape (chain, draw, ...).

    The predictive ``y`` is drawn from the observation model at every sample's ``f``; the
    pointwise log likelihood is that of the observed ``y`` (None gives an empty dict).
    """
    f = jnp.asarray(samples["f"])
    noise = _noise_per_draw(samples, model)
    if noise is not None and f.ndim == 4:
        noise = noise[..., None] if jnp.ndim(noise) else noise
    distribution = observation_distribution(getattr(model, "likelihood", "gaussian"), f, noise)
    predictive = {"y": np.asarray(distribution.sample(key))}
    log_likelihood = {}
    if y is not None:
        log_likelihood = {"y": np.asarray(distribution.log_prob(jnp.asarray(y)))}
    return predictive, log_likelihood


def build_datatree(
    model,
    x,
    y,
    *,
    key,
    posterior: dict | None = None,
    prior: dict | None = None,
    sample_stats: dict | None = None,
    attrs: dict | None = None,
):
    """Assemble the common DataTree from sample dicts of arrays with leading (chain, draw) axes.

    Parameters
    ----------
    model : the model that produced the samples (its likelihood and noise define ``y``).
    x : array (n, d)
    y : array (n,) or None
    key : jax.random key for the predictive draws.
    posterior, prior : dict of site name to array (chain, draw, ...), each holding ``f``.
    sample_stats : dict of name to array (chain, draw) or (chain, draw, ...).
    attrs : attributes of the root (strings and numbers only, so NetCDF can store them).
    """
    key_posterior, key_prior = jax.random.split(key)
    data, dims = {}, {"x": ["obs_id", "feature"]}
    data["constant_data"] = {"x": np.asarray(x)}
    if y is not None:
        data["observed_data"] = {"y": np.asarray(y)}
        dims["y"] = ["obs_id"] if np.ndim(y) == 1 else ["obs_id", "output"]

    if posterior is not None:
        posterior = {name: np.asarray(value) for name, value in posterior.items()}
        data["posterior"] = posterior
        dims["f"] = output_dims(posterior["f"], 2)
        predictive, log_likelihood = predictive_groups(model, posterior, y, key=key_posterior)
        data["posterior_predictive"] = predictive
        if log_likelihood:
            data["log_likelihood"] = log_likelihood
        dims.setdefault("y", output_dims(predictive["y"], 2))
    if prior is not None:
        prior = {name: np.asarray(value) for name, value in prior.items()}
        data["prior"] = prior
        dims["f"] = output_dims(prior["f"], 2)
        predictive, _ = predictive_groups(model, prior, None, key=key_prior)
        data["prior_predictive"] = predictive
        dims.setdefault("y", output_dims(predictive["y"], 2))
    if sample_stats:
        data["sample_stats"] = {name: np.asarray(value) for name, value in sample_stats.items()}

    root_attrs = {"model": repr(model), **package_versions(), **(attrs or {})}
    return az.from_dict(data, dims=dims, attrs={"/": root_attrs})


def add_chain_axis(samples: dict) -> dict:
    """Give every array of an ensemble's samples a leading chain axis of length 1."""
    return {name: np.asarray(value)[None] for name, value in samples.items()}
