"""Stratified sampling in a sampler's latent space (VEGAS's stratification, under a flow).

A flow on [0,1]^D with a uniform base is a map z -> x = T(z) of the unit cube with density
q(x) = 1/|det dT/dz|, so the integral is that of g(z) = f(T(z)) / q(T(z)) over z in [0,1]^D.
Instead of drawing z i.i.d., the cube is cut into H equal hypercubes (``s_d`` strata along
axis d, H = prod s_d <= N/2) and every hypercube gets N/H (>= 2) uniform points: the
estimate is the mean of the hypercube means, its variance sum_h var_h / (H^2 n_h) from the
spread inside each hypercube. This is VEGAS's stratified sampling (Lepage, arXiv:2009.05112,
with equal allocation, i.e. its beta = 0); it removes the variance of g between hypercubes,
so it never does worse than i.i.d. points and helps most in few dimensions (for D = 16 and
N = 50 000 only 14 axes get 2 strata).

Each point is still distributed as q, so the weights f/q of the points feed the same
diagnostics (ESS, Pareto k, max weight) as i.i.d. ones. A :class:`~.sampler.GridFlow` maps z
through its flow and then its grid; a :class:`~.sampler.Mixture` gives channel c a fixed
share n_c ~ N alpha_c of the points, stratified in its own latent space, and the estimate
sum_c alpha_c mean_c(f/q) (the multi-channel estimate with stratified channel counts).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from flowctl.integration.sampler import GridFlow, Mixture
from flowctl.integration.sampling import Guarded, flow_weights
from flowctl.integration.strata import (
    is_unit_flow,
    strata_per_axis,
    stratified_mean,
    stratified_uniform,
    unit_latent_map,
)
from flowctl.metrics.integration import estimate

__all__ = ["StratifiedEstimate", "can_stratify", "fresh_estimate", "latent_map",
           "strata_per_axis", "stratified_estimate", "stratified_uniform"]


def can_stratify(sampler: nn.Module) -> bool:
    """Whether :func:`latent_map` knows the sampler: a flow with a uniform base on [0,1]^D, a
    :class:`GridFlow` over one, or a :class:`Mixture` of those."""
    if isinstance(sampler, Mixture):
        return all(can_stratify(s) for s in sampler.samplers)
    if isinstance(sampler, GridFlow):
        return is_unit_flow(sampler.flow)
    return is_unit_flow(sampler)


def latent_map(sampler: nn.Module, z: Tensor) -> tuple[Tensor, Tensor]:
    """x = T(z) [N, D] and log q(x) [N] (float64) for latent points z [N, D] in [0,1]^D of a
    single-channel sampler (a unit flow or a :class:`GridFlow`)."""
    if isinstance(sampler, GridFlow):
        y, log_q = latent_map(sampler.flow, z)
        x, log_j = sampler.grid(y)
        return x, log_q - log_j
    return unit_latent_map(sampler, z)


@dataclass
class StratifiedEstimate:
    """Integral and error of a stratified estimate; ``weights`` f/q [N] and ``points`` [N, D]
    (shuffled); ``rel_std`` = error sqrt(N) / |integral| (per point, like VEGAS's);
    ``rel_std_iid`` = std(w)/|mean(w)| (what i.i.d. points of the same sampler give);
    ``strata``: strata per axis of each channel; ``counts``: points per channel."""

    integral: float
    error: float
    rel_std: float
    rel_std_iid: float
    weights: np.ndarray
    points: np.ndarray
    strata: list[list[int]]
    counts: list[int]


def _channel(sampler: nn.Module, f: Callable[[Tensor], Tensor], log_q_of: Callable[
        [Tensor], Tensor] | None, n: int, gen: torch.Generator, counter: Guarded | None,
             batch: int) -> tuple[float, float, np.ndarray, np.ndarray, list[int]]:
    """Stratified mean of f/q over ``n`` points of one channel: (mean, variance of the mean,
    weights, points, strata)."""
    dim = int(sampler.features)
    strata = strata_per_axis(n, dim)
    z, cube = stratified_uniform(n, strata, gen)
    ws, xs = [], []
    for i in range(0, n, batch):
        x, log_q = latent_map(sampler, z[i:i + batch])
        if log_q_of is not None:  # a channel of a mixture: weights use the mixture's q
            log_q = log_q_of(x)
        fx = f(x)
        w = fx * torch.exp(-log_q.double())
        w = torch.where(fx == 0, torch.zeros_like(w), w)
        bad = ~torch.isfinite(w)
        if counter is not None and bool(bad.any()):
            counter.counter.density += int(bad.sum())
            w = torch.where(bad, torch.zeros_like(w), w)
        ws.append(w.cpu())
        xs.append(x.double().cpu())
    w = torch.cat(ws)
    mean, var = stratified_mean(w, cube, math.prod(strata))
    return mean, var, w.numpy(), torch.cat(xs).numpy(), strata


@torch.no_grad()
def stratified_estimate(sampler: nn.Module, f: Callable[[Tensor], Tensor], n: int,
                        seed: int = 0, batch: int = 50000) -> StratifiedEstimate:
    """Stratified estimate of the integral of f with ``n`` fresh points of ``sampler`` (see
    the module docstring). Non-finite weights (a point where q = 0) are set to 0 and counted
    in ``f.counter.density`` when ``f`` is :class:`~.sampling.Guarded`."""
    if not can_stratify(sampler):
        raise ValueError("stratified_estimate needs a unit-cube flow with a uniform base, a "
                         "GridFlow or a Mixture of them")
    if n < 4:
        raise ValueError(f"need at least 4 points for a stratified estimate, got {n}")
    gen = torch.Generator().manual_seed(int(seed) + 2024)
    guard = f if isinstance(f, Guarded) else None
    if isinstance(sampler, Mixture):
        alpha = sampler.log_alpha.exp().cpu().numpy()
        k = len(alpha)
        counts = np.maximum(np.floor(alpha * (n - 2 * k)).astype(int), 0) + 2
        counts[np.argmax(alpha)] += n - int(counts.sum())
        parts = [_channel(s, f, sampler.log_prob, int(c), gen, guard, batch)
                 for s, c in zip(sampler.samplers, counts.tolist())]
        integral = float(sum(a * p[0] for a, p in zip(alpha, parts)))
        var = float(sum(a**2 * p[1] for a, p in zip(alpha, parts)))
        w = np.concatenate([p[2] for p in parts])
        x = np.concatenate([p[3] for p in parts])
        strata = [p[4] for p in parts]
        counts_l = [int(c) for c in counts]
    else:
        mean, var, w, x, st = _channel(sampler, f, None, n, gen, guard, batch)
        integral, strata, counts_l = mean, [st], [n]
    perm = np.random.default_rng(seed + 2025).permutation(len(w))
    w, x = w[perm], x[perm]
    error = math.sqrt(max(var, 0.0))
    rel = error * math.sqrt(len(w)) / abs(integral) if integral else math.inf
    mw = float(w.mean())
    rel_iid = float(w.std(ddof=1)) / abs(mw) if mw else math.inf
    return StratifiedEstimate(integral, error, rel, rel_iid, w, x, strata, counts_l)


def fresh_estimate(sampler: nn.Module, f: Callable[[Tensor], Tensor], n: int, *,
                   stratify: bool = True, seed: int = 0, batch: int = 50000
                   ) -> tuple[dict[str, object], np.ndarray, np.ndarray]:
    """The answer from ``n`` fresh points: a dict of :class:`~flowctl.metrics.integration.
    Estimate`'s fields (integral, error, rel_std per point, ESS, ...) plus ``stratified``
    and ``rel_std_iid``, the weights f/q [n] and the points [n, D]. With ``stratify`` (and a
    sampler :func:`can_stratify` knows) integral, error and rel_std are the stratified ones;
    ESS and the other weight statistics always describe the weights."""
    if stratify and can_stratify(sampler) and n >= 4:
        s = stratified_estimate(sampler, f, n, seed=seed, batch=batch)
        est = estimate(s.weights).as_dict()
        est.update(integral=s.integral, error=s.error, rel_std=s.rel_std,
                   rel_std_iid=s.rel_std_iid, stratified=True, strata=s.strata)
        return est, s.weights, s.points
    torch.manual_seed(seed + 1)
    w, x = flow_weights(sampler, f, n, batch=batch, keep_x=True)
    est = estimate(w).as_dict()
    est.update(rel_std_iid=est["rel_std"], stratified=False)
    assert x is not None
    return est, w, x
