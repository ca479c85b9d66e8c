"""Leading-order e+e- matrix elements mapped onto the unit square.

* ``ee_qqg``: e+e- -> q qbar g, (1/sigma_0) d^2 sigma / dx1 dx2 = (C_F alpha_s / 2 pi)
  (x1^2 + x2^2) / ((1 - x1)(1 - x2)) with y_ij = s_ij / s > y_cut for all pairs; the integral
  is (C_F alpha_s / 2 pi) F(y_cut) (the O(alpha_s) three-jet rate, :func:`three_jet_rate`).
* ``ee_mumu``: e+e- -> mu+ mu- through the photon (and optionally the Z) in cos(theta), phi;
  the integral is the total cross section in pb.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowctl.integrands.base import Integrand, IntegrandError

__all__ = ["GEV2_TO_PB", "dilog", "ee_mumu", "ee_qqg", "random_rotations", "three_jet_rate"]

GEV2_TO_PB = 3.89379656e8
"""(hbar c)^2 in pb GeV^2."""

C_F = 4.0 / 3.0


def dilog(z: float) -> float:
    """Li2(z) for real z <= 1/2 (power series; Euler's reflection above 1/2 up to 1)."""
    if z > 1:
        raise ValueError("dilog implemented for z <= 1")
    if z == 1:
        return math.pi**2 / 6
    if z > 0.5:
        return math.pi**2 / 6 - math.log(z) * math.log(1 - z) - dilog(1 - z)
    if z < -1:
        return -math.pi**2 / 6 - 0.5 * math.log(-z) ** 2 - dilog(1 / z)
    if z < -0.5:  # Li2(z) = -Li2(z/(z-1)) - ln^2(1-z)/2 with z/(z-1) in (1/3, 1/2]
        return -dilog(z / (z - 1)) - 0.5 * math.log(1 - z) ** 2
    total, term, k = 0.0, z, 1
    while abs(term) > 1e-18 * max(abs(total), 1e-300) and k < 400:
        total += term / k**2
        k += 1
        term *= z
    return total


def three_jet_rate(y: float) -> float:
    """F(y): sigma_3 / sigma_0 = (C_F alpha_s / 2 pi) F(y) with y_ij > y on all pairs."""
    if not 0 < y < 1 / 3:
        raise ValueError(f"y_cut must be in (0, 1/3), got {y}")
    return ((3 - 6 * y) * math.log(y / (1 - 2 * y)) + 2 * math.log(y / (1 - y)) ** 2
            + 2.5 - 6 * y - 4.5 * y**2 + 4 * dilog(y / (1 - y)) - math.pi**2 / 3)


def random_rotations(n: int, generator: torch.Generator | None = None,
                     dtype: torch.dtype = torch.float64) -> Tensor:
    """``[n, 3, 3]`` rotation matrices drawn uniformly (Haar) via QR of Gaussian matrices."""
    a = torch.randn(n, 3, 3, generator=generator, dtype=dtype)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    det = torch.linalg.det(q)
    q[:, :, 0] = q[:, :, 0] * det.unsqueeze(-1)
    return q


def ee_qqg(dim: int = 2, y_cut: float = 0.01, alpha_s: float = 0.118, sqrt_s: float = 91.2,
           mapping: str = "triangle") -> Integrand:
    """e+e- -> q qbar g in units of sigma_0, on the unit square.

    ``mapping``: ``triangle`` maps (u1, u2) onto the whole allowed region
    y13 = y + (1 - 3y) u1, y23 = y + (1 - 3y)(1 - u1) u2 (Jacobian (1 - 3y)^2 (1 - u1));
    ``log`` takes ln y13, ln y23 uniform in [ln y, ln(1 - 2y)] (Pythia's PYX3JT variables),
    zero where y12 < y.
    """
    if dim != 2:
        raise IntegrandError(f"integrand 'ee_qqg' is defined for dim 2, got dim={dim}")
    if not 0 < y_cut < 1 / 3:
        raise IntegrandError(f"ee_qqg needs 0 < y_cut < 1/3, got {y_cut}")
    if mapping not in ("triangle", "log"):
        raise IntegrandError(f"ee_qqg mapping must be triangle or log, got {mapping!r}")
    y = y_cut
    pref = C_F * alpha_s / (2 * math.pi)
    lo, hi = math.log(y), math.log(1 - 2 * y)

    def ys(u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(y13, y23, jacobian) of the mapping."""
        if mapping == "triangle":
            y13 = y + (1 - 3 * y) * u[:, 0]
            y23 = y + (1 - 3 * y) * (1 - u[:, 0]) * u[:, 1]
            jac = (1 - 3 * y) ** 2 * (1 - u[:, 0])
        else:
            y13 = torch.exp(lo + (hi - lo) * u[:, 0])
            y23 = torch.exp(lo + (hi - lo) * u[:, 1])
            jac = y13 * y23 * (hi - lo) ** 2
        return y13, y23, jac

    def f(u: Tensor) -> Tensor:
        y13, y23, jac = ys(u)
        y12 = 1 - y13 - y23
        me = pref * (y13**2 + y23**2 + 2 * y12) / (y13 * y23)
        inside = (y12 > y) & (y13 > y) & (y23 > y)
        return torch.where(inside, me * jac, torch.zeros_like(me))

    def momenta(u: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Four-momenta [N, 3, 4] of (q, qbar, g) in the CM frame, random orientation."""
        u = u.to(torch.float64)
        y13, y23, _ = ys(u)
        x1, x2 = 1 - y23, 1 - y13
        x3 = 2 - x1 - x2
        e1, e2 = x1 * sqrt_s / 2, x2 * sqrt_s / 2
        cos12 = (1 - 2 * (1 - x3) / (x1 * x2)).clamp(-1, 1)
        sin12 = (1 - cos12**2).clamp_min(0).sqrt()
        zero = torch.zeros_like(e1)
        p1 = torch.stack([zero, zero, e1], -1)
        p2 = torch.stack([e2 * sin12, zero, e2 * cos12], -1)
        p3 = -(p1 + p2)
        p = torch.stack([p1, p2, p3], 1)  # [N, 3, 3]
        rot = random_rotations(len(u), generator, dtype=p.dtype).to(p.device)
        p = torch.einsum("nij,npj->npi", rot, p)
        e3 = sqrt_s - e1 - e2
        e = torch.stack([e1, e2, e3], 1).unsqueeze(-1)
        return torch.cat([e, p], -1)

    exact = pref * three_jet_rate(y)
    labels = ("u13", "u23")
    return Integrand("ee_qqg", 2, f, exact=exact, momenta=momenta,
                     particles=("q", "qbar", "g"), units="sigma_0", labels=labels,
                     params={"y_cut": y_cut, "alpha_s": alpha_s, "sqrt_s": sqrt_s,
                             "mapping": mapping})


def ee_mumu(dim: int = 2, sqrt_s: float = 91.2, z: bool = False, alpha: float | None = None,
            mz: float = 91.1876, gz: float = 2.4952, sin2w: float = 0.22293) -> Integrand:
    """e+e- -> mu+ mu- (pb) with cos(theta) = 2 u1 - 1, phi = 2 pi u2; photon only or with Z.

    Spin-averaged |M|^2 = (4 pi alpha)^2 {(1 + c^2)[Q^4 + 2 Q^2 v_e v_f chi1 + (a^2+v^2)^2 chi2]
    + c [4 Q^2 a_e a_f chi1 + 8 a_e v_e a_f v_f chi2]}, d sigma / d Omega = |M|^2 / (64 pi^2 s).
    """
    if dim != 2:
        raise IntegrandError(f"integrand 'ee_mumu' is defined for dim 2, got dim={dim}")
    if sqrt_s <= 0:
        raise IntegrandError(f"ee_mumu needs sqrt_s > 0, got {sqrt_s}")
    if alpha is None:
        alpha = 1 / 128.802 if z else 1 / 137.036
    s = sqrt_s**2
    qe = qf = -1.0
    ae = af = -0.5
    ve, vf = ae - 2 * qe * sin2w, af - 2 * qf * sin2w
    if z:
        kappa = 1 / (4 * sin2w * (1 - sin2w))
        den = (s - mz**2) ** 2 + gz**2 * mz**2
        chi1, chi2 = kappa * s * (s - mz**2) / den, (kappa * s) ** 2 / den
    else:
        chi1 = chi2 = 0.0
    c_sym = qe**2 * qf**2 + 2 * qe * qf * ve * vf * chi1 + (ae**2 + ve**2) * (af**2 + vf**2) * chi2
    c_asym = 4 * qe * qf * ae * af * chi1 + 8 * ae * ve * af * vf * chi2
    pref = (4 * math.pi * alpha) ** 2 / (64 * math.pi**2 * s) * GEV2_TO_PB

    def f(u: Tensor) -> Tensor:
        c = 2 * u[:, 0] - 1
        return 4 * math.pi * pref * ((1 + c**2) * c_sym + c * c_asym)

    def momenta(u: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """[N, 2, 4] of (mu-, mu+) with the e- beam along +z."""
        u = u.to(torch.float64)
        c = 2 * u[:, 0] - 1
        sn = (1 - c**2).clamp_min(0).sqrt()
        phi = 2 * math.pi * u[:, 1]
        e = torch.full_like(c, sqrt_s / 2)
        p = torch.stack([e, e * sn * torch.cos(phi), e * sn * torch.sin(phi), e * c], -1)
        anti = torch.cat([p[:, :1], -p[:, 1:]], -1)
        return torch.stack([p, anti], 1)

    exact = pref * 2 * math.pi * (8 / 3) * c_sym
    return Integrand("ee_mumu", 2, f, exact=exact, momenta=momenta, particles=("mu-", "mu+"),
                     units="pb", labels=("cos_theta_u", "phi_u"),
                     params={"sqrt_s": sqrt_s, "z": z, "alpha": alpha})
