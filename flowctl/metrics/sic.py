"""ROC, significance improvement (SIC) and background rejection from scores and labels.

Numpy only. Label 1 is signal (positive); a higher score means more signal-like. The ROC
curve and AUC are :mod:`flowctl.metrics.roc`'s (re-exported here).

* TPR = ε_S, FPR = ε_B of the cut ``score >= threshold`` (ties are cut together).
* SIC = TPR / √FPR: the factor by which the cut improves S/√B. Points with FPR = 0 are
  dropped, and the **max SIC** ignores FPR below :data:`FPR_FLOOR` (the CATHODE paper's
  floor, 1.8382353e-5, so a handful of background events cannot drive it; reference/anomaly.md
  §5.2).
* Rejection = 1 / FPR at a given TPR (0.2 and 0.5 in :func:`anomaly_metrics`).
* Curves over seeds are put on a common TPR grid and summarised by the median and the 16–84 %
  band (:func:`sic_band`, and :func:`rejection_band` for 1/FPR); :func:`roc_pairs` turns
  ``(labels, scores)`` pairs into ``(fpr, tpr)`` pairs for them.

>>> m = anomaly_metrics(labels, scores)          # doctest: +SKIP
>>> m["max_sic"], m["rejection_tpr0.2"]          # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from .roc import _check as _roc_check
from .roc import auc, roc_curve

__all__ = [
    "FPR_FLOOR",
    "anomaly_metrics",
    "auc",
    "max_sic",
    "mean_sic",
    "rejection_at",
    "rejection_band",
    "roc_curve",
    "roc_pairs",
    "selection_at_fpr",
    "sic_band",
    "sic_curve",
]

#: Smallest FPR considered for the max SIC (CATHODE, arXiv:2109.00546 figures).
FPR_FLOOR = 1.8382353e-5


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bool labels, float scores) ``[N]``, checked as :mod:`flowctl.metrics.roc` does."""
    y, s, _ = _roc_check(labels, scores, None)
    return y, s


def sic_curve(labels: np.ndarray, scores: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(sic, fpr, tpr, thresholds)`` ``[M]`` with SIC = TPR/√FPR; FPR = 0 points dropped."""
    fpr, tpr, thr = roc_curve(labels, scores)
    keep = fpr > 0
    fpr, tpr, thr = fpr[keep], tpr[keep], thr[keep]
    return tpr / np.sqrt(fpr), fpr, tpr, thr


def max_sic(labels: np.ndarray, scores: np.ndarray,
            fpr_floor: float = FPR_FLOOR) -> tuple[float, float, float]:
    """``(max SIC, its TPR, its FPR)`` over points with FPR >= ``fpr_floor``
    (``nan`` values when no point qualifies)."""
    sic, fpr, tpr, _ = sic_curve(labels, scores)
    ok = fpr >= fpr_floor
    if not ok.any():
        return float("nan"), float("nan"), float("nan")
    i = np.flatnonzero(ok)[np.argmax(sic[ok])]
    return float(sic[i]), float(tpr[i]), float(fpr[i])


def rejection_at(labels: np.ndarray, scores: np.ndarray, tpr: float) -> float:
    """Background rejection 1/FPR at signal efficiency ``tpr`` (FPR linearly interpolated on
    the ROC; ``inf`` if FPR is 0 there)."""
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    f, t, _ = roc_curve(labels, scores)
    # np.interp needs increasing x; tpr is non-decreasing, take the first point reaching it
    i = int(np.searchsorted(t, tpr, side="left"))
    if t[i] == tpr or i == 0:
        fpr = f[i]
    else:
        w = (tpr - t[i - 1]) / (t[i] - t[i - 1])
        fpr = f[i - 1] + w * (f[i] - f[i - 1])
    return float("inf") if fpr <= 0 else float(1.0 / fpr)


def mean_sic(labels: np.ndarray, scores: np.ndarray,
             tpr_window: Sequence[float] = (0.18, 0.23)) -> float:
    """Mean SIC over the TPR window (a scalar figure of merit used alongside max SIC)."""
    sic, _, tpr, _ = sic_curve(labels, scores)
    m = (tpr >= tpr_window[0]) & (tpr <= tpr_window[1])
    return float(sic[m].mean()) if m.any() else float("nan")


def anomaly_metrics(labels: np.ndarray, scores: np.ndarray,
                    fpr_floor: float = FPR_FLOOR) -> dict[str, float]:
    """The numbers ``flowctl evaluate`` reports for a method: AUC, max SIC (with its TPR/FPR
    and the floor used), mean SIC at TPR 0.18–0.23, rejection 1/FPR at TPR 0.2 and 0.5."""
    s, t, f = max_sic(labels, scores, fpr_floor)
    return {
        "auc": auc(labels, scores),
        "max_sic": s, "max_sic_tpr": t, "max_sic_fpr": f, "fpr_floor": fpr_floor,
        "mean_sic_tpr0.18-0.23": mean_sic(labels, scores),
        "rejection_tpr0.2": rejection_at(labels, scores, 0.2),
        "rejection_tpr0.5": rejection_at(labels, scores, 0.5),
    }


def sic_band(curves: Sequence[tuple[np.ndarray, np.ndarray]], n_grid: int = 1000,
             min_runs: int = 1, fpr_floor: float = FPR_FLOOR
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Median SIC and 16/84 % quantiles over runs on a common TPR grid ``[n_grid]``.

    ``curves`` are ``(fpr, tpr)`` pairs (e.g. from :func:`roc_curve`); a run contributes at a
    TPR only where its FPR there is >= ``fpr_floor``; grid points with fewer than
    ``min_runs`` runs are ``nan``. Returns ``(tpr_grid, median, q16, q84)``."""
    grid = np.linspace(0.0, 1.0, n_grid + 1)[1:]
    f = _fpr_on_grid(curves, grid, fpr_floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = grid / np.sqrt(f)
    return _band(grid, a, min_runs)


def rejection_band(curves: Sequence[tuple[np.ndarray, np.ndarray]], n_grid: int = 1000,
                   min_runs: int = 1, fpr_floor: float = FPR_FLOOR
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Median background rejection 1/FPR and its 16/84 % quantiles over runs, on the same
    TPR grid and with the same rules as :func:`sic_band` (a run contributes where its FPR is
    >= ``fpr_floor``, so the rejection is at most ``1/fpr_floor``). Returns
    ``(tpr_grid, median, q16, q84)``, each ``[n_grid]``."""
    grid = np.linspace(0.0, 1.0, n_grid + 1)[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        a = 1.0 / _fpr_on_grid(curves, grid, fpr_floor)
    return _band(grid, a, min_runs)


def roc_pairs(curves: Sequence[tuple[np.ndarray, np.ndarray]], kind: str = "auto"
              ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(fpr, tpr)`` pairs from pairs that are either ``(labels, scores)`` (each ``[N]``,
    turned into a ROC with :func:`roc_curve`) or already ``(fpr, tpr)``.

    ``kind="auto"`` reads a pair as ``(labels, scores)`` when its first array holds only 0s
    and 1s (a ROC's FPR takes other values unless there is a single background event);
    ``"scores"`` or ``"roc"`` say it explicitly."""
    if kind not in ("auto", "scores", "roc"):
        raise ValueError(f"kind must be 'auto', 'scores' or 'roc', got {kind!r}")
    out = []
    for a, b in curves:
        a, b = np.asarray(a).reshape(-1), np.asarray(b, np.float64).reshape(-1)
        if kind == "scores" or (kind == "auto" and np.isin(a, (0, 1)).all()):
            f, t, _ = roc_curve(a, b)
        else:
            f, t = a.astype(np.float64), b
            if f.shape != t.shape or f.min() < 0 or f.max() > 1 or t.min() < 0 or t.max() > 1:
                raise ValueError("(fpr, tpr) pairs need equal lengths and values in [0, 1]")
        out.append((f, t))
    return out


def _fpr_on_grid(curves: Sequence[tuple[np.ndarray, np.ndarray]], grid: np.ndarray,
                 fpr_floor: float) -> np.ndarray:
    """FPR of each run at the TPRs ``grid`` ``[runs, G]``; ``nan`` below ``fpr_floor`` (and
    at 0) or outside the run's TPR range."""
    if len(curves) == 0:
        raise ValueError("need at least one (fpr, tpr) curve")
    rows = []
    for fpr, tpr in curves:
        fpr, tpr = np.asarray(fpr, np.float64), np.asarray(tpr, np.float64)
        # FPR as a function of TPR: the lowest FPR reaching each TPR (first of a flat run)
        t_u, first = np.unique(tpr, return_index=True)
        f = np.interp(grid, t_u, fpr[first], left=np.nan, right=np.nan)
        with np.errstate(invalid="ignore"):
            rows.append(np.where(f >= max(fpr_floor, np.finfo(float).tiny), f, np.nan))
    return np.asarray(rows).reshape(len(rows), len(grid))


def _band(grid: np.ndarray, a: np.ndarray, min_runs: int
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(grid, median, q16, q84)`` over the rows of ``a [runs, G]`` (nan-aware), ``nan``
    where fewer than ``min_runs`` rows are finite."""
    ok = np.isfinite(a).sum(0) >= min_runs
    with warnings.catch_warnings():     # all-nan columns
        warnings.simplefilter("ignore", RuntimeWarning)
        med, lo, hi = np.nanquantile(a, [0.5, 0.16, 0.84], axis=0)
    nan = np.full_like(grid, np.nan)
    return grid, np.where(ok, med, nan), np.where(ok, lo, nan), np.where(ok, hi, nan)


def selection_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float) -> dict[str, float]:
    """The cut ``score >= threshold`` that keeps a fraction ``fpr`` of the background
    (label 0), and what it does to the signal: ``{"threshold", "fpr", "tpr", "n_sig",
    "n_bkg", "n_sig_cut", "n_bkg_cut", "s_over_sqrt_b", "s_over_sqrt_b_cut", "gain"}``.

    The threshold is the ``ceil(fpr · N_B)``-th highest background score, so the kept
    fraction is ``fpr`` up to ties (the achieved ``fpr`` is returned). ``gain`` = (S/√B after
    the cut) / (S/√B before) = TPR/√FPR, the SIC at that background efficiency: the factor a
    bump hunt's significance gains from the cut."""
    if not 0.0 < fpr <= 1.0:
        raise ValueError(f"fpr must be in (0, 1], got {fpr}")
    y, s = _check(labels, scores)
    bkg = np.sort(s[~y])[::-1]
    n_keep = max(1, int(np.ceil(fpr * len(bkg) - 1e-9)))
    thr = float(bkg[n_keep - 1])
    cut = s >= thr
    n_s, n_b = int(y.sum()), int((~y).sum())
    k_s, k_b = int((cut & y).sum()), int((cut & ~y).sum())
    return {"threshold": thr, "fpr": k_b / n_b, "tpr": k_s / n_s, "n_sig": n_s, "n_bkg": n_b,
            "n_sig_cut": k_s, "n_bkg_cut": k_b, "s_over_sqrt_b": n_s / np.sqrt(n_b),
            "s_over_sqrt_b_cut": k_s / np.sqrt(k_b),
            "gain": (k_s / n_s) / np.sqrt(k_b / n_b)}
