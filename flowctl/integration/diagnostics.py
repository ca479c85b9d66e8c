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
  reliable (PSIS).

``reliable`` is False, with one reason per failed check, when k > ``k_max``, or ESS <
``min_ess`` points, or the largest weight holds more than ``max_share`` of the sum, or the
error of the error exceeds ``max_error_of_error``. The thresholds are the defaults of the
``reliability`` config section.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["THRESHOLDS", "Reliability", "diagnose", "error_of_error", "pareto_k"]

THRESHOLDS: dict[str, float] = {"k_max": 0.7, "min_ess": 100.0, "max_share": 0.01,
                                "max_error_of_error": 0.5, "subbatches": 20}
"""Default limits of :func:`diagnose` (``reliability`` section of the integrate configs)."""


def pareto_k(w: np.ndarray, tail: int | None = None) -> float:
    """Shape k of a generalized Pareto fit to the tail of |w| [N] (nan with < 20 non-zero).

    The tail is the ``tail`` largest |w| (default min(N/5, 3 sqrt(N)) as in PSIS); the fit is
    to their exceedances over the next largest value. Zhang & Stephens' estimator: the
    profile likelihood over a grid of b = -k/sigma, averaged with the posterior weights of the
    grid, then PSIS's weakly informative prior on k (pulls toward 0.5 with weight 10 points).
    """
    a = np.sort(np.abs(np.asarray(w, dtype=np.float64).ravel()))
    a = a[a > 0]
    n_all = len(a)
    if n_all < 20:
        return math.nan
    m = int(tail or min(math.ceil(0.2 * n_all), math.ceil(3 * math.sqrt(n_all))))
    m = max(5, min(m, n_all - 1))
    x = a[-m:] - a[-m - 1]
    x = x[x > 0]
    n = len(x)
    if n < 5 or x[-1] <= 0:
        return math.nan
    x = x / x[-1]  # scale-free: k does not depend on the units of w
    grid = 30 + int(math.sqrt(n))
    quart = x[max(int(n / 4 + 0.5) - 1, 0)]
    j = np.arange(1, grid + 1)
    b = 1.0 / x[-1] + (1.0 - np.sqrt(grid / (j - 0.5))) / (3.0 * quart)
    with np.errstate(divide="ignore", invalid="ignore"):
        k_b = np.log1p(-b[:, None] * x[None, :]).mean(1)  # profile MLE of k at each b
        loglik = n * (np.log(-b / k_b) - k_b - 1.0)
    ok = np.isfinite(loglik)
    if not ok.any():
        return math.nan
    b, loglik = b[ok], loglik[ok]
    post = np.exp(loglik - loglik.max())
    post /= post.sum()
    b_hat = float(np.sum(b * post))
    k = float(np.log1p(-b_hat * x).mean())
    return (n * k + 10 * 0.5) / (n + 10)


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
        stats = (f"ESS/N {self.ess_fraction:.3g}, max weight share {self.max_weight_share:.2g}, "
                 f"error of the error {eoe}, Pareto k {k}")
        if self.reliable:
            return f"{name}: error estimate looks reliable ({stats})"
        return (f"{name}: UNRELIABLE error estimate ({'; '.join(self.reasons)}): the true "
                "error can be much larger than reported; train longer (more calls, "
                "buffered steps), anneal (trainer.anneal=0.7) or use channels")


def diagnose(w: np.ndarray, *, k_max: float = 0.7, min_ess: float = 100.0,
             max_share: float = 0.01, max_error_of_error: float = 0.5,
             subbatches: int = 20, extra: list[str] | None = None) -> Reliability:
    """:class:`Reliability` of the estimate mean(w) from the weights ``w [N]``; ``extra``
    reasons (e.g. a missed peak, non-finite values) make it unreliable too."""
    w = np.asarray(w, dtype=np.float64).ravel()
    a = np.abs(w)
    n = len(w)
    s1, s2 = float(a.sum()), float(np.sum(a**2))
    ess = s1**2 / s2 if s2 > 0 else 0.0
    share = float(a.max() / s1) if s1 > 0 else 1.0
    eoe = error_of_error(w, int(subbatches))
    k = pareto_k(w)
    reasons = list(extra or [])
    if s1 == 0:
        reasons.append("all weights are zero")
    if not math.isnan(k) and k > k_max:
        reasons.append(f"Pareto k {k:.2f} > {k_max:g}: heavy tail of the weights")
    if ess < min_ess:
        reasons.append(f"ESS {ess:.0f} < {min_ess:g} points")
    if share > max_share:
        reasons.append(f"one point holds {100 * share:.2g}% of the sum of weights "
                       f"(> {100 * max_share:g}%)")
    if not math.isnan(eoe) and eoe > max_error_of_error:
        reasons.append(f"errors of {int(subbatches)} sub-batches scatter by {100 * eoe:.0f}% "
                       f"(> {100 * max_error_of_error:g}%)")
    return Reliability(not reasons, reasons, ess, ess / n if n else 0.0, share, eoe, k, n)
