"""Plain-text tables of a BRG flow, as the ``brgnnft`` command prints them."""

import math

from brgnnft.brg.critical import flow_cutoffs


def _format_number(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def flow_table(flow) -> str:
    """Return the per-cutoff table of a flow: stiff directions, test MSE +- se, predictive SD, LPD."""
    statistics = flow["flow"]
    y_scale = float(flow.attrs.get("y_scale", 1.0))
    original_units = "y_scale" in flow.attrs and y_scale != 1.0
    diffusion = "flow_time" in statistics.dims
    header = ["cutoff Λ(t)" if diffusion else "cutoff", "stiff", "test MSE ± se", "predictive SD", "log pred. density"]
    if original_units:
        header.insert(3, "MSE (orig. units)")

    def row(label, stiff, mse, error, sd, density):
        cells = [label, stiff, f"{_format_number(mse)} ± {_format_number(error)}", _format_number(sd), f"{density:.1f}"]
        if original_units:
            cells.insert(3, _format_number(mse * y_scale**2))
        return cells

    num_params = flow.attrs.get("num_params")
    rows = [row(
        "trained", "all" if num_params is None else str(num_params),
        float(statistics["trained_test_mse"]), float(statistics["trained_test_mse_se"]),
        float(statistics["trained_predictive_sd"]), float(statistics["trained_log_predictive_density"]),
    )]
    for index, cutoff in enumerate(flow_cutoffs(statistics)):
        stiff = float(statistics["num_stiff"].values[index])
        rows.append(row(
            f"{cutoff:.3g}", f"{stiff:.0f}" if stiff == round(stiff) else f"{stiff:.1f}",
            float(statistics["test_mse"].values[index]), float(statistics["test_mse_se"].values[index]),
            float(statistics["predictive_sd"].values[index]), float(statistics["log_predictive_density"].values[index]),
        ))
    return _render(header, rows)


def paper_table(flow) -> str:
    """Return the table of the original results: median and mean test MSE and fraction redrawn."""
    from brgnnft.brg.paper import paper_table_rows

    rows = []
    for cutoff, median, mean, fraction in paper_table_rows(flow):
        label = cutoff if isinstance(cutoff, str) else f"{cutoff:.3g}"
        rows.append([label, _format_number(median), _format_number(mean), f"{fraction:.3f}"])
    num_kept = flow.attrs.get("num_members_kept", flow["flow"].sizes.get("draw"))
    return _render(["cutoff", "median MSE", f"mean MSE ({num_kept})", "fraction redrawn"], rows)


def analytic_table(flow) -> str:
    """Return the network's test MSE and predictive SD beside those of the closed-form infinite-width flow."""
    network, analytic = flow["flow"], flow["analytic"]
    header = ["cutoff", "Gram modes kept", "test MSE ± se", "infinite-width MSE", "predictive SD", "infinite-width SD"]
    rows = []
    for index, cutoff in enumerate(network["cutoff"].values):
        mse, error = float(network["test_mse"].values[index]), float(network["test_mse_se"].values[index])
        rows.append([
            f"{cutoff:.3g}",
            f"{int(analytic['num_stiff'].values[index])}",
            f"{_format_number(mse)} ± {_format_number(error)}",
            _format_number(float(analytic["test_mse"].values[index])),
            _format_number(float(network["predictive_sd"].values[index])),
            _format_number(float(analytic["predictive_sd"].values[index])),
        ])
    return _render(header, rows)


def _render(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cells[column]) for cells in [header, *rows]) for column in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(cells, widths)) for cells in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def critical_line(flow) -> str:
    """Return one line stating the critical cutoff and its bootstrap interval from the root attrs."""
    attrs = flow.attrs
    value = float(attrs.get("critical_cutoff", math.nan))
    observable = attrs.get("critical_observable", "test_mse")
    tolerance = float(attrs.get("critical_tolerance", math.nan))
    trained_mse = float(flow["flow"]["trained_test_mse"])
    if not math.isfinite(trained_mse):
        return (
            f"critical cutoff: undefined, because the trained test MSE is {trained_mse} (divergent members "
            "were kept: rerun without --keep-divergent)"
        )
    if not math.isfinite(value):
        return (
            f"critical cutoff: none within the grid ({observable} stays within the relative tolerance "
            f"{tolerance:g} of its trained value)"
        )
    low, high = float(attrs.get("critical_cutoff_low", math.nan)), float(attrs.get("critical_cutoff_high", math.nan))
    return (
        f"critical cutoff Λ_C = {value:.3g}, bootstrap 95 % interval [{low:.3g}, {high:.3g}] "
        f"({observable}, relative tolerance {tolerance:g})"
    )
