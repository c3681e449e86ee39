"""Routes to prior and posterior samples, all returning one ArviZ DataTree layout."""

from brgnnft.inference.conjugate import conjugate, linear_posterior_moments, sample_linear_posterior
from brgnnft.inference.datasets import Dataset, DatasetInfo, list_datasets, load_dataset
from brgnnft.inference.ensemble import ensemble, randomised_map_loss
from brgnnft.inference.io import load, save
from brgnnft.inference.nuts import nuts
from brgnnft.inference.prior import prior_samples
from brgnnft.inference.samples import from_samples
from brgnnft.inference.data_count import data_count_flow, data_count_moments, fisher_eigenvalues
from brgnnft.inference.training_flow import training_flow

__all__ = [
    "Dataset",
    "DatasetInfo",
    "conjugate",
    "ensemble",
    "from_samples",
    "linear_posterior_moments",
    "list_datasets",
    "load",
    "load_dataset",
    "nuts",
    "prior_samples",
    "randomised_map_loss",
    "sample_linear_posterior",
    "save",
    "data_count_flow",
    "data_count_moments",
    "fisher_eigenvalues",
    "training_flow",
]
