"""Fully connected Bayesian neural networks as NumPyro models."""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from brgnnft.models._checks import check_positive, check_positive_int
from brgnnft.models._likelihoods import check_likelihood, observation_distribution
from brgnnft.models.activations import resolve_activation


def resolve_layer_activations(activation, num_hidden: int) -> tuple[tuple[str, ...], tuple[Callable, ...]]:
    """Return one (name, function) per hidden layer from one activation or a sequence of them."""
    if isinstance(activation, Sequence) and not isinstance(activation, str):
        if len(activation) != num_hidden:
            raise ValueError(
                f"activation lists {len(activation)} entries but there are {num_hidden} hidden "
                "layers: give one activation per hidden layer, or a single one for all"
            )
        resolved = [resolve_activation(entry) for entry in activation]
    else:
        resolved = [resolve_activation(activation)] * num_hidden
    names = tuple(name for name, _ in resolved)
    functions = tuple(function for _, function in resolved)
    return names, functions


def check_hidden(hidden) -> tuple[int, ...]:
    """Return the hidden widths as a tuple of positive integers."""
    if isinstance(hidden, int):
        hidden = (hidden,)
    hidden = tuple(hidden)
    for width in hidden:
        check_positive_int("hidden width", width)
    return hidden


class MLP:
    """Fully connected Bayesian neural network with i.i.d. Gaussian weights and biases.

    The network is

    .. math::

        h_0 = x,\\quad z_l = h_{l-1} W_l + b_l,\\quad h_l = \\phi_l(z_l)\\ (l < L),\\quad f = z_L,

    with the standard 1/fan-in prior :math:`W_l \\sim N(0, \\sigma_w^2 / N_{l-1})`,
    :math:`b_l \\sim N(0, \\sigma_b^2)`, so that the infinite-width limit is the NNGP.

    Parameters
    ----------
    hidden : int or sequence of int
        Hidden widths (N_1, ..., N_{L-1}); an empty tuple gives a linear model.
    activation : str, callable, or sequence of them
        One activation for all hidden layers, or one per hidden layer. Names: relu, tanh, erf,
        gelu, sigmoid, cos, identity.
    weight_var, bias_var : float
        :math:`\\sigma_w^2` and :math:`\\sigma_b^2`.
    bias : bool
        Whether the layers have biases (sites ``b1``, ..., ``bL``).
    noise : float or None
        Observation standard deviation :math:`\\sigma` of the Gaussian likelihood. ``None`` puts a
        HalfNormal(``noise_scale``) prior on it (site ``noise``).
    out_dim : int
        Output dimension; ``f`` has shape (n,) when it is 1 and (n, out_dim) otherwise.
    likelihood : {"gaussian", "bernoulli", "categorical", "poisson"}
        Observation model; f is the mean, logit, class logits or log rate.

    Examples
    --------
    >>> import jax
    >>> from brgnnft.models import MLP
    >>> model = MLP(hidden=(32,), activation="tanh", noise=0.1)
    >>> params = model.sample_params(jax.random.key(0), input_dim=1)
    >>> model.apply(params, jax.numpy.ones((5, 1))).shape
    (5,)
    """

    def __init__(
        self,
        hidden=(64,),
        activation="relu",
        *,
        weight_var: float = 1.0,
        bias_var: float = 1.0,
        bias: bool = True,
        noise: float | None = 0.1,
        noise_scale: float = 1.0,
        out_dim: int = 1,
        likelihood: str = "gaussian",
    ):
        self.hidden = check_hidden(hidden)
        self.activation_names, self.activations = resolve_layer_activations(activation, len(self.hidden))
        self.weight_var = check_positive("weight_var", weight_var)
        self.bias = bool(bias)
        self.bias_var = check_positive("bias_var", bias_var) if self.bias else 0.0
        self.out_dim = check_positive_int("out_dim", out_dim)
        self.likelihood = check_likelihood(likelihood, self.out_dim)
        if likelihood == "gaussian":
            self.noise = check_positive("noise", noise, allow_none=True)
        else:
            self.noise = None
        self.noise_scale = check_positive("noise_scale", noise_scale)

    def __repr__(self) -> str:
        return (
            f"MLP(hidden={self.hidden}, activation={self.activation_names}, "
            f"weight_var={self.weight_var}, bias_var={self.bias_var}, bias={self.bias}, "
            f"noise={self.noise}, out_dim={self.out_dim}, likelihood={self.likelihood!r})"
        )

    @property
    def depth(self) -> int:
        """Number of weight layers L."""
        return len(self.hidden) + 1

    def layer_widths(self, input_dim: int) -> tuple[int, ...]:
        """Return (d, N_1, ..., N_{L-1}, out_dim)."""
        return (int(input_dim), *self.hidden, self.out_dim)

    def param_shapes(self, input_dim: int) -> dict[str, tuple[int, ...]]:
        """Return the shape of every parameter site, in layer order w1, b1, w2, b2, ..."""
        widths = self.layer_widths(input_dim)
        shapes = {}
        for layer in range(1, self.depth + 1):
            shapes[f"w{layer}"] = (widths[layer - 1], widths[layer])
            if self.bias:
                shapes[f"b{layer}"] = (widths[layer],)
        return shapes

    def prior_variance(self, input_dim: int) -> dict[str, float]:
        """Return the zero-mean Gaussian prior variance of every parameter site."""
        widths = self.layer_widths(input_dim)
        variances = {}
        for layer in range(1, self.depth + 1):
            variances[f"w{layer}"] = self.weight_var / widths[layer - 1]
            if self.bias:
                variances[f"b{layer}"] = self.bias_var
        return variances

    def sample_params(self, key, input_dim: int, num_samples: int | None = None) -> dict[str, jax.Array]:
        """Draw parameters from the prior; with ``num_samples`` every site gets a leading (S,) axis."""
        shapes = self.param_shapes(input_dim)
        variances = self.prior_variance(input_dim)
        leading = () if num_samples is None else (num_samples,)
        keys = jax.random.split(key, len(shapes))
        return {
            name: jnp.sqrt(variances[name]) * jax.random.normal(site_key, leading + shape)
            for site_key, (name, shape) in zip(keys, shapes.items())
        }

    def forward(self, params: dict, x) -> list[tuple[jax.Array, jax.Array]]:
        """Return ``(z_l, h_l)`` for every layer l = 1..L of one parameter sample (h_L = z_L)."""
        h = x
        layers = []
        for layer in range(1, self.depth + 1):
            z = h @ params[f"w{layer}"]
            if self.bias:
                z = z + params[f"b{layer}"]
            h = self.activations[layer - 1](z) if layer < self.depth else z
            layers.append((z, h))
        return layers

    def _apply_single(self, params: dict, x) -> jax.Array:
        f = self.forward(params, x)[-1][1]
        return f[..., 0] if self.out_dim == 1 else f

    def apply(self, params: dict, x) -> jax.Array:
        """Evaluate f on x (n, d), batched over leading sample dimensions of ``params``.

        With ``w1`` of shape (S1, ..., Sk, d, N_1) the result has shape (S1, ..., Sk, n) (or
        (..., n, out_dim)).
        """
        num_batch = jnp.ndim(params["w1"]) - 2
        function = self._apply_single
        for _ in range(num_batch):
            function = jax.vmap(function, in_axes=(0, None))
        return function(params, x)

    def kernel(self, x1, x2=None) -> jax.Array:
        """Return the NNGP kernel K(x1, x2) of the output, the infinite-width prior covariance."""
        from brgnnft.models.kernels import nngp_kernel

        x2 = x1 if x2 is None else x2
        return nngp_kernel(
            x1,
            x2,
            activations=self.activations_for_kernel(),
            weight_var=self.weight_var,
            bias_var=self.bias_var if self.bias else 0.0,
            bias=self.bias,
        )

    def activations_for_kernel(self) -> tuple:
        """Return, per hidden layer, the activation name where it is built in, else the callable."""
        return tuple(
            name if name in _BUILTIN_NAMES else function
            for name, function in zip(self.activation_names, self.activations)
        )

    def __call__(self, x, y=None):
        n, input_dim = x.shape
        params = {
            name: numpyro.sample(name, dist.Normal(0.0, jnp.sqrt(variance)).expand(shape).to_event(len(shape)))
            for (name, shape), variance in zip(
                self.param_shapes(input_dim).items(), self.prior_variance(input_dim).values()
            )
        }
        f = numpyro.deterministic("f", self._apply_single(params, x))
        noise = self.noise
        if self.likelihood == "gaussian" and noise is None:
            noise = numpyro.sample("noise", dist.HalfNormal(self.noise_scale))
        with numpyro.plate("obs", n):
            numpyro.sample("y", observation_distribution(self.likelihood, f, noise), obs=y)


_BUILTIN_NAMES = ("relu", "tanh", "erf", "gelu", "sigmoid", "cos", "identity")
