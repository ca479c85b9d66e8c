"""MadNIS (``pip install madnis==1.0.0``, arXiv:2212.06172, 2311.01548) as a peer.

Runs ``madnis.integrator.Integrator`` with its defaults (KL loss for one channel, batch 1024,
Adam 1e-3, its RQ-spline flow) for ``train_calls`` integrand calls, then draws ``est_calls``
fresh points with ``Integrator.sample`` and returns their weights, so that flowctl's own
estimate, pulls and diagnostics apply to both with the same definitions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["madnis_available", "run_madnis"]


def madnis_available() -> bool:
    """Whether the optional ``madnis`` package is importable."""
    try:
        import madnis.integrator  # noqa: F401
    except ImportError:
        return False
    return True


def run_madnis(f: Callable[[Tensor], Tensor], dim: int, train_calls: int, est_calls: int,
               seed: int = 0, batch: int = 1024, **kwargs: Any) -> dict[str, Any]:
    """Train MadNIS on ``f`` ([0,1]^dim) with ``train_calls // batch`` steps of ``batch``
    points and return the weights [est_calls] and points [est_calls, dim] of fresh samples,
    the calls (training + estimate) and wall times. ``kwargs`` go to ``Integrator``."""
    from madnis.integrator import Integrator

    counter = {"n": 0}

    def fm(x: Tensor) -> Tensor:
        counter["n"] += len(x)
        return f(x.to(torch.float64)).to(x.dtype)

    torch.manual_seed(seed)
    integ = Integrator(fm, dims=dim, batch_size=batch, **kwargs)
    t0 = time.perf_counter()
    steps = max(train_calls // batch, 0)
    if steps:
        integ.train(steps)
    train_calls_used = counter["n"]
    train_s = time.perf_counter() - t0
    torch.manual_seed(seed + 1)
    with torch.no_grad():
        s = integ.sample(est_calls)
    w = s.weights.double().cpu().numpy()
    x = s.x.double().cpu().numpy()
    return {"weights": w, "points": x, "calls": counter["n"], "calls_train": train_calls_used,
            "steps": steps, "train_s": train_s, "wall_s": time.perf_counter() - t0}
