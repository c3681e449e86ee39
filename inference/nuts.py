"""Posterior samples by the No-U-Turn Sampler of NumPyro."""

import logging

import jax
import jax.numpy as jnp
from numpyro.infer import MCMC, NUTS

from brgnnft.inference._layout import build_datatree
from brgnnft.inference._validate import check_data, check_model
from brgnnft.inference.prior import draw_prior
from brgnnft.models._checks import check_option, check_positive_int

logger = logging.getLogger(__name__)

_EXTRA_FIELDS = ("diverging", "num_steps", "accept_prob", "energy")
_STAT_NAMES = {"diverging": "diverging", "num_steps": "n_steps", "accept_prob": "acceptance_rate", "energy": "energy"}


def _resolve_chain_method(chain_method: str, num_chains: int) -> str:
    check_option("chain_method", chain_method, ("auto", "parallel", "sequential", "vectorized"))
    if chain_method != "auto":
        return chain_method
    if num_chains <= jax.local_device_count():
        return "parallel"
    return "vectorized"


def nuts(
    model,
    x,
    y,
    *,
    key,
    num_warmup: int = 500,
    num_samples: int = 500,
    num_chains: int = 4,
    chain_method: str = "auto",
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
    num_prior_samples: int = 0,
    progress: bool = True,
):
    """Sample the posterior of ``model`` with NUTS and return the common DataTree layout.

    Parameters
    ----------
    model : a brgnnft model.
    x : array (n, d); y : array (n,)
    key : jax.random key
    num_warmup, num_samples, num_chains : int
    chain_method : {"auto", "parallel", "sequential", "vectorized"}
        "auto" runs chains in parallel over ``jax.devices()`` when there are enough devices and
        vectorized otherwise.
    num_prior_samples : int
        If > 0, also add ``prior`` and ``prior_predictive`` groups with that many draws.
    progress : bool
        Show NumPyro's progress bar.

    Returns
    -------
    DataTree with posterior (sites and ``f``), posterior_predictive, log_likelihood,
    observed_data, constant_data and sample_stats (diverging, n_steps, acceptance_rate, energy).
    """
    check_model(model)
    x, y = check_data(model, x, y, key, require_y=True)
    num_warmup = check_positive_int("num_warmup", num_warmup)
    num_samples = check_positive_int("num_samples", num_samples)
    num_chains = check_positive_int("num_chains", num_chains)
    method = _resolve_chain_method(chain_method, num_chains)
    key_mcmc, key_prior, key_predictive = jax.random.split(key, 3)

    kernel = NUTS(model, target_accept_prob=target_accept_prob, max_tree_depth=max_tree_depth)
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=method,
        progress_bar=progress,
    )
    logger.info("running NUTS: %d chains (%s), %d warmup, %d samples", num_chains, method, num_warmup, num_samples)
    mcmc.run(key_mcmc, jnp.asarray(x), jnp.asarray(y), extra_fields=_EXTRA_FIELDS)

    samples = mcmc.get_samples(group_by_chain=True)
    posterior = {name: value for name, value in samples.items()}
    extra = mcmc.get_extra_fields(group_by_chain=True)
    sample_stats = {_STAT_NAMES[name]: extra[name] for name in _EXTRA_FIELDS}
    prior = None
    if num_prior_samples:
        draws = draw_prior(model, x, key=key_prior, num_samples=num_prior_samples)
        prior = {name: value[None] for name, value in draws.items()}
    attrs = {"inference": "nuts", "num_warmup": num_warmup, "chain_method": method}
    return build_datatree(
        model, x, y, key=key_predictive, posterior=posterior, prior=prior, sample_stats=sample_stats, attrs=attrs
    )
