"""Correlators and connected correlators of an ensemble of network outputs, with standard errors.

An ensemble of S functions evaluated at M points is an (S, M) array F. Its k-point correlator
G^(k)(x_1..x_k) = E[f(x_1) ... f(x_k)] and connected correlator (joint cumulant) G_c^(k) are
symmetric (M,)*k tensors, so the estimators work on the C(M + k - 1, k) index tuples
i_1 <= ... <= i_k and expand to the full tensor at the end.

The bottom layer is index bookkeeping for sorted tuples. Above it, moment sums per block of
members accumulate chunk by chunk as matrix products of pair and triple products, so nothing of
size S x M^k is built. The block jackknife over members comes next. On top sits the dispatch over
arrays and xarray objects, whose leading dimensions such as ``cutoff`` pass through.
"""

import functools
import itertools
import logging
import math
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from brgnnft.models._checks import check_positive_int

logger = logging.getLogger(__name__)

MAX_ORDER = 6
DEFAULT_NUM_BLOCKS = 32

# A full (M,)*k output above this many elements is rejected: value and standard error together
# take 16 bytes per element, so the cap keeps them near 270 MB.
MAX_TENSOR_ELEMENTS = 2**24

# Members per chunk are chosen so that the chunk's product columns take about this many bytes.
CHUNK_BYTES = 32 * 2**20

SAMPLE_DIMS = ("chain", "draw")


class Estimate(NamedTuple):
    """An ensemble estimate with its standard error.

    Attributes
    ----------
    value : ndarray or xarray.DataArray
        The estimate, e.g. a (..., M, M, M, M) connected four-point function.
    standard_error : same type and shape as ``value``
        Its standard error.
    num_samples : int
        Number of ensemble members S the estimate used.
    num_blocks : int
        Number of member blocks of the jackknife behind ``standard_error``.
    """

    value: np.ndarray | xr.DataArray
    standard_error: np.ndarray | xr.DataArray
    num_samples: int
    num_blocks: int


# ---------------------------------------------------------------------------------------------
# Sorted index tuples (multisets) and their ranks.


def _binomial_table(size: int, order: int) -> np.ndarray:
    table = np.zeros((size + order + 1, order + 1), dtype=np.int64)
    for n in range(table.shape[0]):
        for r in range(order + 1):
            table[n, r] = math.comb(n, r)
    return table


class TupleLayout:
    """Ranks of the sorted index tuples i_1 <= ... <= i_k over M points, for k = 1..order.

    The rank is the colexicographic combinatorial number system applied to the strictly
    increasing tuple c_t = i_t + t: rank = sum_t C(c_t, t + 1). It maps the sorted k-tuples
    bijectively onto 0..C(M + k - 1, k) - 1.
    """

    def __init__(self, num_points: int, order: int):
        self.num_points = num_points
        self.order = order
        self._binomials = _binomial_table(num_points, order)
        self.tuples = {k: self._sorted_tuples(k) for k in range(1, order + 1)}

    def size(self, k: int) -> int:
        """Number of sorted k-tuples, C(M + k - 1, k)."""
        return math.comb(self.num_points + k - 1, k)

    def rank(self, sorted_indices: np.ndarray) -> np.ndarray:
        """Return the ranks of nondecreasing index tuples given along the last axis."""
        rank = np.zeros(sorted_indices.shape[:-1], dtype=np.int64)
        for t in range(sorted_indices.shape[-1]):
            rank += self._binomials[sorted_indices[..., t] + t, t + 1]
        return rank

    def _sorted_tuples(self, k: int) -> np.ndarray:
        tuples = np.array(list(itertools.combinations_with_replacement(range(self.num_points), k)), dtype=np.int64)
        ordered = np.empty_like(tuples)
        ordered[self.rank(tuples)] = tuples
        return ordered

    def expand(self, values: np.ndarray, k: int) -> np.ndarray:
        """Expand (..., C(M + k - 1, k)) values on sorted tuples to the symmetric (..., M, ..., M)."""
        num_points = self.num_points
        full = np.empty(values.shape[:-1] + (num_points,) * k, dtype=values.dtype)
        if k == 1:
            full[...] = values
            return full

        # One leading index at a time, so the index arrays hold M^(k-1) tuples, not M^k.
        rest = np.indices((num_points,) * (k - 1)).reshape(k - 1, -1).T
        for first in range(num_points):
            indices = np.sort(np.concatenate([np.full((rest.shape[0], 1), first), rest], axis=1), axis=1)
            leading_index = (Ellipsis, first) + (slice(None),) * (k - 1)
            full[leading_index] = values[..., self.rank(indices)].reshape(values.shape[:-1] + (num_points,) * (k - 1))
        return full


@functools.lru_cache(maxsize=16)
def tuple_layout(num_points: int, order: int) -> TupleLayout:
    """Return the (cached) :class:`TupleLayout` for M points up to order k."""
    return TupleLayout(num_points, order)


def set_partitions(elements: tuple) -> list[list[tuple]]:
    """Return every partition of ``elements`` into nonempty blocks (Bell number many)."""
    if not elements:
        return [[]]
    first, rest = elements[0], elements[1:]
    partitions = []
    for partition in set_partitions(rest):
        partitions.append([(first,), *partition])
        for index, block in enumerate(partition):
            partitions.append(partition[:index] + [(first, *block)] + partition[index + 1:])
    return partitions


# ---------------------------------------------------------------------------------------------
# Moment sums per block of members, accumulated chunk by chunk.


def _product_columns(chunk: np.ndarray, layout: TupleLayout, max_degree: int) -> dict[int, np.ndarray]:
    """Return {degree: (c, C(M + degree - 1, degree)) products of the chunk's columns}.

    Columns come in rank order. In colexicographic order the pairs (i, j <= k) are the first
    C(k + 2, 2) pair columns, so the pairs ending in k are those columns' leading block times
    column k, and likewise the triples ending in k. Each block is then one broadcast multiply
    of contiguous slices, which is several times faster than gathering columns by index.
    """
    num_rows, num_points = chunk.shape
    columns = {1: chunk}
    for degree in range(2, max_degree + 1):
        lower = columns[degree - 1]
        product = np.empty((num_rows, layout.size(degree)))
        offset = 0
        for last in range(num_points):
            # Tuples of degree - 1 with entries <= last: the first C(last + degree - 1, degree - 1).
            width = math.comb(last + degree - 1, degree - 1)
            np.multiply(lower[:, :width], chunk[:, last:last + 1], out=product[:, offset:offset + width])
            offset += width
        columns[degree] = product
    return columns


# Each moment degree k >= 3 is a matrix product of column degrees (a, b) with a + b = k; degrees
# 1 and 2 are column sums. Triple columns are built only for k = 5 and 6 because the gathers
# that form them cost more than the products.
_SPLITS = {3: (1, 2), 4: (2, 2), 5: (2, 3), 6: (3, 3)}


def block_moment_sums(
    samples: np.ndarray,
    degrees: Sequence[int],
    layout: TupleLayout,
    *,
    num_blocks: int,
    chunk_size: int,
    progress: bool = False,
) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Sum products of the columns of ``samples`` over each block of members.

    Parameters
    ----------
    samples : ndarray (S, M)
        Ensemble members in rows, already centred as the caller wants.
    degrees : sequence of int
        Moment degrees k to accumulate, each in 1..6.
    layout : TupleLayout
        Index layout over M points, built for at least max(degrees).
    num_blocks : int
        B contiguous blocks of members, sizes differing by at most one.
    chunk_size : int
        Members per matrix product.

    Returns
    -------
    sums : dict of degree k to ndarray (B, C(M + k - 1, k))
        sums[k][b, r] = sum over members s of block b of prod_t samples[s, tuple_r[t]].
    block_sizes : ndarray (B,)
    """
    max_degree = max(degrees)
    column_degree = max(k if k <= 2 else max(_SPLITS[k]) for k in degrees)
    bounds = np.linspace(0, samples.shape[0], num_blocks + 1).round().astype(int)
    sums = {k: np.zeros((num_blocks, layout.size(k))) for k in degrees}
    num_chunks = sum(math.ceil((stop - start) / chunk_size) for start, stop in zip(bounds[:-1], bounds[1:]))
    bar = tqdm(total=num_chunks, desc=f"moments to degree {max_degree}", disable=not progress, leave=False)

    for block, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
        products = {k: 0.0 for k in degrees if k > 2}
        for chunk_start in range(start, stop, chunk_size):
            chunk = samples[chunk_start:min(chunk_start + chunk_size, stop)]
            columns = _product_columns(chunk, layout, column_degree)
            for k in degrees:
                if k <= 2:
                    sums[k][block] += columns[k].sum(axis=0)
                else:
                    a, b = _SPLITS[k]
                    products[k] = products[k] + columns[a].T @ columns[b]
            bar.update()

        for k, product in products.items():
            a, b = _SPLITS[k]
            tuples = layout.tuples[k]
            sums[k][block] = product[layout.rank(tuples[:, :a]), layout.rank(tuples[:, a:])]

    bar.close()
    return sums, np.diff(bounds)


# ---------------------------------------------------------------------------------------------
# Jackknife over blocks.


def _cumulants_from_moments(moments: dict[int, np.ndarray], order: int, layout: TupleLayout) -> np.ndarray:
    """Joint cumulants on sorted tuples from raw moments about any fixed point.

    ``moments[k]`` has shape (R, C(M + k - 1, k)) for k = 1..order (R replicates). Uses
    kappa = sum over set partitions pi of (-1)^(|pi| - 1) (|pi| - 1)! prod_{B in pi} m_B, which
    holds for moments about any fixed centre because cumulants of order >= 2 are shift invariant.
    """
    tuples = layout.tuples[order]
    sub_ranks = {}
    result = np.zeros((moments[order].shape[0], tuples.shape[0]))
    for partition in set_partitions(tuple(range(order))):
        num_parts = len(partition)
        term = (-1.0) ** (num_parts - 1) * math.factorial(num_parts - 1)
        for block in partition:
            if block not in sub_ranks:
                sub_ranks[block] = layout.rank(tuples[:, list(block)])
            term = term * moments[len(block)][:, sub_ranks[block]]
        result += term
    return result


def jackknife_replicates(
    samples: np.ndarray,
    orders: Sequence[int],
    *,
    connected: bool,
    num_blocks: int = DEFAULT_NUM_BLOCKS,
    chunk_size: int | None = None,
    progress: bool = False,
) -> tuple[dict[int, np.ndarray], TupleLayout, int]:
    """Estimate (connected) correlators on sorted tuples, with their leave-one-block-out values.

    Parameters
    ----------
    samples : ndarray (S, M)
    orders : sequence of int
        Correlator orders k to return.
    connected : bool
        Joint cumulants (centred at the sample mean before accumulating, for accuracy) if True,
        raw moments E[f_1 ... f_k] if False.

    Returns
    -------
    replicates : dict of order k to ndarray (B + 1, C(M + k - 1, k))
        Row 0 is the estimate from all members. Row b + 1 leaves out block b.
    layout : TupleLayout
    num_blocks : int
        B, which is ``min(num_blocks, S)``.
    """
    num_samples, num_points = samples.shape
    max_order = max(orders)
    num_blocks = min(num_blocks, num_samples)
    layout = tuple_layout(num_points, max_order)
    if chunk_size is None:
        widest = layout.size(3 if max_order >= 5 else min(max_order, 2))
        chunk_size = max(1, CHUNK_BYTES // (8 * widest))

    if connected:
        samples = samples - samples.mean(axis=0)
        degrees = list(range(1, max_order + 1))
    else:
        degrees = sorted(set(orders))
    logger.debug(
        "moments of degrees %s over %d members at %d points: %d blocks, %d members per chunk",
        degrees, num_samples, num_points, num_blocks, chunk_size,
    )
    sums, block_sizes = block_moment_sums(
        samples, degrees, layout, num_blocks=num_blocks, chunk_size=chunk_size, progress=progress
    )

    # Moments of the full ensemble (row 0) and of each leave-one-block-out ensemble.
    moments = {}
    for k, block_sums in sums.items():
        total = block_sums.sum(axis=0)
        counts = np.concatenate([[num_samples], num_samples - block_sizes])
        moments[k] = np.concatenate([total[None], total[None] - block_sums], axis=0) / counts[:, None]

    if connected:
        replicates = {k: _cumulants_from_moments(moments, k, layout) for k in orders}
    else:
        replicates = {k: moments[k] for k in orders}
    return replicates, layout, num_blocks


def jackknife_standard_error(replicates: np.ndarray) -> np.ndarray:
    """Return the delete-a-block jackknife standard error from rows 1..B of ``replicates``.

    sqrt((B - 1) / B * sum_b (theta_(b) - mean theta_(.))^2), with row 0 (the full estimate)
    ignored.
    """
    leave_outs = replicates[1:]
    num_blocks = leave_outs.shape[0]
    deviations = leave_outs - leave_outs.mean(axis=0)
    return np.sqrt((num_blocks - 1) / num_blocks * np.sum(deviations**2, axis=0))


# ---------------------------------------------------------------------------------------------
# Dispatch over arrays and xarray objects.


def check_order(order) -> int:
    """Return ``order`` if it is an integer in 1..6, else raise."""
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)):
        raise TypeError(f"order must be an integer from 1 to {MAX_ORDER}, got {order!r}")
    if not 1 <= order <= MAX_ORDER:
        raise ValueError(f"order must be from 1 to {MAX_ORDER}, got {order}: higher orders are not implemented")
    return int(order)


def _select_points(num_obs: int, points) -> np.ndarray:
    if points is None:
        return np.arange(num_obs)
    indices = np.asarray(points)
    if indices.ndim != 1 or indices.size == 0 or not np.issubdtype(indices.dtype, np.integer):
        raise TypeError(f"points must be a nonempty 1-D sequence of integer obs_id positions, got {points!r}")
    if indices.min() < -num_obs or indices.max() >= num_obs:
        raise ValueError(f"points {indices.tolist()} out of range for {num_obs} points: use positions 0..{num_obs - 1}")
    return indices % num_obs


def _f_data_array(samples) -> xr.DataArray:
    """Return the ``f`` DataArray held by a DataTree node or a Dataset."""
    dataset = samples.to_dataset() if isinstance(samples, xr.DataTree) else samples
    if "f" not in dataset.data_vars:
        groups = list(samples.children) if isinstance(samples, xr.DataTree) else []
        hint = f" (it has groups {groups}: pass e.g. tree['posterior'])" if groups else ""
        raise ValueError(f"samples has no variable 'f'{hint}")
    return dataset["f"]


def _check_samples_array(samples) -> np.ndarray:
    array = np.asarray(samples)
    if array.ndim < 2:
        raise ValueError(f"samples must have shape (..., S, M) with S members and M points, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"samples must be numeric, got dtype {array.dtype}")
    if array.shape[-2] < 2:
        raise ValueError(f"samples has {array.shape[-2]} ensemble member(s): a standard error needs at least 2")
    if not np.all(np.isfinite(array)):
        raise ValueError("samples contains NaN or inf: drop the affected ensemble members before calling")
    return array.astype(np.float64)


def check_tensor_size(num_points: int, order: int, copies: int = 1):
    elements = copies * num_points**order
    if elements > MAX_TENSOR_ELEMENTS:
        raise ValueError(
            f"a {order}-point tensor over {num_points} points has {num_points**order:,} elements "
            f"(x{copies}), above the limit of {MAX_TENSOR_ELEMENTS:,}: pass fewer points"
        )


def apply_to_ensemble(samples, points, order: int, array_function: Callable, *, obs_dim: str = "obs_id") -> Estimate:
    """Apply ``array_function((S, M) array) -> (value, standard_error, B)`` over leading dims.

    ``samples`` is an array (..., S, M), an xarray DataArray of ``f`` with sample dims
    (chain, draw), or a Dataset / DataTree node holding ``f``. Every dim other than the sample
    dims and ``obs_dim`` is a batch dim (e.g. ``cutoff``) and leads the result.
    """
    if isinstance(samples, (xr.DataTree, xr.Dataset)):
        samples = _f_data_array(samples)
    if not isinstance(samples, xr.DataArray):
        array = _check_samples_array(samples)
        indices = _select_points(array.shape[-1], points)
        check_tensor_size(indices.size, order)
        return _apply_over_batch(array[..., indices], array_function, order)

    sample_dims = [dim for dim in SAMPLE_DIMS if dim in samples.dims]
    if not sample_dims or obs_dim not in samples.dims:
        raise ValueError(
            f"f has dims {samples.dims}: expected sample dims among {SAMPLE_DIMS} and the point dim {obs_dim!r}"
        )
    batch_dims = [dim for dim in samples.dims if dim not in sample_dims and dim != obs_dim]
    indices = _select_points(samples.sizes[obs_dim], points)
    check_tensor_size(indices.size, order)
    selected = samples.isel({obs_dim: indices}).transpose(*batch_dims, *sample_dims, obs_dim)
    batch_shape = tuple(selected.sizes[dim] for dim in batch_dims)
    array = _check_samples_array(selected.values.reshape(batch_shape + (-1, indices.size)))
    estimate = _apply_over_batch(array, array_function, order)

    leg_dims = [f"{obs_dim}_{leg}" for leg in range(1, order + 1)]
    coords = {dim: selected[dim].values for dim in batch_dims if dim in selected.coords}
    if obs_dim in selected.coords:
        coords.update({dim: selected[obs_dim].values for dim in leg_dims})

    def wrap(values):
        return xr.DataArray(values, dims=(*batch_dims, *leg_dims), coords=coords)

    return estimate._replace(value=wrap(estimate.value), standard_error=wrap(estimate.standard_error))


def _apply_over_batch(array: np.ndarray, array_function: Callable, order: int) -> Estimate:
    batch_shape = array.shape[:-2]
    num_points = array.shape[-1]
    value = np.empty(batch_shape + (num_points,) * order)
    standard_error = np.empty_like(value)
    num_blocks = 0
    for index in np.ndindex(batch_shape):
        value[index], standard_error[index], num_blocks = array_function(array[index])
    return Estimate(value, standard_error, array.shape[-2], num_blocks)


def check_estimator_options(num_blocks, chunk_size, progress) -> tuple[int, int | None, bool]:
    num_blocks = check_positive_int("num_blocks", num_blocks)
    if num_blocks < 2:
        raise ValueError(f"num_blocks must be at least 2 for a jackknife standard error, got {num_blocks}")
    if chunk_size is not None:
        chunk_size = check_positive_int("chunk_size", chunk_size)
    show = bool(progress) and sys.stderr.isatty()
    return num_blocks, chunk_size, show


def _correlator(samples, points, order, *, connected, num_blocks, chunk_size, progress, obs_dim) -> Estimate:
    order = check_order(order)
    num_blocks, chunk_size, show = check_estimator_options(num_blocks, chunk_size, progress)

    def estimate(array: np.ndarray):
        replicates, layout, blocks = jackknife_replicates(
            array, [order], connected=connected, num_blocks=num_blocks, chunk_size=chunk_size, progress=show
        )
        rows = replicates[order]
        value = layout.expand(rows[0], order)
        standard_error = layout.expand(jackknife_standard_error(rows), order)
        return value, standard_error, blocks

    return apply_to_ensemble(samples, points, order, estimate, obs_dim=obs_dim)


def correlator(
    samples,
    points=None,
    order: int = 2,
    *,
    num_blocks: int = DEFAULT_NUM_BLOCKS,
    chunk_size: int | None = None,
    progress: bool = True,
    obs_dim: str = "obs_id",
) -> Estimate:
    """Estimate the k-point correlator G^(k) of an ensemble of functions, with standard errors.

    Parameters
    ----------
    samples : array (..., S, M), xarray.DataArray, Dataset or DataTree node
        Values of f for S ensemble members at M points. A DataArray is ``f`` with sample dims
        among (chain, draw), which are pooled into members, and the point dim ``obs_dim``. A
        Dataset or DataTree node (e.g. ``tree["posterior"]``) must contain ``f``. Any other leading
        dims (``cutoff`` of a flow, an ``output`` dim) pass through to the result.
    points : sequence of int, optional
        Positions along the point axis to correlate; all M when None.
    order : int
        k, from 1 to 6.
    num_blocks : int
        Blocks of consecutive members for the jackknife standard error (at most S are used).
    chunk_size : int, optional
        Members per matrix product; by default about 32 MB of product columns.
    progress : bool
        Show a progress bar over chunks (only when stderr is a terminal).
    obs_dim : str
        Name of the point dim of xarray inputs.

    Returns
    -------
    Estimate
        ``value`` and ``standard_error`` of shape (..., M, ..., M) with k point axes: NumPy
        arrays for array input, DataArrays with dims (..., obs_id_1, ..., obs_id_k) for xarray
        input.

    Notes
    -----
    :math:`\\hat G^{(k)}(x_{i_1}, \\ldots, x_{i_k}) = S^{-1} \\sum_s f_s(x_{i_1}) \\cdots f_s(x_{i_k})`,
    evaluated on sorted index tuples only. Members are accumulated chunk by chunk as matrix
    products of pair (and triple) products, so memory is independent of S and no S x M^k array
    is formed. The standard error is the delete-a-block jackknife over ``num_blocks``
    consecutive blocks of members, which for this mean equals the batch-means standard error and
    also accounts for autocorrelation within MCMC chains when blocks are longer than it.

    References
    ----------
    .. [1] J. Halverson, A. Maiti, K. Stoner, "Neural Networks and Quantum Field Theory",
       arXiv:2008.08601.
    .. [2] B. Efron, C. Stein, "The Jackknife Estimate of Variance", Ann. Statist. 9 (1981) 586.

    Examples
    --------
    >>> import numpy as np
    >>> from brgnnft.models import correlator
    >>> f = np.random.default_rng(0).normal(size=(1000, 3))
    >>> correlator(f, order=2, progress=False).value.shape
    (3, 3)
    """
    return _correlator(
        samples, points, order, connected=False, num_blocks=num_blocks, chunk_size=chunk_size,
        progress=progress, obs_dim=obs_dim,
    )


def connected_correlator(
    samples,
    points=None,
    order: int = 4,
    *,
    num_blocks: int = DEFAULT_NUM_BLOCKS,
    chunk_size: int | None = None,
    progress: bool = True,
    obs_dim: str = "obs_id",
) -> Estimate:
    """Estimate the connected k-point correlator G_c^(k) (joint cumulant), with standard errors.

    Parameters are those of :func:`correlator`.

    Returns
    -------
    Estimate
        As for :func:`correlator`.

    Notes
    -----
    The estimate is the joint cumulant of the empirical distribution of the members,

    .. math:: G_c^{(k)} = \\sum_{\\pi} (-1)^{|\\pi| - 1} (|\\pi| - 1)! \\prod_{B \\in \\pi} m_B,

    summed over set partitions :math:`\\pi` of the k legs, with :math:`m_B` the sample moment of
    the legs in block B taken about the sample mean (so G_c^(2) is the covariance and, for
    zero-mean fields, G_c^(4)(1234) = G(1234) - G(12)G(34) - G(13)G(24) - G(14)G(23)). Its bias
    is O(1/S), below the O(S^-1/2) standard error. The standard error is the delete-a-block
    jackknife: every leave-one-block-out ensemble recomputes all moments, its own mean
    included, and the spread of the B recomputed cumulants gives
    :math:`\\sqrt{(B - 1)/B \\sum_b (\\hat\\theta_{(b)} - \\bar\\theta)^2}`.

    References
    ----------
    .. [1] M. Demirtas, J. Halverson, A. Maiti, M. D. Schwartz, K. Stoner, "Neural Network Field
       Theories: Non-Gaussianity, Actions, and Locality", arXiv:2307.03223.
    .. [2] B. Efron, C. Stein, "The Jackknife Estimate of Variance", Ann. Statist. 9 (1981) 586.

    Examples
    --------
    >>> import numpy as np
    >>> from brgnnft.models import connected_correlator
    >>> f = np.random.default_rng(0).normal(size=(4000, 2))
    >>> estimate = connected_correlator(f, order=4, progress=False)
    >>> bool(np.all(np.abs(estimate.value) < 5 * estimate.standard_error))
    True
    """
    return _correlator(
        samples, points, order, connected=True, num_blocks=num_blocks, chunk_size=chunk_size,
        progress=progress, obs_dim=obs_dim,
    )
