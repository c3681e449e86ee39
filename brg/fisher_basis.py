"""Fisher eigenvectors (or coordinate axes) as an operator on parameter dicts and flat vectors.

A basis contains r orthonormal directions v_1, ..., v_r of parameter space, the columns of V (P, r),
in the order of their eigenvalues (descending). Directions it does not contain are the orthogonal
complement: for the Fisher eigenbasis that is the null space of I, for the coordinate basis the
parameters with zero diagonal. Three operations cover what coarse graining needs:

- ``coordinates(theta)`` = V^T theta, shape (..., r);
- ``combine(c)`` = V c, back in the parameter layout;
- ``project(theta)`` = V V^T theta, in the layout it came in.

Parameters come either as a dict of site arrays with any leading sample axes, e.g. (S, ...), or as
flat vectors (..., P) in the layout's order (see :func:`brgnnft.brg.flatten_params`). Results are
NumPy float64 arrays.
"""

from abc import ABC, abstractmethod
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

from brgnnft.brg._flatten import ParamLayout, in_float64


class FisherBasis(ABC):
    """Orthonormal directions of parameter space, applied without forming V unless asked.

    Attributes
    ----------
    layout : ParamLayout
        Site names, shapes and flatten order of the parameters.
    size : int
        Number of directions r.
    """

    layout: ParamLayout
    size: int

    @abstractmethod
    def _coordinates(self, flat) -> np.ndarray:
        """V^T theta for flat (B, P) vectors, shape (B, r)."""

    @abstractmethod
    def _combine(self, coefficients) -> np.ndarray:
        """V c for (B, r) coefficients, shape (B, P)."""

    @abstractmethod
    def select(self, which) -> "FisherBasis":
        """Return the basis of the directions ``which`` (indices, a slice, or a boolean mask of length r)."""

    def _flat(self, params) -> tuple[np.ndarray, bool]:
        if isinstance(params, Mapping):
            return np.asarray(self.layout.flatten(params), dtype=np.float64), True
        flat = np.asarray(params, dtype=np.float64)
        if flat.ndim == 0 or flat.shape[-1] != self.layout.size:
            raise ValueError(
                f"flat parameters have shape {flat.shape}, expected (..., {self.layout.size}); pass a "
                "dict of sites or vectors in the layout's order"
            )
        return flat, False

    @in_float64
    def coordinates(self, params) -> np.ndarray:
        """Return V^T theta, shape (..., r), for a parameter dict or flat vectors (..., P)."""
        flat, _ = self._flat(params)
        leading = flat.shape[:-1]
        result = self._coordinates(flat.reshape(-1, self.layout.size))
        return np.asarray(result).reshape(leading + (self.size,))

    @in_float64
    def combine(self, coefficients, *, flat: bool = False):
        """Return V c for coefficients (..., r): a dict of (..., *site_shape) arrays, or (..., P) if ``flat``."""
        coefficients = np.asarray(coefficients, dtype=np.float64)
        if coefficients.ndim == 0 or coefficients.shape[-1] != self.size:
            raise ValueError(f"coefficients have shape {coefficients.shape}, expected (..., {self.size})")
        leading = coefficients.shape[:-1]
        vectors = np.asarray(self._combine(coefficients.reshape(-1, self.size))).reshape(leading + (self.layout.size,))
        return vectors if flat else _to_numpy(self.layout.unflatten(vectors))

    @in_float64
    def project(self, params):
        """Return V V^T theta, the component in the span of the basis, in the layout given."""
        flat, as_dict = self._flat(params)
        leading = flat.shape[:-1]
        batch = flat.reshape(-1, self.layout.size)
        projected = np.asarray(self._combine(np.asarray(self._coordinates(batch)))).reshape(leading + (self.layout.size,))
        return _to_numpy(self.layout.unflatten(projected)) if as_dict else projected

    def matrix(self) -> np.ndarray:
        """Return V, shape (P, r), columns the directions in descending order."""
        return self.combine(np.eye(self.size), flat=True).T

    def materialize(self) -> dict[str, np.ndarray]:
        """Return the directions in the parameter layout: site name to (r, *site_shape)."""
        return self.combine(np.eye(self.size))

    def _indices(self, which) -> np.ndarray:
        if not isinstance(which, slice):
            which = np.asarray(which)
            if which.dtype == bool and which.shape != (self.size,):
                raise ValueError(f"boolean mask has shape {which.shape}, expected ({self.size},), one entry per direction")
            if which.dtype != bool and not np.issubdtype(which.dtype, np.integer):
                raise TypeError(f"select needs indices, a slice or a boolean mask, got an array of dtype {which.dtype}")
        return np.atleast_1d(np.arange(self.size)[which])


def _to_numpy(sites: dict) -> dict[str, np.ndarray]:
    return {name: np.asarray(value) for name, value in sites.items()}


def _check_memory(rows: int, columns: int, max_memory_bytes: float, what: str) -> None:
    needed = 8.0 * rows * columns
    if needed > max_memory_bytes:
        raise MemoryError(
            f"{what} would take about {needed / 1e9:.2f} GB ({rows} x {columns} float64), above "
            f"max_memory_bytes={max_memory_bytes:.3g}: select fewer directions first (basis.select), "
            "or work with coordinates(), combine() and project() that never form V"
        )


class MatrixBasis(FisherBasis):
    """A basis stored as the explicit matrix V of shape (P, r)."""

    def __init__(self, layout: ParamLayout, vectors):
        self.layout = layout
        self.vectors = np.asarray(vectors, dtype=np.float64)
        self.size = int(self.vectors.shape[1])

    def __repr__(self) -> str:
        return f"MatrixBasis(size={self.size}, num_params={self.layout.size})"

    def _coordinates(self, flat):
        return flat @ self.vectors

    def _combine(self, coefficients):
        return coefficients @ self.vectors.T

    def matrix(self) -> np.ndarray:
        return self.vectors.copy()

    def select(self, which) -> "MatrixBasis":
        return MatrixBasis(self.layout, self.vectors[:, self._indices(which)])


class GramBasis(FisherBasis):
    """Eigenvectors from the NTK duality, v_A = J~^T u_A / sqrt(lambda_A), applied through J~.

    Parameters
    ----------
    jacobian : FactoredJacobian or AutodiffJacobian
        The weighted Jacobian J~ (R, P) with I = J~^T J~.
    gram_vectors : array of shape (R, r)
        Orthonormal eigenvectors u_A of the Gram J~ J~^T.
    eigenvalues : array of shape (r,)
        Their eigenvalues lambda_A > 0, descending.
    max_memory_bytes : float
        Ceiling for :meth:`matrix` and :meth:`materialize`, which form V.
    """

    def __init__(self, jacobian, gram_vectors, eigenvalues, *, max_memory_bytes: float = 2e9):
        self.jacobian = jacobian
        self.layout = jacobian.layout
        self.gram_vectors = np.asarray(gram_vectors, dtype=np.float64)
        self.eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
        self.size = int(self.eigenvalues.shape[0])
        self.max_memory_bytes = max_memory_bytes
        self._scaled = self.gram_vectors / np.sqrt(self.eigenvalues)

    def __repr__(self) -> str:
        return f"GramBasis(size={self.size}, num_params={self.layout.size}, rows={self.gram_vectors.shape[0]})"

    def _coordinates(self, flat):
        return np.asarray(self.jacobian.matvec(jnp.asarray(flat))) @ self._scaled

    def _combine(self, coefficients):
        return np.asarray(self.jacobian.rmatvec(jnp.asarray(coefficients @ self._scaled.T)))

    def matrix(self) -> np.ndarray:
        _check_memory(self.layout.size, self.size, self.max_memory_bytes, "forming the eigenvectors V")
        return super().matrix()

    def materialize(self) -> dict[str, np.ndarray]:
        _check_memory(self.layout.size, self.size, self.max_memory_bytes, "forming the eigenvectors V")
        return super().materialize()

    def select(self, which) -> "GramBasis":
        indices = self._indices(which)
        return GramBasis(
            self.jacobian,
            self.gram_vectors[:, indices],
            self.eigenvalues[indices],
            max_memory_bytes=self.max_memory_bytes,
        )


class CoordinateBasis(FisherBasis):
    """Coordinate axes of parameter space (the diagonal basis), listed by flat index."""

    def __init__(self, layout: ParamLayout, indices):
        self.layout = layout
        self.indices = np.asarray(indices, dtype=np.int64)
        self.size = int(self.indices.shape[0])

    def __repr__(self) -> str:
        return f"CoordinateBasis(size={self.size}, num_params={self.layout.size})"

    def _coordinates(self, flat):
        return flat[:, self.indices]

    def _combine(self, coefficients):
        vectors = np.zeros((coefficients.shape[0], self.layout.size))
        vectors[:, self.indices] = coefficients
        return vectors

    def mask(self) -> dict[str, np.ndarray]:
        """Return a boolean dict in the parameter layout, True on the axes this basis contains."""
        flat = np.zeros(self.layout.size, dtype=bool)
        flat[self.indices] = True
        return _to_numpy(self.layout.unflatten(flat))

    def select(self, which) -> "CoordinateBasis":
        return CoordinateBasis(self.layout, self.indices[self._indices(which)])
