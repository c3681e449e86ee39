"""Bayesian renormalization group: Fisher information, coarse graining, flows and the command."""

from brgnnft.brg._flatten import ParamLayout, flatten_params
from brgnnft.brg.coarse_grain import PRESCRIPTIONS, ShellSplit, coarse_grain, split_at
from brgnnft.brg.critical import CriticalCutoff, critical_cutoff
from brgnnft.brg.fisher import FisherInformation, fisher_information, kl_divergence, posterior_fisher
from brgnnft.brg.fisher_basis import CoordinateBasis, FisherBasis, GramBasis, MatrixBasis
from brgnnft.brg.fisher_products import fisher_diagonal, fisher_gram, fisher_matrix, fisher_vector_product
from brgnnft.brg.flow import flow_at, information_shell_flow
from brgnnft.brg.plots import (
    plot_flow,
    plot_fraction_coarse_grained,
    plot_predictive,
    plot_spectrum,
    save_flow_plots,
)
from brgnnft.brg.paper import PAPER_CUTOFFS, paper_flow, train_readout_sgd
from brgnnft.brg.analytic import (
    empirical_kernel,
    infinite_width_kernel,
    nngp_shell_flow,
    random_features_kernel,
)
from brgnnft.brg.cosnet_flow import (
    cosnet_shell_flow,
    dense_data_constant,
    information_cutoff,
    momentum_cutoff,
    momentum_propagator,
    momentum_shell_couplings,
    running_couplings,
    shell_propagator,
)
from brgnnft.brg.analytic_plots import plot_analytic_comparison, plot_running_couplings, plot_shell_propagator
from brgnnft.brg.diffusion import Diffusion, ExactDiffusion, diffuse, diffusion_flow, flow_times, relaxation_rates
from brgnnft.brg.sde import LangevinSDE, SDEResult, integrate_sde, langevin_drift

__all__: list[str] = [
    "CoordinateBasis",
    "CriticalCutoff",
    "FisherBasis",
    "FisherInformation",
    "GramBasis",
    "MatrixBasis",
    "PAPER_CUTOFFS",
    "PRESCRIPTIONS",
    "ParamLayout",
    "ShellSplit",
    "coarse_grain",
    "critical_cutoff",
    "fisher_diagonal",
    "fisher_gram",
    "fisher_information",
    "fisher_matrix",
    "fisher_vector_product",
    "flatten_params",
    "flow_at",
    "information_shell_flow",
    "kl_divergence",
    "paper_flow",
    "plot_flow",
    "plot_fraction_coarse_grained",
    "plot_predictive",
    "plot_spectrum",
    "posterior_fisher",
    "save_flow_plots",
    "split_at",
    "train_readout_sgd",
    "empirical_kernel",
    "infinite_width_kernel",
    "nngp_shell_flow",
    "random_features_kernel",
    "cosnet_shell_flow",
    "dense_data_constant",
    "information_cutoff",
    "momentum_cutoff",
    "momentum_propagator",
    "momentum_shell_couplings",
    "running_couplings",
    "shell_propagator",
    "plot_analytic_comparison",
    "plot_running_couplings",
    "plot_shell_propagator",
    "Diffusion",
    "ExactDiffusion",
    "LangevinSDE",
    "SDEResult",
    "diffuse",
    "diffusion_flow",
    "flow_times",
    "integrate_sde",
    "langevin_drift",
    "relaxation_rates",
]
