"""kind: mflow — projection, samples on the manifold, the density on the manifold."""

from __future__ import annotations

import math

import pytest
import torch
from flowcases import randomize

from flowctl.flows import build


def make_mflow(features: int = 3, latent: int = 2, context: int = 0, dtype=torch.float64,
               std: float = 0.2) -> torch.nn.Module:
    torch.manual_seed(0)
    flow = build({"kind": "mflow", "features": features, "latent": latent, "context": context,
                  "transforms": 4, "hidden": [16, 16], "activation": "tanh",
                  "latent_flow": {"transforms": 2, "hidden": [8]}})
    randomize(flow, std)
    return flow.to(dtype).eval()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_project_is_idempotent_and_samples_lie_on_the_manifold(dtype):
    flow = make_mflow(dtype=dtype)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    x = torch.randn(200, 3, dtype=dtype) * 2
    with torch.no_grad():
        p = flow.project(x)
        assert ((flow.project(p) - p).abs() / (1 + p.abs())).max().item() < tol
        assert (p - x).abs().max().item() > 1e-2  # off-manifold points do move
        s = flow.sample(100)
        assert ((flow.project(s) - s).abs() / (1 + s.abs())).max().item() < tol
        u = torch.randn(50, 2, dtype=dtype)
        assert (flow.encode(flow.decode(u)) - u).abs().max().item() < tol


def test_volume_element_matches_finite_differences():
    flow = make_mflow()
    u = torch.randn(6, 2, dtype=torch.float64)
    h = 1e-5
    with torch.no_grad():
        cols = []
        for j in range(2):
            e = torch.zeros(1, 2, dtype=torch.float64)
            e[0, j] = h
            cols.append((flow.decode(u + e) - flow.decode(u - e)) / (2 * h))
        jac = torch.stack(cols, dim=2)  # [N, n, d]
        fd = 0.5 * torch.linalg.slogdet(jac.transpose(1, 2) @ jac).logabsdet
        assert torch.allclose(flow.log_volume(u), fd, atol=1e-7)


def test_density_on_a_curve_integrates_to_one_over_its_length():
    """n = 2, d = 1: sum of p(x(u)) times the data-space length of each piece of the curve
    (measured from the decoded points, not from the Jacobian)."""
    flow = make_mflow(features=2, latent=1, std=0.3)
    u = torch.linspace(-9, 9, 20001, dtype=torch.float64).unsqueeze(1)
    with torch.no_grad():
        x = flow.decode(u)
        lp = flow.log_prob(x)
    seg = (x[1:] - x[:-1]).norm(dim=1)
    mass = (0.5 * (lp[1:] + lp[:-1])).exp().mul(seg).sum().item()
    assert abs(mass - 1.0) < 1e-3


def test_sample_and_log_prob_and_context():
    flow = make_mflow(context=2)
    c = torch.randn(2, dtype=torch.float64)
    with torch.no_grad():
        x, lp = flow.sample_and_log_prob(64, c)
        assert torch.allclose(flow.log_prob(x, c), lp, atol=1e-8)
        assert not torch.allclose(flow.log_prob(x, c + 1), lp)


def test_two_phase_objectives_train_the_right_parts():
    """Reconstruction moves only the outer flow, latent NLL only the latent flow; a short
    reconstruction phase pulls a parabola's points onto the learned curve."""
    torch.manual_seed(0)
    flow = build({"kind": "mflow", "features": 2, "latent": 1, "transforms": 4,
                  "hidden": [32, 32], "standardize": True})

    def data(n: int) -> torch.Tensor:
        t = torch.rand(n, 1) * 3 - 1.5
        return torch.cat([t, t ** 2 - 1], 1)

    flow.initialize(data(2000))
    x = data(256)
    for objective, trained, frozen in (("reconstruction", "outer", "latent_flow"),
                                       ("latent_nll", "latent_flow", "outer")):
        flow.zero_grad()
        flow(x, objective=objective).mean().backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0
                   for p in getattr(flow, trained).parameters())
        assert all(p.grad is None or p.grad.abs().sum() == 0
                   for p in getattr(flow, frozen).parameters())
    with torch.no_grad():
        before = flow(x, objective="reconstruction").mean().item()
    opt = torch.optim.Adam(flow.outer.parameters(), lr=3e-3)
    for _ in range(30):
        loss = flow(data(256), objective="reconstruction").mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = flow(x, objective="reconstruction").mean().item()
    assert after < 0.1 * before and math.isfinite(after)


def test_mflow_spec_errors():
    with pytest.raises(ValueError, match="latent"):
        build({"kind": "mflow", "features": 3})
    with pytest.raises(ValueError, match="1 <= latent < features"):
        build({"kind": "mflow", "features": 3, "latent": 3})
    with pytest.raises(ValueError, match="symmetry"):
        build({"kind": "mflow", "features": 2, "latent": 1, "symmetry": {"group": "sign"}})
