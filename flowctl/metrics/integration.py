"""Figures of merit of importance-sampling integration (reference/integration.md §6).

All functions take the weights ``w = f(x) / q(x)`` of points ``x ~ q`` as a 1-D array; they may
be signed (sign-changing integrands) and zero (cuts).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Estimate", "UnweightingStats", "estimate", "pull", "unweighting_efficiency"]


@dataclass
class Estimate:
    """Monte Carlo estimate from N independent weights.

    ``integral`` = mean(w); ``error`` = std(w, ddof=1)/sqrt(N); ``rel_std`` = std(w)/|mean(w)|
    (relative standard deviation per point; calls for a relative precision eps are about
    (rel_std/eps)^2); ``ess`` = (sum w)^2 / sum w^2 (Kish), ``ess_fraction`` = ess / N.
    """

    integral: float
    error: float
    rel_std: float
    ess: float
    ess_fraction: float
    calls: int
    nonzero_fraction: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def estimate(w: np.ndarray) -> Estimate:
    """Mean, standard error, relative std per point and ESS of the weights ``w [N]``."""
    w = np.asarray(w, dtype=np.float64).ravel()
    n = len(w)
    if n < 2:
        raise ValueError("need at least 2 weights for an estimate")
    mean = float(w.mean())
    std = float(w.std(ddof=1))
    s2 = float(np.sum(w**2))
    ess = float(np.sum(w) ** 2 / s2) if s2 > 0 else 0.0
    rel = std / abs(mean) if mean != 0 else math.inf
    return Estimate(mean, std / math.sqrt(n), rel, ess, ess / n, n,
                    float(np.count_nonzero(w)) / n)


def pull(value: float, error: float, exact: float | None, exact_error: float = 0.0
         ) -> float | None:
    """(value - exact) / sqrt(error^2 + exact_error^2); None when exact is unknown."""
    if exact is None:
        return None
    err = math.hypot(error, exact_error)
    if err == 0:
        return 0.0 if value == exact else math.copysign(math.inf, value - exact)
    return (value - exact) / err


@dataclass
class UnweightingStats:
    """Unweighting efficiency with the bootstrap definition of arXiv:2001.10028.

    With |w| of the non-zero weights, replicas of ``replica_size`` drawn with replacement give
    w_max = median over replicas of max(replica); ``efficiency`` = mean over replicas of
    mean(replica) / w_max (after cuts) times ``cut_efficiency`` (fraction of non-zero weights);
    ``partial`` = mean(min(|w| / w_max, 1)) (unweighting that keeps over-weights, also times
    the cut efficiency); ``overweight_fraction`` = fraction of |w| > w_max; ``naive`` =
    mean|w| / max|w| over all weights.
    """

    efficiency: float
    efficiency_after_cuts: float
    partial: float
    cut_efficiency: float
    overweight_fraction: float
    w_max: float
    naive: float
    replica_size: int
    replicas: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def unweighting_efficiency(w: np.ndarray, replicas: int = 1000, replica_size: int | None = None,
                           seed: int = 0, chunk_elements: int = 2_000_000, pool: int = 50
                           ) -> UnweightingStats:
    """Bootstrap unweighting efficiency of the weights ``w [N]`` (see :class:`UnweightingStats`).

    ``replica_size`` defaults to (non-zero weights) / ``pool`` as in i-flow's
    ``acceptance(nopt, npool=50)``: the weights are a pool of 50 event samples of the size one
    would unweight. (MadNIS uses replicas of all weights; then w_max is almost always the
    sample maximum, about as outlier-sensitive as the naive mean/max.)
    """
    a = np.abs(np.asarray(w, dtype=np.float64).ravel())
    n_all = len(a)
    if n_all == 0:
        raise ValueError("no weights")
    nz = a[a > 0]
    cut_eff = len(nz) / n_all
    if len(nz) == 0:
        return UnweightingStats(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0)
    m = int(replica_size or max(1, len(nz) // pool))
    rng = np.random.default_rng(seed)
    maxima = np.empty(replicas)
    means = np.empty(replicas)
    per = max(1, chunk_elements // m)
    for i in range(0, replicas, per):
        k = min(per, replicas - i)
        idx = rng.integers(0, len(nz), size=(k, m))
        s = nz[idx]
        maxima[i:i + k] = s.max(1)
        means[i:i + k] = s.mean(1)
    w_max = float(np.median(maxima))
    after = float(np.mean(means / w_max))
    partial = float(np.mean(np.minimum(nz / w_max, 1.0)))
    return UnweightingStats(
        efficiency=after * cut_eff,
        efficiency_after_cuts=after,
        partial=partial * cut_eff,
        cut_efficiency=cut_eff,
        overweight_fraction=float(np.mean(nz > w_max)),
        w_max=w_max,
        naive=float(a.mean() / a.max()),
        replica_size=m,
        replicas=replicas,
    )
