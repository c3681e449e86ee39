"""The cos-net: a single hidden layer of cosines whose NNGP kernel is a free-field propagator."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from scipy import special

from brgnnft.models._checks import check_option, check_positive, check_positive_int
from brgnnft.models._linear import LinearReadout


def ball_volume(dim: int, radius: float) -> float:
    """Return the volume of the d-dimensional ball of the given radius."""
    return math.pi ** (dim / 2) * radius**dim / math.gamma(dim / 2 + 1)


class UniformBall(dist.Distribution):
    """Uniform distribution on the d-dimensional ball |b| <= radius (event shape (d,))."""

    support = constraints.real_vector
    reparametrized_params = []

    def __init__(self, dim: int, radius: float, *, validate_args=None):
        self.dim = dim
        self.radius = radius
        super().__init__(batch_shape=(), event_shape=(dim,), validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        key_direction, key_radius = jax.random.split(key)
        shape = sample_shape + self.batch_shape
        direction = jax.random.normal(key_direction, shape + (self.dim,))
        direction = direction / jnp.linalg.norm(direction, axis=-1, keepdims=True)
        radius = self.radius * jax.random.uniform(key_radius, shape + (1,)) ** (1.0 / self.dim)
        return direction * radius

    def log_prob(self, value):
        inside = jnp.linalg.norm(value, axis=-1) <= self.radius
        return jnp.where(inside, -math.log(ball_volume(self.dim, self.radius)), -jnp.inf)


class CosNet(LinearReadout):
    """Cos-net f(x) = sum_i a_i A(b_i) cos(b_i . x + c_i) with a_i ~ N(0, sigma_a^2 / N).

    With ``momenta="ball"`` (the default) b_i is uniform in the ball |b| <= ``cutoff`` = R and

    .. math::

        A(b)^2 = \\frac{2 V_d(R)}{\\sigma_a^2 (2\\pi)^d (b^2 + m^2)},

    so the two-point function is exactly the free scalar propagator of mass m with a sharp momentum
    cutoff R and measure d^dp / (2 pi)^d:

    .. math::

        G(x, y) = \\int_{|p| \\le R} \\frac{d^d p}{(2\\pi)^d} \\frac{e^{i p (x - y)}}{p^2 + m^2}.

    With ``momenta="gaussian"`` b_i ~ N(0, b_std^2 I) and A = 1, which gives the Gaussian kernel
    G = (sigma_a^2 / 2) exp(-b_std^2 |x - y|^2 / 2). The phases c_i are uniform in [-pi, pi].

    Parameters
    ----------
    width : int
        Number of neurons N.
    dim : int
        Input dimension d.
    mass, cutoff : float
        m and R of the propagator (``cutoff`` is unused for Gaussian momenta).
    momenta : {"ball", "gaussian"}
        Distribution of b.
    frozen : bool
        If True, (b, c) are fixed draws from ``seed`` and only ``a`` is Bayesian, so the model is
        linear in its Bayesian parameters; if False, ``a``, ``b`` and ``c`` are all sample sites.
    readout_var : float
        sigma_a^2.

    References
    ----------
    J. Halverson, "Building Quantum Field Theories Out of Neurons", arXiv:2112.04527.
    """

    def __init__(
        self,
        width: int,
        dim: int = 1,
        mass: float = 1.0,
        cutoff: float = 10.0,
        *,
        momenta: str = "ball",
        b_std: float = 1.0,
        frozen: bool = True,
        readout_var: float = 1.0,
        noise: float = 0.1,
        seed: int = 0,
    ):
        self.width = check_positive_int("width", width)
        self.dim = check_positive_int("dim", dim)
        self.mass = check_positive("mass", mass)
        self.cutoff = check_positive("cutoff", cutoff)
        self.momenta = check_option("momenta", momenta, ("ball", "gaussian"))
        self.b_std = check_positive("b_std", b_std)
        self.frozen = bool(frozen)
        self.readout_var = check_positive("readout_var", readout_var)
        self.noise = check_positive("noise", noise)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an integer, got {seed!r}")
        self.seed = seed
        if self.frozen:
            self.b, self.c = self._draw_momenta_and_phases(jax.random.key(seed), self.width)
        else:
            self.b = self.c = None

    def __repr__(self) -> str:
        return (
            f"CosNet(width={self.width}, dim={self.dim}, mass={self.mass}, cutoff={self.cutoff}, "
            f"momenta={self.momenta!r}, frozen={self.frozen}, noise={self.noise}, seed={self.seed})"
        )

    @property
    def is_linear(self) -> bool:
        """Whether only the readout is Bayesian, so the posterior is exactly Gaussian."""
        return self.frozen

    @property
    def num_features(self) -> int:
        return self.width

    @property
    def readout_variance(self) -> float:
        return self.readout_var / self.width

    def momentum_distribution(self) -> dist.Distribution:
        """Return the distribution of one neuron's momentum b (event shape (dim,))."""
        if self.momenta == "ball":
            return UniformBall(self.dim, self.cutoff)
        return dist.Normal(0.0, self.b_std).expand((self.dim,)).to_event(1)

    def _draw_momenta_and_phases(self, key, width):
        key_b, key_c = jax.random.split(key)
        b = self.momentum_distribution().sample(key_b, (width,))
        c = jax.random.uniform(key_c, (width,), minval=-jnp.pi, maxval=jnp.pi)
        return b, c

    def amplitude(self, b) -> jax.Array:
        """Return A(b) for momenta b of shape (..., dim)."""
        if self.momenta == "gaussian":
            return jnp.ones(b.shape[:-1])
        p2 = jnp.sum(b**2, axis=-1)
        numerator = 2.0 * ball_volume(self.dim, self.cutoff)
        denominator = self.readout_var * (2.0 * math.pi) ** self.dim * (p2 + self.mass**2)
        return jnp.sqrt(numerator / denominator)

    def _features_with(self, b, c, x):
        return self.amplitude(b) * jnp.cos(x @ b.T + c)

    def features(self, x) -> jax.Array:
        """Return A(b_i) cos(b_i . x + c_i), shape (n, N), for the frozen (b, c)."""
        if not self.frozen:
            raise ValueError("features are defined only for a frozen CosNet: build it with frozen=True")
        return self._features_with(self.b, self.c, x)

    def param_shapes(self, input_dim: int) -> dict[str, tuple[int, ...]]:
        """Return the Bayesian sites: ``a`` alone when frozen, else ``a``, ``b`` and ``c``."""
        if self.frozen:
            return {"a": (self.width,)}
        return {"a": (self.width,), "b": (self.width, self.dim), "c": (self.width,)}

    def apply(self, params: dict, x):
        """Evaluate f on x (n, d), batched over leading sample dimensions of ``params``."""
        if self.frozen:
            return super().apply(params, x)

        def single(sample):
            return self._features_with(sample["b"], sample["c"], x) @ sample["a"]

        function = single
        for _ in range(jnp.ndim(params["a"]) - 1):
            function = jax.vmap(function)
        return function(params)

    def sample_params(self, key, input_dim: int, num_samples: int | None = None):
        """Draw the Bayesian sites from the prior; with ``num_samples`` they get a leading (S,) axis."""
        if self.frozen:
            return super().sample_params(key, input_dim, num_samples)
        key_a, key_bc = jax.random.split(key)
        count = 1 if num_samples is None else num_samples
        a = jnp.sqrt(self.readout_variance) * jax.random.normal(key_a, (count, self.width))
        keys = jax.random.split(key_bc, count)
        b, c = jax.vmap(lambda k: self._draw_momenta_and_phases(k, self.width))(keys)
        params = {"a": a, "b": b, "c": c}
        if num_samples is None:
            params = {name: value[0] for name, value in params.items()}
        return params

    def __call__(self, x, y=None):
        if self.frozen:
            return super().__call__(x, y)
        n = x.shape[0]
        readout_std = jnp.sqrt(self.readout_variance)
        a = numpyro.sample("a", dist.Normal(0.0, readout_std).expand((self.width,)).to_event(1))
        b = numpyro.sample("b", self.momentum_distribution().expand((self.width,)).to_event(1))
        c = numpyro.sample("c", dist.Uniform(-jnp.pi, jnp.pi).expand((self.width,)).to_event(1))
        f = numpyro.deterministic("f", self._features_with(b, c, x) @ a)
        with numpyro.plate("obs", n):
            numpyro.sample("y", dist.Normal(f, self.noise), obs=y)

    def propagator(self, p) -> np.ndarray:
        """Return the momentum-space two-point function G(p) at momenta p of shape (..., dim).

        Ball momenta: 1 / (p^2 + m^2) for |p| <= R and 0 beyond. Gaussian momenta:
        (sigma_a^2 / 2) (2 pi)^d N(p; 0, b_std^2 I).
        """
        p = np.asarray(p, dtype=float)
        p2 = np.sum(p**2, axis=-1)
        if self.momenta == "ball":
            return np.where(np.sqrt(p2) <= self.cutoff, 1.0 / (p2 + self.mass**2), 0.0)
        density = np.exp(-p2 / (2 * self.b_std**2)) / (2 * math.pi * self.b_std**2) ** (self.dim / 2)
        return 0.5 * self.readout_var * (2 * math.pi) ** self.dim * density

    def kernel(self, x1, x2=None, *, num_nodes: int | None = None) -> np.ndarray:
        """Return the infinite-width two-point function G(x1, x2) of shape (n1, n2).

        For ball momenta the radial integral
        G(r) = S_{d-1} / (2 pi)^d int_0^R p^{d-1} Omega_d(p r) / (p^2 + m^2) dp, with
        Omega_d(z) = Gamma(d/2) (2/z)^{d/2-1} J_{d/2-1}(z) the angular average of e^{i p.r}, is done
        by Gauss-Legendre quadrature with ``num_nodes`` nodes (default: enough for the largest
        distance, at least 512).
        """
        x1 = np.asarray(x1, dtype=float)
        x2 = x1 if x2 is None else np.asarray(x2, dtype=float)
        r = np.linalg.norm(x1[:, None, :] - x2[None, :, :], axis=-1)
        if self.momenta == "gaussian":
            return 0.5 * self.readout_var * np.exp(-0.5 * self.b_std**2 * r**2)
        return self._ball_propagator_in_space(r, num_nodes)

    def _ball_propagator_in_space(self, r, num_nodes):
        d, radius = self.dim, self.cutoff
        if num_nodes is None:
            num_nodes = max(512, int(4 * radius * float(np.max(r, initial=0.0))) + 64)
        nodes, weights = np.polynomial.legendre.leggauss(num_nodes)
        p = 0.5 * radius * (nodes + 1.0)
        weights = 0.5 * radius * weights
        z = p * r[..., None]
        angular = _angular_average(d, z)
        sphere_area = 2 * math.pi ** (d / 2) / math.gamma(d / 2)
        integrand = p ** (d - 1) / (p**2 + self.mass**2) * angular
        return sphere_area / (2 * math.pi) ** d * np.sum(weights * integrand, axis=-1)


def _angular_average(dim: int, z: np.ndarray) -> np.ndarray:
    """Return the average of exp(i p.r) over directions, Gamma(d/2) (2/z)^(d/2-1) J_(d/2-1)(z), at z = |p||r|.

    One and three dimensions use their elementary forms cos z and sin z / z, which are far faster
    than the Bessel function.
    """
    if dim == 1:
        return np.cos(z)
    if dim == 3:
        return np.sinc(z / np.pi)
    order = dim / 2 - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        angular = math.gamma(dim / 2) * (2.0 / z) ** order * special.jv(order, z)
    return np.where(z == 0.0, 1.0, angular)
