"""Plots of a BRG flow: artists, scales and labels, file writing, and ArviZ plots on a flow.

Most tests draw a small flow DataTree built by hand in the layout of ``information_shell_flow``,
so every plotted number is known. A few run on a real flow of random features.
"""

import types

import arviz as az
import jax
import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr
from matplotlib.colors import same_color
from matplotlib.figure import Figure
from matplotlib.patches import Polygon

from brgnnft.brg import (
    critical_cutoff,
    information_shell_flow,
    plot_flow,
    plot_fraction_coarse_grained,
    plot_predictive,
    plot_spectrum,
    save_flow_plots,
)
from brgnnft.brg.plots import CUTOFF_LABEL, PLOT_FILES, _trained_predictive
from brgnnft.inference import conjugate
from brgnnft.models import RandomFeatures

CUTOFFS = np.array([1e-2, 1e-1, 1.0, 10.0, 100.0])
NOISE = 0.5


def make_flow_tree(
    *,
    test_mse=(0.1, 0.1, 0.12, 3.0, 40.0),
    eigenvalues=(50.0, 5.0, 0.5, 0.05, 0.0, 0.0),
    chains=1,
    draws=40,
    num_points=4,
    attrs=None,
    seed=0,
):
    """Build a flow DataTree in the layout of information_shell_flow, with known values."""
    rng = np.random.default_rng(seed)
    num_cutoffs = CUTOFFS.size
    test_mse = np.asarray(test_mse, dtype=float)
    sample_dims = ("cutoff", "chain", "draw", "obs_id")
    coords = {
        "cutoff": CUTOFFS,
        "chain": np.arange(chains),
        "draw": np.arange(draws),
        "obs_id": np.arange(num_points),
    }
    spread = np.sqrt(test_mse)[:, None, None, None]
    f = spread * rng.normal(size=(num_cutoffs, chains, draws, num_points))
    y_predictive = f + NOISE * rng.normal(size=f.shape)
    y_test = rng.normal(size=num_points)
    # Each test point gets its own trained spread, so the least and most certain points are known.
    trained_f = np.linspace(0.1, 1.0, num_points) * rng.normal(size=(chains, draws, num_points))
    member_mse = test_mse[:, None, None] * (1 + 0.1 * rng.normal(size=(num_cutoffs, chains, draws)))

    flow = xr.Dataset(
        {
            "num_stiff": ("cutoff", np.array([4, 3, 2, 1, 0])),
            "fraction_coarse_grained": ("cutoff", np.array([0.0, 0.25, 0.5, 0.75, 1.0])),
            "test_mse": ("cutoff", test_mse),
            "test_mse_se": ("cutoff", 0.05 * test_mse),
            "predictive_sd": ("cutoff", np.sqrt(test_mse + NOISE**2)),
            "f_sd": ("cutoff", np.sqrt(test_mse)),
            "log_predictive_density": ("cutoff", -test_mse),
            "kl_from_trained": ("cutoff", np.log1p(test_mse)),
            "member_mse": (("cutoff", "chain", "draw"), member_mse),
            "trained_test_mse": test_mse[0],
            "trained_test_mse_se": 0.05 * test_mse[0],
            "trained_predictive_sd": np.sqrt(test_mse[0] + NOISE**2),
            "trained_log_predictive_density": -test_mse[0],
            "trained_member_mse": (("chain", "draw"), member_mse[0]),
        },
        coords={"cutoff": CUTOFFS, "chain": coords["chain"], "draw": coords["draw"]},
    )
    root_attrs = {"scheme": "information_shell", "prescription": "prior", "basis": "diagonal", "num_params": 6}
    return xr.DataTree.from_dict(
        {
            "/": xr.Dataset(attrs={**root_attrs, **(attrs or {})}),
            "posterior": xr.Dataset({"f": (sample_dims, f)}, coords=coords),
            "posterior_predictive": xr.Dataset({"y": (sample_dims, y_predictive)}, coords=coords),
            "log_likelihood": xr.Dataset({"y": (sample_dims, -0.5 * (y_predictive - y_test) ** 2)}, coords=coords),
            "observed_data": xr.Dataset({"y": ("obs_id", y_test)}, coords={"obs_id": coords["obs_id"]}),
            "constant_data": xr.Dataset(
                {"x": (("obs_id", "feature"), rng.normal(size=(num_points, 2)))},
                coords={"obs_id": coords["obs_id"], "feature": np.arange(2)},
            ),
            "flow": flow,
            "trained": xr.Dataset(
                {"f": (("chain", "draw", "obs_id"), trained_f)},
                coords={"chain": coords["chain"], "draw": coords["draw"], "obs_id": coords["obs_id"]},
            ),
            "spectrum": xr.Dataset(
                {"eigenvalues": ("direction", np.asarray(eigenvalues, dtype=float))}, attrs={"basis": "diagonal"}
            ),
        }
    )


CRITICAL_ATTRS = {
    "critical_cutoff": 10.0,
    "critical_cutoff_low": 1.0,
    "critical_cutoff_high": 100.0,
    "critical_observable": "test_mse",
    "critical_tolerance": 0.1,
}


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def real_flow():
    """A small information-shell flow of random features with an exact conjugate posterior."""
    rng = np.random.default_rng(0)
    x_train = rng.normal(size=(30, 2))
    x_test = rng.normal(size=(8, 2))
    y_train = np.sin(x_train[:, 0]) + 0.5 * x_train[:, 1]
    y_test = np.sin(x_test[:, 0]) + 0.5 * x_test[:, 1]
    model = RandomFeatures(hidden=(32,), noise=0.1, seed=0)
    posterior = conjugate(model, x_train, y_train, key=jax.random.key(1), num_samples=100)
    return information_shell_flow(
        posterior,
        model,
        cutoffs=np.logspace(-2, 4, 7),
        x_test=x_test,
        y_test=y_test,
        key=jax.random.key(2),
        basis="diagonal",
        reference="posterior_mean",
        progress=False,
    )


def vertical_lines(ax, colour="C3"):
    """Return the x positions of the axvlines of one colour."""
    positions = []
    for line in ax.get_lines():
        x = np.asarray(line.get_xdata(), dtype=float)
        if x.size == 2 and x[0] == x[1] and same_color(line.get_color(), colour):
            positions.append(float(x[0]))
    return positions


def span_x(patch):
    """Return the data x range (start, end) of an axvspan rectangle."""
    return (patch.get_x(), patch.get_x() + patch.get_width())


def line_labelled(ax, label):
    matches = [line for line in ax.get_lines() if line.get_label() == label]
    assert len(matches) == 1, f"expected one line labelled {label!r}, found {len(matches)}"
    return matches[0]


def legend_texts(ax):
    legend = ax.get_legend()
    return [text.get_text() for text in legend.get_texts()] if legend is not None else []


# plot_flow


def test_plot_flow_artists():
    flow = make_flow_tree(attrs={**CRITICAL_ATTRS, "y_scale": 2.0})
    figure = plot_flow(flow)
    assert isinstance(figure, Figure)
    mse_ax, sd_ax = figure.axes

    mse_line = line_labelled(mse_ax, "test MSE")
    np.testing.assert_array_equal(mse_line.get_xdata(), CUTOFFS)
    np.testing.assert_array_equal(mse_line.get_ydata(), flow["flow"]["test_mse"].values)
    trained = line_labelled(mse_ax, "trained test MSE (not coarse grained)")
    assert list(trained.get_ydata()) == [0.1, 0.1]
    sd_line = line_labelled(sd_ax, "predictive SD of y")
    np.testing.assert_array_equal(sd_line.get_ydata(), flow["flow"]["predictive_sd"].values)
    line_labelled(sd_ax, "trained predictive SD")

    assert mse_ax.get_xscale() == "log"
    assert mse_ax.get_xlabel() == CUTOFF_LABEL
    assert mse_ax.get_ylabel() == "test MSE (standardised units)"
    assert sd_ax.get_ylabel() == "predictive SD of y (standardised units)"


def test_plot_flow_error_band():
    flow = make_flow_tree()
    figure = plot_flow(flow)
    bands = [artist for artist in figure.axes[0].collections if artist.get_label() == "± 2 standard errors"]
    assert len(bands) == 1
    vertices = bands[0].get_paths()[0].vertices
    mse = flow["flow"]["test_mse"].values
    se = flow["flow"]["test_mse_se"].values
    assert np.isclose(vertices[:, 1].max(), (mse + 2 * se).max())
    assert np.isclose(vertices[:, 1].min(), (mse - 2 * se).min())


def test_plot_flow_critical_from_attrs():
    figure = plot_flow(make_flow_tree(attrs=CRITICAL_ATTRS))
    ax = figure.axes[0]
    assert vertical_lines(ax) == [10.0]
    spans = [patch for patch in ax.patches if patch.get_label() == "Λ_C bootstrap 95 % interval"]
    assert len(spans) == 1
    assert span_x(spans[0]) == (1.0, 100.0)
    assert "critical cutoff Λ_C = 10 (test_mse, tolerance 0.1)" in legend_texts(figure.axes[1])


def test_plot_flow_critical_object_wins():
    passed = types.SimpleNamespace(value=1.0, low=0.1, high=10.0)
    figure = plot_flow(make_flow_tree(attrs=CRITICAL_ATTRS), critical=passed)
    assert vertical_lines(figure.axes[0]) == [1.0]


def test_plot_flow_critical_upper_end_infinite():
    passed = types.SimpleNamespace(value=10.0, low=1.0, high=float("inf"))
    figure = plot_flow(make_flow_tree(), critical=passed)
    spans = [patch for patch in figure.axes[0].patches if "beyond the grid" in patch.get_label()]
    assert len(spans) == 1
    assert span_x(spans[0]) == (1.0, CUTOFFS.max())


def test_plot_flow_critical_not_found():
    attrs = {**CRITICAL_ATTRS, "critical_cutoff": np.nan, "critical_cutoff_low": np.nan}
    figure = plot_flow(make_flow_tree(attrs=attrs))
    assert vertical_lines(figure.axes[0]) == []
    assert not figure.axes[0].patches
    assert "no critical cutoff found" in legend_texts(figure.axes[1])


def test_plot_flow_without_critical():
    figure = plot_flow(make_flow_tree())
    assert vertical_lines(figure.axes[0]) == []
    assert not any("critical" in text for text in legend_texts(figure.axes[1]))


def test_plot_flow_log_y_rule():
    wide = plot_flow(make_flow_tree(test_mse=(0.1, 0.1, 0.2, 5.0, 20.0)))
    assert wide.axes[0].get_yscale() == "log"
    assert wide.axes[1].get_yscale() == "log"
    # Exactly two decades is not more than two.
    narrow = plot_flow(make_flow_tree(test_mse=(0.1, 0.1, 0.2, 5.0, 10.0)))
    assert narrow.axes[0].get_yscale() == "linear"
    assert narrow.axes[0].get_ylabel() == "test MSE"


def test_plot_flow_into_given_axes():
    figure, ax = plt.subplots()
    returned = plot_flow(make_flow_tree(), ax=ax)
    assert returned is figure
    assert line_labelled(ax, "test MSE") in ax.get_lines()


def test_plot_flow_bad_critical_type():
    with pytest.raises(TypeError, match=r"critical must have the attributes value, low and high .* without \['low', 'high'\]"):
        plot_flow(make_flow_tree(), critical=types.SimpleNamespace(value=1.0))


def test_plot_flow_bad_ax_type():
    with pytest.raises(TypeError, match="ax must be a matplotlib Axes, got list"):
        plot_flow(make_flow_tree(), ax=[])


# Input checks shared by every plot


@pytest.mark.parametrize(
    "plot", [plot_flow, plot_fraction_coarse_grained, plot_spectrum, plot_predictive], ids=lambda plot: plot.__name__
)
def test_plots_reject_posterior_tree(plot):
    flow = make_flow_tree()
    posterior = xr.DataTree.from_dict({"posterior": flow["posterior"].to_dataset().isel(cutoff=0)})
    with pytest.raises(ValueError, match=r"needs a flow from brgnnft.brg.information_shell_flow, but the DataTree has no '\w+' group"):
        plot(posterior)


def test_plot_flow_names_missing_flow_group():
    flow = make_flow_tree()
    without_flow = xr.DataTree.from_dict({name: flow[name].to_dataset() for name in ("posterior", "spectrum")})
    with pytest.raises(ValueError, match=r"plot_flow needs a flow .*, but the DataTree has no 'flow' group \(groups found: 'posterior', 'spectrum'\)"):
        plot_flow(without_flow)


def test_plots_reject_non_tree():
    with pytest.raises(TypeError, match="plot_flow needs a flow DataTree from brgnnft.brg.information_shell_flow, got dict"):
        plot_flow({"flow": None})


def test_plot_flow_missing_variable():
    flow = make_flow_tree()
    flow["flow"] = flow["flow"].to_dataset().drop_vars("test_mse_se")
    with pytest.raises(ValueError, match=r"plot_flow needs a flow .*, but its 'flow' group lacks the variables \['test_mse_se'\]"):
        plot_flow(flow)


def test_plot_flow_needs_cutoff_dimension():
    flow = make_flow_tree()
    flow["flow"] = flow["flow"].to_dataset().rename({"cutoff": "flow_time"})
    with pytest.raises(ValueError, match="but its 'flow' group has no 'cutoff' dimension"):
        plot_flow(flow)


# plot_fraction_coarse_grained and plot_spectrum


def test_plot_fraction_artists():
    flow = make_flow_tree(attrs=CRITICAL_ATTRS)
    figure = plot_fraction_coarse_grained(flow)
    ax = figure.axes[0]
    line = line_labelled(ax, "fraction coarse grained")
    np.testing.assert_array_equal(line.get_xdata(), CUTOFFS)
    np.testing.assert_array_equal(line.get_ydata(), flow["flow"]["fraction_coarse_grained"].values)
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() == CUTOFF_LABEL
    assert ax.get_ylim() == (-0.02, 1.02)
    assert vertical_lines(ax) == [10.0]
    assert ax.get_title() == "Coarse-grained fraction of P = 6 directions"


def test_plot_spectrum_artists():
    figure = plot_spectrum(make_flow_tree(eigenvalues=(0.05, 50.0, 0.0, 5.0, 0.5, 0.0)))
    ax = figure.axes[0]
    spectrum = line_labelled(ax, "Fisher diagonal entry F_jj (4 of 6 > 0)")
    np.testing.assert_array_equal(spectrum.get_xdata(), [1, 2, 3, 4])
    np.testing.assert_array_equal(spectrum.get_ydata(), [50.0, 5.0, 0.5, 0.05])
    assert ax.get_yscale() == "log"

    horizontal = [line for line in ax.get_lines() if line is not spectrum]
    assert sorted(float(line.get_ydata()[0]) for line in horizontal) == list(CUTOFFS)
    zeros = [patch for patch in ax.patches if patch.get_label() == "2 values <= 0 (not shown on the log axis)"]
    assert len(zeros) == 1
    assert span_x(zeros[0]) == (4.5, 6.5)
    assert "cutoff grid (5 values of Λ)" in legend_texts(ax)


def test_plot_spectrum_all_positive():
    figure = plot_spectrum(make_flow_tree(eigenvalues=(3.0, 2.0, 1.0)))
    ax = figure.axes[0]
    assert not ax.patches
    assert legend_texts(ax)[0] == "Fisher diagonal entry F_jj (3 of 3 > 0)"


def test_plot_spectrum_needs_spectrum_group():
    flow = make_flow_tree()
    without_spectrum = xr.DataTree.from_dict({"flow": flow["flow"].to_dataset()})
    with pytest.raises(ValueError, match="plot_spectrum needs a flow .*, but the DataTree has no 'spectrum' group"):
        plot_spectrum(without_spectrum)


# plot_predictive


def histograms(ax):
    return [patch for patch in ax.patches if isinstance(patch, Polygon)]


def test_plot_predictive_defaults():
    flow = make_flow_tree()
    figure = plot_predictive(flow)
    axes = figure.axes
    assert len(axes) == 2
    # The trained f spreads grow with the position, so the extremes are the first and last point.
    assert [ax.get_title().split(",")[0] for ax in axes] == ["test point 0", "test point 3"]
    for ax in axes:
        # Four cutoffs and the trained predictive: one histogram and one Gaussian fit each,
        # plus the observed-y line.
        assert len(histograms(ax)) == 5
        assert len(ax.get_lines()) == 6
        assert ax.get_xlabel() == "y"
        assert ax.get_ylabel() == "density"
    labels = legend_texts(axes[-1])
    assert labels[:5] == ["Λ = 0.01", "Λ = 0.1", "Λ = 10", "Λ = 100", "trained predictive"]
    assert labels[-1] == "Gaussian fit (same mean and SD)"


def test_plot_predictive_histogram_and_fit():
    flow = make_flow_tree(draws=200)
    figure = plot_predictive(flow, points=[1], cutoffs=[100.0])
    ax = figure.axes[0]
    samples = flow["posterior_predictive"]["y"].sel(cutoff=100.0).isel(obs_id=1).values.ravel()
    histogram = histograms(ax)[0]
    assert histogram.get_label() == "Λ = 100"
    # A density histogram: the area under the step outline is 1.
    heights, edges = np.histogram(samples, bins="auto", density=True)
    assert np.isclose(np.sum(heights * np.diff(edges)), 1.0)
    outline = histogram.get_xy()
    assert np.isclose(outline[:, 1].max(), heights.max())

    fit = [line for line in ax.get_lines() if line.get_linestyle() == "--"][0]
    peak = 1.0 / (samples.std(ddof=1) * np.sqrt(2 * np.pi))
    assert np.isclose(fit.get_ydata().max(), peak, rtol=1e-3)
    assert np.isclose(fit.get_xdata()[np.argmax(fit.get_ydata())], samples.mean(), atol=8 * samples.std() / 199)


def test_plot_predictive_point_mass():
    flow = make_flow_tree()
    predictive = flow["posterior_predictive"].to_dataset()
    predictive["y"] = predictive["y"] * 0 + 1.5
    flow["posterior_predictive"] = predictive
    figure = plot_predictive(flow, points=0, cutoffs=[1.0])
    assert vertical_lines(figure.axes[0], colour=histograms(figure.axes[0])[0].get_edgecolor()) == [1.5]


def test_plot_predictive_given_axes():
    figure, axes = plt.subplots(1, 3)
    returned = plot_predictive(make_flow_tree(), points=[0, 1, 2], ax=axes)
    assert returned is figure
    assert all(len(histograms(ax)) == 5 for ax in axes)


def test_plot_predictive_units():
    figure = plot_predictive(make_flow_tree(attrs={"y_scale": 3.0}), points=[0])
    assert figure.axes[0].get_xlabel() == "y (standardised units)"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"cutoffs": [2.0]}, ValueError, r"cutoff 2 is not on the flow's grid .* pass values of flow\['flow'\].cutoff"),
        ({"points": [4]}, ValueError, "test point position 4 is out of range: the flow has 4 test points"),
        ({"points": [0.5]}, TypeError, "points must be integer positions along obs_id, got 0.5"),
        ({"points": []}, ValueError, "points must name at least one test point position"),
        ({"points": [0, 1], "ax": "one"}, ValueError, r"ax must be one matplotlib Axes per test point \(2\)"),
    ],
)
def test_plot_predictive_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        plot_predictive(make_flow_tree(), **kwargs)


def test_plot_predictive_one_axes_for_two_points():
    _, ax = plt.subplots()
    with pytest.raises(ValueError, match=r"ax must be one matplotlib Axes per test point \(2\)"):
        plot_predictive(make_flow_tree(), points=[0, 1], ax=ax)


# save_flow_plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_save_writes_four_pngs(tmp_path):
    folder = tmp_path / "new" / "plots"
    figures_before = plt.get_fignums()
    paths = save_flow_plots(make_flow_tree(attrs=CRITICAL_ATTRS), folder, dpi=40)
    assert [path.name for path in paths] == ["flow.png", "fraction_coarse_grained.png", "spectrum.png", "predictive.png"]
    assert sorted(item.name for item in folder.iterdir()) == sorted(PLOT_FILES)
    for path in paths:
        assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert plt.get_fignums() == figures_before


def test_save_refuses_overwrite(tmp_path):
    existing = tmp_path / "predictive.png"
    existing.write_bytes(b"old")
    with pytest.raises(FileExistsError, match=r"predictive.png already exists: pass overwrite=True \(--overwrite"):
        save_flow_plots(make_flow_tree(), tmp_path, dpi=40)
    # Every file is checked before any is written.
    assert [item.name for item in tmp_path.iterdir()] == ["predictive.png"]
    assert existing.read_bytes() == b"old"


def test_save_overwrites_when_asked(tmp_path):
    existing = tmp_path / "flow.png"
    existing.write_bytes(b"old")
    save_flow_plots(make_flow_tree(), tmp_path, overwrite=True, dpi=40)
    assert existing.read_bytes()[:8] == PNG_SIGNATURE
    assert sorted(item.name for item in tmp_path.iterdir()) == sorted(PLOT_FILES)


def test_save_failure_leaves_no_files(tmp_path, monkeypatch):
    def failing_savefig(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", failing_savefig)
    figures_before = plt.get_fignums()
    with pytest.raises(OSError, match="disk full"):
        save_flow_plots(make_flow_tree(), tmp_path, dpi=40)
    assert list(tmp_path.iterdir()) == []
    assert plt.get_fignums() == figures_before


def test_save_rejects_file_as_folder(tmp_path):
    target = tmp_path / "plots"
    target.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="exists and is not a directory"):
        save_flow_plots(make_flow_tree(), target)


def test_save_rejects_posterior_tree(tmp_path):
    posterior = xr.DataTree.from_dict({"posterior": make_flow_tree()["posterior"].to_dataset()})
    with pytest.raises(ValueError, match=r"save_flow_plots needs a flow from brgnnft.brg.information_shell_flow, but the DataTree has no 'flow' group \(groups found: 'posterior'\)"):
        save_flow_plots(posterior, tmp_path / "plots")
    assert not (tmp_path / "plots").exists()


def test_save_rejects_bad_dpi(tmp_path):
    with pytest.raises(ValueError, match="dpi must be a finite number > 0, got 0"):
        save_flow_plots(make_flow_tree(), tmp_path, dpi=0)


# A real flow


def test_real_flow_plots(real_flow, tmp_path):
    result = critical_cutoff(real_flow, num_bootstrap=200, key=jax.random.key(3))
    figure = plot_flow(real_flow, critical=result)
    if result.found:
        assert vertical_lines(figure.axes[0]) == [result.value]
    else:
        assert "no critical cutoff found" in legend_texts(figure.axes[1])
    paths = save_flow_plots(real_flow, tmp_path, dpi=40)
    assert all(path.stat().st_size > 0 for path in paths)


def test_trained_predictive_adds_noise(real_flow):
    """The rebuilt trained predictive minus the trained f is N(0, noise^2) noise (noise = 0.1)."""
    draws, label = _trained_predictive(real_flow)
    assert label == "trained predictive"
    residual = (draws - real_flow["trained"]["f"].values).ravel()
    count = residual.size
    # Four standard errors of the sample mean and of the sample variance of Gaussian noise.
    assert abs(residual.mean()) < 4 * 0.1 / np.sqrt(count)
    assert abs(residual.var() - 0.01) < 4 * 0.01 * np.sqrt(2 / count)


# ArviZ's own plots and summaries on a flow


def test_arviz_plot_dist_by_cutoff(real_flow):
    collection = az.plot_dist(
        real_flow,
        group="posterior",
        var_names=["f"],
        coords={"obs_id": [0]},
        kind="kde",
        aes={"color": ["cutoff"]},
        backend="matplotlib",
    )
    # By default arviz-plots 1.3 makes one panel per cutoff, coloured by cutoff.
    assert collection.viz["plot"]["f"].sizes == {"cutoff": 7, "obs_id": 1}


def test_arviz_plot_dist_overlaid_cutoffs(real_flow):
    collection = az.plot_dist(
        real_flow,
        group="posterior",
        var_names=["f"],
        coords={"obs_id": [0, 1]},
        kind="kde",
        cols=["obs_id"],
        aes={"color": ["cutoff"], "y": ["cutoff"]},
        aes_by_visuals={"credible_interval": ["color", "y"], "point_estimate": ["color", "y"]},
        visuals={"point_estimate_text": False},
        backend="matplotlib",
    )
    panels = collection.viz["plot"]
    assert panels.sizes == {"obs_id": 2}
    assert len({id(ax) for ax in panels.values.ravel()}) == 2


def test_arviz_summary_of_flow(real_flow):
    summary = az.summary(real_flow, var_names=["f"], round_to="none")
    assert len(summary) == 7 * 8
    means = real_flow["posterior"]["f"].mean(dim=("chain", "draw")).values.ravel()
    np.testing.assert_allclose(summary["mean"].to_numpy(dtype=float), means, rtol=1e-12)
