"""Argument checks shared by every public entry point of the library.

They run in Python before anything is traced, so a bad value fails at once with a message that
names the value and the fix, and never as a shape error deep inside a jitted function.
"""

from collections.abc import Iterable

import jax
import numpy as np


def check_option(name: str, value, allowed: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise a ValueError listing them."""
    allowed = tuple(allowed)
    if value not in allowed:
        choices = ", ".join(repr(option) for option in allowed)
        raise ValueError(f"invalid {name}={value!r}: expected one of {choices}")
    return value


def check_positive(name: str, value, *, allow_none: bool = False):
    """Return ``value`` as a float if it is finite and > 0, else raise a ValueError."""
    if value is None and allow_none:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a positive number, got {value!r}") from None
    if not np.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def check_positive_int(name: str, value) -> int:
    """Return ``value`` if it is an integer >= 1, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer (>= 1), got {value!r}")
    return int(value)


def check_key(key):
    """Return ``key`` if it is a JAX PRNG key, else raise a TypeError saying how to make one.

    Both new-style typed keys (``jax.random.key``) and legacy uint32 keys of shape (2,)
    (``jax.random.PRNGKey``) are accepted.
    """
    fix = "pass key=jax.random.key(0) (or any seed)"
    if isinstance(key, (int, np.integer)):
        raise TypeError(f"key must be a JAX PRNG key, got the integer {key!r}: {fix}")
    if not isinstance(key, (jax.Array, np.ndarray)):
        raise TypeError(f"key must be a JAX PRNG key, got {type(key).__name__}: {fix}")
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"key must be a single PRNG key, got an array of keys of shape {key.shape}")
        return key
    if key.dtype == np.uint32 and key.shape == (2,):
        return key
    raise TypeError(f"key must be a JAX PRNG key, got an array of dtype {key.dtype} and shape {key.shape}: {fix}")


def first_bad_row(values: np.ndarray) -> int | None:
    """Return the index of the first row containing NaN or inf, or None if every value is finite."""
    finite = np.isfinite(values).reshape(values.shape[0], -1).all(axis=1)
    if finite.all():
        return None
    return int(np.argmin(finite))


def check_inputs(x, name: str = "x") -> np.ndarray:
    """Return ``x`` as a finite (n, d) NumPy array, or raise naming the problem and the fix."""
    array = np.asarray(x)
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D with shape (n, d), got shape {array.shape}: "
            f"reshape a single feature with {name}.reshape(-1, 1)"
        )
    if array.shape[0] == 0:
        raise ValueError(f"{name} has no rows: pass at least one data point")
    if not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"{name} must be numeric, got dtype {array.dtype}")
    row = first_bad_row(array)
    if row is not None:
        raise ValueError(
            f"{name} contains NaN or inf, first in row {row} ({array[row].tolist()}): "
            "drop or impute such rows before calling"
        )
    return array


def check_targets(y, num_rows: int, name: str = "y") -> np.ndarray:
    """Return ``y`` as a finite NumPy array with ``num_rows`` rows, or raise."""
    array = np.asarray(y)
    if array.ndim == 0 or array.shape[0] != num_rows:
        raise ValueError(
            f"{name} has shape {array.shape} but x has {num_rows} rows: "
            f"pass one target per row of x"
        )
    if not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"{name} must be numeric, got dtype {array.dtype}")
    row = first_bad_row(array)
    if row is not None:
        raise ValueError(
            f"{name} contains NaN or inf, first in row {row} (value {array[row].tolist()}): "
            "drop or impute such rows before calling"
        )
    return array
