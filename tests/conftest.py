"""Test configuration: CPU only, two host devices, float64, and every warning an error.

The environment variables must be set before JAX is first imported, which is why they sit at the
top of this file rather than in a fixture.
"""

import os

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
).strip()
os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
