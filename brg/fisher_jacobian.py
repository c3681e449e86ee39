"""The weighted Jacobian whose Gram is the Fisher information, as two interchangeable operators.

Every likelihood's Fisher is a sum of squares: with L_i L_i^T = H_out(f(x_i)) (see
:mod:`brgnnft.brg.likelihoods`), the rows of the weighted Jacobian are

    J~_{(s, i, k)} = c * sum_j L_{s, i, j, k} d f_j(x_i; theta_s) / d theta,

and I = J~^T J~. Row order is (sample s, datum i, output k). The scale c = 1 / sqrt(S) averages
over S parameter samples and gains a factor 1 / sqrt(n) for the per-datum metric. Both operators
work on flat parameter vectors in the layout's order (sorted site names, C order within a site).

``FactoredJacobian`` is for dense layers, where the row gradient of a weight matrix is the outer
product of the layer's input h^{l-1} and its back-propagated error delta^l, and for models linear in
one site (f = Phi(x) a). No n x P matrix is ever formed. ``AutodiffJacobian`` serves every other
model through jvp, vjp and chunked jacrev.
"""

import logging
import math
import sys
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from brgnnft.brg._flatten import ParamLayout
from brgnnft.brg.likelihoods import LIKELIHOODS, output_fisher_factor
from brgnnft.models import MLP
from brgnnft.models._checks import check_inputs, check_positive

logger = logging.getLogger(__name__)

#: Bytes that one chunk of Jacobian rows or of batched products may take.
CHUNK_BYTES = 256 * 2**20


def is_traced(value) -> bool:
    """Return whether ``value`` is a JAX tracer, as inside jit, vmap or grad."""
    return isinstance(value, jax.core.Tracer)


def show_progress(progress: bool) -> bool:
    """Return whether to draw a progress bar: requested, and stderr is a terminal."""
    return bool(progress) and sys.stderr.isatty()


@dataclass(frozen=True)
class FisherProblem:
    """A model, its parameter samples and inputs, with the output-space Fisher factors at them.

    Attributes
    ----------
    model : object
        The model; it provides ``apply(params, x)``.
    layout : ParamLayout
        Flat parameter layout.
    params : jax.Array of shape (S, P)
        Flattened parameter samples, float64.
    x : jax.Array of shape (n, d)
        Inputs, float64.
    weights : jax.Array of shape (S, n, K, K)
        Scaled factors c L of the output-space Fisher, L L^T = H_out.
    likelihood : str
    noise : float, array of shape (S,), or None
        Observation standard deviation used for the Gaussian likelihood.
    per_datum : bool
        Whether the metric is divided by n.
    """

    model: object
    layout: ParamLayout
    params: jax.Array
    x: jax.Array
    weights: jax.Array
    likelihood: str
    noise: object
    per_datum: bool

    @property
    def num_samples(self) -> int:
        """Number of parameter samples S averaged over."""
        return int(self.params.shape[0])

    @property
    def num_data(self) -> int:
        """Number of inputs n."""
        return int(self.x.shape[0])

    @property
    def num_outputs(self) -> int:
        """Rows per datum K (outputs of the network)."""
        return int(self.weights.shape[-1])

    @property
    def num_rows(self) -> int:
        """Rows of the weighted Jacobian, S n K."""
        return self.num_samples * self.num_data * self.num_outputs

    def sites(self, sample: int | None = None) -> dict[str, np.ndarray]:
        """Return the parameter dict of every sample (S, ...) or of one sample."""
        flat = self.params if sample is None else self.params[sample]
        return self.layout.unflatten(flat)


def _as_float64(value, name: str):
    """Return ``value`` as a float64 JAX array; concrete values are converted by NumPy."""
    dtype = jnp.result_type(value)
    if not jnp.issubdtype(dtype, jnp.number):
        raise TypeError(f"{name} must be numeric, got dtype {dtype}")
    if is_traced(value):
        return jnp.asarray(value).astype(jnp.float64)
    return jnp.asarray(np.asarray(value, dtype=np.float64))


def _model_layout(model, params, input_dim: int) -> ParamLayout:
    if hasattr(model, "param_shapes"):
        return ParamLayout.from_shapes(model.param_shapes(input_dim))
    return ParamLayout.from_shapes({name: tuple(jnp.shape(value)) for name, value in params.items()})


def _resolve_noise(model, params, noise, likelihood: str, batch: tuple[int, ...]):
    """Return the Gaussian noise: the argument, else ``model.noise``, else the ``noise`` site."""
    if likelihood != "gaussian":
        if noise is not None:
            raise ValueError(f"noise={noise!r} applies only to likelihood='gaussian', but the model's is {likelihood!r}")
        return None
    if noise is not None:
        return check_positive("noise", noise)
    if getattr(model, "noise", None) is not None:
        return float(model.noise)
    if "noise" in params:
        site = jnp.asarray(params["noise"], dtype=jnp.float64)
        if site.shape != batch:
            raise ValueError(f"params['noise'] has shape {site.shape}, expected the sample shape {batch}")
        return jnp.reshape(site, (-1,)) if batch else site
    raise ValueError(
        "the model has a noise prior (noise=None) and params has no 'noise' site: pass noise=<sigma>, "
        "the observation standard deviation at which to evaluate the Fisher information"
    )


class StaticModel:
    """A model as a static jit argument.

    Two MLPs of the same class, depth, activations, bias setting and output size compute the same
    function of (params, x), so they share compiled code. Any other model is compared by identity,
    which works for every object, hashable or not.
    """

    def __init__(self, model):
        self.model = model
        if isinstance(model, MLP):
            self.key = (type(model), len(model.hidden), model.activations, model.bias, model.out_dim)
        else:
            self.key = (type(model), id(model))

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other) -> bool:
        return isinstance(other, StaticModel) and other.key == self.key


@partial(jax.jit, static_argnums=(0, 1, 2))
def _outputs_and_weights(static: StaticModel, layout: ParamLayout, likelihood: str, flat, x, noise, scale):
    """Return f of every sample as (S, n, K) and the scaled output Fisher factors (S, n, K, K)."""
    f = jax.vmap(lambda sample: static.model.apply(layout.unflatten(sample), x))(flat)
    if f.ndim == 2:
        f = f[..., None]
    if f.ndim != 3 or f.shape[:2] != (flat.shape[0], x.shape[0]):
        raise ValueError(
            f"model.apply returned outputs of shape {f.shape[1:]} for x of shape {x.shape}, expected "
            f"(n,) or (n, out_dim) with n = {x.shape[0]}"
        )
    return f, scale * output_fisher_factor(likelihood, f, noise=noise)


def prepare_problem(model, params, x, *, noise=None, per_datum: bool = False, samples: bool = False) -> FisherProblem:
    """Validate the inputs and evaluate the output-space Fisher factors.

    Parameters
    ----------
    model : object with ``apply(params, x)``
        Optional attributes: ``param_shapes(d)``, ``likelihood`` (default "gaussian"), ``noise``.
    params : dict of str to array
        One parameter sample, or with ``samples=True`` samples with leading axes (chain, draw) or
        (S,), flattened here to S.
    x : array of shape (n, d)
    noise : float, optional
        Overrides ``model.noise`` for the Gaussian likelihood.
    per_datum : bool
        Divide the metric by n.
    samples : bool
        Whether ``params`` carries sample axes to average over.
    """
    if not callable(getattr(model, "apply", None)):
        raise TypeError(
            f"model must provide apply(params, x), got {type(model).__name__}: use a brgnnft.models "
            "network or wrap yours with brgnnft.models.from_flax / from_equinox"
        )
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict of site name to array, got {type(params).__name__}")
    x = _as_float64(x if is_traced(x) else check_inputs(x), "x")
    likelihood = getattr(model, "likelihood", "gaussian")
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"model.likelihood={likelihood!r} is not one of {LIKELIHOODS}")

    layout = _model_layout(model, params, x.shape[1])
    batch = layout.batch_shape(params)
    if not samples and batch:
        raise ValueError(
            f"params carries sample axes {batch}, but the Fisher information here is taken at one "
            "parameter value: pass one sample, or use posterior_fisher to average over samples"
        )
    if samples and not batch:
        raise ValueError("params has no sample axis: give every site a leading (S,) or (chain, draw) axis")
    flat = layout.flatten(params)
    flat = _as_float64(flat.reshape((-1, layout.size)), "params")
    if not is_traced(flat) and not np.all(np.isfinite(np.asarray(flat))):
        raise ValueError("params contains NaN or inf: evaluate the Fisher information at finite parameters")

    resolved_noise = _resolve_noise(model, params, noise, likelihood, batch)
    scale = 1.0 / math.sqrt(flat.shape[0] * (x.shape[0] if per_datum else 1))
    f, weights = _outputs_and_weights(StaticModel(model), layout, likelihood, flat, x, resolved_noise, scale)
    if not is_traced(f) and not np.all(np.isfinite(np.asarray(f))):
        raise ValueError("the model's outputs contain NaN or inf at these parameters and inputs")
    return FisherProblem(
        model=model,
        layout=layout,
        params=flat,
        x=x,
        weights=weights,
        likelihood=likelihood,
        noise=resolved_noise,
        per_datum=bool(per_datum),
    )


def _batched(function, vectors, row_bytes: int):
    """Apply ``function`` to (B, m) rows in chunks of at most CHUNK_BYTES / row_bytes rows."""
    leading = vectors.shape[:-1]
    flat = jnp.reshape(vectors, (-1, vectors.shape[-1]))
    step = max(1, CHUNK_BYTES // max(row_bytes, 1))
    if flat.shape[0] <= step:
        result = function(flat)
    else:
        result = jnp.concatenate([function(flat[start : start + step]) for start in range(0, flat.shape[0], step)])
    return jnp.reshape(result, leading + result.shape[1:])


@partial(jax.jit, static_argnums=0)
def _factored_matvec(layout: ParamLayout, factors: dict, vectors):
    sites = layout.unflatten(vectors)
    num_rows = factors[layout.names[0]][1].shape[0]
    total = jnp.zeros((vectors.shape[0], num_rows), dtype=vectors.dtype)
    for name in layout.names:
        inputs, errors = factors[name]
        if inputs is None:
            total = total + sites[name] @ errors.T
        else:
            total = total + jnp.einsum("ra,bax,rx->br", inputs, sites[name], errors)
    return total


@partial(jax.jit, static_argnums=0)
def _factored_rmatvec(layout: ParamLayout, factors: dict, rows):
    pieces = []
    for name in layout.names:
        inputs, errors = factors[name]
        if inputs is None:
            pieces.append(rows @ errors)
        else:
            pieces.append(jnp.einsum("ra,br,rx->bax", inputs, rows, errors).reshape(rows.shape[0], -1))
    return jnp.concatenate(pieces, axis=-1)


@partial(jax.jit, static_argnums=0)
def _factored_gram(layout: ParamLayout, factors: dict):
    # Blocks of rows bound the two (block, R) temporaries of each site to CHUNK_BYTES.
    num_rows = factors[layout.names[0]][1].shape[0]
    block = max(1, min(num_rows, CHUNK_BYTES // (16 * num_rows)))
    blocks = []
    for start in range(0, num_rows, block):
        rows = slice(start, min(start + block, num_rows))
        total = jnp.zeros((rows.stop - rows.start, num_rows), dtype=jnp.float64)
        for name in layout.names:
            inputs, errors = factors[name]
            error_gram = errors[rows] @ errors.T
            total = total + (error_gram if inputs is None else (inputs[rows] @ inputs.T) * error_gram)
        blocks.append(total)
    return jnp.concatenate(blocks, axis=0)


@partial(jax.jit, static_argnums=0)
def _factored_diagonal(layout: ParamLayout, factors: dict):
    pieces = []
    for name in layout.names:
        inputs, errors = factors[name]
        squared = errors**2
        pieces.append(jnp.sum(squared, axis=0) if inputs is None else ((inputs**2).T @ squared).reshape(-1))
    return jnp.concatenate(pieces)


@partial(jax.jit, static_argnums=0)
def _factored_jacobian(layout: ParamLayout, factors: dict):
    pieces = []
    for name in layout.names:
        inputs, errors = factors[name]
        if inputs is None:
            pieces.append(errors)
        else:
            pieces.append(jnp.einsum("ra,rx->rax", inputs, errors).reshape(errors.shape[0], -1))
    return jnp.concatenate(pieces, axis=-1)


class FactoredJacobian:
    """Weighted Jacobian of dense layers and linear readouts, stored as per-site factors.

    For a weight site the row r gradient is the outer product ``inputs[r] (x) errors[r]``; for a
    vector site (a bias, a linear readout) it is ``errors[r]``. All products (Gram, diagonal,
    Jacobian-vector) are matrix products of these factors.

    Parameters
    ----------
    layout : ParamLayout
    factors : dict of str to (array of shape (R, fan_in) or None, array of shape (R, fan_out))
    """

    def __init__(self, layout: ParamLayout, factors: dict):
        if set(factors) != set(layout.names):
            raise ValueError(f"factors cover sites {sorted(factors)}, the layout has {list(layout.names)}")
        self.layout = layout
        self.factors = factors
        self.num_rows = int(factors[layout.names[0]][1].shape[0])
        self.structured = True
        self._widest = max(int(errors.shape[1]) for _, errors in factors.values())

    def matvec(self, vectors) -> jax.Array:
        """Return J~ v for vectors of shape (..., P), shape (..., R)."""
        return _batched(partial(_factored_matvec, self.layout, self.factors), vectors, 8 * self.num_rows * self._widest)

    def rmatvec(self, rows) -> jax.Array:
        """Return J~^T u for row vectors of shape (..., R), shape (..., P)."""
        row_bytes = 8 * (self.layout.size + self.num_rows * self._widest)
        return _batched(partial(_factored_rmatvec, self.layout, self.factors), rows, row_bytes)

    def gram(self, *, progress: bool = False) -> jax.Array:
        """Return the (R, R) Gram J~ J~^T = sum over sites of (A A^T) * (B B^T), or B B^T."""
        return _factored_gram(self.layout, self.factors)

    def diagonal(self, *, progress: bool = False) -> jax.Array:
        """Return diag(J~^T J~), shape (P,): sum_r A_ra^2 B_rb^2 for weights, sum_r B_rb^2 otherwise."""
        return _factored_diagonal(self.layout, self.factors)

    def jacobian(self) -> jax.Array:
        """Return J~ itself, shape (R, P)."""
        return _factored_jacobian(self.layout, self.factors)

    def dense(self, *, progress: bool = False) -> jax.Array:
        """Return the (P, P) Fisher J~^T J~."""
        jacobian = self.jacobian()
        return jacobian.T @ jacobian


def activation_slope(activation, z) -> jax.Array:
    """Return the elementwise derivative of ``activation`` at ``z`` (a forward-mode tangent of ones)."""
    return jax.jvp(activation, (z,), (jnp.ones_like(z),))[1]


def _mlp_factors_single(model: MLP, sites: dict, x, weights) -> dict:
    """Return the per-site factors of one parameter sample; ``weights`` has shape (n, K, K).

    Row (i, k) has error delta^L = L[i, :, k] at the output, back-propagated by
    delta^{l-1} = (delta^l W_l^T) * phi'(z_{l-1}); its input factor at layer l is h^{l-1}(x_i).
    """
    layers = model.forward(sites, x)
    n, num_outputs = weights.shape[0], weights.shape[-1]
    errors = jnp.swapaxes(weights, -1, -2)
    factors = {}
    for layer in range(len(layers), 0, -1):
        layer_input = x if layer == 1 else layers[layer - 2][1]
        repeated = jnp.broadcast_to(layer_input[:, None, :], (n, num_outputs, layer_input.shape[-1]))
        rows = errors.reshape(n * num_outputs, -1)
        factors[f"w{layer}"] = (repeated.reshape(n * num_outputs, -1), rows)
        if model.bias:
            factors[f"b{layer}"] = (None, rows)
        if layer > 1:
            slope = activation_slope(model.activations[layer - 2], layers[layer - 2][0])
            errors = (errors @ sites[f"w{layer}"].T) * slope[:, None, :]
    return factors


def _stack_samples(per_sample: dict) -> dict:
    """Merge the leading sample axis of every factor into the row axis."""
    def merge(array):
        return None if array is None else jnp.reshape(array, (-1, array.shape[-1]))

    return {name: (merge(inputs), merge(errors)) for name, (inputs, errors) in per_sample.items()}


@partial(jax.jit, static_argnums=(0, 1))
def _mlp_factors(static: StaticModel, layout: ParamLayout, flat, x, weights) -> dict:
    def single(sample, sample_weights):
        return _mlp_factors_single(static.model, layout.unflatten(sample), x, sample_weights)

    return _stack_samples(jax.vmap(single)(flat, weights))


def mlp_jacobian(problem: FisherProblem) -> FactoredJacobian:
    """Build the factored weighted Jacobian of an MLP, for every sample of ``problem``."""
    factors = _mlp_factors(StaticModel(problem.model), problem.layout, problem.params, problem.x, problem.weights)
    return FactoredJacobian(problem.layout, factors)


def linear_readout_jacobian(problem: FisherProblem) -> FactoredJacobian:
    """Build the weighted Jacobian of f = Phi(x) a: row (s, i, k) is sum_j L[s, i, j, k] Phi_i."""
    features = jnp.asarray(problem.model.features(problem.x), dtype=jnp.float64)
    rows = problem.weights[:, :, 0, :, None] * features[None, :, None, :]
    site = problem.layout.names[0]
    return FactoredJacobian(problem.layout, {site: (None, jnp.reshape(rows, (-1, features.shape[-1])))})


def has_linear_readout(model, layout: ParamLayout) -> bool:
    """Return whether ``model`` is f = features(x) @ a with ``a`` its only parameter site."""
    site = getattr(model, "linear_site", None)
    return site is not None and callable(getattr(model, "features", None)) and layout.names == (site,)


class AutodiffJacobian:
    """Weighted Jacobian of any model ``apply(params, x)``, through jvp, vjp and chunked jacrev.

    Parameters
    ----------
    problem : FisherProblem
    chunk_size : int, optional
        Data points per jacrev chunk; by default as many as fit in CHUNK_BYTES.
    """

    def __init__(self, problem: FisherProblem, *, chunk_size: int | None = None):
        self.problem = problem
        self.layout = problem.layout
        self.num_rows = problem.num_rows
        self.structured = False
        per_point = 8 * problem.num_outputs * problem.layout.size
        self.chunk_size = chunk_size or int(max(1, min(problem.num_data, CHUNK_BYTES // per_point)))
        self._matvec = jax.jit(self._matvec_impl)
        self._rmatvec = jax.jit(self._rmatvec_impl)
        self._chunk_jacobian = jax.jit(jax.jacrev(self._rows, argnums=0))

    def _rows(self, flat, x, weights):
        """Weighted outputs of one sample on inputs x, shape (n_x K,); weights are held fixed."""
        f = self.problem.model.apply(self.layout.unflatten(flat), x)
        f = jnp.reshape(f, (x.shape[0], -1))
        return jnp.einsum("nj,njk->nk", f, jax.lax.stop_gradient(weights)).reshape(-1)

    def _matvec_impl(self, vectors):
        x = self.problem.x

        def one_sample(flat, weights):
            def tangent(vector):
                return jax.jvp(lambda theta: self._rows(theta, x, weights), (flat,), (vector,))[1]

            return jax.vmap(tangent)(vectors)

        per_sample = jax.vmap(one_sample)(self.problem.params, self.problem.weights)
        return jnp.moveaxis(per_sample, 0, 1).reshape(vectors.shape[0], -1)

    def matvec(self, vectors) -> jax.Array:
        """Return J~ v for vectors of shape (..., P), shape (..., R)."""
        return _batched(self._matvec, vectors, 8 * (self.num_rows + self.layout.size) * 4)

    def _rmatvec_impl(self, rows):
        x = self.problem.x
        per_sample_rows = jnp.reshape(rows, (rows.shape[0], self.problem.num_samples, -1))

        def one_sample(flat, weights, cotangents):
            _, pullback = jax.vjp(lambda theta: self._rows(theta, x, weights), flat)
            return jax.vmap(lambda cotangent: pullback(cotangent)[0])(cotangents)

        per_sample = jax.vmap(one_sample, in_axes=(0, 0, 1))(self.problem.params, self.problem.weights, per_sample_rows)
        return jnp.sum(per_sample, axis=0)

    def rmatvec(self, rows) -> jax.Array:
        """Return J~^T u for row vectors of shape (..., R), shape (..., P)."""
        return _batched(self._rmatvec, rows, 8 * (self.num_rows + self.layout.size) * 4)

    def row_chunks(self, *, progress: bool = False):
        """Yield (start, rows) with consecutive blocks of J~, each of shape (chunk K, P)."""
        problem = self.problem
        starts = [
            (sample, start) for sample in range(problem.num_samples) for start in range(0, problem.num_data, self.chunk_size)
        ]
        rows_per_sample = problem.num_data * problem.num_outputs
        for sample, start in tqdm(starts, desc="Jacobian chunks", disable=not show_progress(progress)):
            stop = min(start + self.chunk_size, problem.num_data)
            block = self._chunk_jacobian(
                problem.params[sample], problem.x[start:stop], problem.weights[sample, start:stop]
            )
            yield sample * rows_per_sample + start * problem.num_outputs, block

    def gram(self, *, progress: bool = False) -> jax.Array:
        """Return the (R, R) Gram J~ J~^T, one column block per chunk of rows (J~ (J~_c)^T)."""
        columns = []
        for _, block in self.row_chunks(progress=progress):
            columns.append(self.matvec(block).T)
        return jnp.concatenate(columns, axis=1)

    def diagonal(self, *, progress: bool = False) -> jax.Array:
        """Return diag(J~^T J~), shape (P,), from per-example squared gradients."""
        total = jnp.zeros(self.layout.size, dtype=jnp.float64)
        for _, block in self.row_chunks(progress=progress):
            total = total + jnp.sum(block**2, axis=0)
        return total

    def dense(self, *, progress: bool = False) -> jax.Array:
        """Return the (P, P) Fisher J~^T J~, accumulated over chunks of rows."""
        total = jnp.zeros((self.layout.size, self.layout.size), dtype=jnp.float64)
        for _, block in self.row_chunks(progress=progress):
            total = total + block.T @ block
        return total


def build_jacobian(problem: FisherProblem, *, structured: bool = True, chunk_size: int | None = None):
    """Return the factored operator where the model allows it (MLP, linear readout), else autodiff."""
    if structured and isinstance(problem.model, MLP):
        return mlp_jacobian(problem)
    if structured and has_linear_readout(problem.model, problem.layout):
        return linear_readout_jacobian(problem)
    return AutodiffJacobian(problem, chunk_size=chunk_size)
