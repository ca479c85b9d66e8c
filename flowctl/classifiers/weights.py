"""Per-event weights around a classifier: class balancing for training, and the density
ratio / DCTR weights ``w = D / (1 - D)`` from its calibrated output (arXiv:1907.08209)."""

from __future__ import annotations

import numpy as np

__all__ = ["balanced_weights", "dctr_weights", "density_ratio"]


def balanced_weights(y: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Per-event weights ``[N]`` with class weights ``W / (2 W_c)`` times ``w`` (default 1):
    both classes then sum to ``W / 2``. Labels ``y [N]`` are 0/1; both must be present."""
    y = np.asarray(y).reshape(-1).astype(bool)
    w = np.ones(len(y)) if w is None else np.asarray(w, np.float64).reshape(-1)
    w1, w0 = float(w[y].sum()), float(w[~y].sum())
    if w1 <= 0 or w0 <= 0:
        raise ValueError("both classes need positive total weight for class balancing")
    tot = w1 + w0
    return w * np.where(y, tot / (2 * w1), tot / (2 * w0))


def density_ratio(probs: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """``w = D / (1 - D)`` with ``D = P(label 1)``: the likelihood ratio p1(x)/p0(x) for equal
    class sizes. Weighting sample 0 by ``w`` (or sample 1 by ``1/w``) makes it look like the
    other sample (DCTR)."""
    p = np.clip(np.asarray(probs, np.float64), eps, 1 - eps)
    return p / (1 - p)


def dctr_weights(probs: np.ndarray, clip: float | None = 10.0, normalize: bool = True,
                 eps: float = 1e-6) -> tuple[np.ndarray, float]:
    """DCTR weights (arXiv:1907.08209, 2009.03796) ``w = D/(1-D)`` ``[N]`` for the label-0
    sample, scaled to mean 1 (which removes the class-size prior of a calibrated D) and
    clipped at ``clip`` times the mean; returns ``(w, fraction of clipped weights)``."""
    w = density_ratio(probs, eps)
    frac = 0.0
    if not len(w):
        return w, frac
    if clip is None:
        return (w / w.mean() if normalize else w), frac
    if not normalize:
        return np.minimum(w, clip), float((w > clip).mean())
    if clip < 1:
        raise ValueError(f"clip must be >= 1 (the mean weight), got {clip}")
    # scale s with mean(min(s·w, clip)) = 1: the k largest clipped, the rest scaled
    r = np.sort(w)
    n = len(r)
    csum = np.concatenate([[0.0], np.cumsum(r)])
    ks = np.arange(n)
    scales = (n - ks * clip) / csum[n - ks]
    upper = np.concatenate([[np.inf], r[::-1][:n - 1]])  # r[n - k] (k >= 1)
    ok = (scales * r[n - ks - 1] <= clip) & (scales * upper >= clip)
    k = int(np.argmax(ok)) if ok.any() else n - 1
    w = np.minimum(scales[k] * w, clip)
    frac = k / n
    return w, frac
