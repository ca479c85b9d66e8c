"""The i-flow test integrands (arXiv:2001.05486, eqs. 15-22) with their exact integrals."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowctl.integrands.base import Integrand, IntegrandError

__all__ = ["annulus", "camel", "circles", "gauss", "polynomial"]


def _need_dim(name: str, dim: int, lo: int = 1, hi: int | None = None) -> None:
    if dim < lo or (hi is not None and dim > hi):
        rng = f"{lo}" if hi == lo else f"{lo}..{hi if hi is not None else ''}"
        raise IntegrandError(f"integrand {name!r} is defined for dim {rng}, got dim={dim}")


def gauss(dim: int, alpha: float = 0.2) -> Integrand:
    """(alpha sqrt(pi))^-D exp(-sum (x_i - 1/2)^2 / alpha^2); exact erf(1/(2 alpha))^D."""
    _need_dim("gauss", dim)
    norm = (alpha * math.sqrt(math.pi)) ** (-dim)

    def f(x: Tensor) -> Tensor:
        return norm * torch.exp(-((x - 0.5) ** 2).sum(-1) / alpha**2)

    return Integrand("gauss", dim, f, exact=math.erf(1 / (2 * alpha)) ** dim,
                     params={"alpha": alpha})


def camel(dim: int, alpha: float = 0.2) -> Integrand:
    """Two Gaussians at (1/3, ...) and (2/3, ...) on the diagonal, each of weight 1/2;
    exact [(erf(1/(3 alpha)) + erf(2/(3 alpha)))/2]^D."""
    _need_dim("camel", dim)
    norm = 0.5 * (alpha * math.sqrt(math.pi)) ** (-dim)

    def f(x: Tensor) -> Tensor:
        a = ((x - 1 / 3) ** 2).sum(-1)
        b = ((x - 2 / 3) ** 2).sum(-1)
        return norm * (torch.exp(-a / alpha**2) + torch.exp(-b / alpha**2))

    c = 0.5 * (math.erf(1 / (3 * alpha)) + math.erf(2 / (3 * alpha)))
    return Integrand("camel", dim, f, exact=c**dim, params={"alpha": alpha},
                     modes=((1 / 3,) * dim, (2 / 3,) * dim), mode_width=alpha)


def circles(dim: int = 2, a: float = 3.0, width: float = 0.004, radius: float = 0.25,
            p1: float = 0.4, p2: float = 0.6) -> Integrand:
    """Two entangled thin circles (i-flow eq. 19); exact 0.0136848(1) for the defaults."""
    _need_dim("circles", dim, 2, 2)
    w = 1.0 / width

    def f(x: Tensor) -> Tensor:
        x1, x2 = x[:, 0], x[:, 1]
        r1 = (x2 - p2) ** 2 + (x1 - p1) ** 2 - radius**2
        r2 = (x2 - 1 + p2) ** 2 + (x1 - 1 + p1) ** 2 - radius**2
        return x2**a * torch.exp(-w * r1.abs()) + (1 - x2) ** a * torch.exp(-w * r2.abs())

    default = (a, width, radius, p1, p2) == (3.0, 0.004, 0.25, 0.4, 0.6)
    return Integrand("circles", 2, f, exact=0.0136848 if default else None,
                     exact_error=1e-7 if default else 0.0,
                     params={"a": a, "width": width, "radius": radius, "p1": p1, "p2": p2})


def annulus(dim: int = 2, r_outer: float = 0.45, r_inner: float = 0.2) -> Integrand:
    """Indicator of the ring r_inner <= |x - 1/2| <= r_outer; exact pi (r_o^2 - r_i^2)."""
    _need_dim("annulus", dim, 2, 2)
    if not 0 <= r_inner < r_outer <= 0.5:
        raise IntegrandError(f"annulus needs 0 <= r_inner < r_outer <= 0.5, got "
                             f"{r_inner}, {r_outer}")

    def f(x: Tensor) -> Tensor:
        r2 = ((x - 0.5) ** 2).sum(-1)
        return ((r2 >= r_inner**2) & (r2 <= r_outer**2)).to(x.dtype)

    return Integrand("annulus", 2, f, exact=math.pi * (r_outer**2 - r_inner**2),
                     params={"r_outer": r_outer, "r_inner": r_inner})


def polynomial(dim: int) -> Integrand:
    """sum_i (x_i - x_i^2); exact D/6."""
    _need_dim("polynomial", dim)

    def f(x: Tensor) -> Tensor:
        return (x - x**2).sum(-1)

    return Integrand("polynomial", dim, f, exact=dim / 6)
