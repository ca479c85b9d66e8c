"""transform: naf (deep sigmoidal flow) in maf / iaf / coupling: inverse, log-det, density."""

from __future__ import annotations

import pytest
import torch
from flowcases import randomize

from flowctl.flows import build
from flowctl.flows.monotonic import Sigmoidal, monotone_inverse, sigmoidal

KINDS = ["maf", "iaf", "coupling"]


def make_naf(kind: str, features: int = 3, context: int = 2, dtype=torch.float64,
             std: float = 0.3, **extra) -> torch.nn.Module:
    spec = {"kind": kind, "features": features, "context": context, "transforms": 3,
            "hidden": [16, 16], "transform": "naf", "sigmoids": 4, "activation": "tanh",
            **extra}
    torch.manual_seed(0)
    flow = build(spec)
    randomize(flow, std)
    return flow.to(dtype).eval()


def _points(n: int, d: int, dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    inside = torch.randn(n, d, generator=g) * 2
    far = (torch.rand(n, d, generator=g) * 2 - 1) * 30
    return torch.cat([inside, far]).to(dtype)


@pytest.mark.parametrize("kind", KINDS)
def test_naf_inverse_float64_and_float32(kind):
    for dtype, tol in [(torch.float64, 1e-6), (torch.float32, 1e-4)]:
        flow = make_naf(kind, features=4, dtype=dtype)
        x = _points(64, 4, dtype)
        ctx = torch.randn(x.shape[0], 2).to(dtype)
        with torch.no_grad():
            z, ld = flow.transform(x, ctx)
            x_back, ld_inv = flow.transform.inverse(z, ctx)
        err = ((x - x_back).abs() / (1 + x.abs())).max().item()
        assert err <= (1e-10 if dtype == torch.float64 else tol), (dtype, err)
        assert (ld + ld_inv).abs().max().item() <= 1e3 * tol


def _jac(fn, v: torch.Tensor) -> torch.Tensor:
    return torch.autograd.functional.jacobian(lambda u: fn(u.unsqueeze(0))[0].squeeze(0), v)


@pytest.mark.parametrize("kind", KINDS)
def test_naf_logdet_matches_autograd_both_directions(kind):
    flow = make_naf(kind, features=4)
    x = _points(3, 4, torch.float64)
    ctx = torch.randn(x.shape[0], 2, dtype=torch.float64)
    z, ld = flow.transform(x, ctx)
    _, ld_inv = flow.transform.inverse(z, ctx)
    for i in range(x.shape[0]):
        c = ctx[i:i + 1]
        jac = _jac(lambda v, c=c: flow.transform(v, c), x[i])
        assert torch.allclose(torch.linalg.slogdet(jac).logabsdet, ld[i], atol=1e-6)
        jac_inv = _jac(lambda v, c=c: flow.transform.inverse(v, c), z[i])
        assert torch.allclose(torch.linalg.slogdet(jac_inv).logabsdet, ld_inv[i], atol=1e-6)


def test_sigmoidal_inverse_gradients_match_finite_differences():
    """The root is found without autograd; one Newton step restores the exact derivatives
    with respect to y and the parameters (an IAF is trained through this)."""
    fam = Sigmoidal(3).double()
    torch.manual_seed(1)
    y = (torch.randn(5, dtype=torch.float64) * 3).requires_grad_()
    params = (torch.randn(5, 9, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: fam.inverse(a, b), (y, params))


def test_monotone_inverse_extreme_targets():
    log_a = torch.tensor([[-3.0, 3.0]], dtype=torch.float64)
    b = torch.tensor([[0.5, -2.0]], dtype=torch.float64)
    log_w = torch.log_softmax(torch.tensor([[0.3, -0.3]], dtype=torch.float64), -1)
    y = torch.tensor([-1e4, -50.0, -1e-3, 0.0, 7.0, 1e4], dtype=torch.float64)
    x = monotone_inverse(lambda v: sigmoidal(v, log_a, b, log_w), y)
    y_back = sigmoidal(x, log_a, b, log_w)[0]
    assert torch.isfinite(x).all()
    assert ((y_back - y).abs() / (1 + y.abs())).max().item() < 1e-12


@pytest.mark.parametrize("kind", ["maf", "coupling"])
def test_naf_two_dimensional_density_integrates_to_one(kind):
    flow = make_naf(kind, features=2, context=0, std=0.2)
    grid = torch.linspace(-9, 9, 500, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1)
    with torch.no_grad():
        mass = flow.log_prob(pts).exp().sum().item() * (grid[1] - grid[0]).item() ** 2
    assert abs(mass - 1.0) < 0.01


@pytest.mark.parametrize("kind", KINDS)
def test_naf_sample_and_log_prob_and_context(kind):
    flow = make_naf(kind)
    ctx = torch.randn(2, dtype=torch.float64)
    with torch.no_grad():
        x, lp = flow.sample_and_log_prob(50, ctx)
        assert torch.allclose(flow.log_prob(x, ctx), lp, atol=1e-8)
        c2 = torch.randn(2, dtype=torch.float64)
        assert not torch.allclose(flow.log_prob(x, c2), lp)  # the context is used


@pytest.mark.parametrize("kind", KINDS)
def test_naf_gradients_finite_for_extreme_parameters(kind):
    flow = make_naf(kind, std=8.0).train()
    x = torch.cat([torch.full((2, 3), 3e3), torch.full((2, 3), -3e3), torch.randn(4, 3) * 3])
    x = x.double()
    ctx = torch.randn(x.shape[0], 2, dtype=torch.float64)
    lp = flow.log_prob(x, ctx)
    lp.sum().backward()
    assert torch.isfinite(lp).all()
    for p in flow.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


def test_naf_rejects_unit_domain_and_bad_sigmoids():
    with pytest.raises(ValueError, match="naf"):
        build({"kind": "coupling", "features": 2, "transform": "naf", "domain": "unit"})
    with pytest.raises(ValueError, match="sigmoids"):
        build({"kind": "maf", "features": 2, "transform": "naf", "sigmoids": 0})
