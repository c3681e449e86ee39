"""Random-features networks: frozen random hidden layers and a Bayesian linear readout."""

import jax
import jax.numpy as jnp

from brgnnft.models._checks import check_positive
from brgnnft.models._linear import LinearReadout
from brgnnft.models.mlp import check_hidden, resolve_layer_activations


class RandomFeatures(LinearReadout):
    """Network whose hidden layers are frozen random draws and whose readout ``a`` is Bayesian.

    f(x) = Phi(x) a with Phi(x) = h_{L-1}(x) the last hidden layer of a random network drawn once
    from ``seed``. The model is linear in its Bayesian parameters, so its posterior is exactly
    Gaussian and randomised-MAP ensembles sample it exactly.

    Parameters
    ----------
    hidden : sequence of int
        Hidden widths; the last one is the number of features P.
    activation : str, callable or sequence
        One activation for all hidden layers or one per layer.
    noise : float
        Observation standard deviation.
    seed : int
        Seed of the frozen hidden layers, stored on the model (``hidden_params(input_dim)``).
    weight_var, bias_var : float
        Variances of the frozen hidden weights and biases.
    bias : bool
        Whether the frozen hidden layers have biases.
    fan_in_scaling : bool
        If True, weights have variance weight_var / fan_in and the readout readout_var / P; if
        False, weight_var and readout_var unscaled (the original BRG-NNFT experiment's choice).
    readout_var : float
        Readout prior variance before fan-in scaling.
    """

    def __init__(
        self,
        hidden=(512,),
        activation="relu",
        *,
        noise: float = 0.1,
        seed: int = 0,
        weight_var: float = 1.0,
        bias_var: float = 1.0,
        bias: bool = True,
        fan_in_scaling: bool = True,
        readout_var: float = 1.0,
    ):
        self.hidden = check_hidden(hidden)
        if not self.hidden:
            raise ValueError("hidden must name at least one hidden layer, got an empty sequence")
        self.activation_names, self.activations = resolve_layer_activations(activation, len(self.hidden))
        self.noise = check_positive("noise", noise)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an integer, got {seed!r}")
        self.seed = seed
        self.weight_var = check_positive("weight_var", weight_var)
        self.bias = bool(bias)
        self.bias_var = check_positive("bias_var", bias_var) if self.bias else 0.0
        self.fan_in_scaling = bool(fan_in_scaling)
        self.readout_var = check_positive("readout_var", readout_var)
        self._hidden_params: dict[int, dict] = {}

    @classmethod
    def paper(cls, *, noise: float = 1.0, seed: int = 0) -> "RandomFeatures":
        """Build the network of the original BRG-NNFT experiment (arXiv:2405.17538).

        Linear(2, 10) -> Linear(10, 10) + ReLU -> Linear(10, 2000) + ReLU -> Linear(2000, 1), no
        biases, every weight N(0, 1) without fan-in scaling, only the 2000 readout weights trained.
        The experiment has no observation noise; ``noise`` = 1 is the sigma of its regression
        Fisher and the likelihood used for a proper posterior.
        """
        return cls(
            hidden=(10, 10, 2000),
            activation=("identity", "relu", "relu"),
            noise=noise,
            seed=seed,
            weight_var=1.0,
            bias=False,
            fan_in_scaling=False,
            readout_var=1.0,
        )

    def __repr__(self) -> str:
        return (
            f"RandomFeatures(hidden={self.hidden}, activation={self.activation_names}, "
            f"noise={self.noise}, seed={self.seed}, bias={self.bias}, "
            f"fan_in_scaling={self.fan_in_scaling})"
        )

    @property
    def num_features(self) -> int:
        """Number of readout weights P (the last hidden width)."""
        return self.hidden[-1]

    @property
    def readout_variance(self) -> float:
        """Prior variance of each readout weight."""
        return self.readout_var / self.num_features if self.fan_in_scaling else self.readout_var

    def hidden_params(self, input_dim: int) -> dict[str, jax.Array]:
        """Return the frozen hidden weights for inputs of dimension ``input_dim`` (drawn once from the seed)."""
        if input_dim not in self._hidden_params:
            self._hidden_params[input_dim] = self._draw_hidden_params(input_dim)
        return self._hidden_params[input_dim]

    def _draw_hidden_params(self, input_dim: int) -> dict[str, jax.Array]:
        # The draw may first be requested inside a traced function; evaluating it eagerly keeps
        # tracers out of the cache.
        with jax.ensure_compile_time_eval():
            widths = (int(input_dim), *self.hidden)
            key = jax.random.key(self.seed)
            params = {}
            for layer in range(1, len(widths)):
                key, key_weight, key_bias = jax.random.split(key, 3)
                fan_in = widths[layer - 1]
                variance = self.weight_var / fan_in if self.fan_in_scaling else self.weight_var
                params[f"w{layer}"] = jnp.sqrt(variance) * jax.random.normal(key_weight, (fan_in, widths[layer]))
                if self.bias:
                    params[f"b{layer}"] = jnp.sqrt(self.bias_var) * jax.random.normal(key_bias, (widths[layer],))
        return params

    def features(self, x) -> jax.Array:
        """Return the frozen feature matrix Phi(x) of shape (n, P)."""
        params = self.hidden_params(x.shape[-1])
        h = x
        for layer, activation in enumerate(self.activations, start=1):
            z = h @ params[f"w{layer}"]
            if self.bias:
                z = z + params[f"b{layer}"]
            h = activation(z)
        return h
