"""Background sculpting check: does a cut on the anomaly score change the mjj shape?

A bump hunt after the cut fits the selected events' mjj spectrum with a smooth background
interpolated from the sidebands; that only works if the cut keeps the sideband spectrum
smooth (LaCATHODE, arXiv:2210.14924). With ``mjj [N]`` (TeV) and ``scores [N]`` of scored
sideband events and a threshold (from :func:`flowctl.metrics.sic.selection_at_fpr` on the SR),
:func:`sideband_flatness` compares the per-bin selection efficiency with its mean:
``chi2 = Σ (k_i - n_i ε)^2 / (n_i ε (1 - ε))`` over bins with ``n_i ε >= min_expected``,
``ndf = bins - 1``. ``chi2/ndf`` near 1 means no visible sculpting at this statistics; much
larger means the cut selects some masses more than others.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["mjj_bins", "selected_histograms", "sideband_flatness"]


def mjj_bins(sr: Sequence[float], width: float, n: int = 40) -> np.ndarray:
    """``n + 1`` bin edges (TeV) over ``[sr[0] - width, sr[1] + width]``."""
    return np.linspace(float(sr[0]) - width, float(sr[1]) + width, n + 1)


def selected_histograms(mjj: np.ndarray, scores: np.ndarray, thresholds: Sequence[float],
                        bins: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Counts of all events ``[B]`` and of the events with ``score >= t`` for each threshold
    (a list of ``[B]``), in the mjj ``bins``."""
    mjj, scores = np.asarray(mjj, np.float64), np.asarray(scores, np.float64)
    all_counts = np.histogram(mjj, bins)[0]
    return all_counts, [np.histogram(mjj[scores >= t], bins)[0] for t in thresholds]


def sideband_flatness(mjj: np.ndarray, scores: np.ndarray, threshold: float,
                      bins: np.ndarray, min_expected: float = 5.0) -> dict[str, float | int]:
    """Selection efficiency of sideband events ``(mjj [N], scores [N])`` for the cut
    ``score >= threshold``: ``{"efficiency", "n", "n_cut", "chi2", "ndf", "chi2_ndf"}`` with
    the flatness chi2 of the module docstring (``chi2_ndf`` is ``None`` when fewer than two
    bins qualify)."""
    mjj, scores = np.asarray(mjj, np.float64), np.asarray(scores, np.float64)
    inside = (mjj >= bins[0]) & (mjj <= bins[-1])
    mjj, scores = mjj[inside], scores[inside]
    n, k = len(mjj), int((scores >= threshold).sum())
    out: dict[str, float | int] = {"efficiency": k / n if n else float("nan"), "n": n,
                                   "n_cut": k, "chi2": float("nan"), "ndf": 0,
                                   "chi2_ndf": None}
    if n == 0 or k == 0 or k == n:
        return out
    eff = k / n
    n_i, (k_i,) = selected_histograms(mjj, scores, [threshold], bins)
    use = n_i * eff >= min_expected
    if use.sum() < 2:
        return out
    k_u, n_u = k_i[use], n_i[use]
    chi2 = float((((k_u - n_u * eff) ** 2) / (n_u * eff * (1 - eff))).sum())
    ndf = int(use.sum()) - 1
    out.update({"chi2": chi2, "ndf": ndf, "chi2_ndf": chi2 / ndf})
    return out
