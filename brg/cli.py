"""The ``brgnnft`` command: BRG flows from data, reports of saved flows, and the ``paper`` preset.

Subcommands:

- ``brgnnft flow``: load a data set, build a model, sample its posterior, run the information-shell
  flow, detect the critical cutoff, write the flow DataTree (and plots), and print a table.
- ``brgnnft report FLOW.nc``: print the table (and write the plots) of a saved flow.
- ``brgnnft paper``: the original BRG-NNFT experiment (:func:`brgnnft.brg.paper.paper_flow`).
- ``brgnnft datasets``: list the bundled data sets.

Exit codes: 0 on success, 2 for invalid usage or input, 1 for a failure during the run. Every
input and output path is checked before any work starts, and files are written atomically, so a
failed run leaves no output file behind.
"""

import argparse
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from brgnnft.brg.report import analytic_table, critical_line, flow_table, paper_table

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

MODELS = ("random-features", "mlp", "cosnet")
INFERENCES = ("conjugate", "ensemble", "nuts")
SCHEMES = ("shell", "diffusion")
# Half-decade steps up to 1e8: the Fisher of all 1669 co2 training rows at noise 0.1 has its top
# eigenvalue near 6e7, so the default grid crosses the whole spectrum.
DEFAULT_CUTOFFS = "1e-4:1e8:25"
QUICK_CUTOFFS = "1e-4:1e8:13"
DEFAULT_HIDDEN = {"random-features": (512,), "mlp": (64, 64), "cosnet": (512,)}
# Posterior draws (conjugate, nuts) or members (ensemble) when --members is not given.
DEFAULT_MEMBERS = {"conjugate": 200, "ensemble": 64, "nuts": 200}
QUICK_MEMBERS = {"conjugate": 64, "ensemble": 16, "nuts": 64}
# --quick keeps at most this many training and test rows, drawn at random.
QUICK_MAX_ROWS = 256
ENSEMBLE_STEPS = 2000
QUICK_ENSEMBLE_STEPS = 300
NUTS_WARMUP = 300
QUICK_NUTS_WARMUP = 100
NUTS_CHAINS = 2
# Models linear in their Bayesian parameters have a Fisher metric that does not depend on the
# parameters, so the cheap posterior mean is as good a reference point as the MAP.
LINEAR_MODELS = ("random-features", "cosnet")

logger = logging.getLogger(__name__)


class UsageError(Exception):
    """An invalid option, input or output path: reported with exit code 2 before any work."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors read ``brgnnft: error: ...`` like the command's own errors."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"brgnnft: error: {message}\n")


# ---------------------------------------------------------------- argument types


def parse_cutoffs(text: str) -> np.ndarray:
    """Parse ``START:STOP:NUM`` (NUM log-spaced values) or a comma-separated list into cutoffs.

    Returns an ascending float64 array of distinct finite positive values.
    """
    text = text.strip()
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise argparse.ArgumentTypeError(
                f"invalid cutoff range {text!r}: write START:STOP:NUM, e.g. 1e-4:1e5:25"
            )
        start, stop = (_positive_float(part, "cutoff range bound", text) for part in parts[:2])
        try:
            count = int(parts[2])
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid number of cutoffs {parts[2]!r} in {text!r}: NUM must be an integer >= 2"
            ) from None
        if count < 2:
            raise argparse.ArgumentTypeError(f"invalid number of cutoffs {count} in {text!r}: NUM must be >= 2")
        if not start < stop:
            raise argparse.ArgumentTypeError(f"invalid cutoff range {text!r}: START must be smaller than STOP")
        return np.geomspace(start, stop, count)

    values = [_positive_float(part, "cutoff", text) for part in text.split(",")]
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"cutoffs {text!r} repeat a value: list each cutoff once")
    return np.sort(np.array(values, dtype=np.float64))


def _positive_float(text: str, what: str, whole: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid {what} {text.strip()!r} in {whole!r}: expected a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(
            f"invalid {what} {text.strip()!r} in {whole!r}: cutoffs are Fisher eigenvalue scales and must be "
            "finite and > 0"
        )
    return value


def parse_hidden(text: str) -> tuple[int, ...]:
    """Parse hidden widths such as ``256,256`` into a tuple of positive integers."""
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid hidden widths {text!r}: write positive integers like 256,256") from None
    if any(width < 1 for width in widths):
        raise argparse.ArgumentTypeError(f"invalid hidden widths {text!r}: every width must be >= 1")
    return widths


def parse_columns(text: str) -> list[str]:
    """Parse a comma-separated list of column names."""
    columns = [part.strip() for part in text.split(",")]
    if not all(columns):
        raise argparse.ArgumentTypeError(f"invalid column list {text!r}: write names separated by commas, e.g. age,bmi")
    return columns


def parse_activation(text: str) -> tuple[str, ...]:
    """Parse one activation name, or one per hidden layer separated by commas."""
    from brgnnft.models import ACTIVATIONS

    names = tuple(part.strip() for part in text.split(","))
    for name in names:
        if name not in ACTIVATIONS:
            known = ", ".join(sorted(ACTIVATIONS))
            raise argparse.ArgumentTypeError(f"unknown activation {name!r}: use one of {known}")
    return names


def positive_number(text: str) -> float:
    """Parse a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a finite number > 0")
    return value


def positive_int(text: str) -> int:
    """Parse an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {value}: expected an integer >= 1")
    return value


def member_count(text: str) -> int:
    """Parse a number of posterior draws or members: at least 2, so standard errors exist."""
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(
            f"invalid value {value}: expected at least 2 draws, since standard errors and the bootstrap "
            "interval need two or more"
        )
    return value


def seed_int(text: str) -> int:
    """Parse a seed: an integer in [0, 2^31)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: expected an integer") from None
    if not 0 <= value < 2**31:
        raise argparse.ArgumentTypeError(f"invalid seed {value}: expected an integer in [0, 2^31)")
    return value


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``brgnnft`` command and its subcommands."""
    parser = _Parser(prog="brgnnft", description="Bayesian renormalization group flows of neural-network field theories.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages (INFO level)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    flow = commands.add_parser("flow", help="run a BRG flow on a data set and write it to a file")
    flow.add_argument("--data", default="co2", help="bundled data set (co2, diabetes, paper) or a .csv/.parquet file (default co2)")
    flow.add_argument("--x", type=parse_columns, default=None, metavar="COLS", help="input columns, comma separated (default: all but --y)")
    flow.add_argument("--y", default=None, metavar="COL", help="target column (default: the last column)")
    flow.add_argument("--model", choices=MODELS, default="random-features", help="network (default random-features)")
    flow.add_argument("--hidden", type=parse_hidden, default=None, metavar="WIDTHS",
                      help="hidden widths, e.g. 256,256 (default 512 for random-features and cosnet, 64,64 for mlp)")
    flow.add_argument("--activation", type=parse_activation, default=None, metavar="NAME",
                      help="activation, or one per hidden layer separated by commas (default relu; not for cosnet)")
    flow.add_argument("--noise", type=positive_number, default=0.1, metavar="SIGMA",
                      help="observation noise standard deviation in standardised units of y (default 0.1)")
    flow.add_argument("--inference", choices=INFERENCES, default=None,
                      help="posterior route (default conjugate, and ensemble for the mlp, which conjugate cannot sample)")
    flow.add_argument("--members", type=member_count, default=None, metavar="S",
                      help="posterior draws or ensemble members (default 200 conjugate, 64 ensemble, 200 nuts)")
    flow.add_argument("--basis", choices=("eigen", "diagonal"), default="eigen", help="Fisher basis (default eigen)")
    flow.add_argument("--prescription", choices=("prior", "marginalize", "prune"), default=None,
                      help="replacement of the sloppy directions, for --scheme shell (default prior)")
    flow.add_argument("--scheme", choices=SCHEMES, default="shell",
                      help="coarse graining: the information shell at each cutoff, or the Fisher-metric diffusion to "
                      "the prior, run to the flow times t = cutoff * s^2 / n (s^2 the prior variance of the parameters, "
                      "n the number of training rows) whose effective cutoff is each of --cutoffs; the table then lists "
                      "those effective cutoffs Λ(t) (default shell)")
    flow.add_argument("--regularizer", type=positive_number, default=None, metavar="DELTA",
                      help="for --scheme diffusion: delta added to the per-datum Fisher metric, so directions of zero "
                      "information relax at rate 1 / (s^2 delta) (default 1e-6 times the largest per-datum eigenvalue)")
    flow.add_argument("--cutoffs", type=parse_cutoffs, default=None, metavar="SPEC",
                      help=f"START:STOP:NUM log-spaced, or a comma-separated list (default {DEFAULT_CUTOFFS})")
    flow.add_argument("--seed", type=seed_int, default=0, help="seed of every random draw (default 0)")
    flow.add_argument("--out", type=Path, default=Path("flow.nc"), help="output NetCDF file (default flow.nc)")
    flow.add_argument("--plots", type=Path, default=None, metavar="DIR", help="folder for the PNG plots (default none)")
    flow.add_argument("--overwrite", action="store_true", help="replace an existing output file and plots")
    flow.add_argument("--quick", action="store_true",
                      help=f"small run: at most {QUICK_MAX_ROWS} training and test rows, fewer draws, {QUICK_CUTOFFS} cutoffs")
    flow.add_argument("--no-progress", action="store_true", help="hide progress bars")
    flow.add_argument(
        "--compare-analytic",
        action="store_true",
        help="also compute the closed-form infinite-width flow on the same cutoffs (random-features and "
        "cosnet, eigen basis), store it as the group 'analytic' and print it beside the network's",
    )

    report = commands.add_parser("report", help="print the table of a saved flow and draw its plots")
    report.add_argument("flow_file", type=Path, metavar="FLOW.nc")
    report.add_argument("--plots", type=Path, default=None, metavar="DIR", help="folder for the PNG plots (default none)")
    report.add_argument("--overwrite", action="store_true", help="replace existing plots")

    paper = commands.add_parser("paper", help="reproduce the original BRG-NNFT experiment (arXiv:2405.17538)")
    paper.add_argument("--members", type=member_count, default=100, help="ensemble members before dropping divergent ones (default 100)")
    paper.add_argument("--fisher-points", choices=("10", "train"), default="train",
                       help="inputs of the Fisher diagonal: the 200 training inputs (default) or the 10 separate points as published")
    paper.add_argument("--seed", type=seed_int, default=0, help="seed of every random draw (default 0)")
    paper.add_argument("--out", type=Path, default=Path("paper_flow.nc"), help="output NetCDF file (default paper_flow.nc)")
    paper.add_argument("--plots", type=Path, default=None, metavar="DIR", help="folder for the PNG plots (default none)")
    paper.add_argument("--overwrite", action="store_true", help="replace an existing output file and plots")
    paper.add_argument("--keep-divergent", action="store_true",
                       help="keep members whose test MSE before coarse graining is >= 1e3 (dropped by default)")
    paper.add_argument("--no-progress", action="store_true", help="hide progress bars")

    commands.add_parser("datasets", help="list the bundled data sets with their sizes and sources")
    return parser


# ---------------------------------------------------------------- output checks


def _check_writable_folder(folder: Path, what: str) -> None:
    """Raise UsageError unless a file can be created in ``folder`` (tried with a temporary file)."""
    if not folder.exists():
        raise UsageError(f"folder {str(folder)!r} of the {what} does not exist: create it or choose another path")
    if not folder.is_dir():
        raise UsageError(f"{str(folder)!r} in the path of the {what} is not a folder: choose another path")
    try:
        descriptor, probe = tempfile.mkstemp(prefix=".brgnnft-write-test-", dir=folder)
    except OSError as error:
        raise UsageError(f"cannot write to folder {str(folder)!r} for the {what}: {error.strerror}") from None
    os.close(descriptor)
    os.unlink(probe)


def check_output_file(path: Path, *, overwrite: bool) -> None:
    """Raise UsageError if the output file exists (without ``overwrite``) or cannot be written."""
    if path.is_dir():
        raise UsageError(f"output {str(path)!r} is a folder: pass a file path such as {str(path / 'flow.nc')!r}")
    if path.exists() and not overwrite:
        raise UsageError(f"output {str(path)!r} already exists: pass --overwrite to replace it, or choose another --out")
    _check_writable_folder(path.parent, "output file")


def check_plot_folder(folder: Path | None, *, overwrite: bool) -> None:
    """Raise UsageError unless the plots can be written into ``folder`` (created later if missing)."""
    if folder is None:
        return
    from brgnnft.brg.plots import PLOT_FILES

    if folder.exists():
        if not folder.is_dir():
            raise UsageError(f"plots folder {str(folder)!r} exists and is not a folder: choose another --plots")
        if not overwrite:
            for name in PLOT_FILES:
                if (folder / name).exists():
                    raise UsageError(
                        f"plot {str(folder / name)!r} already exists: pass --overwrite to replace it, or choose "
                        "another --plots folder"
                    )
        _check_writable_folder(folder, "plots")
        return
    ancestor = folder.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    _check_writable_folder(ancestor, "plots")


def write_outputs(flow, out: Path, plots: Path | None, *, overwrite: bool) -> None:
    """Write the flow file and the plots, leaving the flow file only if the plots succeed too."""
    from brgnnft.brg import save_flow_plots
    from brgnnft.inference import save
    from brgnnft.inference.io import atomic_path

    with atomic_path(out) as staged:
        save(flow, staged, overwrite=True)
        if plots is not None:
            save_flow_plots(flow, plots, overwrite=overwrite)
            if "analytic" in flow.children:
                save_analytic_plot(flow, plots)


ANALYTIC_PLOT = "analytic_comparison.png"


def save_analytic_plot(flow, folder: Path) -> Path:
    """Write the network's flow against its closed-form infinite-width flow as a PNG in ``folder``."""
    import matplotlib.pyplot as plt

    from brgnnft.brg import plot_analytic_comparison
    from brgnnft.inference.io import atomic_path

    path = folder / ANALYTIC_PLOT
    figure = plot_analytic_comparison(flow, flow["analytic"].to_dataset())
    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format="png", dpi=150)
    finally:
        plt.close(figure)
    return path


def analytic_flow(args, settings, model, x_train, y_train, x_test, y_test):
    """Return the closed-form infinite-width flow on the network's cutoffs, as the Dataset stored in 'analytic'."""
    from brgnnft.brg import infinite_width_kernel, nngp_shell_flow

    # The network's marginalize and prune flows set its Fisher null space to zero. That null space
    # carries the part of f at the test points that is independent of f at the training points, so
    # the closed form drops that part too, while the prior flow redraws it from the prior.
    residual = "prior" if settings["prescription"] == "prior" else "drop"
    analytic = nngp_shell_flow(
        infinite_width_kernel(model),
        x_train,
        y_train,
        model.noise,
        cutoffs=settings["cutoffs"],
        x_test=x_test,
        y_test=y_test,
        prescription=settings["prescription"],
        readout_variance=model.readout_variance,
        residual=residual,
        covariance=False,
        seed=args.seed,
    )
    return analytic["flow"].to_dataset().assign_attrs(residual=residual, kernel="infinite width")


def _print_flow(flow) -> None:
    print(flow_table(flow))
    if flow.attrs.get("preset") == "paper":
        print()
        print(paper_table(flow))
    if "analytic" in flow.children:
        print()
        print("the network's flow beside the closed-form infinite-width flow on the same cutoffs:")
        print(analytic_table(flow))
    print()
    print(critical_line(flow))


# ---------------------------------------------------------------- subcommands


def _quick_subset(key, rows: int) -> np.ndarray:
    import jax

    if rows <= QUICK_MAX_ROWS:
        return np.arange(rows)
    return np.sort(np.asarray(jax.random.choice(key, rows, (QUICK_MAX_ROWS,), replace=False)))


def _flow_settings(args) -> dict:
    """Resolve the defaults that depend on other options, and reject invalid combinations."""
    if args.inference is None:
        args.inference = "ensemble" if args.model == "mlp" else "conjugate"

    if args.model == "mlp" and args.inference == "conjugate":
        raise UsageError(
            "--inference conjugate needs a model linear in its Bayesian parameters, and the mlp is not: "
            "use --inference ensemble or --inference nuts"
        )

    hidden = args.hidden or DEFAULT_HIDDEN[args.model]
    if args.model == "cosnet":
        if len(hidden) != 1:
            raise UsageError(f"cosnet has one hidden layer, got --hidden {','.join(map(str, hidden))}: pass one width")
        if args.activation is not None:
            raise UsageError("cosnet uses cosine features and takes no --activation: leave it out")
    activation = args.activation or ("relu",)
    if len(activation) not in (1, len(hidden)):
        raise UsageError(
            f"--activation names {len(activation)} activations for {len(hidden)} hidden layers: pass one, or one per layer"
        )

    if args.scheme == "diffusion":
        if args.prescription is not None:
            raise UsageError("--prescription sets the information shell: leave it out with --scheme diffusion")
        if args.compare_analytic:
            raise UsageError("--compare-analytic compares information-shell flows: use it with --scheme shell")
    elif args.regularizer is not None:
        raise UsageError("--regularizer sets the diffusion: use it with --scheme diffusion")

    if args.compare_analytic:
        if args.model == "mlp":
            raise UsageError(
                "--compare-analytic needs a model whose infinite-width flow has a closed form: use --model "
                "random-features or --model cosnet"
            )
        if args.basis != "eigen":
            raise UsageError("--compare-analytic reads the cutoffs as Fisher eigenvalues: use --basis eigen")

    members_table = QUICK_MEMBERS if args.quick else DEFAULT_MEMBERS
    cutoffs = args.cutoffs
    if cutoffs is None:
        cutoffs = parse_cutoffs(QUICK_CUTOFFS if args.quick else DEFAULT_CUTOFFS)
    return {
        "hidden": hidden,
        "activation": activation[0] if len(activation) == 1 else activation,
        "members": args.members or members_table[args.inference],
        "cutoffs": cutoffs,
        "prescription": args.prescription or "prior",
    }


def _load_flow_data(args, key_data, key_quick):
    from brgnnft.inference import load_dataset

    try:
        data = load_dataset(args.data, key=key_data, x=args.x, y=args.y)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as error:
        raise UsageError(str(error)) from None
    x_train, y_train, x_test, y_test = data.x_train, data.y_train, data.x_test, data.y_test
    if args.quick:
        import jax

        key_train, key_test = jax.random.split(key_quick)
        train_rows, test_rows = _quick_subset(key_train, len(y_train)), _quick_subset(key_test, len(y_test))
        x_train, y_train, x_test, y_test = x_train[train_rows], y_train[train_rows], x_test[test_rows], y_test[test_rows]
    return data, x_train, y_train, x_test, y_test


def _build_model(args, settings, input_dim: int):
    from brgnnft.models import MLP, CosNet, RandomFeatures

    if args.model == "random-features":
        return RandomFeatures(settings["hidden"], settings["activation"], noise=args.noise, seed=args.seed)
    if args.model == "mlp":
        return MLP(settings["hidden"], settings["activation"], noise=args.noise)
    return CosNet(settings["hidden"][0], dim=input_dim, noise=args.noise, seed=args.seed)


def _sample_posterior(args, settings, model, x, y, key):
    from brgnnft.inference import conjugate, ensemble, nuts

    progress = not args.no_progress
    if args.inference == "conjugate":
        return conjugate(model, x, y, key=key, num_samples=settings["members"])
    if args.inference == "ensemble":
        steps = QUICK_ENSEMBLE_STEPS if args.quick else ENSEMBLE_STEPS
        return ensemble(model, x, y, key=key, num_members=settings["members"], num_steps=steps, progress=progress)
    warmup = QUICK_NUTS_WARMUP if args.quick else NUTS_WARMUP
    draws = max(1, math.ceil(settings["members"] / NUTS_CHAINS))
    return nuts(model, x, y, key=key, num_warmup=warmup, num_samples=draws, num_chains=NUTS_CHAINS, progress=progress)


def run_flow(args) -> int:
    """Run ``brgnnft flow``: data, model, posterior, flow, critical cutoff, file, plots, table."""
    import jax

    settings = _flow_settings(args)
    check_output_file(args.out, overwrite=args.overwrite)
    check_plot_folder(args.plots, overwrite=args.overwrite)
    if args.compare_analytic and args.plots is not None and (args.plots / ANALYTIC_PLOT).exists() and not args.overwrite:
        raise UsageError(
            f"plot {str(args.plots / ANALYTIC_PLOT)!r} already exists: pass --overwrite to replace it, or choose "
            "another --plots folder"
        )
    key_data, key_quick, key_posterior, key_flow, key_critical = jax.random.split(jax.random.key(args.seed), 5)
    data, x_train, y_train, x_test, y_test = _load_flow_data(args, key_data, key_quick)
    try:
        model = _build_model(args, settings, data.input_dim)
    except (ValueError, TypeError) as error:
        raise UsageError(str(error)) from None

    from brgnnft.brg import critical_cutoff, diffusion_flow, flow_times, information_shell_flow

    start = time.perf_counter()
    posterior = _sample_posterior(args, settings, model, x_train, y_train, key_posterior)
    common = {
        "x_test": x_test,
        "y_test": y_test,
        "reference": "posterior_mean" if args.model in LINEAR_MODELS else "map",
        "basis": args.basis,
        "key": key_flow,
        "seed": args.seed,
        "progress": not args.no_progress,
    }
    if args.scheme == "diffusion":
        # The Fisher metric is that of the training set, so t = cutoff * s^2 / n reaches each cutoff.
        times = flow_times(settings["cutoffs"], model, input_dim=data.input_dim, num_data=len(y_train))
        flow = diffusion_flow(posterior, model, times=times, regularizer=args.regularizer, **common)
    else:
        flow = information_shell_flow(
            posterior, model, cutoffs=settings["cutoffs"], prescription=settings["prescription"], **common
        )
    num_draws = int(posterior["posterior"].sizes["chain"] * posterior["posterior"].sizes["draw"])
    flow.attrs.update(critical_cutoff(flow, key=key_critical).attrs)
    flow.attrs.update({
        "dataset": data.name,
        "y_mean": float(data.y_mean),
        "y_scale": float(data.y_scale),
        "model_name": args.model,
        "inference": args.inference,
        "num_members": num_draws,
        "num_train": int(len(y_train)),
        "quick": int(args.quick),
    })
    if args.compare_analytic:
        flow["analytic"] = analytic_flow(args, settings, model, x_train, y_train, x_test, y_test)
    write_outputs(flow, args.out, args.plots, overwrite=args.overwrite)
    elapsed = time.perf_counter() - start

    units = "standardised units" if data.standardized else "the units of the data"
    print(f"BRG flow of {model!r} on {data.name} ({len(y_train)} training, {len(y_test)} test rows), "
          f"{args.inference} posterior with {num_draws} draws. MSE in {units}.")
    _print_flow(flow)
    print(f"wrote {args.out}" + (f" and plots in {args.plots}" if args.plots else "") + f" ({elapsed:.1f} s)")
    return EXIT_OK


def _load_flow_file(path: Path):
    from brgnnft.inference import load

    if not path.is_file():
        raise UsageError(f"flow file {str(path)!r} not found: pass the file written by brgnnft flow or brgnnft paper")
    try:
        flow = load(path)
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {str(path)!r} as a NetCDF DataTree ({error}): pass a file written by brgnnft flow") from None
    if "flow" not in flow.children:
        raise UsageError(f"{str(path)!r} has no 'flow' group, so it is not a BRG flow: pass a file written by brgnnft flow")
    return flow


def run_report(args) -> int:
    """Run ``brgnnft report``: the table (and plots) of a saved flow."""
    flow = _load_flow_file(args.flow_file)
    check_plot_folder(args.plots, overwrite=args.overwrite)
    if "critical_cutoff" not in flow.attrs:
        from brgnnft.brg import critical_cutoff

        flow.attrs.update(critical_cutoff(flow).attrs)
    if args.plots is not None:
        from brgnnft.brg import save_flow_plots

        save_flow_plots(flow, args.plots, overwrite=args.overwrite)
        if "analytic" in flow.children:
            save_analytic_plot(flow, args.plots)
    print(f"BRG flow from {args.flow_file} (data set {flow.attrs.get('dataset', 'unknown')})")
    _print_flow(flow)
    if args.plots is not None:
        print(f"wrote plots in {args.plots}")
    return EXIT_OK


def run_paper(args) -> int:
    """Run ``brgnnft paper``: the original experiment's preset."""
    import jax

    from brgnnft.brg import critical_cutoff
    from brgnnft.brg.paper import paper_flow

    check_output_file(args.out, overwrite=args.overwrite)
    check_plot_folder(args.plots, overwrite=args.overwrite)
    key_flow, key_critical = jax.random.split(jax.random.key(args.seed))

    start = time.perf_counter()
    flow = paper_flow(
        key=key_flow,
        num_members=args.members,
        fisher_points=args.fisher_points,
        keep_divergent=args.keep_divergent,
        seed=args.seed,
        progress=not args.no_progress,
    )
    flow.attrs.update(critical_cutoff(flow, key=key_critical).attrs)
    write_outputs(flow, args.out, args.plots, overwrite=args.overwrite)
    elapsed = time.perf_counter() - start

    attrs = flow.attrs
    print(
        f"paper preset: {attrs['num_members_kept']} of {attrs['num_members']} members kept "
        f"({attrs['num_members_dropped']} dropped with test MSE >= {attrs['divergence_threshold']:g} before "
        f"coarse graining); Fisher diagonal on the {attrs['fisher_points']}"
    )
    print(paper_table(flow))
    print()
    print(critical_line(flow))
    print(f"wrote {args.out}" + (f" and plots in {args.plots}" if args.plots else "") + f" ({elapsed:.1f} s)")
    return EXIT_OK


def run_datasets(args) -> int:
    """Run ``brgnnft datasets``: name, rows, columns and source of each bundled data set."""
    from brgnnft.inference import list_datasets

    for info in list_datasets():
        print(f"{info.name}: {info.rows} rows, columns {', '.join(info.columns)}")
        print(f"    source: {info.source}")
    return EXIT_OK


COMMANDS = {"flow": run_flow, "report": run_report, "paper": run_paper, "datasets": run_datasets}


def main(argv=None) -> int:
    """Run the ``brgnnft`` command with ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:
        return int(exit_request.code or 0)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="brgnnft: %(levelname)s: %(message)s")

    import jax

    # The flow's statistics and Fisher spectra span many decades, so the command runs in float64.
    jax.config.update("jax_enable_x64", True)
    try:
        return COMMANDS[args.command](args)
    except UsageError as error:
        print(f"brgnnft: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as error:  # noqa: BLE001 - the command reports every failure with an exit code
        logger.info("traceback of the failed %s run", args.command, exc_info=True)
        print(
            f"brgnnft: error: the {args.command} run failed: {type(error).__name__}: {error} "
            "(rerun with --verbose for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
