"""Stratified latent points and their mean (VEGAS's hypercubes), for flows on [0,1]^D.

The pieces that both the fresh estimate (:mod:`.stratified`) and the trainer's stratified
batches (``trainer.stratify_batches``) use; no other module of the package is imported here.
A unit flow maps latent z in [0,1]^D (uniform base) to x = T(z) with q(x) = 1/|det dT/dz|;
drawing z stratified instead of i.i.d. leaves every point distributed as q (so losses and
buffers treat the points as before) and removes the variance of f/q between hypercubes from
the batch's mean.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowctl.flows.core import Flow
from flowctl.flows.distributions import BoxUniform

__all__ = ["is_unit_flow", "strata_per_axis", "stratified_mean", "stratified_uniform",
           "unit_latent_map"]


def strata_per_axis(n: int, dim: int, per_stratum: int = 2) -> list[int]:
    """Strata per axis [dim] with prod <= n // per_stratum, as equal as possible (the first
    axes get one more where the product allows)."""
    h_max = max(1, n // max(1, per_stratum))
    base = 1
    while (base + 1) ** dim <= h_max:
        base += 1
    s = [base] * dim
    total = base**dim
    for d in range(dim):
        if total // base * (base + 1) <= h_max:
            s[d] += 1
            total = total // base * (base + 1)
    return s


def stratified_uniform(n: int, strata: list[int], generator: torch.Generator | None = None
                       ) -> tuple[Tensor, Tensor]:
    """``n`` points z [n, D] (float64) uniform in [0,1]^D, stratified: each of the
    H = prod(strata) hypercubes gets n // H points and n % H random ones one more; and the
    hypercube index of each point [n] (long)."""
    h = math.prod(strata)
    if n < h:
        raise ValueError(f"{n} points cannot fill {h} strata")
    counts = torch.full((h,), n // h, dtype=torch.long)
    extra = n - int(counts.sum())
    if extra:
        counts[torch.randperm(h, generator=generator)[:extra]] += 1
    cube = torch.repeat_interleave(torch.arange(h), counts)
    idx = []
    rest = cube.clone()
    for s in reversed(strata):
        idx.append(rest % s)
        rest = rest // s
    multi = torch.stack(idx[::-1], 1).to(torch.float64)
    sizes = torch.tensor(strata, dtype=torch.float64)
    u = torch.rand(n, len(strata), dtype=torch.float64, generator=generator)
    return (multi + u) / sizes, cube


def stratified_mean(w: Tensor, cube: Tensor, h: int) -> tuple[float, float]:
    """Mean of the hypercube means of ``w`` [N] (hypercube index ``cube`` [N], ``h`` cubes,
    each with >= 2 points) and its variance sum_h var_h / (H^2 n_h)."""
    w = w.double().cpu()
    cube = cube.cpu()
    cnt = torch.bincount(cube, minlength=h).double()
    s1 = torch.zeros(h, dtype=torch.float64).index_add_(0, cube, w)
    s2 = torch.zeros(h, dtype=torch.float64).index_add_(0, cube, w * w)
    mean_h = s1 / cnt
    var_h = (s2 - cnt * mean_h**2).clamp_min(0) / (cnt - 1)
    return float(mean_h.mean()), float((var_h / cnt).sum() / h**2)


def is_unit_flow(m: nn.Module) -> bool:
    """Whether ``m`` is a flowctl flow with a uniform base on [0,1]^D and no context."""
    return isinstance(m, Flow) and isinstance(m.base, BoxUniform) \
        and float(m.base.low) == 0.0 and float(m.base.high) == 1.0 \
        and m.context_features == 0


def unit_latent_map(flow: nn.Module, z: Tensor) -> tuple[Tensor, Tensor]:
    """x = T(z) [N, D] (the flow's dtype) and log q(x) [N] (float64) for latent points
    z [N, D] in [0,1]^D of a unit flow (:func:`is_unit_flow`)."""
    ref = next(flow.parameters())
    zz = z.to(dtype=ref.dtype, device=ref.device)
    x, ld = flow.transform.inverse(zz)
    return x, (flow.base.log_prob(zz) - ld).double()
