"""A VEGAS grid (Lepage 1978, J. Comput. Phys. 27, 192) as a fixed map under a flow.

:class:`GridMap` is VEGAS's separable piecewise-linear map y -> x of [0,1]^D onto itself:
each axis has B increments of equal probability in y and adapted widths in x, so the density
of x = map(y), y ~ U, is 1/J(y) with J = prod_d B * width_d. :func:`adapt_grid` adapts it
with VEGAS's algorithm (bin averages of (f J)^2, smoothed, damped by ``alpha``, increments
redistributed so that each holds an equal share). MadNIS (arXiv:2311.01548) pre-trains such a
grid and writes it into the flow's first layers; here the flow is trained on top of the grid
instead, in y: on f_y(y) = f(map(y)) J(y), which is flatter than f when the grid is good.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["GridMap", "OnGrid", "adapt_grid"]


class GridMap(nn.Module):
    """Separable piecewise-linear bijection of [0,1]^D with ``bins`` increments per axis.

    ``edges`` [D, bins + 1] (a buffer, so it is saved with the model): increasing, from 0 to 1.
    Starts as the identity.
    """

    def __init__(self, dim: int, bins: int = 64) -> None:
        super().__init__()
        self.dim, self.bins = int(dim), int(bins)
        edges = torch.linspace(0.0, 1.0, self.bins + 1, dtype=torch.float64)
        self.register_buffer("edges", edges.repeat(self.dim, 1))

    def forward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """x = map(y) [N, D] (float64) and log J = log|dx/dy| [N]."""
        y = y.to(torch.float64)
        t = y * self.bins
        i = t.floor().clamp(0, self.bins - 1).long()
        frac = t - i
        e = self.edges.unsqueeze(0).expand(len(y), -1, -1)  # [N, D, B+1]
        lo = torch.gather(e, 2, i.unsqueeze(-1)).squeeze(-1)
        hi = torch.gather(e, 2, (i + 1).unsqueeze(-1)).squeeze(-1)
        width = hi - lo
        x = (lo + width * frac).clamp(0.0, 1.0)
        return x, torch.log(self.bins * width).sum(-1)

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """y = map^-1(x) [N, D] (float64) and log|dy/dx| [N] (= -log J)."""
        x = x.to(torch.float64)
        inner = self.edges[:, 1:-1].contiguous()  # [D, B-1]
        i = torch.searchsorted(inner, x.T.contiguous(), right=True).T  # [N, D] in 0..B-1
        e = self.edges.unsqueeze(0).expand(len(x), -1, -1)
        lo = torch.gather(e, 2, i.unsqueeze(-1)).squeeze(-1)
        hi = torch.gather(e, 2, (i + 1).unsqueeze(-1)).squeeze(-1)
        width = hi - lo
        y = ((i + ((x - lo) / width).clamp(0.0, 1.0)) / self.bins).clamp(0.0, 1.0)
        return y, -torch.log(self.bins * width).sum(-1)

    def refine(self, y: Tensor, fj: Tensor, alpha: float = 0.7) -> None:
        """One VEGAS adaptation from points ``y`` [N, D] (uniform) and values f(map(y)) J(y)
        [N]: per axis, the mean of (f J)^2 in each increment, smoothed over neighbours,
        normalised, damped to ((1 - d) / ln(1/d))^alpha, then new edges holding equal shares.
        """
        v = (fj.to(torch.float64) ** 2).cpu().numpy()
        ys = y.to(torch.float64).cpu().numpy()
        edges = self.edges.cpu().numpy().copy()
        b = self.bins
        for d in range(self.dim):
            idx = np.clip((ys[:, d] * b).astype(np.int64), 0, b - 1)
            s = np.bincount(idx, weights=v, minlength=b)
            c = np.bincount(idx, minlength=b)
            avg = np.where(c > 0, s / np.maximum(c, 1), 0.0)
            if not np.isfinite(avg).all() or avg.sum() <= 0:
                continue
            sm = avg.copy()
            if b > 1:
                sm[0] = (7 * avg[0] + avg[1]) / 8
                sm[-1] = (avg[-2] + 7 * avg[-1]) / 8
                sm[1:-1] = (avg[:-2] + 6 * avg[1:-1] + avg[2:]) / 8
            sm /= sm.sum()
            with np.errstate(divide="ignore", invalid="ignore"):
                r = np.where((sm > 0) & (sm < 1), ((1 - sm) / np.log(1 / sm)) ** alpha, 0.0)
            if r.sum() <= 0:
                continue
            cum = np.concatenate([[0.0], np.cumsum(r)])
            levels = np.linspace(0.0, cum[-1], b + 1)
            new = np.interp(levels, cum, edges[d])
            new[0], new[-1] = 0.0, 1.0
            new = np.maximum.accumulate(new)
            if np.all(np.diff(new) > 0):
                edges[d] = new
        self.edges.copy_(torch.from_numpy(edges).to(self.edges.device))


def adapt_grid(f: Callable[[Tensor], Tensor], dim: int, calls: int, bins: int = 64,
               alpha: float = 0.7, iterations: int = 10, seed: int = 0,
               device: torch.device | None = None) -> tuple[GridMap, int]:
    """A :class:`GridMap` adapted to ``f`` with ``calls`` integrand calls in ``iterations``
    VEGAS iterations; returns (grid, calls used)."""
    grid = GridMap(dim, bins).to(device or torch.device("cpu"))
    iterations = max(1, min(int(iterations), calls // max(2 * bins, 2))) if calls else 0
    g = torch.Generator().manual_seed(seed + 4242)
    used = 0
    for it in range(iterations):
        n = (calls - used) // (iterations - it)
        y = torch.rand(n, dim, dtype=torch.float64, generator=g).to(grid.edges.device)
        with torch.no_grad():
            x, log_j = grid(y)
            fj = f(x).abs() * torch.exp(log_j)
        used += n
        grid.refine(y, fj, alpha)
    return grid, used


class OnGrid:
    """The integrand seen in y: f_y(y) = f(map(y)) J(y) [N] (what the flow under a grid
    learns)."""

    def __init__(self, f: Callable[[Tensor], Tensor], grid: GridMap) -> None:
        self.f, self.grid = f, grid

    def __call__(self, y: Tensor) -> Tensor:
        x, log_j = self.grid(y)
        fx = self.f(x)
        return torch.where(fx == 0, torch.zeros_like(fx), fx * torch.exp(log_j))
