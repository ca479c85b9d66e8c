"""Isotonic calibration of classifier scores (pool-adjacent-violators), fitted on a
validation split: scores ``[N]`` in, probabilities ``[N]`` out."""

from __future__ import annotations

import numpy as np

__all__ = ["IsotonicCalibration"]


class IsotonicCalibration:
    """Monotone (non-decreasing) map from scores to probabilities by pool-adjacent-violators,
    clipped to [y_min, 1 - y_min]; evaluated by linear interpolation."""

    def __init__(self, scores: np.ndarray, labels: np.ndarray, y_min: float = 1e-6,
                 weights: np.ndarray | None = None) -> None:
        order = np.argsort(scores, kind="mergesort")
        x = np.asarray(scores, np.float64)[order]
        y = np.asarray(labels, np.float64)[order]
        wy = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)[order]
        # PAV on blocks: value, weight, x-range
        vals: list[float] = []
        wts: list[float] = []
        xlo: list[float] = []
        xhi: list[float] = []
        for xi, yi, wi in zip(x, y, wy):
            vals.append(yi)
            wts.append(float(wi))
            xlo.append(xi)
            xhi.append(xi)
            while len(vals) > 1 and vals[-2] > vals[-1]:
                w = wts[-2] + wts[-1]
                v = ((vals[-2] * wts[-2] + vals[-1] * wts[-1]) / w if w > 0
                     else 0.5 * (vals[-2] + vals[-1]))
                vals[-2:], wts[-2:] = [v], [w]
                xlo[-2:], xhi[-2:] = [xlo[-2]], [xhi[-1]]
        kx = np.array([c for lo, hi in zip(xlo, xhi) for c in (lo, hi)])
        ky = np.array([v for v in vals for _ in (0, 1)])
        self.x, self.y = kx, np.clip(ky, y_min, 1 - y_min)

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        return np.interp(scores, self.x, self.y)

    @classmethod
    def from_knots(cls, x: np.ndarray, y: np.ndarray) -> IsotonicCalibration:
        """Rebuild a fitted calibration from its knots ``x, y [K]`` (see ``self.x, self.y``)."""
        obj = cls.__new__(cls)
        obj.x, obj.y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        return obj
