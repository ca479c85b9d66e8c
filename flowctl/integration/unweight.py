"""Unweighted events from a trained sampler by accept/reject (reference/integration.md §6).

w_max is the bootstrap median maximum of replicas of a calibration sample (arXiv:2001.10028,
:func:`flowctl.metrics.integration.unweighting_efficiency`); a point with weight w is kept
with probability min(|w| / w_max, 1), an over-weight keeps the weight |w| / w_max.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from flowctl.integration.errors import IntegrationError
from flowctl.integration.sampling import flow_weights
from flowctl.metrics.integration import UnweightingStats, unweighting_efficiency

__all__ = ["Events", "calibrated_unweight", "unweight"]


@dataclass
class Events:
    """``x`` [n, D] kept points, ``weights`` [n] (sign times max(1, |w|/w_max)),
    ``tried`` points drawn after the calibration, ``all_weights`` of every point drawn
    (calibration included, for the integral), the ``efficiency`` kept/tried."""

    x: np.ndarray
    weights: np.ndarray
    tried: int
    all_weights: np.ndarray
    efficiency: float


def unweight(sampler: nn.Module, f: Callable[[Tensor], Tensor], n: int, w_max: float,
             w_cal: np.ndarray, predicted_efficiency: float, batch: int, seed: int = 0
             ) -> Events:
    """``n`` unweighted events from ``sampler`` for ``f`` with the threshold ``w_max``
    (calibration weights ``w_cal`` are kept for the integral). Raises
    :class:`IntegrationError` when w_max <= 0 or the acceptance stalls."""
    if w_max <= 0:
        raise IntegrationError("the integrand is zero on all calibration points; cannot "
                               "unweight")
    gen = torch.Generator().manual_seed(seed + 3)
    xs, ws = [], []
    kept = tried = 0
    all_w: list[np.ndarray] = [w_cal]
    batch = max(1000, int(min(batch, 4 * n / max(predicted_efficiency, 1e-3))))
    while kept < n:
        w, x = flow_weights(sampler, f, batch, batch=batch, keep_x=True)
        assert x is not None
        tried += len(w)
        all_w.append(w)
        r = np.abs(w) / w_max
        u = torch.rand(len(w), generator=gen, dtype=torch.float64).numpy()
        acc = u < np.minimum(r, 1.0)
        xs.append(x[acc])
        ws.append(np.sign(w[acc]) * np.maximum(r[acc], 1.0))
        kept += int(acc.sum())
        if tried > 1000 * n + 10_000_000:
            raise IntegrationError(f"unweighting stalled: {kept} events from {tried} points")
    return Events(np.concatenate(xs)[:n], np.concatenate(ws)[:n], tried,
                  np.concatenate(all_w), kept / tried)


def calibrated_unweight(sampler: nn.Module, f: Callable[[Tensor], Tensor], n: int,
                        calibration: int, batch: int, replicas: int,
                        replica_size: int | None = None, seed: int = 0
                        ) -> tuple[Events, UnweightingStats]:
    """``n`` unweighted events with w_max from a calibration sample: ``calibration`` fresh
    points, w_max = the bootstrap median maximum of ``replicas`` replicas (of
    ``replica_size`` weights; None: non-zero weights / 50). Returns the events (calls
    beyond the calibration: ``Events.tried``) and the calibration's unweighting statistics
    (w_max, predicted efficiency)."""
    torch.manual_seed(seed + 2)
    w_cal, _ = flow_weights(sampler, f, calibration, batch=batch)
    stats = unweighting_efficiency(w_cal, replicas, replica_size, seed=seed)
    ev = unweight(sampler, f, n, stats.w_max, w_cal, stats.efficiency, batch, seed)
    return ev, stats
