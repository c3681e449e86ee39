"""Information-shell coarse graining of posterior samples at one cutoff.

Directions of parameter space are split by the Fisher information at a reference point: stiff
directions (eigenvalue lambda_A >= Lambda) keep the posterior's values, sloppy ones
(lambda_A < Lambda, including the null space of I) are replaced according to a prescription:

- ``prior``: redraw the sloppy part from the prior conditioned on the stiff coordinates. For a
  zero-mean Gaussian prior N(0, D) and stiff directions V (P, k) this is

  .. math:: \\theta_\\Lambda = \\theta_0 + D V (V^T D V)^{-1} V^T (\\theta - \\theta_0),
            \\quad \\theta_0 \\sim N(0, D),

  which keeps V^T theta_Lambda = V^T theta and reduces to P_> theta + P_< theta_0 when D is
  isotropic.
- ``marginalize``: integrate the sloppy directions out under their flat (Jeffreys) measure, so the
  effective theory lives on the stiff directions and each sample keeps its stiff projection P_> theta.
- ``prune``: set the sloppy coordinates to the prior mean, zero for the models of this library, which
  gives P_> theta as well; the two are recorded separately because they differ for priors with a
  nonzero mean.

In the diagonal basis the stiff set is the parameters with I_AA >= Lambda and the projections are
0/1 masks.

References
----------
J. N. Howard, M. S. Klinger, A. Maiti, A. G. Stapleton, "Bayesian RG Flow in Neural Network Field
Theories", arXiv:2405.17538; D. S. Berman, M. S. Klinger, A. G. Stapleton, "Bayesian
Renormalization", arXiv:2305.10491.
"""

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from brgnnft.brg._flatten import ParamLayout, in_float64
from brgnnft.models._checks import check_key, check_option, check_positive

PRESCRIPTIONS = ("prior", "marginalize", "prune")


def posterior_params(posterior, model, input_dim: int, *, group: str = "posterior") -> dict[str, np.ndarray]:
    """Return the parameter sites of a DataTree group stacked over (chain, draw) into (S, ...)."""
    if group not in posterior.children:
        raise ValueError(f"the DataTree has no {group!r} group: pass the output of a brgnnft.inference route")
    dataset = posterior[group]
    shapes = model.param_shapes(input_dim)
    missing = [name for name in shapes if name not in dataset.data_vars]
    if missing:
        raise ValueError(
            f"the {group!r} group lacks the parameter sites {missing} of {model!r}: pass the posterior "
            "that this model produced"
        )
    return {
        name: np.asarray(dataset[name].values, dtype=np.float64).reshape((-1,) + tuple(shapes[name]))
        for name in shapes
    }


def prior_variance_vector(model, layout: ParamLayout, input_dim: int) -> np.ndarray:
    """Return the prior variance of every flat parameter, shape (P,), in the layout's order."""
    variances = model.prior_variance(input_dim)
    sites = {name: np.full(shape, variances[name], dtype=np.float64) for name, shape in zip(layout.names, layout.shapes)}
    return np.asarray(layout.flatten(sites))


@dataclass(frozen=True)
class ShellSplit:
    """The stiff set of one cutoff: ``num_stiff`` leading eigendirections, or a 0/1 parameter mask."""

    cutoff: float
    num_stiff: int
    num_params: int
    stiff_mask: np.ndarray | None = None

    @property
    def fraction_coarse_grained(self) -> float:
        """Fraction of the P directions replaced by the prescription."""
        return 1.0 - self.num_stiff / self.num_params


def split_at(fisher, cutoff: float) -> ShellSplit:
    """Return the stiff set of ``fisher`` at ``cutoff``: eigenvalues (or diagonal entries) >= cutoff."""
    if fisher.basis == "diagonal":
        mask = fisher.diagonal_vector() >= cutoff
        return ShellSplit(cutoff, int(mask.sum()), fisher.num_params, mask)
    return ShellSplit(cutoff, int(np.sum(fisher.eigenvalues >= cutoff)), fisher.num_params)


class ShellCoarseGrainer:
    """Coarse grains flat parameter samples (S, P) at any cutoff, with one replacement draw.

    The replacement theta_0 (prior draws, or zeros) is drawn once, so flows over several cutoffs
    are nested: a direction replaced at one cutoff is replaced by the same value at every larger one.
    """

    def __init__(self, fisher, theta: np.ndarray, prior_variance: np.ndarray, *, prescription: str, key):
        self.fisher = fisher
        self.theta = theta
        self.prescription = prescription
        self.prior_variance = prior_variance
        self.isotropic = bool(np.allclose(prior_variance, prior_variance[0], rtol=1e-12, atol=0.0))
        if prescription == "prior":
            draws = jax.random.normal(key, theta.shape, dtype=jnp.float64)
            self.replacement = np.sqrt(prior_variance) * np.asarray(draws)
        else:
            self.replacement = np.zeros_like(theta)
        if fisher.basis == "eigen":
            self.coordinates = fisher.eigenvectors.coordinates(theta - self.replacement)
            self._weighted_gram = None

    def _prior_weighted_gram(self, chunk_size: int = 256) -> np.ndarray:
        """Return V^T D V (r, r), built a block of columns at a time so V (P, r) is never formed."""
        if self._weighted_gram is None:
            basis = self.fisher.eigenvectors
            gram = np.empty((basis.size, basis.size))
            for start in range(0, basis.size, chunk_size):
                units = np.eye(basis.size)[start : start + chunk_size]
                columns = self.prior_variance * basis.combine(units, flat=True)
                gram[start : start + len(units)] = basis.coordinates(columns)
            self._weighted_gram = 0.5 * (gram + gram.T)
        return self._weighted_gram

    def __call__(self, split: ShellSplit) -> np.ndarray:
        """Return the coarse-grained samples theta_Lambda, shape (S, P)."""
        if split.stiff_mask is not None:
            return np.where(split.stiff_mask, self.theta, self.replacement)

        k = split.num_stiff
        if k == 0:
            return self.replacement.copy()
        coordinates = self.coordinates[:, :k]
        if self.prescription != "prior" or self.isotropic:
            stiff = self.fisher.eigenvectors.select(slice(0, k)).combine(coordinates, flat=True)
            return self.replacement + stiff
        solved = np.linalg.solve(self._prior_weighted_gram()[:k, :k], coordinates.T)
        stiff = self.fisher.eigenvectors.select(slice(0, k)).combine(solved.T, flat=True)
        return self.replacement + self.prior_variance * stiff


@in_float64
def coarse_grain(posterior, model, fisher, cutoff, *, prescription: str = "prior", key, x=None, group: str = "posterior"):
    """Coarse grain every posterior sample at one information cutoff.

    Parameters
    ----------
    posterior : DataTree
        Output of a ``brgnnft.inference`` route.
    model : the model that produced it.
    fisher : FisherInformation
        The metric at the reference point; its ``basis`` ("eigen" or "diagonal") is the basis of the
        coarse graining.
    cutoff : float
        Lambda > 0: directions with eigenvalue (or diagonal entry) below it are sloppy.
    prescription : {"prior", "marginalize", "prune"}
    key : jax.random key (used by "prior").
    x : array (m, d), optional
        Inputs at which to evaluate f; default the training inputs in ``constant_data``.

    Returns
    -------
    params : dict of site name to (S, ...) arrays, the coarse-grained parameters.
    f : ndarray (S, m), the coarse-grained network at x.
    split : ShellSplit, with the number of stiff directions and the fraction coarse grained.
    """
    check_key(key)
    check_option("prescription", prescription, PRESCRIPTIONS)
    cutoff = check_positive("cutoff", cutoff)
    x = np.asarray(posterior["constant_data"]["x"].values if x is None else x, dtype=np.float64)
    input_dim = int(posterior["constant_data"]["x"].shape[1])

    samples = posterior_params(posterior, model, input_dim, group=group)
    theta = np.asarray(fisher.layout.flatten(samples))
    variances = prior_variance_vector(model, fisher.layout, input_dim)
    grainer = ShellCoarseGrainer(fisher, theta, variances, prescription=prescription, key=key)
    split = split_at(fisher, cutoff)
    coarse = grainer(split)

    params = {name: np.asarray(value) for name, value in fisher.layout.unflatten(coarse).items()}
    f = np.asarray(model.apply({name: jnp.asarray(value) for name, value in params.items()}, jnp.asarray(x)))
    return params, f, split
