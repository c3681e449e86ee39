"""Detection of the critical cutoff of a BRG flow, with a bootstrap interval over members."""

from dataclasses import dataclass

import jax
import numpy as np

from brgnnft.models._checks import check_key, check_option, check_positive, check_positive_int

OBSERVABLES = ("test_mse", "f_sd")
Z_SCORE = 2.0


@dataclass(frozen=True)
class CriticalCutoff:
    """The critical cutoff Lambda_C of a flow and how it was found.

    Attributes
    ----------
    value : float
        Lambda_C, NaN when no cutoff of the grid crosses the threshold.
    low, high : float
        2.5 % and 97.5 % bootstrap percentiles over ensemble members. A bound is inf where more
        than 2.5 % of the resamples do not cross within the grid, and NaN with a single member.
    index : int or None
        Position of Lambda_C in the cutoff grid.
    found : bool
    observable : str
    tolerance : float
    baseline : float
        The observable of the trained (not coarse-grained) ensemble.
    """

    value: float
    low: float
    high: float
    index: int | None
    found: bool
    observable: str
    tolerance: float
    baseline: float

    @property
    def attrs(self) -> dict:
        """Plain attributes for a flow DataTree."""
        return {
            "critical_cutoff": self.value,
            "critical_cutoff_low": self.low,
            "critical_cutoff_high": self.high,
            "critical_observable": self.observable,
            "critical_tolerance": self.tolerance,
        }


def _observable_per_member(flow, observable):
    """Return the observable's member-level ingredients: (coarse (K, S, ...), trained (S, ...)).

    ``test_mse`` is the mean over members of each member's MSE; ``f_sd`` the mean over test points
    of the standard deviation of f over members, so its ingredients are f itself.
    """
    if observable == "test_mse":
        coarse = flow["flow"]["member_mse"].values
        trained = flow["flow"]["trained_member_mse"].values
        return coarse.reshape(coarse.shape[0], -1), trained.reshape(-1)
    f = flow["posterior"]["f"].values
    trained = flow["trained"]["f"].values
    return f.reshape(f.shape[0], -1, f.shape[-1]), trained.reshape(-1, trained.shape[-1])


def _evaluate(observable, coarse, trained, weights):
    """Return the observable at every cutoff and for the trained ensemble, for member weights (B, S)."""
    total = weights.sum(axis=1, keepdims=True)
    if observable == "test_mse":
        return (weights @ coarse.T) / total, (weights @ trained) / total[:, 0]
    mean = np.einsum("bs,ksm->bkm", weights, coarse) / total[:, :, None]
    second = np.einsum("bs,ksm->bkm", weights, coarse**2) / total[:, :, None]
    coarse_sd = np.sqrt(np.maximum(second - mean**2, 0.0)).mean(axis=-1)
    trained_mean = weights @ trained / total
    trained_second = weights @ trained**2 / total
    trained_sd = np.sqrt(np.maximum(trained_second - trained_mean**2, 0.0)).mean(axis=-1)
    return coarse_sd, trained_sd


def flow_cutoffs(statistics) -> np.ndarray:
    """Return the cutoffs of a flow's ``flow`` group: its ``cutoff`` dimension, or the
    ``cutoff_equivalent`` Lambda(t) along the ``flow_time`` dimension of a diffusion flow."""
    if "cutoff" in statistics.dims:
        return statistics["cutoff"].values
    if "flow_time" in statistics.dims and "cutoff_equivalent" in statistics.variables:
        return statistics["cutoff_equivalent"].values
    raise ValueError(
        f"the 'flow' group has dims {tuple(statistics.dims)}: expected a 'cutoff' dimension, or 'flow_time' "
        "with the coordinate 'cutoff_equivalent' (pass the output of information_shell_flow or diffusion_flow)"
    )


def _first_crossing(excess, threshold):
    crossed = excess > threshold
    return np.where(crossed.any(axis=-1), crossed.argmax(axis=-1), -1)


def critical_cutoff(
    flow,
    *,
    observable: str = "test_mse",
    tolerance: float = 0.1,
    num_bootstrap: int = 1000,
    key=None,
) -> CriticalCutoff:
    """Find the critical cutoff Lambda_C of a flow: where coarse graining starts to cost accuracy.

    Parameters
    ----------
    flow : DataTree from ``information_shell_flow`` or ``diffusion_flow``.
        For a diffusion flow the cutoffs are its ``cutoff_equivalent`` Lambda(t), so Lambda_C and
        its interval are in the same units as for the information shell.
    observable : {"test_mse", "f_sd"}
    tolerance : float
        Relative rise over the trained value that counts as a change.
    num_bootstrap : int
        Bootstrap resamples of the ensemble members for the interval.
    key : jax.random key, optional
        For the bootstrap; default ``jax.random.key(0)``, so the interval is reproducible.

    Notes
    -----
    With O(Lambda) the observable at cutoff Lambda and O_0 its value for the trained ensemble,
    Lambda_C is the smallest cutoff of the grid with

    .. math:: O(\\Lambda) - O_0 > \\text{tolerance} \\cdot |O_0| + 2\\, \\mathrm{se}(\\Lambda),

    where se is the bootstrap standard error of O(Lambda) - O_0 over ensemble members (members are
    resampled jointly at every cutoff, so the difference is paired). The interval is formed by
    the 2.5 % and 97.5 % percentiles of Lambda_C over the resamples, each found with the same
    threshold.
    """
    check_option("observable", observable, OBSERVABLES)
    tolerance = check_positive("tolerance", tolerance)
    num_bootstrap = check_positive_int("num_bootstrap", num_bootstrap)
    key = jax.random.key(0) if key is None else check_key(key)
    if "flow" not in flow.children:
        raise ValueError("the DataTree has no 'flow' group: pass the output of information_shell_flow")

    cutoffs = flow_cutoffs(flow["flow"])
    coarse, trained = _observable_per_member(flow, observable)
    num_members = trained.shape[0]
    estimate, baseline = _evaluate(observable, coarse, trained, np.ones((1, num_members)))
    estimate, baseline = estimate[0], float(baseline[0])

    seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    counts = np.random.default_rng(seed).multinomial(num_members, np.full(num_members, 1 / num_members), num_bootstrap)
    resampled, resampled_baseline = _evaluate(observable, coarse, trained, counts.astype(np.float64))
    excess = resampled - resampled_baseline[:, None]
    standard_error = excess.std(axis=0, ddof=1) if num_members > 1 else np.zeros_like(estimate)
    threshold = tolerance * abs(baseline) + Z_SCORE * standard_error

    index = int(_first_crossing(estimate - baseline, threshold))
    found = index >= 0
    boot_index = _first_crossing(excess, threshold)
    boot_values = np.where(boot_index >= 0, cutoffs[np.maximum(boot_index, 0)], np.inf)
    low, high = (np.percentile(boot_values, [2.5, 97.5], method="inverted_cdf") if num_members > 1 else (np.nan, np.nan))
    return CriticalCutoff(
        value=float(cutoffs[index]) if found else float("nan"),
        low=float(low),
        high=float(high),
        index=index if found else None,
        found=found,
        observable=observable,
        tolerance=tolerance,
        baseline=baseline,
    )
