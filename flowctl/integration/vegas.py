"""VEGAS (G. P. Lepage's ``vegas`` package, optional extra ``flowctl[peers]``) as a peer."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["run_vegas", "vegas_available", "vegas_weights"]


def vegas_available() -> bool:
    """Whether the optional ``vegas`` package (extra ``flowctl[peers]``) is importable."""
    try:
        import vegas  # noqa: F401
    except ImportError:
        return False
    return True


def run_vegas(f: Callable[[Tensor], Tensor], dim: int, calls: int, iterations: int = 30,
              adapt_iterations: int = 10, seed: int = 0, unweight_calls: int = 0
              ) -> dict[str, Any]:
    """VEGAS with ``calls`` integrand calls in total: ``adapt_iterations`` iterations of
    calls/iterations points to adapt the grid (result discarded), then the rest measured (the
    package's weighted average). Returns integral, error, rel. std per point (error times
    sqrt(measurement calls) / |integral|), chi2/dof, Q, calls; and, if ``unweight_calls``,
    weights of that many extra points from the adapted map (no stratification) for
    unweighting statistics.
    """
    import vegas

    counter = {"n": 0}

    @vegas.lbatchintegrand
    def fv(x: np.ndarray) -> np.ndarray:
        counter["n"] += len(x)
        return f(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))).cpu().numpy()

    np.random.seed(seed % 2**32)
    neval = max(calls // iterations, 10)
    integ = vegas.Integrator(dim * [[0.0, 1.0]], ran_array_generator=np.random.random)
    t0 = time.perf_counter()
    n_adapt = max(0, min(adapt_iterations, iterations - 1))
    if n_adapt:
        integ(fv, nitn=n_adapt, neval=neval)
    adapt_calls = counter["n"]
    res = integ(fv, nitn=iterations - n_adapt, neval=neval)
    measure_calls = counter["n"] - adapt_calls
    mean, sdev = float(res.mean), float(res.sdev)
    out: dict[str, Any] = {
        "integral": mean, "error": sdev, "calls": counter["n"], "calls_adapt": adapt_calls,
        "calls_measure": measure_calls,
        "rel_std": sdev * math.sqrt(measure_calls) / abs(mean) if mean else math.inf,
        "chi2_dof": float(res.chi2 / res.dof) if res.dof else None, "Q": float(res.Q),
        "wall_s": time.perf_counter() - t0,
    }
    if unweight_calls:
        out["weights"], out["points"] = vegas_weights(integ, f, unweight_calls)
    return out


def vegas_weights(integ: Any, f: Callable[[Tensor], Tensor], n: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Signed weights f(x) J(x) [n] and points [n, D] from an adapted VEGAS map (x = map(y),
    y uniform; the map's Jacobian J), without the stratification."""
    amap = integ.map
    y = np.random.random((n, amap.dim))
    x = np.empty_like(y)
    jac = np.empty(n)
    amap.map(y, x, jac)
    fx = f(torch.from_numpy(x)).cpu().numpy()
    return fx * jac, x
