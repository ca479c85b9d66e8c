"""TARP: Tests of Accuracy with Random Points (Lemos et al., arXiv:2302.03026).

For each of ``M`` test pairs (θ*, x) with ``L`` posterior draws θ_j ~ q(θ | x), a random
reference point θ_r is drawn; f = the fraction of draws closer to θ_r than θ* is. The expected
coverage probability ECP(α) = P(f < α) equals α for every α if and only if q is the true
posterior (for reference points from a distribution that can reach everywhere; the paper's
Theorem 3). Unlike HPD coverage it needs no density of q, only samples.

Here θ is standardised with the mean and std of the true parameters and reference points are
drawn uniformly in the box spanned by them (the paper's default).

>>> rng = np.random.default_rng(0)
>>> mu = rng.normal(size=(400, 1, 2))                      # exact posterior N(mu, I)
>>> res = tarp(mu[:, 0] + rng.normal(size=(400, 2)), mu + rng.normal(size=(400, 300, 2)))
>>> res["max_deviation"] < 0.1
True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["tarp", "tarp_fractions"]


def tarp_fractions(theta: np.ndarray, samples: np.ndarray, references: np.ndarray | None = None,
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """f ``[M]``: the fraction of the draws ``samples [M, L, P]`` nearer to the reference
    point than the true ``theta [M, P]``. ``references [M, P]`` default to uniform draws in the
    box of the standardised true parameters."""
    theta = np.asarray(theta, np.float64)
    samples = np.asarray(samples, np.float64)
    if samples.ndim != 3 or theta.shape != (samples.shape[0], samples.shape[2]):
        raise ValueError(f"tarp needs theta [M, P] and samples [M, L, P], got {theta.shape} "
                         f"and {samples.shape}")
    mean, std = theta.mean(0), theta.std(0)
    std = np.where(std > 1e-12, std, 1.0)
    t = (theta - mean) / std
    s = (samples - mean) / std
    if references is None:
        rng = rng or np.random.default_rng(0)
        references = rng.uniform(t.min(0), t.max(0), size=t.shape)
    else:
        references = (np.asarray(references, np.float64) - mean) / std
    d_true = np.linalg.norm(t - references, axis=1)                     # [M]
    d_draw = np.linalg.norm(s - references[:, None, :], axis=2)         # [M, L]
    return (d_draw < d_true[:, None]).mean(1)


def tarp(theta: np.ndarray, samples: np.ndarray, references: np.ndarray | None = None,
         rng: np.random.Generator | None = None, levels: int = 51,
         nominal: tuple[float, ...] = (0.5, 0.68, 0.95)) -> dict[str, Any]:
    """TARP expected coverage.

    Args: as :func:`tarp_fractions`; ``levels`` points on the credibility grid [0, 1].

    Returns ``alpha [levels]``, ``ecp [levels]``, ``max_deviation`` (max |ECP − α|), ``atc``
    (the signed area ∫(ECP − α) dα: > 0 under-confident, < 0 over-confident), ``ks_pvalue``
    (the two-sided Kolmogorov test of f against uniform, asymptotic) and ECP at ``nominal``
    with binomial errors.
    """
    f = tarp_fractions(theta, samples, references, rng)
    m = len(f)
    alpha = np.linspace(0.0, 1.0, levels)
    ecp = (f[None, :] < alpha[:, None]).mean(1)
    dev = ecp - alpha
    # the Kolmogorov statistic of f against U(0, 1) and its asymptotic p-value
    fs = np.sort(f)
    k = np.arange(1, m + 1)
    ks = float(max((k / m - fs).max(), (fs - (k - 1) / m).max()))
    lam = (math.sqrt(m) + 0.12 + 0.11 / math.sqrt(m)) * ks
    p = 2 * sum((-1) ** (j - 1) * math.exp(-2 * j * j * lam * lam) for j in range(1, 101))
    at = {}
    for a in nominal:
        c = float((f < a).mean())
        at[f"{round(100 * a)}"] = {"nominal": a, "ecp": c,
                                   "error": math.sqrt(max(c * (1 - c), 1e-12) / m)}
    return {"alpha": alpha, "ecp": ecp, "max_deviation": float(np.abs(dev).max()),
            "atc": float(np.trapezoid(dev, alpha)), "ks": ks,
            "ks_pvalue": float(min(max(p, 0.0), 1.0)), "at": at, "n": m}
