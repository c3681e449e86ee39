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

__all__: list[str] = [
    "CoordinateBasis",
    "CriticalCutoff",
    "FisherBasis",
    "FisherInformation",
    "GramBasis",
    "MatrixBasis",
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
    "plot_flow",
    "plot_fraction_coarse_grained",
    "plot_predictive",
    "plot_spectrum",
    "posterior_fisher",
    "save_flow_plots",
    "split_at",
]
