"""Tests of the data set loader: bundled sets, the synthetic paper set, files, splits and errors."""

import csv
import dataclasses
import datetime
import logging
import sys
from importlib.resources import files

import jax
import numpy as np
import pandas as pd
import pytest

from brgnnft.inference import Dataset, list_datasets, load_dataset

KEY = jax.random.key(0)
LOGGER = "brgnnft.inference.datasets"


def bundled_rows(file_name):
    """Read a bundled CSV with the csv module: the header and the rows as lists of strings."""
    text = (files("brgnnft.inference") / "data" / file_name).read_text(encoding="utf-8")
    reader = csv.reader(text.splitlines())
    header = next(reader)
    return header, list(reader)


def co2_reference():
    """Complete co2 rows as (decimal year, ppmv) pairs, computed with datetime, sorted by year."""
    _, rows = bundled_rows("mauna_loa_co2_weekly.csv")
    pairs = []
    for date_text, co2_text in rows:
        if co2_text == "":
            continue
        date = datetime.date.fromisoformat(date_text)
        start = datetime.date(date.year, 1, 1)
        days_in_year = (datetime.date(date.year + 1, 1, 1) - start).days
        pairs.append((date.year + (date - start).days / days_in_year, float(co2_text)))
    return np.array(sorted(pairs)), len(rows)


def original_rows(dataset):
    """All rows of both splits in original units, (N, d + 1), sorted lexicographically."""
    x = dataset.x_to_original_units(np.concatenate([dataset.x_train, dataset.x_test]))
    y = dataset.to_original_units(np.concatenate([dataset.y_train, dataset.y_test]))
    rows = np.column_stack([x, y])
    return rows[np.lexsort(rows.T[::-1])]


def write_table(frame, path):
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


@pytest.fixture
def table():
    """A small table whose `id` column identifies each row."""
    rng = np.random.default_rng(7)
    return pd.DataFrame({"id": np.arange(20.0), "u": rng.normal(size=20), "v": rng.normal(size=20)})


# Bundled sets.


def test_co2_shapes_and_dropped_rows(caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER):
        data = load_dataset("co2", key=KEY)

    reference, file_rows = co2_reference()
    assert file_rows == 2284
    assert len(reference) == 2225
    assert data.num_dropped == 59
    assert data.num_train + data.num_test == 2225
    assert data.num_test == 556
    assert data.x_train.shape == (1669, 1)
    assert data.y_train.shape == (1669,)
    assert data.x_columns == ("year",)
    assert data.y_column == "co2"
    dropped = [record for record in caplog.records if "missing value" in record.getMessage()]
    assert len(dropped) == 1
    assert dropped[0].levelno == logging.WARNING
    assert "dropped 59 of 2284 rows" in dropped[0].getMessage()


def test_co2_values_match_file():
    data = load_dataset("co2", key=KEY)
    reference, _ = co2_reference()

    np.testing.assert_allclose(original_rows(data), reference, rtol=1e-13)
    assert original_rows(data)[0, 0] == pytest.approx(1958 + 87 / 365, abs=1e-12)


def test_diabetes_shapes_and_values():
    header, rows = bundled_rows("diabetes.csv")
    reference = np.array(rows, dtype=float)
    reference = reference[np.lexsort(reference.T[::-1])]

    data = load_dataset("diabetes", key=KEY)

    assert data.x_columns == tuple(header[:-1])
    assert data.y_column == "target"
    assert data.x_train.shape == (331, 10)
    assert data.x_test.shape == (111, 10)
    assert data.num_dropped == 0
    assert data.x_fisher is None
    np.testing.assert_allclose(original_rows(data), reference, rtol=1e-13)


@pytest.mark.parametrize("name", ["co2", "diabetes"])
def test_bundled_standardised_on_train(name):
    data = load_dataset(name, key=KEY)

    assert data.standardized
    for array in (data.x_train, data.y_train, data.x_test, data.y_test, data.x_mean, data.x_scale):
        assert array.dtype == np.float64
    np.testing.assert_allclose(data.x_train.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(data.x_train.std(axis=0), 1.0, rtol=1e-12)
    assert data.y_train.mean() == pytest.approx(0.0, abs=1e-12)
    assert data.y_train.std() == pytest.approx(1.0, rel=1e-12)


def test_bundled_column_selection():
    data = load_dataset("diabetes", x=["bmi", "bp"], y="s5", key=KEY)

    assert data.x_columns == ("bmi", "bp")
    assert data.y_column == "s5"
    assert data.input_dim == 2


def test_list_datasets():
    infos = {info.name: info for info in list_datasets()}

    assert list(infos) == ["co2", "diabetes", "paper"]
    assert infos["co2"].rows == 2284
    assert infos["co2"].columns == ("year", "co2")
    assert infos["diabetes"].rows == 442
    assert infos["diabetes"].columns[-1] == "target"
    assert infos["paper"].rows == 400
    assert "Keeling" in infos["co2"].source
    assert "Efron" in infos["diabetes"].source
    assert "2405.17538" in infos["paper"].source


# Units and the Dataset object.


def test_unit_round_trip():
    data = load_dataset("diabetes", key=KEY)
    y_original = data.to_original_units(data.y_test)
    x_original = data.x_to_original_units(data.x_test)

    np.testing.assert_allclose(data.standardize_y(y_original), data.y_test, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(data.standardize_x(x_original), data.x_test, rtol=1e-12, atol=1e-12)
    y_train_original = data.to_original_units(data.y_train)
    assert data.scale_std(data.y_train.std()) == pytest.approx(y_train_original.std(), rel=1e-12)
    assert data.scale_variance(data.y_train.var()) == pytest.approx(y_train_original.var(), rel=1e-12)
    assert data.to_original_units(np.zeros((3, 2))).shape == (3, 2)


def test_dataset_is_frozen_and_read_only():
    data = load_dataset("diabetes", key=KEY)

    with pytest.raises(dataclasses.FrozenInstanceError):
        data.name = "other"
    with pytest.raises(ValueError, match="read-only"):
        data.x_train[0, 0] = 1.0
    assert isinstance(data, Dataset)
    assert "diabetes" in repr(data)


# Splits.


def test_split_reproducible_from_key():
    first = load_dataset("diabetes", key=jax.random.key(3))
    second = load_dataset("diabetes", key=jax.random.key(3))
    other = load_dataset("diabetes", key=jax.random.key(4))

    np.testing.assert_array_equal(first.x_train, second.x_train)
    np.testing.assert_array_equal(first.y_test, second.y_test)
    assert not np.array_equal(first.y_test, other.y_test)


def test_split_disjoint_and_complete(table, tmp_path):
    path = write_table(table, tmp_path / "table.csv")

    data = load_dataset(path, x=["id", "u"], y="v", key=KEY, standardize=False)

    train_ids, test_ids = set(data.x_train[:, 0]), set(data.x_test[:, 0])
    assert not train_ids & test_ids
    assert train_ids | test_ids == set(table["id"])
    assert data.num_test == 5
    assert np.all(np.diff(data.x_train[:, 0]) > 0)


def test_split_sizes(table, tmp_path):
    path = write_table(table, tmp_path / "table.csv")

    subset = load_dataset(path, key=KEY, num_train=6, num_test=3)
    smallest = load_dataset(path, key=KEY, test_fraction=0.01)
    largest = load_dataset(path, key=KEY, test_fraction=0.99, standardize=False)

    assert (subset.num_train, subset.num_test) == (6, 3)
    assert (smallest.num_train, smallest.num_test) == (19, 1)
    assert (largest.num_train, largest.num_test) == (1, 19)


def test_split_accepts_legacy_key(table, tmp_path):
    path = write_table(table, tmp_path / "table.csv")

    data = load_dataset(path, key=jax.random.PRNGKey(0))

    assert data.num_train + data.num_test == 20


# The synthetic `paper` set: x ~ N((1, 1), I_2), y = (1 - x1)^2 - 0.5 (x2 - x1^2).


def paper_target(x):
    return (1.0 - x[:, 0]) ** 2 - 0.5 * (x[:, 1] - x[:, 0] ** 2)


def test_paper_points_and_target():
    data = load_dataset("paper", key=KEY)

    assert data.x_train.shape == (200, 2)
    assert data.x_test.shape == (200, 2)
    assert data.x_fisher.shape == (10, 2)
    assert not data.standardized
    np.testing.assert_array_equal(data.x_mean, 0.0)
    np.testing.assert_array_equal(data.x_scale, 1.0)
    np.testing.assert_allclose(data.y_train, paper_target(data.x_train), rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(data.y_test, paper_target(data.x_test), rtol=1e-15, atol=1e-15)


def test_paper_input_distribution():
    data = load_dataset("paper", key=KEY)
    points = np.concatenate([data.x_train, data.x_test])
    num_points = points.shape[0]

    # Standard errors of the mean (1 / sqrt(N)) and of the variance (sqrt(2 / N)) under N(1, 1).
    assert np.all(np.abs(points.mean(axis=0) - 1.0) < 4 / np.sqrt(num_points))
    assert np.all(np.abs(points.var(axis=0) - 1.0) < 4 * np.sqrt(2 / num_points))
    assert abs(np.corrcoef(points.T)[0, 1]) < 4 / np.sqrt(num_points)


def test_paper_draws_separate_and_reproducible():
    data = load_dataset("paper", key=KEY)
    again = load_dataset("paper", key=KEY)
    other = load_dataset("paper", key=jax.random.key(1))

    assert not np.allclose(data.x_train[:10], data.x_test[:10])
    assert not np.allclose(data.x_train[:10], data.x_fisher)
    np.testing.assert_array_equal(data.x_fisher, again.x_fisher)
    np.testing.assert_array_equal(data.x_train, again.x_train)
    assert not np.allclose(data.x_train, other.x_train)


def test_paper_sizes_and_standardize():
    data = load_dataset("paper", key=KEY, num_train=30, num_test=20, num_fisher=5, standardize=True)

    assert (data.num_train, data.num_test, data.x_fisher.shape[0]) == (30, 20, 5)
    assert data.standardized
    np.testing.assert_allclose(data.x_train.mean(axis=0), 0.0, atol=1e-12)
    fisher = data.x_to_original_units(data.x_fisher)
    raw = load_dataset("paper", key=KEY, num_train=30, num_test=20, num_fisher=5)
    np.testing.assert_allclose(fisher, raw.x_fisher, rtol=1e-12)
    y_original = data.to_original_units(data.y_test)
    np.testing.assert_allclose(y_original, paper_target(data.x_to_original_units(data.x_test)), rtol=1e-10)


# Files.


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_file_round_trip(table, tmp_path, suffix):
    path = write_table(table, tmp_path / f"table{suffix}")

    data = load_dataset(path, key=KEY, standardize=False)

    assert data.x_columns == ("id", "u")
    assert data.y_column == "v"
    assert data.name == f"table{suffix}"
    assert data.source == str(path.resolve())
    np.testing.assert_array_equal(original_rows(data), table.to_numpy())


def test_file_default_x_is_every_other_column(table, tmp_path):
    path = write_table(table, tmp_path / "table.csv")

    data = load_dataset(str(path), y="id", key=KEY)

    assert data.x_columns == ("u", "v")
    assert data.y_column == "id"


def test_file_missing_values_dropped(table, tmp_path, caplog):
    table.loc[[2, 5], "u"] = np.nan
    table.loc[7, "v"] = np.nan
    path = write_table(table, tmp_path / "table.csv")

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        data = load_dataset(path, key=KEY, standardize=False)
        selected = load_dataset(path, x="id", y="v", key=KEY, standardize=False)

    assert data.num_dropped == 3
    assert data.num_train + data.num_test == 17
    assert not {2.0, 5.0, 7.0} & set(np.concatenate([data.x_train[:, 0], data.x_test[:, 0]]))
    assert selected.num_dropped == 1
    assert "dropped 3 of 20 rows" in caplog.text


def test_parquet_datetime_column(tmp_path):
    dates = pd.to_datetime(["2000-01-01", "2000-07-02", "2001-03-01", "2001-12-31", "2002-06-15"])
    frame = pd.DataFrame({"when": dates, "value": [1.0, 2.0, 3.0, 4.0, 5.0]})
    path = write_table(frame, tmp_path / "dates.parquet")

    data = load_dataset(path, key=KEY, standardize=False)

    years = dict(original_rows(data)[:, ::-1])
    assert years[2.0] == pytest.approx(2000 + 183 / 366, abs=1e-12)
    assert years[4.0] == pytest.approx(2001 + 364 / 365, abs=1e-12)


def test_parquet_without_pyarrow(table, tmp_path, monkeypatch):
    path = write_table(table, tmp_path / "table.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "fastparquet", None)

    with pytest.raises(ImportError, match="pip install pyarrow"):
        load_dataset(path, key=KEY)


# Bad input.


def test_unknown_name_lists_known():
    with pytest.raises(ValueError, match=r"unknown data set 'mnist': use one of co2, diabetes, paper.*\.csv"):
        load_dataset("mnist", key=KEY)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_dataset(tmp_path / "absent.csv", key=KEY)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "table.xlsx"
    path.write_text("a,b\n1,2\n")
    no_suffix = tmp_path / "table"
    no_suffix.write_text("a,b\n1,2\n")

    with pytest.raises(ValueError, match=r"unsupported file type '\.xlsx'.*\.csv or \.parquet"):
        load_dataset(path, key=KEY)
    with pytest.raises(ValueError, match=r"unsupported file type '\(no suffix\)'"):
        load_dataset(no_suffix, key=KEY)


def test_name_of_wrong_type():
    with pytest.raises(TypeError, match="got int"):
        load_dataset(5, key=KEY)


def test_missing_column_lists_available(table, tmp_path):
    path = write_table(table, tmp_path / "table.csv")

    with pytest.raises(ValueError, match="column 'w' not found in table.csv: available columns are id, u, v"):
        load_dataset(path, x="w", key=KEY)
    with pytest.raises(ValueError, match="column 'w' not found"):
        load_dataset(path, y="w", key=KEY)
    with pytest.raises(ValueError, match="column 'date' not found in co2: available columns are year, co2"):
        load_dataset("co2", x="date", key=KEY)


def test_bad_column_arguments(table, tmp_path):
    path = write_table(table, tmp_path / "table.csv")
    single = write_table(table[["u"]], tmp_path / "single.csv")

    with pytest.raises(TypeError, match="y must be one column name"):
        load_dataset(path, y=["v"], key=KEY)
    with pytest.raises(TypeError, match="x must be a column name or a list"):
        load_dataset(path, x=3, key=KEY)
    with pytest.raises(ValueError, match="both the target y and an input"):
        load_dataset(path, x=["u", "v"], y="v", key=KEY)
    with pytest.raises(ValueError, match="more than once"):
        load_dataset(path, x=["u", "u"], key=KEY)
    with pytest.raises(ValueError, match="no input column besides y='u'"):
        load_dataset(single, key=KEY)


def test_non_numeric_column(table, tmp_path):
    table["city"] = ["Bern"] * 20
    path = write_table(table, tmp_path / "table.csv")

    with pytest.raises(TypeError, match="column 'city' of table.csv is not numeric.*'Bern'"):
        load_dataset(path, x=["u", "city"], y="v", key=KEY)


def test_column_without_values(table, tmp_path):
    table["empty"] = np.nan
    path = write_table(table, tmp_path / "table.csv")

    with pytest.raises(ValueError, match="column 'empty' of table.csv has no values"):
        load_dataset(path, x=["u", "empty"], y="v", key=KEY)


def test_infinite_values(table, tmp_path):
    table.loc[4, "u"] = np.inf
    path = write_table(table, tmp_path / "table.csv")

    with pytest.raises(ValueError, match="column 'u' of table.csv contains inf, first in row 4"):
        load_dataset(path, key=KEY)


def test_too_few_rows(table, tmp_path):
    table.loc[3:, "u"] = np.nan
    path = write_table(table, tmp_path / "table.csv")

    with pytest.raises(ValueError, match="table.csv has 3 complete rows .*dropping 17.* at least 4"):
        load_dataset(path, key=KEY)


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5, -0.2, float("nan")])
def test_test_fraction_out_of_range(fraction):
    with pytest.raises(ValueError, match="test_fraction must lie strictly between 0 and 1"):
        load_dataset("diabetes", test_fraction=fraction, key=KEY)


@pytest.mark.parametrize("fraction", ["a", None, True])
def test_test_fraction_wrong_type(fraction):
    with pytest.raises(TypeError, match="test_fraction must be a number"):
        load_dataset("diabetes", test_fraction=fraction, key=KEY)


def test_constant_column(table, tmp_path):
    table["flat"] = 2.0
    path = write_table(table, tmp_path / "table.csv")

    with pytest.raises(ValueError, match="column 'flat' is constant.*leave it out of x"):
        load_dataset(path, x=["u", "flat"], y="v", key=KEY)
    with pytest.raises(ValueError, match="column 'flat' is constant.*choose another y"):
        load_dataset(path, x="u", y="flat", key=KEY)
    unscaled = load_dataset(path, x=["u", "flat"], y="v", key=KEY, standardize=False)
    np.testing.assert_array_equal(unscaled.x_train[:, 1], 2.0)


def test_sizes_larger_than_data(table, tmp_path):
    path = write_table(table, tmp_path / "table.csv")

    with pytest.raises(ValueError, match="num_test=20 leaves no training row.*num_test <= 19"):
        load_dataset(path, num_test=20, key=KEY)
    with pytest.raises(ValueError, match="num_train=16 plus 5 test rows exceeds the 20.*num_train <= 15"):
        load_dataset(path, num_train=16, key=KEY)
    with pytest.raises(ValueError, match="single training row cannot be standardised"):
        load_dataset(path, num_test=19, key=KEY)
    with pytest.raises(ValueError, match="num_train must be a positive integer"):
        load_dataset(path, num_train=0, key=KEY)
    with pytest.raises(TypeError, match="num_test must be a positive integer"):
        load_dataset("paper", num_test=2.5, key=KEY)


def test_options_that_do_not_apply():
    with pytest.raises(ValueError, match="num_fisher=5 applies only to the paper data set"):
        load_dataset("co2", num_fisher=5, key=KEY)
    with pytest.raises(ValueError, match="do not apply to the paper data set"):
        load_dataset("paper", x="x1", key=KEY)


def test_bad_key_and_standardize():
    with pytest.raises(TypeError, match="key must be a JAX PRNG key, got the integer 0"):
        load_dataset("diabetes", key=0)
    with pytest.raises(TypeError, match="standardize must be True, False or None"):
        load_dataset("diabetes", standardize="yes", key=KEY)


def test_empty_csv_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")

    with pytest.raises(ValueError, match="cannot read .*empty.csv' as CSV .*header row"):
        load_dataset(path, key=jax.random.key(0))


def test_damaged_parquet_file(tmp_path):
    path = tmp_path / "damaged.parquet"
    path.write_bytes(b"not a parquet file at all")

    with pytest.raises(ValueError, match="cannot read .*damaged.parquet' as Parquet"):
        load_dataset(path, key=jax.random.key(0))
