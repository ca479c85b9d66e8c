"""Weights of fresh points (flowctl's estimate, plain MC) and the run-wide count of
non-finite values.

Every integrand call of a run goes through one :class:`NonFinite` counter: non-finite values
(NaN, +-inf) are counted, set to 0 so that they cannot poison a loss or an estimate, and the
run stops with :class:`~flowctl.integration.errors.NonFiniteError` once they exceed
``max_fraction`` of the calls so far. Non-finite sampler densities (a flow that put a point
where it thinks q = 0) are counted the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowctl.integration.errors import NonFiniteError

__all__ = ["Embedded", "Guarded", "NonFinite", "embedded", "flow_weights", "plain_mc",
           "sampling_dim"]


class NonFinite:
    """Run-wide count of integrand calls and of non-finite integrand values / densities.

    Args:
        max_fraction: the run stops when (non-finite values) > max_fraction * calls (0: at
            the first one).
    """

    def __init__(self, max_fraction: float = 1e-4) -> None:
        if not 0 <= max_fraction <= 1:
            raise ValueError(f"max_fraction must be in [0, 1], got {max_fraction}")
        self.max_fraction = float(max_fraction)
        self.calls = 0
        self.nan = 0
        self.inf = 0
        self.density = 0

    @property
    def count(self) -> int:
        """Non-finite integrand values so far."""
        return self.nan + self.inf

    def clean(self, y: Tensor) -> Tensor:
        """Count the calls and non-finite values of ``y [N]``; return it with those set to 0."""
        self.calls += int(y.numel())
        bad = ~torch.isfinite(y)
        nb = int(bad.sum())
        if nb:
            n_nan = int(torch.isnan(y).sum())
            self.nan += n_nan
            self.inf += nb - n_nan
            y = torch.where(bad, torch.zeros_like(y), y)
        return y

    def check(self) -> None:
        """Raise :class:`NonFiniteError` once the non-finite share is past the limit."""
        if self.count > self.max_fraction * self.calls:
            raise NonFiniteError(
                f"the integrand returned non-finite values on {self.count} of {self.calls} "
                f"points so far ({self.nan} NaN, {self.inf} inf; "
                f"{100 * self.count / max(self.calls, 1):.3g}%), more than "
                f"reliability.max_nonfinite={self.max_fraction:g} of the calls; fix the "
                "integrand or raise the limit (non-finite values then count as 0)")

    def as_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "nonfinite": self.count, "nan": self.nan,
                "inf": self.inf, "nonfinite_density": self.density,
                "max_fraction": self.max_fraction}

    def reason(self) -> str | None:
        """One phrase for the reliability report, or None when everything was finite."""
        parts = []
        if self.count:
            parts.append(f"{self.count} non-finite integrand values ({self.nan} NaN, "
                         f"{self.inf} inf) of {self.calls} calls were set to 0")
        if self.density:
            parts.append(f"{self.density} points with a non-finite sampler density were "
                         "set to 0")
        return "; ".join(parts) or None


class Guarded:
    """``f`` seen through a :class:`NonFinite` counter: ``f(x) [N]`` float64, non-finite -> 0."""

    def __init__(self, f: Callable[[Tensor], Tensor], counter: NonFinite) -> None:
        self.f = f
        self.counter = counter

    def __call__(self, x: Tensor) -> Tensor:
        y = self.counter.clean(self.f(x).to(torch.float64))
        self.counter.check()
        return y


@torch.no_grad()
def flow_weights(flow: torch.nn.Module, f: Callable[[Tensor], Tensor], n: int,
                 batch: int = 50000, keep_x: bool = False
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """Draw ``n`` fresh points from ``flow`` and return the signed weights f/q [n] (float64)
    and, if ``keep_x``, the points [n, D]. Points where f = 0 weigh 0; where the sampler's
    log density is not finite the weight is set to 0 and counted in ``f.counter.density``
    when ``f`` is :class:`Guarded` (else it stays non-finite for the caller to see)."""
    ws, xs = [], []
    counter = f.counter if isinstance(f, Guarded) else None
    for i in range(0, n, batch):
        m = min(batch, n - i)
        x, log_q = flow.sample_and_log_prob(m)
        fx = f(x)
        log_q = log_q.double()
        w = fx * torch.exp(-log_q)
        w = torch.where(fx == 0, torch.zeros_like(w), w)
        if counter is not None:
            bad = ~torch.isfinite(w)
            if bool(bad.any()):
                counter.density += int(bad.sum())
                w = torch.where(bad, torch.zeros_like(w), w)
        ws.append(w.cpu().numpy())
        if keep_x:
            xs.append(x.double().cpu().numpy())
    w = np.concatenate(ws) if ws else np.zeros(0)
    return w, (np.concatenate(xs) if keep_x and xs else None)


def plain_mc(f: Callable[[Tensor], Tensor], dim: int, calls: int, seed: int = 0,
             batch: int = 100000, keep_x: bool = False
             ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Weights f(u) [calls] of uniform points: plain Monte Carlo; with ``keep_x`` also the
    points u [calls, dim] those weights belong to."""
    g = torch.Generator().manual_seed(seed + 777)
    ws, xs = [], []
    for i in range(0, calls, batch):
        m = min(batch, calls - i)
        u = torch.rand(m, dim, dtype=torch.float64, generator=g)
        ws.append(f(u).cpu().numpy())
        if keep_x:
            xs.append(u.numpy())
    w = np.concatenate(ws) if ws else np.zeros(0)
    if keep_x:
        return w, (np.concatenate(xs) if xs else np.zeros((0, dim)))
    return w


class Embedded:
    """A 1-D integrand seen as 2-D with a flat dummy coordinate (coupling flows need D >= 2):
    f(x [N, 2]) = ig(x[:, :1])."""

    def __init__(self, ig: Callable[[Tensor], Tensor]) -> None:
        self.ig = ig

    def __call__(self, x: Tensor) -> Tensor:
        return self.ig(x[:, :1])


def sampling_dim(ig: Any) -> int:
    """Dimension of the flow: the integrand's ``dim``, or 2 for a 1-D integrand (embedded
    with a flat dummy axis)."""
    return max(int(ig.dim), 2)


def embedded(ig: Any) -> Callable[[Tensor], Tensor]:
    """The function the sampler integrates: ``ig`` itself, or :class:`Embedded` in 2-D for
    a 1-D integrand."""
    return ig if int(ig.dim) >= 2 else Embedded(ig)
