"""Regression data sets for flows: the bundled real sets, the synthetic ``paper`` set, and files.

Every loader returns a :class:`Dataset` of float64 NumPy arrays split into training and test rows
by a permutation drawn from an explicit ``key``. Standardisation statistics come from the training
rows only and are stored, so predictions map back to original units.
"""

import logging
import math
import os
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
import pandas as pd

from brgnnft.models._checks import check_key, check_positive_int

logger = logging.getLogger(__name__)

FILE_SUFFIXES = (".csv", ".parquet")
MIN_ROWS = 4
PAPER_NUM_TRAIN = 200
PAPER_NUM_TEST = 200
PAPER_NUM_FISHER = 10
PAPER_INPUT_MEAN = (1.0, 1.0)

_BUNDLED_FILES = {"co2": "mauna_loa_co2_weekly.csv", "diabetes": "diabetes.csv"}
_SOURCES = {
    "co2": (
        "C. D. Keeling and T. P. Whorf (2004), weekly Mauna Loa CO2 in ppmv from SIO flask samples, "
        "CDIAC, Oak Ridge National Laboratory, public domain (copy from statsmodels 0.15.0); "
        "column year is the decimal year of the file's date column"
    ),
    "diabetes": (
        "B. Efron, T. Hastie, I. Johnstone and R. Tibshirani (2004), Least Angle Regression, "
        "Annals of Statistics 32(2), 407-499 (copy from scikit-learn 1.9.1, BSD-3-Clause)"
    ),
    "paper": (
        "synthetic: x ~ N((1, 1), I_2), y = (1 - x1)^2 - 0.5 (x2 - x1^2) without noise; "
        "200 training, 200 test and 10 Fisher points, as in the experiment of arXiv:2405.17538"
    ),
}
DATASET_NAMES = ("co2", "diabetes", "paper")


class DatasetInfo(NamedTuple):
    """One row of :func:`list_datasets`: a data set's name, size, columns and provenance."""

    name: str
    rows: int
    columns: tuple[str, ...]
    source: str


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A regression data set split into training and test rows, with its standardisation.

    Arrays are float64 and read-only. With ``standardized=False`` the stored means are 0 and the
    scales 1, so the unit conversions are the identity.

    Attributes
    ----------
    name : str
        Bundled name (``"co2"``, ``"diabetes"``, ``"paper"``) or the file name.
    source : str
        Provenance: the citation of a bundled set, or the resolved path of a file.
    x_train, y_train : arrays (n, d) and (n,)
    x_test, y_test : arrays (m, d) and (m,)
    x_columns : tuple of str, length d
    y_column : str
    x_mean, x_scale : arrays (d,)
        Training-row mean and standard deviation (ddof=0) of each input column.
    y_mean, y_scale : float
        Training-row mean and standard deviation (ddof=0) of the target.
    standardized : bool
        Whether the arrays above are standardised with these statistics.
    num_dropped : int
        Rows dropped because a selected column had a missing value.
    x_fisher : array (k, d) or None
        The separate Fisher points of the ``paper`` set (standardised like ``x_train`` when
        ``standardized``); None for every other set.
    """

    name: str
    source: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_columns: tuple[str, ...]
    y_column: str
    x_mean: np.ndarray
    x_scale: np.ndarray
    y_mean: float
    y_scale: float
    standardized: bool
    num_dropped: int = 0
    x_fisher: np.ndarray | None = None

    def __post_init__(self):
        for field in ("x_train", "y_train", "x_test", "y_test", "x_mean", "x_scale", "x_fisher"):
            value = getattr(self, field)
            if value is not None:
                value = np.array(value, dtype=np.float64)
                value.flags.writeable = False
                object.__setattr__(self, field, value)

    @property
    def num_train(self) -> int:
        """Number of training rows n."""
        return self.x_train.shape[0]

    @property
    def num_test(self) -> int:
        """Number of test rows m."""
        return self.x_test.shape[0]

    @property
    def input_dim(self) -> int:
        """Number of input columns d."""
        return self.x_train.shape[1]

    def to_original_units(self, y):
        """Map targets or predictions (any shape) from standardised to original units."""
        return np.asarray(y, dtype=np.float64) * self.y_scale + self.y_mean

    def scale_std(self, std):
        """Map standard deviations of the target (any shape) to original units."""
        return np.asarray(std, dtype=np.float64) * self.y_scale

    def scale_variance(self, variance):
        """Map variances of the target (any shape) to original units."""
        return np.asarray(variance, dtype=np.float64) * self.y_scale**2

    def standardize_y(self, y):
        """Map targets in original units to the units of ``y_train``."""
        return (np.asarray(y, dtype=np.float64) - self.y_mean) / self.y_scale

    def standardize_x(self, x):
        """Map inputs (..., d) in original units to the units of ``x_train``, e.g. a plotting grid."""
        return (np.asarray(x, dtype=np.float64) - self.x_mean) / self.x_scale

    def x_to_original_units(self, x):
        """Map inputs (..., d) from the units of ``x_train`` to original units."""
        return np.asarray(x, dtype=np.float64) * self.x_scale + self.x_mean

    def __repr__(self) -> str:
        fisher = "" if self.x_fisher is None else f", x_fisher={self.x_fisher.shape}"
        return (
            f"Dataset(name={self.name!r}, x_train={self.x_train.shape}, x_test={self.x_test.shape}, "
            f"x_columns={self.x_columns}, y_column={self.y_column!r}, "
            f"standardized={self.standardized}, num_dropped={self.num_dropped}{fisher})"
        )


def list_datasets() -> list[DatasetInfo]:
    """List the data sets that :func:`load_dataset` accepts by name.

    ``rows`` counts the rows of the bundled file, missing values included (co2 has 2284 rows, of
    which 59 have no measurement and are dropped on loading). For ``paper`` it counts the
    training and test points, without the 10 Fisher points. ``columns`` are the names that
    ``x=`` and ``y=`` accept.
    """
    infos = []
    for name in _BUNDLED_FILES:
        frame = _read_bundled(name)
        infos.append(DatasetInfo(name, len(frame), tuple(frame.columns), _SOURCES[name]))
    infos.append(DatasetInfo("paper", PAPER_NUM_TRAIN + PAPER_NUM_TEST, ("x1", "x2", "y"), _SOURCES["paper"]))
    return infos


def load_dataset(
    name_or_path,
    *,
    key,
    x=None,
    y=None,
    test_fraction: float = 0.25,
    num_train: int | None = None,
    num_test: int | None = None,
    num_fisher: int | None = None,
    standardize: bool | None = None,
) -> Dataset:
    """Load a bundled data set, the synthetic ``paper`` set or a CSV / Parquet file, split it.

    Parameters
    ----------
    name_or_path : str or os.PathLike
        ``"co2"``, ``"diabetes"`` or ``"paper"`` (see :func:`list_datasets`), or a path to a
        ``.csv`` or ``.parquet`` file. A bundled name wins over a file of the same name.
    key : jax.random key
        Draws the train/test permutation, and for ``paper`` every input point.
    x : str or sequence of str, optional
        Input columns. Default: every column except ``y``.
    y : str, optional
        Target column. Default: the last column (``co2`` for co2, ``target`` for diabetes).
    test_fraction : float in (0, 1)
        Fraction of the rows that go to the test split, rounded to the nearest integer (halves
        up), with at least one row on each side. Ignored when ``num_test`` is given and for ``paper``.
    num_train, num_test : int, optional
        Training and test sizes. For a file or bundled set, ``num_test`` overrides
        ``test_fraction`` and ``num_train`` keeps only that many of the remaining shuffled rows
        (default: all of them). For ``paper`` they are the numbers of points drawn (default 200
        each).
    num_fisher : int, optional
        Number of Fisher points of ``paper`` (default 10); invalid for other sets.
    standardize : bool, optional
        Whether to standardise inputs and target with training-row statistics. Default True for
        files and bundled sets, False for ``paper``, whose original experiment uses raw values.

    Returns
    -------
    Dataset
        Rows of each split keep their order in the file. Rows with a missing value in a selected
        column are dropped (never imputed), counted in ``num_dropped`` and logged as a warning.
        Datetime columns (co2's ``year``, or datetime columns of a Parquet file) become decimal
        years.

    Raises
    ------
    ValueError
        Unknown name, unsupported suffix, missing or empty column, infinite values, fewer than 4
        complete rows, ``test_fraction`` outside (0, 1), sizes larger than the data, or a constant
        column when standardising.
    FileNotFoundError
        If the path has a supported suffix but does not exist.
    TypeError
        Non-numeric column, or an argument of the wrong type.
    ImportError
        Reading Parquet without pyarrow installed.

    Notes
    -----
    The ``paper`` set follows Howard, Klinger, Maiti and Stapleton: inputs
    :math:`x \\sim \\mathcal{N}((1, 1), I_2)` and target :math:`y = (1 - x_1)^2 - 0.5 (x_2 - x_1^2)`
    without noise. Training, test and Fisher inputs come from keys split from ``key`` (the original
    code draws them unseeded). They are drawn in JAX's default float dtype, so the values depend on
    ``jax_enable_x64``.

    References
    ----------
    .. [1] J. N. Howard, M. Klinger, A. Maiti, A. G. Stapleton, "Bayesian RG Flow in Neural
       Network Field Theories", arXiv:2405.17538.

    Examples
    --------
    >>> import jax
    >>> from brgnnft.inference import load_dataset
    >>> data = load_dataset("diabetes", key=jax.random.key(0))
    >>> data.x_train.shape, data.x_test.shape
    ((331, 10), (111, 10))
    """
    check_key(key)
    standardize = _check_standardize(standardize)
    if isinstance(name_or_path, str) and name_or_path == "paper":
        if x is not None or y is not None:
            raise ValueError(
                f"x={x!r} and y={y!r} do not apply to the paper data set, whose columns are fixed "
                "(x1, x2 -> y): leave x and y unset"
            )
        return _load_paper(key, num_train, num_test, num_fisher, standardize=standardize is True)
    if num_fisher is not None:
        raise ValueError(
            f"num_fisher={num_fisher!r} applies only to the paper data set: leave it unset for "
            f"{name_or_path!r}"
        )

    test_fraction = _check_test_fraction(test_fraction)
    frame, name, source = _read_table(name_or_path)
    x_columns, y_column = _select_columns(frame, x, y, name)
    inputs, target, num_dropped = _complete_rows(frame, x_columns, y_column, name)
    train_rows, test_rows = _split_rows(key, inputs.shape[0], test_fraction, num_train, num_test, name)

    return _build_dataset(
        name=name,
        source=source,
        x_train=inputs[train_rows],
        y_train=target[train_rows],
        x_test=inputs[test_rows],
        y_test=target[test_rows],
        x_columns=x_columns,
        y_column=y_column,
        standardize=standardize is not False,
        num_dropped=num_dropped,
    )


def decimal_year(dates: pd.Series) -> pd.Series:
    """Convert datetimes to decimal years: the year plus the elapsed fraction of that year.

    1958-03-29 (day 88 of 365) becomes 1958 + 87 / 365 = 1958.238. Missing dates become NaN.
    """
    if getattr(dates.dt, "tz", None) is not None:
        dates = dates.dt.tz_convert(None)
    year = dates.dt.year
    start = pd.to_datetime({"year": year, "month": 1, "day": 1})
    days_in_year = np.where(dates.dt.is_leap_year, 366.0, 365.0)
    elapsed_days = (dates - start).dt.total_seconds() / 86400.0
    return (year + elapsed_days / days_in_year).astype(np.float64)


def _check_standardize(standardize):
    if standardize is not None and not isinstance(standardize, (bool, np.bool_)):
        raise TypeError(f"standardize must be True, False or None (the default), got {standardize!r}")
    return None if standardize is None else bool(standardize)


def _check_test_fraction(test_fraction) -> float:
    if isinstance(test_fraction, bool):
        raise TypeError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    try:
        fraction = float(test_fraction)
    except (TypeError, ValueError):
        raise TypeError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}") from None
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction!r}: use e.g. 0.25")
    return fraction


def _read_bundled(name: str) -> pd.DataFrame:
    path = files("brgnnft.inference") / "data" / _BUNDLED_FILES[name]
    with path.open("r", encoding="utf-8") as handle:
        frame = pd.read_csv(handle)
    if name == "co2":
        dates = pd.to_datetime(frame["date"], format="%Y-%m-%d")
        frame = pd.DataFrame({"year": decimal_year(dates), "co2": frame["co2"]})
    return frame


def _read_table(name_or_path) -> tuple[pd.DataFrame, str, str]:
    """Return the table, its name and its provenance for a bundled name or a file path."""
    if isinstance(name_or_path, str) and name_or_path in _BUNDLED_FILES:
        return _read_bundled(name_or_path), name_or_path, _SOURCES[name_or_path]
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(
            f"name_or_path must be a data set name or a file path, got {type(name_or_path).__name__}: "
            f"use one of {', '.join(DATASET_NAMES)} or a path to a .csv or .parquet file"
        )

    path = Path(name_or_path)
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        if suffix or path.exists():
            raise ValueError(
                f"unsupported file type {suffix or '(no suffix)'!r} of {str(path)!r}: "
                "save the table as .csv or .parquet"
            )
        raise ValueError(
            f"unknown data set {str(name_or_path)!r}: use one of {', '.join(DATASET_NAMES)}, "
            "or a path to a .csv or .parquet file"
        )
    if not path.exists():
        raise FileNotFoundError(f"data file {str(path)!r} not found: check the path (relative to {os.getcwd()})")

    if suffix == ".csv":
        try:
            frame = pd.read_csv(path)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
            raise ValueError(
                f"cannot read {str(path)!r} as CSV ({error}): it must be a comma-separated table with a header row"
            ) from None
    else:
        frame = _read_parquet(path)
    frame.columns = [str(column) for column in frame.columns]
    return frame, path.name, str(path.resolve())


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except ImportError as error:
        raise ImportError(
            f"reading the Parquet file {str(path)!r} needs pyarrow: pip install pyarrow "
            "(or save the table as .csv)"
        ) from error
    except (OSError, ValueError) as error:
        # pyarrow reports a damaged file as ArrowInvalid (a ValueError) or an OSError.
        raise ValueError(f"cannot read {str(path)!r} as Parquet ({error}): check that it is a Parquet table") from None


def _select_columns(frame: pd.DataFrame, x, y, name: str) -> tuple[tuple[str, ...], str]:
    """Resolve ``x`` and ``y`` to column names: y defaults to the last column, x to the rest."""
    columns = list(frame.columns)
    available = ", ".join(columns)
    if y is None:
        y = columns[-1]
    if not isinstance(y, str):
        raise TypeError(f"y must be one column name (a str), got {y!r}: available columns are {available}")
    if x is None:
        x = [column for column in columns if column != y]
    elif isinstance(x, str):
        x = [x]
    elif not isinstance(x, (list, tuple)) or not all(isinstance(column, str) for column in x):
        raise TypeError(f"x must be a column name or a list of column names, got {x!r}")
    x = list(x)

    for column in [*x, y]:
        if column not in columns:
            raise ValueError(f"column {column!r} not found in {name}: available columns are {available}")
    if not x:
        raise ValueError(f"{name} has no input column besides y={y!r}: pass a table with at least two columns")
    if y in x:
        raise ValueError(f"column {y!r} is both the target y and an input in x={x!r}: remove it from x or choose another y")
    if len(set(x)) != len(x):
        raise ValueError(f"x={x!r} names a column more than once: list each input column once")
    return tuple(x), y


def _column_values(frame: pd.DataFrame, column: str, name: str) -> np.ndarray:
    """Return one column as float64 with NaN for missing values, or raise naming the problem."""
    series = frame[column]
    if pd.api.types.is_datetime64_any_dtype(series):
        series = decimal_year(series)
    if not pd.api.types.is_numeric_dtype(series):
        present = series.dropna()
        example = f", e.g. {present.iloc[0]!r}" if len(present) else ""
        raise TypeError(
            f"column {column!r} of {name} is not numeric (dtype {series.dtype}{example}): "
            "convert it to numbers or leave it out of x and y"
        )
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isnan(values).all():
        raise ValueError(f"column {column!r} of {name} has no values (every row is missing): choose another column")
    infinite = np.flatnonzero(np.isinf(values))
    if infinite.size:
        raise ValueError(
            f"column {column!r} of {name} contains inf, first in row {infinite[0]} (0-based, header "
            "excluded): replace or remove infinite values in the file"
        )
    return values


def _complete_rows(frame, x_columns, y_column, name) -> tuple[np.ndarray, np.ndarray, int]:
    """Return inputs (N, d), target (N,) and the count of rows dropped for missing values."""
    inputs = np.column_stack([_column_values(frame, column, name) for column in x_columns])
    target = _column_values(frame, y_column, name)

    complete = ~np.isnan(inputs).any(axis=1) & ~np.isnan(target)
    num_dropped = int(complete.size - complete.sum())
    if num_dropped:
        logger.warning(
            "%s: dropped %d of %d rows with a missing value in columns %s (not imputed)",
            name,
            num_dropped,
            complete.size,
            ", ".join([*x_columns, y_column]),
        )
    num_rows = int(complete.sum())
    if num_rows < MIN_ROWS:
        raise ValueError(
            f"{name} has {num_rows} complete rows (after dropping {num_dropped} with missing values) "
            f"but a train/test split needs at least {MIN_ROWS}: use a larger table"
        )
    return inputs[complete], target[complete], num_dropped


def _split_rows(key, num_rows: int, test_fraction: float, num_train, num_test, name: str):
    """Return sorted training and test row indices from a permutation drawn with ``key``."""
    if num_test is None:
        rounded = math.floor(test_fraction * num_rows + 0.5)
        num_test = min(max(rounded, 1), num_rows - 1)
    else:
        num_test = check_positive_int("num_test", num_test)
    if num_test > num_rows - 1:
        raise ValueError(
            f"num_test={num_test} leaves no training row: {name} has {num_rows} complete rows, "
            f"so pass num_test <= {num_rows - 1}"
        )
    if num_train is None:
        num_train = num_rows - num_test
    else:
        num_train = check_positive_int("num_train", num_train)
    if num_train + num_test > num_rows:
        raise ValueError(
            f"num_train={num_train} plus {num_test} test rows exceeds the {num_rows} complete rows of "
            f"{name}: pass num_train <= {num_rows - num_test}"
        )

    permutation = np.asarray(jax.random.permutation(key, num_rows))
    test_rows = np.sort(permutation[:num_test])
    train_rows = np.sort(permutation[num_test : num_test + num_train])
    return train_rows, test_rows


def _paper_target(x: np.ndarray) -> np.ndarray:
    """Compute the noiseless target y = (1 - x1)^2 - 0.5 (x2 - x1^2) for x of shape (n, 2)."""
    x1, x2 = x[:, 0], x[:, 1]
    return (1.0 - x1) ** 2 - 0.5 * (x2 - x1**2)


def _load_paper(key, num_train, num_test, num_fisher, *, standardize: bool) -> Dataset:
    num_train = PAPER_NUM_TRAIN if num_train is None else check_positive_int("num_train", num_train)
    num_test = PAPER_NUM_TEST if num_test is None else check_positive_int("num_test", num_test)
    num_fisher = PAPER_NUM_FISHER if num_fisher is None else check_positive_int("num_fisher", num_fisher)
    key_train, key_test, key_fisher = jax.random.split(key, 3)

    mean = np.asarray(PAPER_INPUT_MEAN)
    x_train = np.asarray(jax.random.normal(key_train, (num_train, 2)), dtype=np.float64) + mean
    x_test = np.asarray(jax.random.normal(key_test, (num_test, 2)), dtype=np.float64) + mean
    x_fisher = np.asarray(jax.random.normal(key_fisher, (num_fisher, 2)), dtype=np.float64) + mean

    return _build_dataset(
        name="paper",
        source=_SOURCES["paper"],
        x_train=x_train,
        y_train=_paper_target(x_train),
        x_test=x_test,
        y_test=_paper_target(x_test),
        x_columns=("x1", "x2"),
        y_column="y",
        standardize=standardize,
        num_dropped=0,
        x_fisher=x_fisher,
    )


def _build_dataset(*, x_train, y_train, x_test, y_test, x_columns, y_column, standardize, x_fisher=None, **fields):
    """Standardise with training-row statistics (ddof=0) if asked, and assemble the Dataset."""
    num_inputs = x_train.shape[1]
    x_mean, x_scale = np.zeros(num_inputs), np.ones(num_inputs)
    y_mean, y_scale = 0.0, 1.0
    if standardize:
        if x_train.shape[0] < 2:
            raise ValueError(
                "a single training row cannot be standardised: lower test_fraction or num_test, "
                "or pass standardize=False"
            )
        x_mean, x_scale = x_train.mean(axis=0), x_train.std(axis=0)
        y_mean, y_scale = float(y_train.mean()), float(y_train.std())
        scales = dict(zip(x_columns, x_scale, strict=True)) | {y_column: y_scale}
        for column, scale in scales.items():
            if not scale > 0 or not math.isfinite(scale):
                fix = "choose another y" if column == y_column else "leave it out of x"
                raise ValueError(
                    f"column {column!r} is constant over the {x_train.shape[0]} training rows "
                    f"(standard deviation 0), so it cannot be standardised: {fix}, or pass "
                    "standardize=False"
                )

    dataset = Dataset(
        x_train=(x_train - x_mean) / x_scale,
        y_train=(y_train - y_mean) / y_scale,
        x_test=(x_test - x_mean) / x_scale,
        y_test=(y_test - y_mean) / y_scale,
        x_columns=tuple(x_columns),
        y_column=y_column,
        x_mean=x_mean,
        x_scale=x_scale,
        y_mean=y_mean,
        y_scale=y_scale,
        standardized=bool(standardize),
        x_fisher=None if x_fisher is None else (x_fisher - x_mean) / x_scale,
        **fields,
    )
    logger.info("loaded %r", dataset)
    return dataset
