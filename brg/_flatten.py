"""Parameter dicts as flat float64 vectors, and back, for the linear algebra inside ``brg``.

Flatten order
-------------
Sites are concatenated in sorted order of their names (Python's ``sorted`` on the strings, so
``b1 < b2 < w1 < w10 < w2``), and each site is raveled in C (row-major) order. This is the order
of ``jax.flatten_util.ravel_pytree`` on a dict, so a vector from here and one from
``ravel_pytree`` line up. Every leading axis that a site has beyond its event shape is a sample
axis: a dict whose ``w1`` has shape (S, d, N_1) flattens to (S, P).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import wraps

import jax
import jax.numpy as jnp
import numpy as np


def in_float64(function: Callable) -> Callable:
    """Run ``function`` with 64-bit JAX types enabled (``jax.enable_x64``)."""

    @wraps(function)
    def wrapper(*args, **kwargs):
        with jax.enable_x64(True):
            return function(*args, **kwargs)

    return wrapper


@dataclass(frozen=True)
class ParamLayout:
    """Site names, event shapes and offsets of the flat parameter vector.

    Attributes
    ----------
    names : tuple of str
        Site names in flatten order (sorted).
    shapes : tuple of tuple of int
        Event shape of each site, without sample axes.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def from_shapes(cls, shapes: Mapping[str, tuple[int, ...]]) -> "ParamLayout":
        """Build the layout from a mapping of site name to event shape, such as ``model.param_shapes(d)``."""
        if not shapes:
            raise ValueError("shapes is empty: a parameter layout needs at least one site")
        names = tuple(sorted(shapes))
        return cls(names=names, shapes=tuple(tuple(int(size) for size in shapes[name]) for name in names))

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of scalars in each site."""
        return tuple(int(np.prod(shape, dtype=np.int64)) for shape in self.shapes)

    @property
    def offsets(self) -> tuple[int, ...]:
        """Start of each site in the flat vector."""
        return tuple(int(offset) for offset in np.cumsum((0,) + self.sizes[:-1]))

    @property
    def size(self) -> int:
        """Total number of parameters P."""
        return int(sum(self.sizes))

    def as_dict(self) -> dict[str, tuple[int, ...]]:
        """Return the layout as a dict of site name to event shape, in flatten order."""
        return dict(zip(self.names, self.shapes))

    def batch_shape(self, params: Mapping) -> tuple[int, ...]:
        """Return the sample shape shared by every site of ``params``, or raise naming the mismatch."""
        self._check_sites(params)
        batch = None
        for name, shape in zip(self.names, self.shapes):
            site_shape = tuple(jnp.shape(params[name]))
            leading = len(site_shape) - len(shape)
            if leading < 0 or site_shape[leading:] != shape:
                raise ValueError(
                    f"site {name!r} has shape {site_shape}, expected (..., {', '.join(map(str, shape))}) "
                    f"with event shape {shape}: pass parameters of the model these shapes come from"
                )
            if batch is None:
                batch = site_shape[:leading]
            elif site_shape[:leading] != batch:
                raise ValueError(
                    f"site {name!r} has sample shape {site_shape[:leading]} but {self.names[0]!r} has "
                    f"{batch}: every site needs the same leading sample axes"
                )
        return batch

    def _check_sites(self, params: Mapping) -> None:
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a dict of site name to array, got {type(params).__name__}")
        missing = [name for name in self.names if name not in params]
        if missing:
            raise ValueError(
                f"params is missing the sites {missing}; it has {sorted(params)} and the model needs "
                f"{list(self.names)}"
            )

    def flatten(self, params: Mapping) -> jax.Array | np.ndarray:
        """Concatenate the sites of ``params`` into vectors of shape (*batch, P), in flatten order.

        Sites that the layout does not name (a deterministic ``f``, a noise scale) are ignored.
        Concrete arrays are joined with NumPy (no JAX dispatch or compilation) and the result is a
        NumPy array; under a JAX transform the result is a traced JAX array.
        """
        batch = self.batch_shape(params)
        values = [params[name] for name in self.names]
        array = jnp if any(isinstance(value, jax.core.Tracer) for value in values) else np
        pieces = [array.reshape(array.asarray(value), batch + (size,)) for value, size in zip(values, self.sizes)]
        return array.concatenate(pieces, axis=-1)

    def unflatten(self, flat) -> dict:
        """Split vectors of shape (*batch, P) back into a dict of (*batch, *event_shape) arrays.

        NumPy views of a concrete input, traced JAX arrays of a traced one.
        """
        array = jnp if isinstance(flat, jax.core.Tracer) else np
        flat = array.asarray(flat)
        if flat.ndim == 0 or flat.shape[-1] != self.size:
            raise ValueError(
                f"flat parameters have shape {flat.shape}, expected (..., {self.size}): the last axis "
                "must hold the P parameters of this layout"
            )
        batch = flat.shape[:-1]
        return {
            name: array.reshape(flat[..., offset : offset + size], batch + shape)
            for name, shape, size, offset in zip(self.names, self.shapes, self.sizes, self.offsets)
        }

    def __call__(self, flat) -> dict[str, jax.Array]:
        """Alias of :meth:`unflatten`, so the layout serves as the ``unflatten`` function."""
        return self.unflatten(flat)


def flatten_params(params: Mapping, *, shapes: Mapping | None = None) -> tuple[jax.Array, ParamLayout]:
    """Flatten a parameter dict into vectors and return them with the layout that undoes it.

    Parameters
    ----------
    params : dict of str to array
        Site name to array; every site may carry the same leading sample axes, e.g. (S, ...).
    shapes : dict of str to tuple, optional
        Event shape of every site, such as ``model.param_shapes(d)``. Needed to tell sample axes
        from event axes when ``params`` is batched; without it every axis is an event axis. Sites
        of ``params`` that ``shapes`` does not name are left out.

    Returns
    -------
    flat : jax.Array
        Shape (*batch, P): sites in sorted name order, each raveled in C order.
    layout : ParamLayout
        ``layout.unflatten(flat)`` (or ``layout(flat)``) returns the dict; it accepts any leading
        sample axes, so it also maps (S, P) vectors back to (S, ...) sites.

    Examples
    --------
    >>> import numpy as np
    >>> flat, layout = flatten_params({"w1": np.ones((4, 2, 3)), "b1": np.zeros((4, 3))},
    ...                               shapes={"w1": (2, 3), "b1": (3,)})
    >>> flat.shape, layout.names
    ((4, 9), ('b1', 'w1'))
    >>> layout(flat)["w1"].shape
    (4, 2, 3)
    """
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a dict of site name to array, got {type(params).__name__}")
    if shapes is None:
        shapes = {name: tuple(jnp.shape(value)) for name, value in params.items()}
    layout = ParamLayout.from_shapes(shapes)
    return layout.flatten(params), layout
