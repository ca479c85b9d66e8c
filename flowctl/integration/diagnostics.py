"""Can the error of an importance-sampling estimate be trusted? Checks from its weights.

With an unconverged sampler the weights w = f/q have a heavy right tail that the points
rarely reach: the sample variance then underestimates the true one, and an estimate many
sigma off looks normal. :func:`diagnose` looks at the weights of the estimate (fresh points,
w [N], may be signed or zero) and reports:

* ``ess_fraction``: Kish ESS/N = (sum|w|)^2 / (N sum w^2); ``ess`` = ESS in points;
* ``max_weight_share``: max|w| / sum|w|, the largest single point's share of the estimate;
* ``error_of_error``: relative spread std(s_b)/mean(s_b) of the standard errors s_b of
  ``subbatches`` independent sub-batches (for light-tailed weights about
  sqrt((kurtosis - 1) / (4 n_b)), a few per cent; a heavy tail makes it O(1));
* ``pareto_k``: the shape k of a generalized Pareto fit to the largest |w| (the tail of
  Pareto-smoothed importance sampling, Vehtari et al., arXiv:1507.02646, fitted with the
  profile-likelihood estimator of Zhang & Stephens 2009 and PSIS's weak prior); k > 0.5: the
  variance of w is infinite in the fitted tail; k > 0.7: the estimate and its error are not
  reliable (PSIS);
* ``tail_variance_share``: the share of the estimate's variance carried by those largest
  points. A tail with k > 1/2 has infinite variance, and then its largest points carry
  almost all of the sample variance (>= 0.98 for k ~ 0.7 at N = 5e4). Nearly constant
  weights (ESS/N 0.999, max w / mean w ~ 1.5) can have a top that looks steep on its own,
  tiny scale (k ~ 0.8) while it carries ~15 % of the variance: such a top can move neither
  the estimate nor its error, and k alone would be a false alarm.

``reliable`` is False, with one reason per failed check, when k > ``k_max`` while the tail
carries at least ``min_tail_share`` of the variance, or ESS <
``min_ess`` points, or the largest weight holds more than ``max_share`` of the sum, or the
error of the error exceeds ``max_error_of_error``. The thresholds are the defaults of the
``reliability`` config section.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["THRESHOLDS", "Reliability", "TailFit", "check_thresholds", "diagnose",
           "error_of_error", "gpd_tail", "pareto_k", "tail_variance_share"]

THRESHOLDS: dict[str, float] = {"k_max": 0.7, "min_tail_share": 0.5, "min_ess": 100.0,
                                "max_share": 0.01, "max_error_of_error": 0.5, "subbatches": 20}
"""Default limits of :func:`diagnose` (``reliability`` section of the integrate configs)."""


def check_thresholds(rel: dict[str, Any]) -> None:
    """Validate a ``reliability`` section (the keys of :data:`THRESHOLDS` and
    ``max_nonfinite``) before any work; one-line :class:`~.errors.IntegrationError`."""
    from flowctl.integration.errors import IntegrationError

    for key in ("k_max", "min_tail_share", "min_ess", "max_share", "max_error_of_error",
                "max_nonfinite"):
        v = rel[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise IntegrationError(f"reliability.{key} must be a number >= 0, got {v!r}")
    for key in ("max_nonfinite", "min_tail_share"):
        if rel[key] > 1:
            raise IntegrationError(f"reliability.{key} must be a fraction in [0, 1], got "
                                   f"{rel[key]!r}")
    v = rel.get("subbatches")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or v < 2:
        raise IntegrationError(f"reliability.subbatches must be an integer >= 2, got {v!r}")


@dataclass
class TailFit:
    """A generalized Pareto fit to the largest |w|: shape ``k``, scale ``sigma`` (units of w)
    of the exceedances over the threshold ``u`` (the largest |w| below the tail), ``m`` tail
    points (nan fields when there are too few non-zero weights)."""

    k: float
    sigma: float
    u: float
    m: int


def gpd_tail(w: np.ndarray, tail: int | None = None) -> TailFit:
    """Generalized Pareto fit to the tail of |w| [N] (nan with < 20 non-zero weights).

    The tail is the ``tail`` largest |w| (default min(N/5, 3 sqrt(N)) as in PSIS); the fit is
    to their exceedances over the next largest value. Zhang & Stephens' estimator: the
    profile likelihood over a grid of b = -k/sigma, averaged with the posterior weights of the
    grid; sigma = -k/b from that k; then PSIS's weakly informative prior on k (pulls toward
    0.5 with weight 10 points).
    """
    nan = TailFit(math.nan, math.nan, math.nan, 0)
    a = np.sort(np.abs(np.asarray(w, dtype=np.float64).ravel()))
    a = a[a > 0]
    n_all = len(a)
    if n_all < 20:
        return nan
    m = int(tail or min(math.ceil(0.2 * n_all), math.ceil(3 * math.sqrt(n_all))))
    m = max(5, min(m, n_all - 1))
    u = float(a[-m - 1])
    x = a[-m:] - u
    x = x[x > 0]
    n = len(x)
    if n < 5 or x[-1] <= 0:
        return nan
    scale = float(x[-1])
    x = x / scale  # scale-free: k does not depend on the units of w
    grid = 30 + int(math.sqrt(n))
    quart = x[max(int(n / 4 + 0.5) - 1, 0)]
    j = np.arange(1, grid + 1)
    b = 1.0 / x[-1] + (1.0 - np.sqrt(grid / (j - 0.5))) / (3.0 * quart)
    with np.errstate(divide="ignore", invalid="ignore"):
        k_b = np.log1p(-b[:, None] * x[None, :]).mean(1)  # profile MLE of k at each b
        loglik = n * (np.log(-b / k_b) - k_b - 1.0)
    ok = np.isfinite(loglik)
    if not ok.any():
        return nan
    b, loglik = b[ok], loglik[ok]
    post = np.exp(loglik - loglik.max())
    post /= post.sum()
    b_hat = float(np.sum(b * post))
    k = float(np.log1p(-b_hat * x).mean())
    sigma = -k / b_hat * scale if b_hat != 0 else math.nan
    return TailFit((n * k + 10 * 0.5) / (n + 10), sigma, u, m)


def pareto_k(w: np.ndarray, tail: int | None = None) -> float:
    """Shape k of a generalized Pareto fit to the tail of |w| [N] (nan with < 20 non-zero);
    see :func:`gpd_tail`."""
    return gpd_tail(w, tail).k


def tail_variance_share(w: np.ndarray, m: int | None = None) -> float:
    """Share of sum (w - mean w)^2 [N] carried by the ``m`` largest |w| (the points of the
    Pareto fit; default min(N/5, 3 sqrt(N)) of the non-zero ones); nan when N < 2 or all w
    are equal.

    For a tail with shape k > 1/2 the variance is infinite and the largest points carry a
    share that tends to 1 as N grows (>= 0.98 at k ~ 0.7 and N = 5e4 in the tests); for an
    exponential tail (k = 0) it is ~0.26 at N = 5e4 and falls with N.
    """
    w = np.asarray(w, dtype=np.float64).ravel()
    n = len(w)
    if n < 2:
        return math.nan
    a = np.abs(w)
    n_nz = int(np.count_nonzero(a))
    if m is None:
        m = min(math.ceil(0.2 * n_nz), math.ceil(3 * math.sqrt(n_nz))) if n_nz else 0
    m = max(0, min(int(m), n))
    d2 = (w - w.mean()) ** 2
    total = float(d2.sum())
    if total <= 0:
        return math.nan
    if m == 0:
        return 0.0
    top = np.argpartition(a, n - m)[n - m:]
    return float(d2[top].sum() / total)


def error_of_error(w: np.ndarray, subbatches: int = 20) -> float:
    """std(s_b) / mean(s_b) of the standard errors s_b of ``subbatches`` consecutive equal
    parts of w [N] (nan when a part has < 2 points or all errors are 0)."""
    w = np.asarray(w, dtype=np.float64).ravel()
    n_b = len(w) // subbatches
    if subbatches < 2 or n_b < 2:
        return math.nan
    parts = w[: n_b * subbatches].reshape(subbatches, n_b)
    s = parts.std(1, ddof=1) / math.sqrt(n_b)
    mean = float(s.mean())
    return float(s.std(ddof=1) / mean) if mean > 0 else math.nan


@dataclass
class Reliability:
    """The diagnostics of one estimate (see the module docstring) and the verdict."""

    reliable: bool
    reasons: list[str] = field(default_factory=list)
    ess: float = 0.0
    ess_fraction: float = 0.0
    max_weight_share: float = 0.0
    error_of_error: float = math.nan
    pareto_k: float = math.nan
    tail_variance_share: float = math.nan
    n: int = 0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = None
        d["reason"] = "; ".join(self.reasons) if self.reasons else None
        return d

    def summary(self, name: str = "flowctl") -> str:
        """One line: what was checked, and if unreliable, why and what to do."""
        k = "-" if math.isnan(self.pareto_k) else f"{self.pareto_k:.2f}"
        eoe = "-" if math.isnan(self.error_of_error) else f"{self.error_of_error:.2f}"
        tv = ("-" if math.isnan(self.tail_variance_share)
              else f"{100 * self.tail_variance_share:.0f}%")
        stats = (f"ESS/N {self.ess_fraction:.3g}, max weight share {self.max_weight_share:.2g}, "
                 f"error of the error {eoe}, Pareto k {k} (tail's share of the variance {tv})")
        if self.reliable:
            return f"{name}: error estimate looks reliable ({stats})"
        return (f"{name}: UNRELIABLE error estimate ({'; '.join(self.reasons)}): the true "
                "error can be much larger than reported; train longer (more calls, "
                "buffered steps), anneal (trainer.anneal=0.7) or use channels")


def diagnose(w: np.ndarray, *, k_max: float = 0.7, min_tail_share: float = 0.5,
             min_ess: float = 100.0, max_share: float = 0.01, max_error_of_error: float = 0.5,
             subbatches: int = 20, extra: list[str] | None = None) -> Reliability:
    """:class:`Reliability` of the estimate mean(w) from the weights ``w [N]``; ``extra``
    reasons (e.g. a missed peak, non-finite values) make it unreliable too.

    Pareto k > ``k_max`` counts only when the tail points carry at least ``min_tail_share``
    of the weights' variance (:func:`tail_variance_share`): a tail that heavy makes the
    largest points dominate the variance, so a small share says that the fit describes a
    bounded top (near-constant weights whose largest values are steep only on their own,
    tiny scale), which can neither move the estimate nor its error."""
    w = np.asarray(w, dtype=np.float64).ravel()
    a = np.abs(w)
    n = len(w)
    s1, s2 = float(a.sum()), float(np.sum(a**2))
    ess = s1**2 / s2 if s2 > 0 else 0.0
    share = float(a.max() / s1) if s1 > 0 else 1.0
    eoe = error_of_error(w, int(subbatches))
    fit = gpd_tail(w)
    k = fit.k
    tail = tail_variance_share(w, fit.m) if fit.m else math.nan
    reasons = list(extra or [])
    if s1 == 0:
        reasons.append("all weights are zero")
    if not math.isnan(k) and k > k_max and not tail < min_tail_share:
        reasons.append(f"Pareto k {k:.2f} > {k_max:g}: heavy tail of the weights (its "
                       f"{fit.m} largest carry {100 * tail:.0f}% of the variance)")
    if ess < min_ess:
        reasons.append(f"ESS {ess:.0f} < {min_ess:g} points")
    if share > max_share:
        reasons.append(f"one point holds {100 * share:.2g}% of the sum of weights "
                       f"(> {100 * max_share:g}%)")
    if not math.isnan(eoe) and eoe > max_error_of_error:
        reasons.append(f"errors of {int(subbatches)} sub-batches scatter by {100 * eoe:.0f}% "
                       f"(> {100 * max_error_of_error:g}%)")
    return Reliability(not reasons, reasons, ess, ess / n if n else 0.0, share, eoe, k,
                       tail, n)
