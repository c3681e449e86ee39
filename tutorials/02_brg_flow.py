# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # The information-shell BRG flow of a trained network
#
# A posterior ensemble is coarse grained by how distinguishable its parameter directions are to
# the data: directions whose Fisher eigenvalue lies below a cutoff Lambda are redrawn from the
# prior, the others keep their trained values. Sweeping Lambda runs the flow from the trained
# theory to the prior; the test error stays flat while only sloppy directions are coarse grained,
# up to a critical scale Lambda_C. Set `BRGNNFT_TUTORIAL_SIZE=small` to run it in seconds.

# %%
import os

import jax
import numpy as np

from brgnnft.brg import critical_cutoff, information_shell_flow
from brgnnft.brg.plots import plot_flow, plot_spectrum
from brgnnft.inference import conjugate, load_dataset
from brgnnft.models import RandomFeatures

jax.config.update("jax_enable_x64", True)
small = os.environ.get("BRGNNFT_TUTORIAL_SIZE") == "small"
key_data, key_posterior, key_flow = jax.random.split(jax.random.key(0), 3)

# %% [markdown]
# ## Posterior of a random-features network on the CO2 record

# %%
data = load_dataset("co2", key=key_data, num_train=80 if small else 800, num_test=40 if small else 400)
model = RandomFeatures(hidden=(64 if small else 512,), activation="relu", noise=0.05, seed=0)
posterior = conjugate(model, data.x_train, data.y_train, key=key_posterior, num_samples=200 if small else 1000)

# %% [markdown]
# ## The flow over 25 log-spaced cutoffs, and its critical scale

# %%
flow = information_shell_flow(
    posterior, model, cutoffs=np.logspace(-4, 5, 25), x_test=data.x_test, y_test=data.y_test,
    key=key_flow, progress=False,
)
critical = critical_cutoff(flow)
statistics = flow["flow"].to_dataset()
table = statistics[["num_stiff", "test_mse", "test_mse_se", "predictive_sd"]].to_dataframe()
print(table.to_string(float_format=lambda value: f"{value:.4g}"))
print(f"critical cutoff: {critical.value:.3g} (95 % bootstrap interval {critical.low:.3g} to {critical.high:.3g})")
print(f"test MSE in ppm^2 before coarse graining: {float(flow['flow']['trained_test_mse']) * data.y_scale**2:.3g}")

# %% [markdown]
# ## Plots
# In a notebook the figures show below the cell; run as a script, the tutorial saves them.

# %%
figure = plot_flow(flow, critical=critical)
spectrum_figure = plot_spectrum(flow)
figure.savefig("brg_flow.png", dpi=120)
spectrum_figure.savefig("fisher_spectrum.png", dpi=120)
