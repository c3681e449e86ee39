"""Fisher information metric of a network's parameters, its spectrum, and distinguishability.

``fisher_information`` evaluates the metric at one parameter value and ``posterior_fisher``
averages it over posterior samples. Both return a :class:`FisherInformation` with the descending
nonzero spectrum, the eigenvectors as an operator (:mod:`brgnnft.brg.fisher_basis`), the diagonal,
the rank and how it was computed. ``kl_divergence`` gives the exact divergence that the quadratic
form 0.5 delta^T I delta approximates.
"""

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from scipy.sparse.linalg import LinearOperator, eigsh

from brgnnft.brg._flatten import ParamLayout, in_float64
from brgnnft.brg.fisher_basis import CoordinateBasis, FisherBasis, GramBasis, MatrixBasis
from brgnnft.brg.fisher_jacobian import FisherProblem, build_jacobian, prepare_problem
from brgnnft.brg.likelihoods import output_kl_divergence
from brgnnft.models._checks import check_key, check_option, check_positive, check_positive_int

logger = logging.getLogger(__name__)

BASES = ("eigen", "diagonal")
METHODS = ("auto", "dense", "gram", "lanczos", "diagonal")


@dataclass(frozen=True, eq=False)
class FisherInformation:
    """Fisher information metric at a reference point (or averaged over samples), and its spectrum.

    Attributes
    ----------
    eigenvalues : ndarray of shape (r,)
        Numerically nonzero eigenvalues lambda_A, descending (for ``basis="diagonal"``, the nonzero
        diagonal entries, descending). With ``num_eigenvalues=k`` at most the top k.
    eigenvectors : FisherBasis
        The r directions v_A as an operator: ``coordinates``, ``combine``, ``project``,
        ``select``, and ``materialize()`` for the dict layout (site to (r, *site_shape)). The
        directions left out (zero eigenvalue) form the orthogonal complement.
    diagonal : dict of str to ndarray
        I_AA in the parameter layout.
    rank : int
        Number of eigenvalues above ``rtol * lambda_max``. For ``method="lanczos"`` it counts only
        the computed top k, so it is a lower bound when k is below the true rank.
    method : {"dense", "gram", "lanczos", "diagonal"}
        The method used (``"auto"`` is resolved).
    basis : {"eigen", "diagonal"}
    per_datum : bool
        True for I / n, False for the metric of the whole data set.
    likelihood : str
    num_data, num_params, num_samples : int
        n, P, and the number of parameter samples averaged over (1 for a point).
    reference : {"point", "posterior average"}
    reference_params : dict of str to ndarray
        The parameters the metric is evaluated at; (S, ...) for a posterior average.
    layout : ParamLayout
        Flatten order of the parameters (sorted site names, C order within a site).
    """

    eigenvalues: np.ndarray
    eigenvectors: FisherBasis
    diagonal: dict
    rank: int
    method: str
    basis: str
    per_datum: bool
    likelihood: str
    num_data: int
    num_params: int
    num_samples: int
    reference: str
    reference_params: dict
    layout: ParamLayout
    jacobian: object = field(repr=False)

    def __repr__(self) -> str:
        top = np.array2string(self.eigenvalues[:3], precision=4)
        return (
            f"FisherInformation(method={self.method!r}, basis={self.basis!r}, rank={self.rank}, "
            f"num_params={self.num_params}, num_data={self.num_data}, per_datum={self.per_datum}, "
            f"reference={self.reference!r}, top eigenvalues={top})"
        )

    def distinguishability_length(self) -> np.ndarray:
        """Return xi_A = lambda_A^(-1/2), shape (r,): the parameter shift along v_A that the data resolve.

        Notes
        -----
        KL(p_theta || p_{theta + delta}) ~ 0.5 sum_A lambda_A (v_A . delta)^2, so a shift of xi_A
        along v_A costs half a nat.
        """
        return 1.0 / np.sqrt(self.eigenvalues)

    def diagonal_vector(self) -> np.ndarray:
        """Return the diagonal as a flat (P,) vector in the layout's order."""
        return np.asarray(self.layout.flatten(self.diagonal))

    @in_float64
    def quadratic_form(self, delta) -> np.ndarray | float:
        """Return 0.5 delta^T I delta for a parameter shift (dict of sites or flat (..., P) vectors).

        Computed as 0.5 |J~ delta|^2 through the weighted Jacobian, so it is exact for the metric
        even when only the top of the spectrum was computed. Leading sample axes of ``delta`` carry
        through to the result.
        """
        if isinstance(delta, Mapping):
            flat = self.layout.flatten({name: jnp.asarray(value, dtype=jnp.float64) for name, value in delta.items()})
        else:
            flat = jnp.asarray(delta, dtype=jnp.float64)
            if flat.ndim == 0 or flat.shape[-1] != self.num_params:
                raise ValueError(f"delta has shape {flat.shape}, expected (..., {self.num_params}) or a dict of sites")
        rows = np.asarray(self.jacobian.matvec(flat))
        value = 0.5 * np.sum(rows**2, axis=-1)
        return float(value) if value.ndim == 0 else value

    @in_float64
    def to_dense(self, *, max_memory_bytes: float = 2e9) -> np.ndarray:
        """Return the (P, P) matrix I, formed from the weighted Jacobian (raises above the memory ceiling)."""
        _check_dense_memory(self.num_params, check_positive("max_memory_bytes", max_memory_bytes))
        return np.asarray(self.jacobian.dense())

    @property
    def attrs(self) -> dict:
        """Settings as plain values, for the attributes of a DataTree that records a flow."""
        return {
            "fisher_method": self.method,
            "fisher_basis": self.basis,
            "fisher_per_datum": int(self.per_datum),
            "fisher_likelihood": self.likelihood,
            "fisher_reference": self.reference,
            "fisher_num_samples": self.num_samples,
            "fisher_rank": self.rank,
            "fisher_num_data": self.num_data,
            "fisher_num_params": self.num_params,
        }


def _dense_bytes(num_params: int) -> float:
    """Estimated peak memory of the dense route: I, its eigenvectors and the eigh workspace."""
    return 3 * 8.0 * num_params**2


def _gram_bytes(num_rows: int) -> float:
    """Estimated peak memory of the Gram route: the Gram, two factor Grams, the eigenvectors."""
    return 4 * 8.0 * num_rows**2


def _check_dense_memory(num_params: int, max_memory_bytes: float) -> None:
    needed = _dense_bytes(num_params)
    if needed > max_memory_bytes:
        raise MemoryError(
            f"method='dense' needs about {needed / 1e9:.2f} GB for P={num_params} parameters, above "
            f"max_memory_bytes={max_memory_bytes:.3g}: use method='gram' (the NTK duality, cost set by "
            "the number of data points) or method='lanczos' with num_eigenvalues=k"
        )


def _choose_method(basis: str, num_rows: int, num_params: int, num_eigenvalues, max_memory_bytes: float) -> str:
    """Pick the cheapest method that fits the memory ceiling and delivers what was requested."""
    if basis == "diagonal":
        return "diagonal"
    dense_fits = _dense_bytes(num_params) <= max_memory_bytes
    gram_fits = _gram_bytes(num_rows) <= max_memory_bytes
    if dense_fits and num_params <= num_rows:
        return "dense"
    if gram_fits:
        return "gram"
    if dense_fits:
        return "dense"
    if num_eigenvalues is not None:
        return "lanczos"
    raise MemoryError(
        f"the whole spectrum needs an {num_rows} x {num_rows} Gram (about {_gram_bytes(num_rows) / 1e9:.2f} GB) "
        f"or a {num_params} x {num_params} matrix (about {_dense_bytes(num_params) / 1e9:.2f} GB), both above "
        f"max_memory_bytes={max_memory_bytes:.3g}: pass num_eigenvalues=k for the top k by Lanczos, or raise "
        "max_memory_bytes"
    )


def _rank_cutoff(values: np.ndarray, rtol: float) -> float:
    return rtol * float(np.max(values, initial=0.0))


def _top_of_symmetric(matrix: np.ndarray, num_eigenvalues) -> tuple[np.ndarray, np.ndarray]:
    """Return eigenvalues (descending) and eigenvectors of a symmetric matrix, all or the top k."""
    # NOTE: on a 2-core machine shared with other busy processes, multithreaded OpenBLAS made this
    # eigh of a 1024 x 1024 Gram take about 9 s instead of 0.16 s with OPENBLAS_NUM_THREADS=1
    # (benchmarks/bench_fisher.py, load average 3.5); set that variable on oversubscribed machines.
    size = matrix.shape[0]
    subset = None if num_eigenvalues is None else [max(0, size - num_eigenvalues), size - 1]
    driver = "evd" if subset is None else "evr"
    values, vectors = scipy.linalg.eigh(matrix, subset_by_index=subset, driver=driver, check_finite=False)
    return values[::-1], vectors[:, ::-1]


def _nonzero(values: np.ndarray, vectors: np.ndarray, rtol: float):
    keep = values > _rank_cutoff(values, rtol)
    return values[keep], vectors[:, keep]


def _dense_spectrum(problem: FisherProblem, jacobian, *, num_eigenvalues, rtol, max_memory_bytes, progress):
    _check_dense_memory(problem.layout.size, max_memory_bytes)
    matrix = np.asarray(jacobian.dense(progress=progress))
    values, vectors = _nonzero(*_top_of_symmetric(matrix, num_eigenvalues), rtol)
    return values, MatrixBasis(problem.layout, vectors), np.diag(matrix).copy()


def _gram_spectrum(problem: FisherProblem, jacobian, *, num_eigenvalues, rtol, max_memory_bytes, progress):
    needed = _gram_bytes(problem.num_rows)
    if needed > max_memory_bytes:
        raise MemoryError(
            f"method='gram' needs about {needed / 1e9:.2f} GB for the {problem.num_rows} x "
            f"{problem.num_rows} Gram, above max_memory_bytes={max_memory_bytes:.3g}: use "
            "method='lanczos' with num_eigenvalues=k, fewer data points, or a larger max_memory_bytes"
        )
    gram = np.asarray(jacobian.gram(progress=progress))
    values, vectors = _nonzero(*_top_of_symmetric(gram, num_eigenvalues), rtol)
    basis = GramBasis(jacobian, vectors, values, max_memory_bytes=max_memory_bytes)
    return values, basis, np.asarray(jacobian.diagonal(progress=progress))


def _lanczos_spectrum(problem: FisherProblem, jacobian, *, num_eigenvalues, rtol, key, lanczos_tol):
    size = problem.layout.size
    if num_eigenvalues is None:
        raise ValueError("method='lanczos' computes the top of the spectrum only: pass num_eigenvalues=k")
    if num_eigenvalues >= size:
        raise ValueError(
            f"method='lanczos' needs num_eigenvalues < P = {size}, got {num_eigenvalues}: use method='dense' "
            "for the whole spectrum of a small model"
        )

    def fisher_vector_product(vector):
        rows = jacobian.matvec(jnp.asarray(vector, dtype=jnp.float64)[None, :])
        return np.asarray(jacobian.rmatvec(rows)[0])

    operator = LinearOperator((size, size), matvec=fisher_vector_product, dtype=np.float64)
    start = np.asarray(jax.random.normal(key, (size,), dtype=jnp.float64))
    values, vectors = eigsh(operator, k=num_eigenvalues, which="LA", v0=start, tol=lanczos_tol)
    order = np.argsort(values)[::-1]
    values, vectors = _nonzero(values[order], vectors[:, order], rtol)
    return values, MatrixBasis(problem.layout, vectors), np.asarray(jacobian.diagonal())


def _diagonal_spectrum(problem: FisherProblem, jacobian, *, num_eigenvalues, rtol, progress):
    diagonal = np.asarray(jacobian.diagonal(progress=progress))
    order = np.argsort(-diagonal, kind="stable")
    keep = order[diagonal[order] > _rank_cutoff(diagonal, rtol)]
    if num_eigenvalues is not None:
        keep = keep[:num_eigenvalues]
    return diagonal[keep], CoordinateBasis(problem.layout, keep), diagonal


def _check_options(basis, method, num_eigenvalues, rtol, max_memory_bytes, chunk_size):
    check_option("basis", basis, BASES)
    check_option("method", method, METHODS)
    if basis == "diagonal" and method not in ("auto", "diagonal"):
        raise ValueError(
            f"basis='diagonal' is computed by method='diagonal' (or 'auto'), got method={method!r}: "
            "use basis='eigen' for the eigendecomposition methods"
        )
    if basis == "eigen" and method == "diagonal":
        raise ValueError("method='diagonal' computes only the diagonal of I: pass basis='diagonal'")
    if num_eigenvalues is not None:
        check_positive_int("num_eigenvalues", num_eigenvalues)
    if rtol is not None and check_positive("rtol", rtol) >= 1:
        raise ValueError(f"rtol is relative to the largest eigenvalue and must be < 1, got {rtol!r}")
    check_positive("max_memory_bytes", max_memory_bytes)
    if chunk_size is not None:
        check_positive_int("chunk_size", chunk_size)


def _spectrum(
    problem: FisherProblem,
    *,
    basis,
    method,
    num_eigenvalues,
    rtol,
    max_memory_bytes,
    chunk_size,
    structured,
    key,
    lanczos_tol,
    reference,
    reference_params,
    progress,
) -> FisherInformation:
    """Compute the spectrum of a prepared problem with the requested or chosen method."""
    jacobian = build_jacobian(problem, structured=structured, chunk_size=chunk_size)
    if method == "auto":
        method = _choose_method(basis, problem.num_rows, problem.layout.size, num_eigenvalues, max_memory_bytes)
        logger.info(
            "fisher_information: method='auto' chose %r (rows n*K*S=%d, parameters P=%d, num_eigenvalues=%s, %s Jacobian)",
            method,
            problem.num_rows,
            problem.layout.size,
            num_eigenvalues,
            "factored" if jacobian.structured else "autodiff",
        )
    rtol = max(problem.num_rows, problem.layout.size) * np.finfo(np.float64).eps if rtol is None else rtol

    if method == "dense":
        values, vectors, diagonal = _dense_spectrum(
            problem, jacobian, num_eigenvalues=num_eigenvalues, rtol=rtol, max_memory_bytes=max_memory_bytes, progress=progress
        )
    elif method == "gram":
        values, vectors, diagonal = _gram_spectrum(
            problem, jacobian, num_eigenvalues=num_eigenvalues, rtol=rtol, max_memory_bytes=max_memory_bytes, progress=progress
        )
    elif method == "lanczos":
        values, vectors, diagonal = _lanczos_spectrum(
            problem, jacobian, num_eigenvalues=num_eigenvalues, rtol=rtol, key=key, lanczos_tol=lanczos_tol
        )
    else:
        values, vectors, diagonal = _diagonal_spectrum(
            problem, jacobian, num_eigenvalues=num_eigenvalues, rtol=rtol, progress=progress
        )

    return FisherInformation(
        eigenvalues=np.asarray(values, dtype=np.float64),
        eigenvectors=vectors,
        diagonal={name: np.asarray(value) for name, value in problem.layout.unflatten(diagonal).items()},
        rank=int(values.shape[0]),
        method=method,
        basis=basis,
        per_datum=problem.per_datum,
        likelihood=problem.likelihood,
        num_data=problem.num_data,
        num_params=problem.layout.size,
        num_samples=problem.num_samples,
        reference=reference,
        reference_params={name: np.asarray(value) for name, value in reference_params.items()},
        layout=problem.layout,
        jacobian=jacobian,
    )


@in_float64
def fisher_information(
    model,
    params,
    x,
    *,
    basis: str = "eigen",
    method: str = "auto",
    num_eigenvalues: int | None = None,
    per_datum: bool = False,
    noise: float | None = None,
    rtol: float | None = None,
    max_memory_bytes: float = 2e9,
    chunk_size: int | None = None,
    structured: bool = True,
    key=None,
    lanczos_tol: float = 0.0,
    progress: bool = True,
) -> FisherInformation:
    """Compute the Fisher information metric of a model's parameters on inputs x, and its spectrum.

    Parameters
    ----------
    model : object
        A ``brgnnft.models`` network, or any object with ``apply(params, x)`` (and optionally
        ``param_shapes(d)``, ``likelihood``, ``noise``).
    params : dict of str to array
        One parameter value theta (site name to array, no sample axes): the reference point,
        such as the MAP or the posterior mean.
    x : array of shape (n, d)
        Inputs at which the metric is evaluated (usually the training inputs).
    basis : {"eigen", "diagonal"}
        Eigenbasis of I, or the parameter axes with the diagonal I_AA as the proxy spectrum.
    method : {"auto", "dense", "gram", "lanczos", "diagonal"}
        "dense" forms the P x P matrix; "gram" diagonalises the R x R NTK Gram (R = n K rows, K
        outputs per datum); "lanczos" finds the top ``num_eigenvalues`` with matrix-free Fisher-vector
        products; "diagonal" computes I_AA only. "auto" takes "diagonal" for the diagonal basis,
        else "dense" when P <= R and it fits ``max_memory_bytes``, else "gram" when it fits, else
        "lanczos" when ``num_eigenvalues`` is given. The choice is logged at INFO level.
    num_eigenvalues : int, optional
        Keep only the top k eigenvalues (required by "lanczos").
    per_datum : bool
        Return I / n instead of the metric of the whole data set.
    noise : float, optional
        Gaussian observation standard deviation sigma; defaults to ``model.noise``, then to a
        ``noise`` site in ``params``.
    rtol : float, optional
        Eigenvalues at or below ``rtol * lambda_max`` count as zero; default max(R, P) times the
        float64 machine epsilon.
    max_memory_bytes : float
        Ceiling on the estimated memory of the dense and Gram routes (bytes); above it they raise
        and name the method to use instead.
    chunk_size : int, optional
        Data points per chunk of Jacobian rows for models without a factored Jacobian.
    structured : bool
        Use the factored Jacobian of dense layers and linear readouts (no n x P Jacobian). False
        forces the generic autodiff route, for checks.
    key : jax.random key, optional
        Start vector of Lanczos; default ``jax.random.key(0)``.
    lanczos_tol : float
        Relative accuracy of the Lanczos eigenvalues; 0 means machine precision.
    progress : bool
        Show a progress bar over Jacobian chunks when stderr is a terminal.

    Returns
    -------
    FisherInformation

    Notes
    -----
    For the Gaussian likelihood I(theta) = sigma^-2 J^T J, the generalised Gauss-Newton matrix,
    with J_iA = d f(x_i) / d theta_A; for the others I = J^T H_out J with H_out = p (1 - p)
    (Bernoulli), diag(p) - p p^T (categorical) or mu (Poisson). By the NTK duality the nonzero
    eigenvalues of I equal those of the Gram Theta = J~ J~^T (J~ = L^T J with L L^T = H_out), and
    Theta u_A = lambda_A u_A gives v_A = J~^T u_A / sqrt(lambda_A). For a dense layer the row
    gradient of W^l is the outer product of h^{l-1} and the back-propagated error delta^l, so
    Theta^l(x, x') = (delta^l(x) . delta^l(x')) (h^{l-1}(x) . h^{l-1}(x')), O(n^2 N) per layer.

    References
    ----------
    J. N. Howard, M. S. Klinger, A. Maiti, A. G. Stapleton, "Bayesian RG Flow in Neural Network
    Field Theories", arXiv:2405.17538. D. S. Berman, M. S. Klinger, A. G. Stapleton, "Bayesian
    Renormalization", arXiv:2305.10491. A. Jacot, F. Gabriel, C. Hongler, "Neural Tangent Kernel",
    arXiv:1806.07572.

    Examples
    --------
    >>> import jax, numpy as np
    >>> from brgnnft.models import MLP
    >>> from brgnnft.brg import fisher_information
    >>> model = MLP(hidden=(16,), activation="tanh", noise=0.1)
    >>> params = model.sample_params(jax.random.key(0), input_dim=1)
    >>> info = fisher_information(model, params, np.linspace(-1, 1, 8)[:, None])
    >>> info.method, info.rank
    ('gram', 8)
    """
    _check_options(basis, method, num_eigenvalues, rtol, max_memory_bytes, chunk_size)
    key = jax.random.key(0) if key is None else check_key(key)
    problem = prepare_problem(model, params, x, noise=noise, per_datum=per_datum)
    return _spectrum(
        problem,
        basis=basis,
        method=method,
        num_eigenvalues=num_eigenvalues,
        rtol=rtol,
        max_memory_bytes=max_memory_bytes,
        chunk_size=chunk_size,
        structured=structured,
        key=key,
        lanczos_tol=lanczos_tol,
        reference="point",
        reference_params=problem.sites(0),
        progress=progress,
    )


def _posterior_samples(model, data, group: str, input_dim: int) -> dict[str, np.ndarray]:
    """Return the parameter sites of a DataTree group (or a dict) with (chain, draw) merged to S."""
    if isinstance(data, Mapping) and not hasattr(data, "children"):
        return {name: np.asarray(value) for name, value in data.items()}
    if group not in data.children:
        raise ValueError(f"the DataTree has no {group!r} group; it has {sorted(data.children)}")
    dataset = data[group].to_dataset()
    names = list(model.param_shapes(input_dim)) if hasattr(model, "param_shapes") else list(dataset.data_vars)
    if getattr(model, "noise", 0.0) is None and "noise" in dataset.data_vars:
        names.append("noise")
    missing = [name for name in names if name not in dataset.data_vars]
    if missing:
        raise ValueError(f"the {group!r} group lacks the sites {missing}; it has {sorted(dataset.data_vars)}")
    samples = {}
    for name in names:
        values = np.asarray(dataset[name].values)
        if dataset[name].dims[:2] != ("chain", "draw"):
            raise ValueError(f"{group}.{name} has dims {dataset[name].dims}, expected ('chain', 'draw', ...)")
        samples[name] = values.reshape((-1,) + values.shape[2:])
    return samples


def _inputs_from(data, x):
    if x is not None:
        return x
    if hasattr(data, "children") and "constant_data" in data.children:
        constant = data["constant_data"].to_dataset()
        if "x" in constant.data_vars:
            return np.asarray(constant["x"].values)
    raise ValueError("x is missing and the data has no constant_data group with 'x': pass x=<inputs (n, d)>")


@in_float64
def posterior_fisher(
    model,
    data,
    x=None,
    *,
    group: str = "posterior",
    num_samples: int | None = None,
    basis: str = "eigen",
    method: str = "auto",
    num_eigenvalues: int | None = None,
    per_datum: bool = False,
    noise: float | None = None,
    rtol: float | None = None,
    max_memory_bytes: float = 2e9,
    chunk_size: int | None = None,
    structured: bool = True,
    key=None,
    lanczos_tol: float = 0.0,
    progress: bool = True,
) -> FisherInformation:
    """Compute the Fisher metric averaged over posterior samples, I_bar = (1/S) sum_s I(theta_s).

    Parameters
    ----------
    model : object
        As for :func:`fisher_information`.
    data : DataTree or dict of str to array
        An ArviZ DataTree with a ``group`` of parameter sites with dims (chain, draw, ...), or a
        dict of site arrays with a leading (S,) axis.
    x : array of shape (n, d), optional
        Inputs; default the ``x`` variable of the DataTree's constant_data group.
    group : str
        DataTree group holding the samples ("posterior" or "prior").
    num_samples : int, optional
        Use this many samples, evenly spaced over the (chain, draw) order; default all of them.
    basis, method, num_eigenvalues, per_datum, noise, rtol, max_memory_bytes, chunk_size,
    structured, key, lanczos_tol, progress
        As for :func:`fisher_information`; the Gram route works on S n K rows.

    Returns
    -------
    FisherInformation
        With ``reference="posterior average"`` and the samples used in ``reference_params``.

    Notes
    -----
    I_bar = (1/S) sum_s J~_s^T J~_s = J_bar^T J_bar, with J_bar the stacked J~_s / sqrt(S), so the
    NTK duality applies to the (S n K) x (S n K) Gram of the stacked rows. For a dense layer the
    cross terms between samples keep the outer-product form, so no Jacobian is formed.
    """
    _check_options(basis, method, num_eigenvalues, rtol, max_memory_bytes, chunk_size)
    key = jax.random.key(0) if key is None else check_key(key)
    if x is None:
        x = _inputs_from(data, x)
    input_dim = np.shape(x)[-1]
    samples = _posterior_samples(model, data, group, input_dim)
    if num_samples is not None:
        total = next(iter(samples.values())).shape[0]
        check_positive_int("num_samples", num_samples)
        if num_samples > total:
            raise ValueError(f"num_samples={num_samples} exceeds the {total} samples available")
        chosen = np.unique(np.round(np.linspace(0, total - 1, num_samples)).astype(int))
        samples = {name: value[chosen] for name, value in samples.items()}

    problem = prepare_problem(model, samples, x, noise=noise, per_datum=per_datum, samples=True)
    return _spectrum(
        problem,
        basis=basis,
        method=method,
        num_eigenvalues=num_eigenvalues,
        rtol=rtol,
        max_memory_bytes=max_memory_bytes,
        chunk_size=chunk_size,
        structured=structured,
        key=key,
        lanczos_tol=lanczos_tol,
        reference="posterior average",
        reference_params=problem.sites(),
        progress=progress,
    )


@in_float64
def kl_divergence(model, params, delta, x, *, noise: float | None = None, per_datum: bool = False):
    """Return KL(p_theta || p_{theta + delta}) summed over the inputs x (averaged with ``per_datum``).

    Parameters
    ----------
    model : object
        As for :func:`fisher_information`.
    params : dict of str to array
        theta, one parameter value.
    delta : dict of str to array
        The shift, with the same sites; leading sample axes (S, ...) give one divergence per shift.
    x : array of shape (n, d)
    noise : float, optional
        As for :func:`fisher_information`.
    per_datum : bool
        Divide by n, to compare with a per-datum metric.

    Returns
    -------
    float, or ndarray of the sample shape of ``delta``

    Notes
    -----
    Gaussian: sum_i (f_{theta+delta}(x_i) - f_theta(x_i))^2 / (2 sigma^2); the other likelihoods use
    their closed-form KL (see :func:`brgnnft.brg.likelihoods.output_kl_divergence`). To second
    order in delta this is 0.5 delta^T I(theta) delta (``FisherInformation.quadratic_form``).
    """
    problem = prepare_problem(model, params, x, noise=noise, per_datum=per_datum)
    if not isinstance(delta, Mapping):
        raise TypeError(f"delta must be a dict of site name to array, got {type(delta).__name__}")
    batch = problem.layout.batch_shape(delta)
    shift = jnp.reshape(problem.layout.flatten(delta).astype(jnp.float64), (-1, problem.layout.size))
    shifted = problem.layout.unflatten(problem.params + shift)

    model_apply = problem.model.apply
    f_from = jnp.reshape(model_apply(problem.sites(0), problem.x), (1, problem.num_data, -1))
    f_to = jax.vmap(lambda sample: model_apply(sample, problem.x))(shifted)
    f_to = jnp.reshape(f_to, (shift.shape[0], problem.num_data, -1))
    per_point = output_kl_divergence(problem.likelihood, f_from, f_to, noise=problem.noise)
    total = jnp.mean(per_point, axis=-1) if per_datum else jnp.sum(per_point, axis=-1)
    total = np.asarray(total).reshape(batch)
    return float(total) if total.ndim == 0 else total
