"""Line search over the top-ranked stars of a sky window (Via Machinae's Hough step,
arXiv:2104.12789 / 2303.01529): a stellar stream is a thin track on the sky, the stars that an
anomaly score ranks high by chance are not.

Every line in the patch plane ``(φ, λ)`` (deg, patch centre at 0) is written
``ρ = φ cos θ + λ sin θ`` with ``θ ∈ [0, π)``; a star votes for the lines that pass within
``width/2`` of it. The line with the most votes is the track candidate. Its **significance**
comes from the same search run on ``n_null`` sets of as many stars placed uniformly in the
patch disk (so the look-elsewhere effect over all lines is included):
``z = (count − mean_null) / std_null`` and ``p`` = fraction of null sets with a count at least
as high (with the usual +1 in numerator and denominator).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LineFit", "hough_counts", "line_search"]


@dataclass
class LineFit:
    """Best line ``ρ = φ cos θ + λ sin θ`` (``theta`` rad, ``rho`` deg) holding ``count`` of
    the stars (``members [N]`` bool), with its significance against uniform stars."""

    theta: float
    rho: float
    count: int
    members: np.ndarray
    null_mean: float
    null_std: float
    z: float
    p: float


def _grid(radius: float, width: float, n_theta: int) -> tuple[np.ndarray, np.ndarray]:
    thetas = np.linspace(0.0, np.pi, n_theta, endpoint=False)
    step = width / 2.0                       # offsets half a band apart: every line is close
    rhos = np.arange(-radius, radius + step, step)
    return thetas, rhos


def hough_counts(phi: np.ndarray, lam: np.ndarray, radius: float, width: float = 0.5,
                 n_theta: int = 180) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Votes ``[n_theta, n_rho]``: for each line of the grid, the number of stars within
    ``width/2`` of it; returns ``(counts, thetas, rhos)``."""
    thetas, rhos = _grid(radius, width, n_theta)
    phi, lam = np.asarray(phi, np.float64), np.asarray(lam, np.float64)
    d = np.cos(thetas)[:, None] * phi[None] + np.sin(thetas)[:, None] * lam[None]  # [T, N]
    # star n votes for rho bins with |d - rho| < width/2: at most 2 grid lines per theta
    lo = np.searchsorted(rhos, d - width / 2.0, side="right")
    hi = np.searchsorted(rhos, d + width / 2.0, side="left")
    counts = np.zeros((len(thetas), len(rhos) + 1), np.int64)
    rows = np.repeat(np.arange(len(thetas)), d.shape[1])
    np.add.at(counts, (rows, lo.ravel()), 1)
    np.add.at(counts, (rows, hi.ravel()), -1)
    return np.cumsum(counts, axis=1)[:, :-1], thetas, rhos


def _uniform_disk(rng: np.random.Generator, n: int, radius: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    r = radius * np.sqrt(rng.random(n))
    a = rng.uniform(0.0, 2.0 * np.pi, n)
    return r * np.cos(a), r * np.sin(a)


def line_search(phi: np.ndarray, lam: np.ndarray, radius: float, width: float = 0.5,
                n_theta: int = 180, n_null: int = 200, seed: int = 0) -> LineFit:
    """The most populated line through the stars ``(phi [N], lam [N])`` (deg) of a disk of
    ``radius`` deg, and its significance against ``n_null`` uniform sets of ``N`` stars."""
    phi, lam = np.asarray(phi, np.float64), np.asarray(lam, np.float64)
    if len(phi) == 0:
        return LineFit(0.0, 0.0, 0, np.zeros(0, bool), 0.0, 0.0, 0.0, 1.0)
    counts, thetas, rhos = hough_counts(phi, lam, radius, width, n_theta)
    i, j = np.unravel_index(int(np.argmax(counts)), counts.shape)
    theta, rho = float(thetas[i]), float(rhos[j])
    members = np.abs(np.cos(theta) * phi + np.sin(theta) * lam - rho) < width / 2.0
    rng = np.random.default_rng(seed)
    null = np.array([hough_counts(*_uniform_disk(rng, len(phi), radius), radius, width,
                                  n_theta)[0].max() for _ in range(n_null)], np.float64)
    mean, std = float(null.mean()), float(null.std())
    count = int(counts[i, j])
    z = (count - mean) / std if std > 0 else 0.0
    p = (1.0 + float((null >= count).sum())) / (1.0 + n_null)
    return LineFit(theta, rho, count, members, mean, std, z, p)
