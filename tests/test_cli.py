"""The ``brgnnft`` command: end-to-end runs, the table, exit codes, and that bad input writes nothing."""

import os
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from brgnnft.brg import cli
from brgnnft.brg.cli import main, parse_cutoffs
from brgnnft.inference import load, save

PLOT_NAMES = {"flow.png", "fraction_coarse_grained.png", "spectrum.png", "predictive.png"}


def run(capsys, *argv):
    """Run the command in-process; return (exit code, stdout, stderr)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def table_lines(out: str) -> list[str]:
    """Return the lines of the first table in the output (header, rule and rows)."""
    lines = out.splitlines()
    start = next(index for index, line in enumerate(lines) if line.strip().startswith("cutoff"))
    end = next(index for index in range(start, len(lines)) if not lines[index].strip())
    return lines[start:end]


@pytest.fixture(scope="module")
def quick_flow(tmp_path_factory):
    """One real quick flow on co2, with plots, shared by the tests that read its outputs."""
    folder = tmp_path_factory.mktemp("quick")
    out = folder / "flow.nc"
    code = main(["flow", "--quick", "--no-progress", "--out", str(out), "--plots", str(folder / "plots")])
    return code, out, folder


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def assert_no_files(folder, allowed=()):
    left = sorted(name for name in os.listdir(folder) if name not in allowed)
    assert left == [], f"files left behind: {left}"


# ---------------------------------------------------------------- end to end


def test_quick_flow_writes_file_and_plots(quick_flow):
    code, out, folder = quick_flow
    assert code == 0
    assert out.is_file()
    assert {path.name for path in (folder / "plots").iterdir()} == PLOT_NAMES
    assert sorted(os.listdir(folder)) == ["flow.nc", "plots"]


def test_quick_flow_file_contents(quick_flow):
    _, out, _ = quick_flow
    flow = load(out)
    assert flow.attrs["dataset"] == "co2"
    assert flow.attrs["y_scale"] > 1.0
    assert np.isfinite(flow.attrs["y_mean"])
    assert flow.attrs["scheme"] == "information_shell"
    assert "critical_cutoff" in flow.attrs
    assert flow["flow"].sizes["cutoff"] == 13
    assert flow["posterior"]["f"].dims == ("cutoff", "chain", "draw", "obs_id")
    assert flow["posterior"]["f"].shape[1:3] == (1, cli.QUICK_MEMBERS["conjugate"])
    assert flow["constant_data"]["x"].shape[0] == cli.QUICK_MAX_ROWS


def test_report_prints_flow_table(quick_flow, capsys, tmp_path):
    _, out, _ = quick_flow
    code, text, _ = run(capsys, "report", str(out), "--plots", str(tmp_path / "again"))
    assert code == 0
    lines = table_lines(text)
    assert lines[0].split()[:2] == ["cutoff", "stiff"]
    assert "MSE (orig. units)" in lines[0]
    assert lines[2].split()[0] == "trained"
    assert len(lines) == 2 + 1 + 13
    assert "critical cutoff" in text
    assert {path.name for path in (tmp_path / "again").iterdir()} == PLOT_NAMES


def test_report_table_values(quick_flow, capsys):
    _, out, _ = quick_flow
    flow = load(out)
    _, text, _ = run(capsys, "report", str(out))
    rows = table_lines(text)[3:]
    for row, mse, stiff in zip(rows, flow["flow"]["test_mse"].values, flow["flow"]["num_stiff"].values):
        cells = row.split()
        assert int(cells[1]) == int(stiff)
        assert float(cells[2]) == pytest.approx(mse, rel=1e-3)
        assert float(cells[5]) == pytest.approx(mse * flow.attrs["y_scale"] ** 2, rel=1e-3)


def test_flow_prints_table(in_tmp, capsys):
    code, text, err = run(capsys, "flow", "--quick", "--no-progress", "--cutoffs", "0.01,1,100")
    assert code == 0, err
    lines = table_lines(text)
    assert [line.split()[0] for line in lines[2:]] == ["trained", "0.01", "1", "100"]
    assert "critical cutoff" in text
    assert (in_tmp / "flow.nc").is_file()


def test_flow_compare_analytic(in_tmp, capsys):
    code, text, err = run(
        capsys, "flow", "--quick", "--no-progress", "--hidden", "2048", "--cutoffs", "0.01,100,1e6",
        "--compare-analytic", "--plots", "plots",
    )
    flow = load(in_tmp / "flow.nc")

    assert code == 0, err
    assert "closed-form infinite-width flow" in text
    assert set(flow["analytic"].data_vars) >= {"test_mse", "predictive_sd", "num_stiff"}
    np.testing.assert_allclose(flow["analytic"]["cutoff"].values, flow["flow"]["cutoff"].values)
    assert (in_tmp / "plots" / "analytic_comparison.png").is_file()
    # At a small cutoff both flows are the trained posterior, so their MSE differ by the
    # finite-width kernel error, of order 1/sqrt(2048) = 2 %; the check allows 5 %.
    assert flow["analytic"]["test_mse"].values[0] == pytest.approx(flow["flow"]["test_mse"].values[0], rel=0.05)


def test_flow_diffusion_scheme(in_tmp, capsys):
    code, text, err = run(capsys, "flow", "--quick", "--no-progress", "--scheme", "diffusion", "--cutoffs", "0.01,1,100")
    flow = load(in_tmp / "flow.nc")

    assert code == 0, err
    assert table_lines(text)[0].split()[:2] == ["cutoff", "Λ(t)"]
    assert "flow_time" in flow["flow"].dims
    np.testing.assert_allclose(flow["flow"]["cutoff_equivalent"].values, [0.01, 1, 100], rtol=1e-10)
    assert "critical cutoff" in text


def test_paper_command_table(in_tmp, capsys):
    code, text, err = run(capsys, "paper", "--members", "4", "--no-progress", "--out", "paper.nc")
    assert code == 0, err
    lines = table_lines(text)
    assert lines[0].split()[:3] == ["cutoff", "median", "MSE"]
    assert len(lines) == 2 + 1 + 25
    assert lines[2].split()[0] == "trained"
    assert float(lines[-1].split()[-1]) == pytest.approx(1.0, abs=0.01)
    assert "Fisher diagonal on the training inputs" in text
    flow = load(in_tmp / "paper.nc")
    assert flow.attrs["preset"] == "paper"
    assert flow.attrs["num_members"] == 4


def test_report_of_paper_flow_adds_paper_table(in_tmp, capsys):
    assert main(["paper", "--members", "4", "--no-progress", "--out", "paper.nc", "--fisher-points", "10"]) == 0
    capsys.readouterr()
    code, text, _ = run(capsys, "report", "paper.nc")
    assert code == 0
    assert "median MSE" in text
    assert "fraction redrawn" in text


def test_paper_keep_divergent(in_tmp, capsys, monkeypatch):
    from brgnnft.brg import paper as paper_module

    monkeypatch.setattr(paper_module, "DIVERGENCE_THRESHOLD", 1e-12)
    code, _, err = run(capsys, "paper", "--members", "4", "--no-progress", "--out", "dropped.nc")
    assert code == 1
    assert "all 4 members diverged" in err
    assert "--keep-divergent" in err
    assert_no_files(in_tmp)

    code, text, _ = run(capsys, "paper", "--members", "4", "--no-progress", "--out", "kept.nc", "--keep-divergent")
    assert code == 0
    assert "4 of 4 members kept" in text
    assert load(in_tmp / "kept.nc").attrs["keep_divergent"] == 1


def test_critical_line_with_divergent_baseline(quick_flow):
    flow = load(quick_flow[1])
    flow["flow"]["trained_test_mse"] = np.nan
    assert "undefined, because the trained test MSE is nan" in cli.critical_line(flow)


def test_mlp_flow_defaults_to_ensemble(in_tmp, capsys):
    code, text, err = run(
        capsys, "flow", "--data", "diabetes", "--model", "mlp", "--hidden", "4", "--members", "4", "--quick",
        "--cutoffs", "1,1e4", "--no-progress",
    )
    assert code == 0, err
    assert "MLP" in text
    assert load(in_tmp / "flow.nc").attrs["inference"] == "ensemble"


def test_datasets_lists_bundled_sets(capsys):
    code, text, _ = run(capsys, "datasets")
    assert code == 0
    for name in ("co2", "diabetes", "paper"):
        assert f"{name}: " in text
    assert "source: " in text


def test_module_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "brgnnft.brg", "datasets"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "co2: " in result.stdout


def test_help_exits_zero(capsys):
    code, text, _ = run(capsys, "flow", "--help")
    assert code == 0
    assert "--cutoffs" in text


# ---------------------------------------------------------------- cutoff specs


def test_cutoff_range_is_log_spaced():
    np.testing.assert_allclose(parse_cutoffs("1e-2:1e2:5"), [1e-2, 1e-1, 1.0, 1e1, 1e2], rtol=1e-12)


def test_cutoff_list_is_sorted():
    np.testing.assert_array_equal(parse_cutoffs("10, 0.1,1"), [0.1, 1.0, 10.0])


# ---------------------------------------------------------------- bad input: exit 2, nothing written


def write_csv(folder, name, text):
    path = folder / name
    path.write_text(text)
    return path


BAD_FLOW_ARGUMENTS = [
    (["--data", "nope"], "unknown data set 'nope'"),
    (["--data", "missing.csv"], "not found"),
    (["--data", "table.txt"], "unsupported file type"),
    (["--y", "ppm"], "column 'ppm' not found"),
    (["--x", "date"], "column 'date' not found"),
    (["--model", "mlp", "--inference", "conjugate"], "use --inference ensemble or --inference nuts"),
    (["--model", "cosnet", "--hidden", "8,8"], "cosnet has one hidden layer"),
    (["--model", "cosnet", "--activation", "tanh"], "takes no --activation"),
    (["--hidden", "8,8", "--activation", "relu,tanh,relu"], "3 activations for 2 hidden layers"),
    (["--activation", "swish"], "unknown activation 'swish'"),
    (["--hidden", "a,b"], "invalid hidden widths 'a,b'"),
    (["--hidden", "0"], "every width must be >= 1"),
    (["--noise", "-1"], "expected a finite number > 0"),
    (["--noise", "abc"], "invalid number 'abc'"),
    (["--members", "0"], "expected an integer >= 1"),
    (["--seed", "-3"], "invalid seed -3"),
    (["--cutoffs=-1,2"], "must be finite and > 0"),
    (["--cutoffs", "0,1"], "must be finite and > 0"),
    (["--cutoffs", "0:10:5"], "must be finite and > 0"),
    (["--cutoffs", "inf"], "must be finite and > 0"),
    (["--cutoffs", "1e-4:1e5"], "write START:STOP:NUM"),
    (["--cutoffs", "1:2:3:4"], "write START:STOP:NUM"),
    (["--cutoffs", "1:10:x"], "NUM must be an integer >= 2"),
    (["--cutoffs", "1:10:1"], "NUM must be >= 2"),
    (["--cutoffs", "10:1:5"], "START must be smaller than STOP"),
    (["--cutoffs", "a,b"], "invalid cutoff 'a'"),
    (["--cutoffs", "1,1"], "repeat a value"),
    (["--model", "transformer"], "invalid choice: 'transformer'"),
    (["--model", "mlp", "--compare-analytic"], "--compare-analytic needs a model whose infinite-width flow"),
    (["--compare-analytic", "--basis", "diagonal"], "--compare-analytic reads the cutoffs as Fisher eigenvalues"),
    (["--scheme", "diffusion", "--prescription", "prune"], "--prescription sets the information shell"),
    (["--regularizer", "0.1"], "--regularizer sets the diffusion"),
    (["--scheme", "diffusion", "--compare-analytic"], "--compare-analytic compares information-shell flows"),
    (["--members", "1"], "expected at least 2 draws"),
]


@pytest.mark.parametrize(("arguments", "match"), BAD_FLOW_ARGUMENTS)
def test_flow_bad_input(in_tmp, capsys, arguments, match):
    write_csv(in_tmp, "table.txt", "a,b\n1,2\n")
    code, _, err = run(capsys, "flow", "--quick", "--no-progress", *arguments)
    assert code == 2
    assert match in err
    assert "brgnnft: error:" in err
    assert_no_files(in_tmp, allowed=("table.txt",))


@pytest.mark.parametrize(
    ("text", "arguments", "match"),
    [
        ("x,y\n1,a\n2,b\n3,c\n4,d\n5,e\n", ["--y", "y"], "is not numeric"),
        ("x,y,z\n1,,1\n2,,2\n3,,3\n4,,4\n5,,5\n", ["--y", "y", "--x", "x"], "has no values"),
        ("x,y\n1,2\n2,3\n3,4\n", [], "at least 4"),
        ("x,y\n1,2\n1,3\n1,4\n1,5\n1,6\n1,7\n", [], "is constant"),
    ],
)
def test_flow_bad_table(in_tmp, capsys, text, arguments, match):
    write_csv(in_tmp, "data.csv", text)
    code, _, err = run(capsys, "flow", "--quick", "--no-progress", "--data", "data.csv", *arguments)
    assert code == 2
    assert match in err
    assert_no_files(in_tmp, allowed=("data.csv",))


def test_existing_output_kept_without_overwrite(in_tmp, capsys):
    (in_tmp / "flow.nc").write_text("earlier result")
    code, _, err = run(capsys, "flow", "--quick", "--no-progress")
    assert code == 2
    assert "already exists: pass --overwrite" in err
    assert (in_tmp / "flow.nc").read_text() == "earlier result"
    assert_no_files(in_tmp, allowed=("flow.nc",))


def test_output_under_regular_file(in_tmp, capsys):
    (in_tmp / "afile").write_text("")
    code, _, err = run(capsys, "flow", "--quick", "--out", "afile/flow.nc")
    assert code == 2
    assert "is not a folder" in err
    assert_no_files(in_tmp, allowed=("afile",))


def test_output_in_missing_folder(in_tmp, capsys):
    code, _, err = run(capsys, "flow", "--quick", "--out", "missing/flow.nc")
    assert code == 2
    assert "does not exist" in err
    assert_no_files(in_tmp)


def test_output_is_folder(in_tmp, capsys):
    (in_tmp / "folder").mkdir()
    code, _, err = run(capsys, "flow", "--quick", "--out", "folder")
    assert code == 2
    assert "is a folder" in err


def test_plots_under_regular_file(in_tmp, capsys):
    (in_tmp / "afile").write_text("")
    code, _, err = run(capsys, "flow", "--quick", "--plots", "afile/plots")
    assert code == 2
    assert "is not a folder" in err
    assert_no_files(in_tmp, allowed=("afile",))


def test_plots_folder_is_file(in_tmp, capsys):
    (in_tmp / "plots").write_text("")
    code, _, err = run(capsys, "flow", "--quick", "--plots", "plots")
    assert code == 2
    assert "exists and is not a folder" in err
    assert_no_files(in_tmp, allowed=("plots",))


def test_existing_plot_kept_without_overwrite(in_tmp, capsys):
    (in_tmp / "plots").mkdir()
    (in_tmp / "plots" / "flow.png").write_text("earlier plot")
    code, _, err = run(capsys, "flow", "--quick", "--plots", "plots")
    assert code == 2
    assert "already exists: pass --overwrite" in err
    assert (in_tmp / "plots" / "flow.png").read_text() == "earlier plot"
    assert_no_files(in_tmp, allowed=("plots",))


def test_paper_bad_input(in_tmp, capsys):
    (in_tmp / "paper_flow.nc").write_text("earlier")
    code, _, err = run(capsys, "paper", "--members", "2")
    assert code == 2
    assert "already exists" in err
    code, _, err = run(capsys, "paper", "--fisher-points", "20")
    assert code == 2
    assert "invalid choice: '20'" in err
    code, _, err = run(capsys, "paper", "--members", "0")
    assert code == 2
    assert "expected an integer >= 1" in err
    assert_no_files(in_tmp, allowed=("paper_flow.nc",))


def test_report_missing_file(in_tmp, capsys):
    code, _, err = run(capsys, "report", "nothing.nc")
    assert code == 2
    assert "flow file 'nothing.nc' not found" in err


def test_report_not_netcdf(in_tmp, capsys):
    (in_tmp / "text.nc").write_text("not a NetCDF file")
    code, _, err = run(capsys, "report", "text.nc")
    assert code == 2
    assert "cannot read 'text.nc'" in err


def test_report_not_a_flow(in_tmp, capsys):
    posterior = xr.Dataset({"f": (("chain", "draw", "obs_id"), np.zeros((1, 3, 2)))})
    save(xr.DataTree.from_dict({"posterior": posterior}), in_tmp / "posterior.nc")
    code, _, err = run(capsys, "report", "posterior.nc")
    assert code == 2
    assert "has no 'flow' group" in err


def test_unknown_command(capsys):
    code, _, err = run(capsys, "fly")
    assert code == 2
    assert "brgnnft: error: argument COMMAND: invalid choice: 'fly'" in err


# ---------------------------------------------------------------- failures during the run: exit 1


def test_failure_during_run_exits_one(in_tmp, capsys, monkeypatch):
    import brgnnft.brg

    def failing_flow(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(brgnnft.brg, "information_shell_flow", failing_flow)
    code, _, err = run(capsys, "flow", "--quick", "--no-progress")
    assert code == 1
    assert "brgnnft: error: the flow run failed: RuntimeError: simulated failure" in err
    assert_no_files(in_tmp)


def test_failed_plots_leave_no_flow_file(in_tmp, capsys, monkeypatch):
    import brgnnft.brg

    def failing_plots(flow, folder, *, overwrite=False):
        raise RuntimeError("simulated plot failure")

    monkeypatch.setattr(brgnnft.brg, "save_flow_plots", failing_plots)
    code, _, err = run(capsys, "flow", "--quick", "--no-progress", "--cutoffs", "1,100", "--plots", "plots")
    assert code == 1
    assert "simulated plot failure" in err
    assert_no_files(in_tmp)
