"""Figures of merit of importance-sampling integration (reference/integration.md §6).

All functions take the weights ``w = f(x) / q(x)`` of points ``x ~ q`` as a 1-D array; they may
be signed (sign-changing integrands) and zero (cuts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

__all__ = ["Estimate", "ModeCensus", "UnweightingStats", "estimate", "mode_census", "pull",
           "unweighting_efficiency"]


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
    min(mean(replica) / w_max, 1) (after cuts; the cap only acts on heavy-tailed weights,
    where a replica with a huge weight would otherwise count as more than 100 %) times
    ``cut_efficiency`` (fraction of non-zero weights);
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
    after = float(np.mean(np.minimum(means / w_max, 1.0)))  # a heavy tail: <= 1 per replica
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


@dataclass
class ModeCensus:
    """Whether a sampler found each mode of a multi-modal target (e.g. the camel's two peaks).

    Per mode k (lists in the order of ``centers``):

    * ``point_share``: fraction of the sampler's points nearer mode k than any other;
    * ``weight_share``: fraction of sum |w| from those points, the estimate of the target's
      share (``expected_share``: 1/2 each for the camel);
    * ``core_share``: fraction of the sampler's points inside mode k's core, the ball
      |x - c_k|^2 <= width^2 chi2_D(quantile) / 2 around the centre that holds ``quantile`` of a
      Gaussian exp(-|x - c_k|^2 / width^2), cut to the points nearer mode k; ``core_expected``
      = expected_share * quantile is about what an exact sampler puts there (ignoring the cut
      of the Gaussian by the cube and, in few dimensions, the overlap of the peaks);
    * ``found``: core_share >= ``min_ratio`` * core_expected, i.e. the sampler puts at least
      that fraction of the ideal share of its points on the peak. A missed mode contributes
      (almost) nothing to the estimate, so the integral comes out low by its share while the
      error, computed from the same points, cannot tell.
    """

    centers: list[list[float]]
    expected_share: list[float]
    point_share: list[float]
    weight_share: list[float]
    core_share: list[float]
    core_expected: list[float]
    found: list[bool]
    n: int
    min_ratio: float

    @property
    def all_found(self) -> bool:
        return all(self.found)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["all_found"] = self.all_found
        return d

    def summary(self) -> str:
        """One line, e.g. ``modes found 2/2; points 0.49/0.51, |w| 0.50/0.50 (expected ...)``."""
        f = "/".join
        return (f"modes found {sum(self.found)}/{len(self.found)} "
                f"[{f('yes' if v else 'NO' for v in self.found)}]; in the cores "
                f"{f(f'{v:.3f}' for v in self.core_share)} of the points (exact sampler "
                f"{f(f'{v:.3f}' for v in self.core_expected)}); nearest-mode shares: points "
                f"{f(f'{v:.2f}' for v in self.point_share)}, |w| "
                f"{f(f'{v:.2f}' for v in self.weight_share)} (target "
                f"{f(f'{v:.2f}' for v in self.expected_share)})")


def chi2_quantile(q: float, dof: int) -> float:
    """Quantile of the chi^2 distribution with ``dof`` degrees of freedom (Wilson-Hilferty;
    within about 1 % for dof >= 2, good enough for a core radius)."""
    z = NormalDist().inv_cdf(q)
    a = 2.0 / (9.0 * dof)
    return dof * max(1.0 - a + z * math.sqrt(a), 0.0) ** 3


def mode_census(x: np.ndarray, w: np.ndarray | None, centers: Sequence[Sequence[float]],
                width: float, expected_share: Sequence[float] | None = None,
                quantile: float = 0.99, min_ratio: float = 0.1) -> ModeCensus:
    """:class:`ModeCensus` of the sampler's points ``x [N, D]`` with weights ``w [N]`` (f/q;
    None: unit weights) for Gaussian modes exp(-|x - c|^2 / width^2) at ``centers [K, D]``
    with target shares ``expected_share`` (default equal)."""
    x = np.asarray(x, dtype=np.float64)
    c = np.asarray(centers, dtype=np.float64)
    if x.ndim != 2 or c.ndim != 2 or c.shape[1] != x.shape[1] or len(x) == 0:
        raise ValueError(f"need points [N, D] and centers [K, D], got {x.shape} and {c.shape}")
    k = len(c)
    share = np.full(k, 1.0 / k) if expected_share is None else np.asarray(expected_share, float)
    a = np.ones(len(x)) if w is None else np.abs(np.asarray(w, dtype=np.float64).ravel())
    d2 = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)  # [N, K]
    nearest = d2.argmin(1)
    r2 = width**2 * chi2_quantile(quantile, x.shape[1]) / 2.0
    total = max(float(a.sum()), 1e-300)
    point_share = [float(np.mean(nearest == j)) for j in range(k)]
    weight_share = [float(a[nearest == j].sum() / total) for j in range(k)]
    core_share = [float(np.mean((d2[:, j] <= r2) & (nearest == j))) for j in range(k)]
    core_expected = [float(s * quantile) for s in share]
    found = [cs >= min_ratio * ce for cs, ce in zip(core_share, core_expected)]
    return ModeCensus(c.tolist(), share.tolist(), point_share, weight_share, core_share,
                      core_expected, found, len(x), min_ratio)
