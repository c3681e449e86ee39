"""Plots that set numerical BRG flows beside their closed forms.

- :func:`plot_analytic_comparison`: a finite network's flow against :func:`nngp_shell_flow`.
- :func:`plot_shell_propagator`: the cos-net's estimated G_Lambda(p) against the closed form.
- :func:`plot_running_couplings`: fitted Z and m^2 against momentum-shell ERG.

Every function returns the matplotlib Figure and accepts axes to draw into.
"""

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from brgnnft.brg.plots import CUTOFF_LABEL

DEFAULT_NUM_CUTOFFS = 4


def _axes(axes, count: int, *, figsize) -> tuple[Figure, list[Axes]]:
    """Return a figure and ``count`` axes: new ones, or the ones passed (checked)."""
    if axes is None:
        figure, created = plt.subplots(1, count, figsize=figsize, layout="constrained", squeeze=False)
        return figure, list(created[0])
    if isinstance(axes, Axes):
        axes = [axes]
    axes = list(axes)
    if len(axes) != count or not all(isinstance(ax, Axes) for ax in axes):
        raise TypeError(f"axes must be a sequence of {count} matplotlib Axes, got {axes!r}")
    return axes[0].get_figure(root=True), axes


def _set_cutoff_axis(ax: Axes) -> None:
    """Put the cutoff on a log x axis, labelling only the decades so that short grids stay legible."""
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(CUTOFF_LABEL)


def _flow_statistics(flow, variables: Sequence[str], *, name: str, source: str, allow_dataset: bool = False) -> xr.Dataset:
    if allow_dataset and isinstance(flow, xr.Dataset):
        dataset = flow
    elif isinstance(flow, xr.DataTree) and "flow" in flow.children:
        dataset = flow["flow"].to_dataset()
    else:
        accepted = "a flow DataTree or its 'flow' group" if allow_dataset else "a flow DataTree"
        raise TypeError(f"{name} must be {accepted} from {source}, got {type(flow).__name__}")
    missing = [variable for variable in variables if variable not in dataset.data_vars]
    if missing:
        raise ValueError(f"{name} lacks the flow variables {missing}: pass the output of {source}")
    return dataset


def _check_dataset(dataset, variables: Sequence[str], *, name: str, source: str) -> xr.Dataset:
    if not isinstance(dataset, xr.Dataset):
        raise TypeError(f"{name} must be the Dataset returned by {source}, got {type(dataset).__name__}")
    missing = [variable for variable in variables if variable not in dataset.data_vars]
    if missing:
        raise ValueError(f"{name} lacks the variables {missing}: pass the output of {source}")
    return dataset


def plot_analytic_comparison(flow, reference, *, axes=None) -> Figure:
    """Plot a network's BRG flow and its closed-form infinite-width flow against the cutoff.

    Left: test MSE, the network's with a band of +- 2 standard errors, the closed form as a line.
    Right: the predictive standard deviation of y, both flows.

    Parameters
    ----------
    flow : DataTree from ``information_shell_flow`` (or ``cosnet_shell_flow``).
    reference : DataTree from ``nngp_shell_flow`` on the same test set, or its ``flow`` group as a Dataset.
    axes : sequence of two matplotlib Axes, optional

    Returns
    -------
    Figure
    """
    numerical = _flow_statistics(flow, ("test_mse", "test_mse_se", "predictive_sd"), name="flow", source="information_shell_flow")
    analytic = _flow_statistics(
        reference, ("test_mse", "predictive_sd"), name="reference", source="nngp_shell_flow", allow_dataset=True
    )
    figure, (mse_ax, sd_ax) = _axes(axes, 2, figsize=(11, 4.2))
    cutoffs = numerical["cutoff"].values
    reference_cutoffs = analytic["cutoff"].values
    mse = numerical["test_mse"].values
    band = 2.0 * numerical["test_mse_se"].values

    mse_ax.fill_between(cutoffs, mse - band, mse + band, color="C0", alpha=0.25, linewidth=0, label="network ± 2 standard errors")
    mse_ax.plot(cutoffs, mse, color="C0", marker="o", markersize=4, linestyle="none", label="network (samples)")
    mse_ax.plot(reference_cutoffs, analytic["test_mse"].values, color="C3", label="infinite width (closed form)")
    sd_ax.plot(cutoffs, numerical["predictive_sd"].values, color="C0", marker="o", markersize=4, linestyle="none", label="network (samples)")
    sd_ax.plot(reference_cutoffs, analytic["predictive_sd"].values, color="C3", label="infinite width (closed form)")

    for ax, label in ((mse_ax, "test MSE"), (sd_ax, "predictive SD of y")):
        _set_cutoff_axis(ax)
        ax.set_ylabel(label)
        ax.legend(fontsize="small")
    mse_ax.set_title(f"BRG flow, prescription {flow.attrs.get('prescription', '?')}")
    sd_ax.set_title("predictive spread")
    return figure


def _chosen_cutoffs(cutoffs: np.ndarray, chosen) -> list[int]:
    if chosen is None:
        count = min(DEFAULT_NUM_CUTOFFS, cutoffs.size)
        return sorted(set(np.linspace(0, cutoffs.size - 1, count).round().astype(int).tolist()))
    indices = []
    for value in np.atleast_1d(chosen):
        matches = np.flatnonzero(np.isclose(cutoffs, float(value), rtol=1e-9, atol=0.0))
        if matches.size == 0:
            raise ValueError(f"cutoff {float(value)!r} is not on the grid of the propagator: choose from {cutoffs.tolist()}")
        indices.append(int(matches[0]))
    return indices


def plot_shell_propagator(propagator, *, cutoffs=None, ax: Axes | None = None) -> Figure:
    """Plot the cos-net's estimated propagator G_Lambda(p) against the closed form at a few cutoffs.

    Parameters
    ----------
    propagator : Dataset from ``momentum_propagator``.
    cutoffs : sequence of float, optional
        Cutoffs of its grid to draw; by default up to four spread over the grid.
    ax : matplotlib Axes, optional

    Returns
    -------
    Figure
    """
    propagator = _check_dataset(
        propagator, ("propagator", "propagator_se", "closed_form", "momentum_low", "momentum_high"),
        name="propagator", source="momentum_propagator",
    )
    figure, (ax,) = _axes(ax, 1, figsize=(7, 4.5))
    grid = propagator["cutoff"].values
    momentum = propagator["momentum"].values
    edges = np.append(propagator["momentum_low"].values, propagator["momentum_high"].values[-1])

    for colour, index in enumerate(_chosen_cutoffs(grid, cutoffs)):
        estimate = propagator["propagator"].values[index]
        error = propagator["propagator_se"].values[index]
        closed = propagator["closed_form"].values[index]
        label = f"Λ = {grid[index]:.3g}"
        ax.stairs(closed, edges, color=f"C{colour}", label=f"{label} closed form")
        ax.errorbar(momentum, estimate, yerr=2 * error, color=f"C{colour}", marker="o", markersize=3, linestyle="none", label=f"{label} estimate ± 2 SE")

    ax.set_xlabel("momentum |p|")
    ax.set_ylabel("G_Λ(p)")
    # Removed shells have G_Λ = 0, so a symmetric log scale shows them beside the decades of G.
    closed_values = propagator["closed_form"].values
    positive = closed_values[np.isfinite(closed_values) & (closed_values > 0)]
    if positive.size:
        ax.set_yscale("symlog", linthresh=float(positive.min()))
    ax.set_title(f"coarse-grained propagator, prescription {propagator.attrs.get('prescription', '?')}")
    ax.legend(fontsize="small", ncols=2)
    return figure


def plot_running_couplings(couplings, *, axes=None) -> Figure:
    """Plot the fitted running couplings of a cos-net flow against momentum-shell ERG.

    Three panels against the cutoff: Z, m^2 (as fitted, before rescaling) and m'^2 = s^2 m^2 after
    rescaling the momenta by s = R / k(Lambda), each with +- 2 standard errors and the closed form
    of the free theory.

    Parameters
    ----------
    couplings : Dataset from ``running_couplings``.
    axes : sequence of three matplotlib Axes, optional

    Returns
    -------
    Figure
    """
    couplings = _check_dataset(
        couplings,
        ("Z", "Z_se", "mass_squared", "mass_squared_se", "rescaled_mass_squared", "rescaled_mass_squared_se",
         "closed_form_Z", "closed_form_mass_squared", "closed_form_rescaled_mass_squared"),
        name="couplings", source="running_couplings",
    )
    figure, axes = _axes(axes, 3, figsize=(13, 4))
    cutoffs = couplings["cutoff"].values
    panels = (
        ("Z", "closed_form_Z", "Z"),
        ("mass_squared", "closed_form_mass_squared", "m²"),
        ("rescaled_mass_squared", "closed_form_rescaled_mass_squared", "m'² = (R/k)² m²"),
    )
    for ax, (name, closed, label) in zip(axes, panels):
        ax.errorbar(cutoffs, couplings[name].values, yerr=2 * couplings[f"{name}_se"].values, marker="o", markersize=4, linestyle="none", color="C0", label="BRG fit ± 2 SE")
        ax.plot(cutoffs, couplings[closed].values, color="C3", label="momentum-shell ERG (closed form)")
        _set_cutoff_axis(ax)
        ax.set_ylabel(label)
        ax.legend(fontsize="small")
    axes[2].set_yscale("log")
    axes[0].set_title("field normalisation")
    axes[1].set_title("mass before rescaling")
    axes[2].set_title("mass after rescaling")
    return figure
