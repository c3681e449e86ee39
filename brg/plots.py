"""Plots of an information-shell BRG flow, drawn with matplotlib from the flow DataTree.

Every function takes the DataTree returned by ``information_shell_flow`` or ``diffusion_flow``
(optionally with an ``ax`` to draw into) and returns the matplotlib Figure, so figures compose with
the rest of a user's plotting. A diffusion flow's effective cutoff Lambda(t) (its coordinate
``cutoff_equivalent``) goes on the cutoff axis. ``save_flow_plots`` writes the four standard figures as PNG files. ArviZ's own plots work
on the same tree with ``cutoff`` as an aesthetic, for example
``az.plot_dist(flow, var_names=["f"], coords={"obs_id": [0]}, aes={"color": ["cutoff"]})``.
"""

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from brgnnft.inference.io import atomic_path
from brgnnft.models._checks import check_positive

logger = logging.getLogger(__name__)

CUTOFF_LABEL = "cutoff Λ (Fisher eigenvalue)"
DIFFUSION_LABEL = "effective cutoff Λ(t) of the diffusion (Fisher eigenvalue scale)"
FLOW_SOURCE = "brgnnft.brg.information_shell_flow"

# Number of test points and cutoffs that plot_predictive shows when none are passed.
DEFAULT_NUM_POINTS = 2
DEFAULT_NUM_CUTOFFS = 4

# An axis switches to a log scale when its positive values span more than this ratio (two decades).
LOG_SCALE_RATIO = 100.0


class CriticalMarks(NamedTuple):
    """Critical cutoff to mark on a flow plot: the value and its bootstrap interval (NaN if undefined)."""

    value: float
    low: float
    high: float
    observable: str | None = None
    tolerance: float | None = None


def _check_flow_tree(flow, groups: Sequence[str], *, caller: str) -> None:
    """Raise unless ``flow`` is a DataTree holding every group in ``groups``."""
    if not isinstance(flow, xr.DataTree):
        raise TypeError(f"{caller} needs a flow DataTree from {FLOW_SOURCE}, got {type(flow).__name__}")
    missing = [group for group in groups if group not in flow.children]
    if missing:
        found = ", ".join(repr(name) for name in flow.children) or "none"
        raise ValueError(
            f"{caller} needs a flow from {FLOW_SOURCE}, but the DataTree has no {missing[0]!r} group "
            f"(groups found: {found})"
        )


def _flow_group(flow, group: str, variables: Sequence[str], *, caller: str) -> xr.Dataset:
    """Return one group of a flow DataTree as a Dataset, checking that it contains ``variables``."""
    _check_flow_tree(flow, [group], caller=caller)
    dataset = flow[group].to_dataset()
    missing = [name for name in variables if name not in dataset.data_vars]
    if missing:
        raise ValueError(
            f"{caller} needs a flow from {FLOW_SOURCE}, but its {group!r} group lacks the variables {missing}"
        )
    if group in ("flow", "posterior_predictive") and _scale_dim(dataset) is None:
        raise ValueError(
            f"{caller} needs an information-shell flow from {FLOW_SOURCE}, but its {group!r} group "
            f"has no 'cutoff' dimension, nor 'flow_time' with a 'cutoff_equivalent' coordinate (dims "
            f"{tuple(dataset.dims)})"
        )
    return dataset


def _scale_dim(dataset) -> str | None:
    """Return the scale dimension of a flow group: ``cutoff``, or ``flow_time`` of a diffusion flow.

    A ``flow_time`` dimension counts only with its ``cutoff_equivalent`` coordinate, the values
    that go on the cutoff axis. Returns None when the group has neither.
    """
    if "cutoff" in dataset.dims:
        return "cutoff"
    if "flow_time" in dataset.dims and "cutoff_equivalent" in dataset.variables:
        return "flow_time"
    return None


def _scale_values(dataset) -> np.ndarray:
    """Return the cutoffs of a flow group: ``cutoff``, or ``cutoff_equivalent`` along ``flow_time``."""
    return dataset["cutoff" if _scale_dim(dataset) == "cutoff" else "cutoff_equivalent"].values


def _figure_and_axes(ax, *, figsize) -> tuple[Figure, Axes]:
    if ax is None:
        figure, ax = plt.subplots(figsize=figsize, layout="constrained")
        return figure, ax
    if not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes, got {type(ax).__name__}")
    return ax.get_figure(root=True), ax


def _units(flow) -> str:
    """Return the unit suffix of y: standardised when the flow records the scale of y (``y_scale``)."""
    return " (standardised units)" if "y_scale" in flow.attrs else ""


def _set_cutoff_axis(ax: Axes, cutoffs: np.ndarray, label: str = CUTOFF_LABEL) -> None:
    """Put the cutoffs on a log x axis (symlog when the grid contains Λ <= 0) and label it."""
    positive = cutoffs[cutoffs > 0]
    if positive.size == cutoffs.size:
        ax.set_xscale("log")
    else:
        ax.set_xscale("symlog", linthresh=float(positive.min()) if positive.size else 1.0)
    ax.set_xlabel(label)


def _axis_label(dataset) -> str:
    return CUTOFF_LABEL if _scale_dim(dataset) == "cutoff" else DIFFUSION_LABEL


def _spans_decades(values) -> bool:
    """Return True when the positive finite values span more than two decades."""
    values = np.asarray(values, dtype=float).ravel()
    positive = values[np.isfinite(values) & (values > 0)]
    return positive.size > 1 and positive.max() / positive.min() > LOG_SCALE_RATIO


def _critical_marks(flow, critical) -> CriticalMarks | None:
    """Return the critical cutoff from ``critical`` or else from the flow's root attributes.

    Returns None when neither contains one (``critical_cutoff`` has not been run on the flow).
    """
    if critical is None:
        attrs = flow.attrs
        if "critical_cutoff" not in attrs:
            return None
        return CriticalMarks(
            value=float(attrs["critical_cutoff"]),
            low=float(attrs.get("critical_cutoff_low", np.nan)),
            high=float(attrs.get("critical_cutoff_high", np.nan)),
            observable=attrs.get("critical_observable"),
            tolerance=attrs.get("critical_tolerance"),
        )
    missing = [name for name in ("value", "low", "high") if not hasattr(critical, name)]
    if missing:
        raise TypeError(
            f"critical must have the attributes value, low and high (a CriticalCutoff from "
            f"brgnnft.brg.critical_cutoff), got {type(critical).__name__} without {missing}"
        )
    return CriticalMarks(
        value=float(critical.value),
        low=float(critical.low),
        high=float(critical.high),
        observable=getattr(critical, "observable", None),
        tolerance=getattr(critical, "tolerance", None),
    )


def _draw_critical(ax: Axes, marks: CriticalMarks | None, cutoffs: np.ndarray) -> None:
    """Mark the critical cutoff as a vertical line and its bootstrap interval as a shaded span.

    An interval whose upper end is infinite (too many bootstrap resamples never cross within the
    grid) is shaded up to the largest cutoff, and its label states that.
    """
    if marks is None:
        return
    if not np.isfinite(marks.value):
        # A legend entry only, so the reader sees that detection ran and found nothing.
        ax.plot([], [], linestyle="none", label="no critical cutoff found")
        return
    if np.isfinite(marks.low) and np.isfinite(marks.high):
        ax.axvspan(marks.low, marks.high, color="C3", alpha=0.15, label="Λ_C bootstrap 95 % interval")
    elif np.isfinite(marks.low) and marks.high == np.inf:
        ax.axvspan(marks.low, cutoffs.max(), color="C3", alpha=0.15,
                   label="Λ_C bootstrap 95 % interval (upper end beyond the grid)")
    detail = ""
    if marks.observable is not None and marks.tolerance is not None:
        detail = f" ({marks.observable}, tolerance {float(marks.tolerance):g})"
    ax.axvline(marks.value, color="C3", linewidth=1.5, label=f"critical cutoff Λ_C = {marks.value:.3g}{detail}")


def _flow_title(flow) -> str:
    attrs = flow.attrs
    parts = [f"{name} {attrs[name]}" for name in ("prescription", "basis") if name in attrs]
    if "dataset" in attrs:
        parts.insert(0, f"data set {attrs['dataset']}")
    return "BRG flow" + (": " + ", ".join(parts) if parts else "")


def plot_flow(flow, *, critical=None, ax: Axes | None = None) -> Figure:
    """Plot the test MSE and the predictive standard deviation of a BRG flow against the cutoff.

    Draws the mean test MSE over ensemble members with a band of +- 2 standard errors and the
    trained (not coarse-grained) MSE as a horizontal reference line. A second y axis carries the
    predictive standard deviation of y averaged over test points, with its trained value dotted.
    The x axis is logarithmic. The MSE axis, and with it the standard-deviation axis, is logarithmic when the MSE
    spans more than two decades.

    Parameters
    ----------
    flow : DataTree
        Output of ``information_shell_flow``; needs its ``flow`` group.
    critical : CriticalCutoff, optional
        Critical cutoff to mark (any object with ``value``, ``low`` and ``high``). By default the
        ``critical_cutoff``, ``critical_cutoff_low`` and ``critical_cutoff_high`` root attributes are
        used when the flow contains them. A NaN value adds the legend entry "no critical cutoff found".
    ax : matplotlib Axes, optional
        Axes to draw the MSE into (a twin axis is added for the standard deviation); a new figure by
        default.

    Returns
    -------
    Figure
    """
    statistics = _flow_group(
        flow, "flow", ("test_mse", "test_mse_se", "predictive_sd", "trained_test_mse"), caller="plot_flow"
    )
    marks = _critical_marks(flow, critical)
    figure, ax = _figure_and_axes(ax, figsize=(7.5, 4.5))
    cutoffs = _scale_values(statistics)
    mse = statistics["test_mse"].values
    band = 2.0 * statistics["test_mse_se"].values
    trained_mse = float(statistics["trained_test_mse"])

    ax.fill_between(cutoffs, mse - band, mse + band, color="C0", alpha=0.25, linewidth=0, label="± 2 standard errors")
    ax.plot(cutoffs, mse, color="C0", marker="o", markersize=4, label="test MSE")
    ax.axhline(trained_mse, color="0.4", linestyle="--", linewidth=1, label="trained test MSE (not coarse grained)")
    _draw_critical(ax, marks, cutoffs)

    sd_ax = ax.twinx()
    sd_ax.plot(
        cutoffs, statistics["predictive_sd"].values, color="C1", marker="s", markersize=3, label="predictive SD of y"
    )
    if "trained_predictive_sd" in statistics:
        sd_ax.axhline(
            float(statistics["trained_predictive_sd"]), color="C1", linestyle=":", linewidth=1,
            label="trained predictive SD",
        )

    units = _units(flow)
    _set_cutoff_axis(ax, cutoffs, _axis_label(statistics))
    if _spans_decades(np.append(mse, trained_mse)):
        ax.set_yscale("log")
        sd_ax.set_yscale("log")
    ax.set_ylabel("test MSE" + units, color="C0")
    sd_ax.set_ylabel("predictive SD of y" + units, color="C1")
    ax.set_title(_flow_title(flow))

    # The legend sits on the twin axis because matplotlib draws that axis above the first one.
    handles, labels = ax.get_legend_handles_labels()
    sd_handles, sd_labels = sd_ax.get_legend_handles_labels()
    sd_ax.legend(handles + sd_handles, labels + sd_labels, loc="upper left", fontsize="small")
    return figure


def plot_fraction_coarse_grained(flow, *, ax: Axes | None = None) -> Figure:
    """Plot the fraction of directions coarse grained (sloppy, lambda < Λ) against the cutoff.

    The critical cutoff is marked as in :func:`plot_flow` when the flow's root attributes contain it.

    Parameters
    ----------
    flow : DataTree
        Output of ``information_shell_flow``; needs its ``flow`` group.
    ax : matplotlib Axes, optional

    Returns
    -------
    Figure
    """
    statistics = _flow_group(flow, "flow", ("fraction_coarse_grained",), caller="plot_fraction_coarse_grained")
    figure, ax = _figure_and_axes(ax, figsize=(6.5, 4))
    cutoffs = _scale_values(statistics)

    ax.plot(cutoffs, statistics["fraction_coarse_grained"].values, color="C2", marker="o", markersize=4,
            label="fraction coarse grained")
    _draw_critical(ax, _critical_marks(flow, None), cutoffs)

    _set_cutoff_axis(ax, cutoffs, _axis_label(statistics))
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("fraction of directions coarse grained")
    num_params = flow.attrs.get("num_params")
    ax.set_title("Coarse-grained fraction" + (f" of P = {num_params} directions" if num_params is not None else ""))
    ax.legend(loc="upper left", fontsize="small")
    return figure


def plot_spectrum(flow, *, ax: Axes | None = None) -> Figure:
    """Plot the Fisher spectrum used by the flow, sorted descending, with the cutoff grid over it.

    Eigenvalues (diagonal entries for the diagonal basis) are drawn against their rank on a log y
    axis. A log axis cannot show zero, so eigenvalues <= 0 are left out and counted in the legend.
    Each cutoff of the grid is a horizontal line: the directions below a line are the sloppy ones
    coarse grained at that cutoff.

    Parameters
    ----------
    flow : DataTree
        Output of ``information_shell_flow``; needs its ``spectrum`` and ``flow`` groups.
    ax : matplotlib Axes, optional

    Returns
    -------
    Figure
    """
    spectrum = _flow_group(flow, "spectrum", ("eigenvalues",), caller="plot_spectrum")
    cutoffs = _scale_values(_flow_group(flow, "flow", (), caller="plot_spectrum"))
    figure, ax = _figure_and_axes(ax, figsize=(6.5, 4.5))
    basis = spectrum.attrs.get("basis", flow.attrs.get("basis", "eigen"))
    values = np.sort(np.asarray(spectrum["eigenvalues"].values, dtype=float).ravel())[::-1]
    rank = np.arange(1, values.size + 1)
    positive = values > 0

    name = "Fisher diagonal entry F_jj" if basis == "diagonal" else "Fisher eigenvalue λ_A"
    ax.plot(rank[positive], values[positive], color="C0", marker="." if values.size <= 200 else None,
            label=f"{name} ({positive.sum()} of {values.size} > 0)")
    num_positive = int(positive.sum())
    if num_positive < values.size:
        # The log axis has no place for values <= 0, so their ranks are shaded instead.
        ax.axvspan(num_positive + 0.5, values.size + 0.5, color="0.88", linewidth=0,
                   label=f"{values.size - num_positive} values <= 0 (not shown on the log axis)")
    for index, cutoff in enumerate(cutoffs[cutoffs > 0]):
        label = f"cutoff grid ({cutoffs.size} values of Λ)" if index == 0 else "_nolegend_"
        ax.axhline(cutoff, color="C3", alpha=0.5, linewidth=0.7, label=label)

    ax.set_yscale("log")
    ax.set_xlim(0, values.size + 1)
    ax.set_xlabel("rank (descending order)")
    ax.set_ylabel(name + " and cutoff Λ")
    ax.set_title(f"Fisher spectrum ({basis} basis)")
    ax.legend(loc="upper right", fontsize="small")
    return figure


def _default_points(trained_f: xr.DataArray) -> list[int]:
    """Return the positions of the test points where the trained f is most and least certain."""
    spread = trained_f.std(dim=("chain", "draw")).values
    order = np.argsort(spread, kind="stable")
    return sorted({int(order[0]), int(order[-1])})[:DEFAULT_NUM_POINTS]


def _check_points(points, num_points: int) -> list[int]:
    positions = [points] if isinstance(points, (int, np.integer)) else list(points)
    if not positions:
        raise ValueError("points must name at least one test point position, got an empty sequence")
    for position in positions:
        if isinstance(position, bool) or not isinstance(position, (int, np.integer)):
            raise TypeError(f"points must be integer positions along obs_id, got {position!r}")
        if not 0 <= position < num_points:
            raise ValueError(f"test point position {position} is out of range: the flow has {num_points} test points")
    return [int(position) for position in positions]


def _check_cutoffs(cutoffs, grid: np.ndarray) -> list[int]:
    """Return the grid positions of the requested cutoff values (each must lie on the grid)."""
    if cutoffs is None:
        count = min(DEFAULT_NUM_CUTOFFS, grid.size)
        return sorted({int(index) for index in np.round(np.linspace(0, grid.size - 1, count))})
    indices = []
    for value in np.atleast_1d(np.asarray(cutoffs, dtype=float)):
        matches = np.flatnonzero(np.isclose(grid, value, rtol=1e-6, atol=0.0))
        if matches.size == 0:
            raise ValueError(
                f"cutoff {value:g} is not on the flow's grid {np.array2string(grid, precision=3)}: "
                "pass values of flow['flow'].cutoff"
            )
        indices.append(int(matches[0]))
    return indices


def _trained_predictive(flow) -> tuple[np.ndarray, str]:
    """Return draws of the trained predictive of y, shape (chain, draw, obs_id), and their label.

    The flow stores the trained network only as ``trained/f``. Its predictive y = f + noise is
    rebuilt with the noise draws of the smallest cutoff, ``posterior_predictive.y - posterior.f``,
    which the flow drew independently of f per member and test point. This holds for the Gaussian
    likelihood, the only one the information-shell flow supports.
    """
    trained = flow["trained"].to_dataset()
    if "y" in trained.data_vars:
        return trained["y"].values, "trained predictive"
    f = trained["f"].values
    if "posterior" not in flow.children or "f" not in flow["posterior"].data_vars:
        return f, "trained f (without noise)"
    first = {_scale_dim(flow["posterior_predictive"].to_dataset()): 0}
    noise = flow["posterior_predictive"]["y"].isel(first).values - flow["posterior"]["f"].isel(first).values
    return f + noise, "trained predictive"


def _point_axes(ax, count: int) -> tuple[Figure, list[Axes]]:
    if ax is None:
        figure, axes = plt.subplots(1, count, figsize=(4.5 * count + 2.2, 4), layout="constrained", squeeze=False)
        return figure, list(axes[0])
    axes = [ax] if isinstance(ax, Axes) else list(ax)
    if len(axes) != count or not all(isinstance(axis, Axes) for axis in axes):
        raise ValueError(f"ax must be one matplotlib Axes per test point ({count}), got {ax!r}")
    return axes[0].get_figure(root=True), axes


def _draw_distribution(ax: Axes, samples: np.ndarray, *, color, linestyle: str = "-", label: str) -> None:
    """Draw a density histogram of the samples and a Gaussian with their mean and SD (dashed)."""
    samples = samples[np.isfinite(samples)]
    edges = np.histogram_bin_edges(samples, bins="auto")
    if edges.size > 61:
        edges = np.histogram_bin_edges(samples, bins=60)
    ax.hist(samples, bins=edges, density=True, histtype="step", color=color, linestyle=linestyle, label=label)

    mean = float(samples.mean())
    sd = float(samples.std(ddof=1)) if samples.size > 1 else 0.0
    if sd > 0:
        grid = np.linspace(mean - 4 * sd, mean + 4 * sd, 200)
        density = np.exp(-0.5 * ((grid - mean) / sd) ** 2) / (sd * np.sqrt(2 * np.pi))
        ax.plot(grid, density, color=color, linestyle="--", linewidth=1, label="_nolegend_")
    else:
        # A point mass has no Gaussian density; mark its location instead.
        ax.axvline(mean, color=color, linestyle="--", linewidth=1, label="_nolegend_")


def plot_predictive(flow, *, points=None, cutoffs=None, ax=None) -> Figure:
    """Plot the predictive distribution of y at test points across cutoffs, with Gaussian fits.

    One panel per test point. Each chosen cutoff gives a density histogram of the coarse-grained
    predictive draws of y (one colour per cutoff, light to dark as Λ rises) and a dashed Gaussian
    with the same mean and standard deviation. The trained predictive is drawn in black for
    reference and the observed test value as a dotted vertical line.

    Parameters
    ----------
    flow : DataTree
        Output of ``information_shell_flow``; needs ``posterior_predictive`` and ``trained``.
    points : int or sequence of int, optional
        Positions along ``obs_id`` of the test points. By default the two points where the trained
        f has the smallest and the largest posterior standard deviation.
    cutoffs : sequence of float, optional
        Cutoff values to show, each on the flow's grid. By default four spread evenly over the grid
        by position (fewer when the grid is shorter).
    ax : Axes or sequence of Axes, optional
        One Axes per test point; a new figure by default.

    Returns
    -------
    Figure

    Notes
    -----
    The original BRG-NNFT experiment (Howard, Klinger, Maiti, Stapleton, arXiv:2405.17538) shows the
    distribution of ensemble outputs at one test point with a Gaussian fit. The fit here is the
    moment match N(mean, SD^2) of the draws.
    """
    predictive = _flow_group(flow, "posterior_predictive", ("y",), caller="plot_predictive")
    trained = _flow_group(flow, "trained", ("f",), caller="plot_predictive")
    y = predictive["y"]
    positions = _default_points(trained["f"]) if points is None else _check_points(points, y.sizes["obs_id"])
    dim = _scale_dim(predictive)
    grid = _scale_values(predictive)
    cutoff_indices = _check_cutoffs(cutoffs, grid)
    figure, axes = _point_axes(ax, len(positions))
    reference, reference_label = _trained_predictive(flow)
    observed = flow["observed_data"]["y"].values if "observed_data" in flow.children else None
    x_test = flow["constant_data"]["x"].values if "constant_data" in flow.children else None
    colours = plt.get_cmap("viridis")(np.linspace(0.85, 0.0, len(cutoff_indices)))

    for axis, position in zip(axes, positions):
        for colour, index in zip(colours, cutoff_indices):
            samples = y.isel({dim: index, "obs_id": position}).values.ravel()
            _draw_distribution(axis, samples, color=colour, label=f"Λ = {grid[index]:.3g}")
        _draw_distribution(axis, reference[..., position].ravel(), color="black", label=reference_label)
        if observed is not None:
            axis.axvline(observed[position], color="0.3", linestyle=":", linewidth=1.2, label="observed y")

        title = f"test point {int(y['obs_id'].values[position])}"
        if x_test is not None and x_test.shape[1] <= 3:
            title += ", x = (" + ", ".join(f"{value:.2f}" for value in x_test[position]) + ")"
        axis.set_title(title)
        axis.set_xlabel("y" + _units(flow))
        axis.set_ylabel("density")

    # The Gaussian fits are not labelled one by one; a single proxy entry explains the dashes.
    # The legend sits outside the last panel so that it never covers a distribution.
    handles, labels = axes[0].get_legend_handles_labels()
    handles.append(Line2D([], [], color="0.4", linestyle="--", linewidth=1))
    labels.append("Gaussian fit (same mean and SD)")
    axes[-1].legend(handles, labels, fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return figure


PLOT_FILES = {
    "flow.png": plot_flow,
    "fraction_coarse_grained.png": plot_fraction_coarse_grained,
    "spectrum.png": plot_spectrum,
    "predictive.png": plot_predictive,
}


def _write_png(figure: Figure, path: Path, *, dpi: float) -> None:
    """Write the figure to ``path`` atomically: a temporary file in the same folder, then os.replace."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=dpi)


def save_flow_plots(flow, folder, *, overwrite: bool = False, dpi: float = 150) -> list[Path]:
    """Write the four standard plots of a flow as PNG files into ``folder``.

    The files are ``flow.png`` (:func:`plot_flow`), ``fraction_coarse_grained.png``,
    ``spectrum.png`` and ``predictive.png``. The folder is created when missing. All four figures are
    drawn before any file is written, each file is written atomically (a temporary file in the same
    folder renamed over the target), and every figure is closed afterwards.

    Parameters
    ----------
    flow : DataTree
        Output of ``information_shell_flow``.
    folder : str or path
    overwrite : bool
        Replace existing files. When False, the existence of any of the four files raises before
        anything is written.
    dpi : float
        Resolution of the PNG files.

    Returns
    -------
    list of Path
        The written files, in the order above.

    Raises
    ------
    FileExistsError
        When a file exists and ``overwrite`` is False.
    NotADirectoryError
        When ``folder`` exists and is not a directory.
    """
    _check_flow_tree(
        flow, ("flow", "spectrum", "posterior_predictive", "trained"), caller="save_flow_plots"
    )
    dpi = check_positive("dpi", dpi)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"folder {str(folder)!r} exists and is not a directory: pass a folder path")
    paths = [folder / name for name in PLOT_FILES]
    if not overwrite:
        for path in paths:
            if path.exists():
                raise FileExistsError(
                    f"{path} already exists: pass overwrite=True (--overwrite on the command line) to replace it"
                )

    figures = []
    try:
        for plot in PLOT_FILES.values():
            figures.append(plot(flow))
        folder.mkdir(parents=True, exist_ok=True)
        for figure, path in zip(figures, paths):
            _write_png(figure, path, dpi=dpi)
            logger.info("wrote %s", path)
    finally:
        for figure in figures:
            plt.close(figure)
    return paths
