"""MadNIS (``pip install madnis==1.0.0``, arXiv:2212.06172, 2311.01548) as a peer.

Runs ``madnis.integrator.Integrator`` with its defaults (KL loss for one channel, batch 1024,
Adam 1e-3, its RQ-spline flow) for at most ``train_calls`` integrand calls, then draws
``est_calls`` fresh points with ``Integrator.sample`` and returns their weights, so that
flowctl's own estimate, pulls and diagnostics apply to both with the same definitions.
MadNIS keeps sampling within a training step until more than half of a batch has f != 0;
on a target that is zero (in float32) almost everywhere, like the narrow ridge, one step can
use up the whole budget: the calls are counted as they happen and training stops there.
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
    """Train MadNIS on ``f`` ([0,1]^dim) with steps of ``batch`` points until ``train_calls``
    integrand calls are spent, and return the weights [est_calls] and points [est_calls, dim] of fresh samples,
    the calls (training + estimate) and wall times. ``kwargs`` go to ``Integrator``."""
    from madnis.integrator import Integrator

    counter = {"n": 0, "budget": int(train_calls)}

    class _Spent(Exception):
        """The training budget of integrand calls is used up."""

    def fm(x: Tensor) -> Tensor:
        if counter["n"] + len(x) > counter["budget"]:
            raise _Spent
        counter["n"] += len(x)
        return f(x.to(torch.float64)).to(x.dtype)

    torch.manual_seed(seed)
    integ = Integrator(fm, dims=dim, batch_size=batch, **kwargs)
    t0 = time.perf_counter()
    steps = 0
    try:  # MadNIS resamples until half a batch is non-zero: a step can take many batches
        while counter["n"] + batch <= counter["budget"]:
            integ.train_step()
            steps += 1
    except _Spent:
        pass
    train_calls_used = counter["n"]
    train_s = time.perf_counter() - t0
    counter["budget"] = train_calls_used + int(est_calls)
    torch.manual_seed(seed + 1)
    with torch.no_grad():
        s = integ.sample(est_calls)
    w = s.weights.double().cpu().numpy()
    x = s.x.double().cpu().numpy()
    return {"weights": w, "points": x, "calls": counter["n"], "calls_train": train_calls_used,
            "steps": steps, "train_s": train_s, "wall_s": time.perf_counter() - t0}
