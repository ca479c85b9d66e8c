"""ROC curve, AUC and classifier-output scores: the one implementation in flowctl.

Numpy only, arrays in and numbers out. Label 1 is the positive class; a higher score means
more like label 1. A cut ``score >= threshold`` keeps TPR of label 1 and FPR of label 0;
tied scores are cut together (one ROC point per distinct score), so the trapezoid area under
the ROC equals the Mann-Whitney statistic ``P(s1 > s0) + P(s1 = s0) / 2``. Optional per-event
weights ``[N]`` (non-negative) weigh both.

Used by the calorimeter evaluation, reweighting, the anomaly metrics (``metrics/sic.py``)
and the classifiers of ``flowctl/classifiers``.

>>> auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
0.75
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["auc", "bootstrap_auc", "jsd_from_bce", "roc_curve"]


def _check(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    y = np.asarray(labels).reshape(-1)
    s = np.asarray(scores, np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in length")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    y = y.astype(bool)
    if y.all() or not y.any():
        raise ValueError("labels need both classes (0 and 1)")
    if not np.isfinite(s).all():
        raise ValueError(f"{int((~np.isfinite(s)).sum())} score(s) are NaN or inf")
    w = None
    if weights is not None:
        w = np.asarray(weights, np.float64).reshape(-1)
        if w.shape != s.shape or not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"weights must be {len(s)} finite non-negative numbers")
        if w[y].sum() <= 0 or w[~y].sum() <= 0:
            raise ValueError("both classes need a positive total weight")
    return y, s, w


def roc_curve(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)``, each ``[M]``, for cuts ``score >= threshold`` at every
    distinct score (descending), starting at ``(0, 0, +inf)`` and ending at ``(1, 1)``.

    ``labels [N]`` 0/1 (both present), ``scores [N]`` finite, ``weights [N]`` optional.
    Raises ValueError otherwise."""
    y, s, w = _check(labels, scores, weights)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]   # last index of each tie group
    if w is None:
        tp = np.cumsum(y)[last].astype(np.float64)
        fp = (last + 1) - tp
    else:
        w = w[order]
        tp = np.cumsum(np.where(y, w, 0.0))[last]
        fp = np.cumsum(np.where(y, 0.0, w))[last]
    fpr = np.r_[0.0, fp / fp[-1]]
    tpr = np.r_[0.0, tp / tp[-1]]
    return fpr, tpr, np.r_[np.inf, s[last]]


def auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Area under the ROC curve (trapezoid over tie groups = Mann-Whitney with ties); with
    ``weights`` the weighted probability that a label-1 event scores above a label-0 one."""
    fpr, tpr, _ = roc_curve(labels, scores, weights)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def bootstrap_auc(labels: np.ndarray, scores: np.ndarray, n: int = 200, seed: int = 0,
                  weights: np.ndarray | None = None) -> float:
    """Standard deviation of the AUC over ``n`` bootstrap resamples of the rows (0 if
    ``n < 2``; resamples that lose a class are skipped)."""
    if n < 2:
        return 0.0
    y = np.asarray(labels).reshape(-1)
    s = np.asarray(scores, np.float64).reshape(-1)
    _check(y, s, weights)
    rng = np.random.default_rng(seed)
    m, vals = len(y), []
    for _ in range(n):
        i = rng.integers(0, m, m)
        try:
            vals.append(auc(y[i], s[i], None if weights is None else np.asarray(weights)[i]))
        except ValueError:
            continue
    return float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan")


def jsd_from_bce(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-6,
                 weights: np.ndarray | None = None) -> float:
    """Jensen-Shannon divergence estimate ``(ln 2 - BCE) / ln 2`` in [0, 1] from calibrated
    probabilities of label 1 ``probs [N]`` (the CaloChallenge's JSD)."""
    p = np.clip(np.asarray(probs, np.float64), eps, 1 - eps)
    y = np.asarray(labels, np.float64)
    bce = -np.average(y * np.log(p) + (1 - y) * np.log1p(-p), weights=weights)
    return float((math.log(2.0) - bce) / math.log(2.0))
