"""Rational-quadratic spline numerics: boundaries, tails, inverse, derivatives, extremes."""

from __future__ import annotations

import pytest
import torch

from flowctl.flows import RQS, UnitRQS
from flowctl.flows.splines import unconstrained_rqs

K = 8


def _params(n: int, scale: float, dtype=torch.float64, seed: int = 0, unit: bool = False):
    g = torch.Generator().manual_seed(seed)
    p = 3 * K + 1 if unit else 3 * K - 1
    return (torch.randn(n, p, generator=g) * scale).to(dtype)


def _split(p):
    return p[..., :K], p[..., K:2 * K], p[..., 2 * K:]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_identity_at_zero_parameters(dtype):
    x = torch.linspace(-5, 5, 101, dtype=dtype)
    y, ladj = RQS(K, 3.0)(x, torch.zeros(101, 3 * K - 1, dtype=dtype))
    assert torch.allclose(y, x, atol=1e-6 if dtype == torch.float32 else 1e-12)
    assert ladj.abs().max() < (1e-6 if dtype == torch.float32 else 1e-12)
    u = torch.linspace(0, 1, 101, dtype=dtype)
    y, ladj = UnitRQS(K)(u, torch.zeros(101, 3 * K + 1, dtype=dtype))
    assert torch.allclose(y, u, atol=1e-6 if dtype == torch.float32 else 1e-12)


def test_boundary_is_continuous_with_derivative_one():
    """At ±B the spline meets the identity tails in value and in slope (no likelihood jump)."""
    bound = 3.0
    p = _params(200, 2.0)
    for edge in (bound, -bound):
        x = torch.full((200,), edge, dtype=torch.float64, requires_grad=True)
        y, ladj = unconstrained_rqs(x, *_split(p), bound=bound)
        assert torch.equal(y.detach(), x.detach())  # pinned end knots
        assert ladj.abs().max().item() < 1e-12     # log-slope 0 exactly at the knot
        (grad,) = torch.autograd.grad(y.sum(), x)
        assert torch.allclose(grad, torch.ones_like(grad), atol=1e-12)
        # one step inside: the slope approaches 1 continuously
        eps = 1e-10 * (1 if edge < 0 else -1)
        _, ladj_in = unconstrained_rqs(x.detach() + eps, *_split(p), bound=bound)
        assert ladj_in.abs().max().item() < 1e-4


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_inverse_everywhere_including_knots_and_tails(dtype):
    bound = 3.0
    p = _params(1, 1.0, dtype).expand(400, -1)
    x = torch.cat([torch.linspace(-3 * bound, 3 * bound, 300, dtype=dtype),
                   torch.tensor([-bound, bound, 0.0, 1e3 * bound, -1e3 * bound], dtype=dtype),
                   (torch.rand(95, dtype=dtype) * 2 - 1) * bound])
    # the spline's own knots: exact bin edges
    y, ladj = unconstrained_rqs(x, *_split(p), bound=bound)
    x_back, ladj_inv = unconstrained_rqs(y, *_split(p), bound=bound, inverse=True)
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    assert ((x_back - x).abs() / (1 + x.abs())).max().item() < tol
    assert (ladj + ladj_inv).abs().max().item() < 100 * tol
    outside = x.abs() > bound
    assert torch.equal(y[outside], x[outside])
    assert torch.equal(ladj[outside], torch.zeros_like(ladj[outside]))


def test_inverse_exactly_at_knots():
    from flowctl.flows.splines import _knots

    p = _params(1, 1.5)
    w, h, d = _split(p)
    xs = _knots(w, -3.0, 3.0, 1e-3)
    ys = _knots(h, -3.0, 3.0, 1e-3)
    k = xs.shape[-1]
    y, _ = unconstrained_rqs(xs[0], w.expand(k, -1), h.expand(k, -1), d.expand(k, -1), 3.0)
    assert torch.allclose(y, ys[0], atol=1e-12)
    x, _ = unconstrained_rqs(ys[0], w.expand(k, -1), h.expand(k, -1), d.expand(k, -1), 3.0,
                             inverse=True)
    assert torch.allclose(x, xs[0], atol=1e-12)


def test_log_derivative_matches_autograd_and_is_monotone():
    p = _params(500, 1.5)
    x = ((torch.rand(500, dtype=torch.float64) * 2 - 1) * 3.5).requires_grad_()
    y, ladj = unconstrained_rqs(x, *_split(p), bound=3.0)
    (dy,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(dy.log(), ladj, atol=1e-9)
    y_inv, ladj_inv = unconstrained_rqs(x, *_split(p), bound=3.0, inverse=True)
    (dx,) = torch.autograd.grad(y_inv.sum(), x)
    assert torch.allclose(dx.log(), ladj_inv, atol=1e-9)
    xs = torch.linspace(-4, 4, 2001, dtype=torch.float64)
    ys, _ = unconstrained_rqs(xs, *_split(_params(1, 2.0).expand(2001, -1)), bound=3.0)
    assert (ys[1:] > ys[:-1]).all()


def test_large_tail_bound_float32_right_edge():
    """nflows #79: x exactly at the right edge with B = 64 in float32 must not index bin K."""
    bound = 64.0
    p = _params(4, 1.0, torch.float32)
    x = torch.tensor([bound, -bound, bound - 1e-5, torch.nextafter(torch.tensor(bound),
                     torch.tensor(0.0)).item()], dtype=torch.float32)
    y, ladj = unconstrained_rqs(x, *_split(p), bound=bound)
    assert torch.isfinite(y).all() and torch.isfinite(ladj).all()
    assert y[0].item() == bound and y[1].item() == -bound
    x_back, _ = unconstrained_rqs(y, *_split(p), bound=bound, inverse=True)
    assert torch.allclose(x_back, x, atol=1e-3)


@pytest.mark.parametrize("scale", [10.0, 50.0])
def test_finite_gradients_for_extreme_parameters_and_inputs(scale):
    p = _params(64, scale).requires_grad_()
    x = torch.cat([torch.full((16,), 3e3), torch.full((16,), -3e3), torch.full((16,), 3.0),
                   torch.rand(16) * 6 - 3]).double().requires_grad_()
    for inverse in (False, True):
        y, ladj = unconstrained_rqs(x, *_split(p), bound=3.0, inverse=inverse)
        gx, gp = torch.autograd.grad((y + ladj).sum(), (x, p))
        assert torch.isfinite(y).all() and torch.isfinite(ladj).all()
        assert torch.isfinite(gx).all() and torch.isfinite(gp).all()


def test_unit_spline_maps_unit_interval_onto_itself():
    p = _params(300, 2.0, unit=True)
    fam = UnitRQS(K)
    u = torch.cat([torch.tensor([0.0, 1.0], dtype=torch.float64),
                   torch.rand(298, dtype=torch.float64)])
    y, ladj = fam(u, p)
    assert y[0].item() == 0.0 and y[1].item() == 1.0
    assert (y >= 0).all() and (y <= 1).all()
    u_back, ladj_inv = fam.inverse(y, p)
    assert torch.allclose(u_back, u, atol=1e-10)
    assert torch.allclose(ladj, -ladj_inv, atol=1e-8)
    # the slope integrates to y(1) - y(0) = 1 (trapezoid rule on a fine grid)
    grid = torch.linspace(0, 1, 20001, dtype=torch.float64)
    _, lg = fam(grid, p[:1].expand(20001, -1))
    assert abs(torch.trapezoid(lg.exp(), grid).item() - 1.0) < 1e-5


def test_bins_and_bounds_are_validated():
    with pytest.raises(ValueError, match="at least 2 bins"):
        RQS(1)
    with pytest.raises(ValueError, match="tail_bound must be positive"):
        RQS(8, 0.0)
    with pytest.raises(ValueError, match="minimal bin size"):
        unconstrained_rqs(torch.zeros(2), torch.zeros(2, 1000), torch.zeros(2, 1000),
                          torch.zeros(2, 999), 3.0)
