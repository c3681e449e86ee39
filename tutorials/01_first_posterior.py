# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # A first Bayesian neural network: declare, sample, summarise
#
# This tutorial declares a random-features network as a NumPyro model, draws its prior and its
# exact posterior on the Mauna Loa CO2 record, and reads both with ArviZ. Set the environment
# variable `BRGNNFT_TUTORIAL_SIZE=small` to run it in seconds (the test suite does).

# %%
import os

import arviz as az
import jax
import numpy as np

from brgnnft.inference import conjugate, ensemble, load_dataset, prior_samples
from brgnnft.models import RandomFeatures

jax.config.update("jax_enable_x64", True)
small = os.environ.get("BRGNNFT_TUTORIAL_SIZE") == "small"

# %% [markdown]
# ## Data
# The weekly CO2 record ships with the package. `load_dataset` drops the weeks without a
# measurement (and logs how many), splits train from test with the key, and standardises time and
# concentration with the training statistics, which it keeps for reporting in ppm.

# %%
data = load_dataset("co2", key=jax.random.key(0), num_train=60 if small else 600)
x, y = data.x_train, data.y_train
print(f"{len(y)} training points")

# %% [markdown]
# ## Declare the model
# Hidden layers are frozen random draws fixed by the seed; only the readout `a` is Bayesian, so
# the posterior is exactly Gaussian.

# %%
model = RandomFeatures(hidden=(64 if small else 512,), activation="relu", noise=0.05, seed=0)

# %% [markdown]
# ## Sample the prior and the posterior
# `conjugate` draws from the exact posterior; `ensemble` trains randomised-MAP members, which for
# this linear model are exact posterior draws too.

# %%
key_prior, key_exact, key_ensemble = jax.random.split(jax.random.key(0), 3)
prior = prior_samples(model, x, key=key_prior, num_samples=200)
posterior = conjugate(model, x, y, key=key_exact, num_samples=500)
members = ensemble(
    model, x, y, key=key_ensemble, num_members=16 if small else 64, num_steps=300 if small else 3000,
    learning_rate=0.02, progress=False,
)

# %% [markdown]
# ## Summarise
# Every route returns the same DataTree layout, so ArviZ reads them alike. At the small size a
# few training points are influential enough that ArviZ warns about large Pareto k in `az.loo`,
# which is its diagnostic doing its job.

# %%
print(az.summary(posterior, var_names=["f"]).head())
print(az.loo(posterior))
exact_mean = posterior["posterior"]["f"].mean(("chain", "draw")).values
ensemble_mean = members["posterior"]["f"].mean(("chain", "draw")).values
print("largest gap between exact and ensemble posterior means:", float(np.max(np.abs(exact_mean - ensemble_mean))))
print("prior predictive sd:", float(prior["prior_predictive"]["y"].std()))
