"""Bayesian neural-network priors as NumPyro models, their infinite-width kernels, and the field
theory (correlators, connected parts, couplings) that an ensemble of networks defines."""

from brgnnft.models.activations import ACTIVATIONS, resolve_activation
from brgnnft.models.mlp import MLP
from brgnnft.models.random_features import RandomFeatures
from brgnnft.models.cosnet import CosNet
from brgnnft.models.lift import from_equinox, from_flax
from brgnnft.models.kernels import nngp_kernel
from brgnnft.models.ntk import ntk_kernel
from brgnnft.models.gp import NNGP, GPMoments
from brgnnft.models.correlators import Estimate, correlator, connected_correlator
from brgnnft.models.couplings import FreeAction, free_action, quartic_coupling, single_layer_connected_four_point

__all__ = [
    "ACTIVATIONS",
    "CosNet",
    "Estimate",
    "FreeAction",
    "GPMoments",
    "MLP",
    "NNGP",
    "RandomFeatures",
    "connected_correlator",
    "correlator",
    "free_action",
    "from_equinox",
    "from_flax",
    "nngp_kernel",
    "ntk_kernel",
    "quartic_coupling",
    "resolve_activation",
    "single_layer_connected_four_point",
]
