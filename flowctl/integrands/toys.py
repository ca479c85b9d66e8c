"""The i-flow test integrands (arXiv:2001.05486, eqs. 15-22) with their exact integrals."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowctl.integrands.base import Integrand, IntegrandError

__all__ = ["annulus", "camel", "circles", "gauss", "polynomial", "ridge"]


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


def ridge(dim: int, width: float = 0.01, length: float = 0.15, direction: str = "diagonal",
          centre: float = 0.5, seed: int = 0) -> Integrand:
    """A narrow, strongly correlated Gaussian ridge: the normal density N(x; c, S) with
    S = width^2 I + (length^2 - width^2) u u^T, long (std ``length``) along the unit vector u
    and narrow (std ``width``) across it; u = (1, ..., 1)/sqrt(D) (``diagonal``) or a random
    direction drawn with ``seed`` (``random``). The integral is the mass inside the cube: 1
    up to the union bound sum_i 2 Phi(-min(c, 1 - c) / sigma_i) of the marginals' tails
    (sigma_i^2 = S_ii), which is its ``exact_error`` and must stay below 1e-9.

    With the defaults in 6-d the coordinates correlate with rho = 0.97 and the ridge fills
    about 1e-8 of the cube; a sampler must find it and learn the correlation (VEGAS's
    separable grid cannot).
    """
    _need_dim("ridge", dim, 2)
    if not 0 < width < length:
        raise IntegrandError(f"ridge needs 0 < width < length, got {width}, {length}")
    if direction == "diagonal":
        u = torch.ones(dim, dtype=torch.float64)
    elif direction == "random":
        u = torch.randn(dim, generator=torch.Generator().manual_seed(int(seed)),
                        dtype=torch.float64)
    else:
        raise IntegrandError(f"ridge direction must be diagonal or random, got {direction!r}")
    u = u / u.norm()
    var = width**2 + (length**2 - width**2) * u**2
    room = min(centre, 1 - centre)
    tail = float(sum(math.erfc(room / math.sqrt(2 * v)) for v in var.tolist()))
    if tail > 1e-9:
        raise IntegrandError(f"ridge leaves the cube (mass outside up to {tail:.2g}); use a "
                             "smaller length or a centre nearer 0.5")
    log_norm = -0.5 * dim * math.log(2 * math.pi) - (dim - 1) * math.log(width) \
        - math.log(length)
    across, along = 1 / width**2, 1 / length**2 - 1 / width**2

    def f(x: Tensor) -> Tensor:
        d = x - centre
        q = (d**2).sum(-1) * across + (d @ u.to(x.device)) ** 2 * along
        return torch.exp(log_norm - 0.5 * q)

    return Integrand("ridge", dim, f, exact=1.0, exact_error=tail,
                     params={"width": width, "length": length, "direction": direction,
                             "centre": centre, "seed": seed})
