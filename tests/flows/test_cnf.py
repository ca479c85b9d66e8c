"""kind: cnf — consistency of the ODE directions, exact log-dets, flow matching, Hutchinson."""

from __future__ import annotations

import math

import pytest
import torch
from flowcases import randomize

from flowctl.flows import build
from flowctl.flows.continuous import divergence, ot_pairing


def make_cnf(features: int = 2, context: int = 1, std: float = 0.3, dtype=torch.float64,
             **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    flow = build({"kind": "cnf", "features": features, "context": context,
                  "hidden": [32, 32], **extra})
    randomize(flow, std)
    return flow.to(dtype).eval()


def test_cnf_sample_and_log_prob_consistent_with_log_prob_default_tolerances():
    flow = make_cnf(context=1)
    c = torch.randn(1, dtype=torch.float64)
    with torch.no_grad():
        x, lp = flow.sample_and_log_prob(300, c)
        lp_again = flow.log_prob(x, c)
    assert x.shape == (300, 2)
    assert (lp - lp_again).abs().max().item() < 1e-3


def test_cnf_round_trip_and_logdet_matches_autograd_jacobian():
    flow = make_cnf(features=3, context=2, rtol=1e-8, atol=1e-8)
    x = torch.randn(2, 3, dtype=torch.float64)
    ctx = torch.randn(2, 2, dtype=torch.float64)
    z, ld = flow.transform(x, ctx)
    x_back, ld_inv = flow.transform.inverse(z, ctx)
    assert (x - x_back).abs().max().item() < 1e-6
    assert (ld + ld_inv).abs().max().item() < 1e-6
    for i in range(2):
        jac = torch.autograd.functional.jacobian(
            lambda v, i=i: flow.transform(v.unsqueeze(0), ctx[i:i + 1])[0].squeeze(0), x[i])
        assert abs(torch.linalg.slogdet(jac).logabsdet.item() - ld[i].item()) < 1e-5


def test_cnf_two_dimensional_density_integrates_to_one():
    flow = make_cnf(context=0, std=0.3)
    grid = torch.linspace(-7, 7, 120, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    with torch.no_grad():
        lp = flow.log_prob(torch.stack([xx.flatten(), yy.flatten()], 1))
    mass = lp.exp().sum().item() * (grid[1] - grid[0]).item() ** 2
    assert abs(mass - 1.0) < 0.01


def test_cnf_float32_close_to_float64():
    f64 = make_cnf(context=1)
    f32 = make_cnf(context=1, dtype=torch.float32)
    x = torch.randn(50, 2, dtype=torch.float64)
    c = torch.randn(50, 1, dtype=torch.float64)
    with torch.no_grad():
        lp64 = f64.log_prob(x, c)
        lp32 = f32.log_prob(x.float(), c.float())
    assert lp32.dtype == torch.float32
    assert (lp64 - lp32.double()).abs().max().item() < 1e-3


def test_hutchinson_divergence_is_unbiased_and_only_used_in_training():
    torch.manual_seed(0)
    a = torch.randn(4, 4, dtype=torch.float64)
    x = torch.randn(1, 4, dtype=torch.float64).expand(4000, 4).clone().requires_grad_()
    v = torch.tanh(x @ a.T)
    exact = divergence(v, x, create_graph=False)[0]
    v = torch.tanh(x @ a.T)
    noise = torch.randint(0, 2, (4000, 4)).double() * 2 - 1
    ests = divergence(v, x, False, noise)
    assert abs(ests.mean().item() - exact.item()) < 4 * ests.std().item() / math.sqrt(4000)
    assert ests.std().item() > 0  # an estimate, not the exact value

    flow = make_cnf(context=0, trace="hutchinson")
    x = torch.randn(20, 2, dtype=torch.float64)
    with torch.no_grad():
        exact_lp = flow.log_prob(x)
        flow.train()
        noisy_lp = flow.log_prob(x)
        flow.eval()
        again = flow.log_prob(x)
    assert torch.equal(exact_lp, again)
    assert not torch.allclose(noisy_lp, exact_lp)


def test_flow_matching_learns_a_gaussian():
    """Flow matching (plain and minibatch-OT) fits an anisotropic, shifted Gaussian: the CNF's
    exact log-density ends close to the truth (the solver runs only for the evaluation)."""
    torch.manual_seed(0)
    mean = torch.tensor([1.5, -1.0])
    scale = torch.tensor([0.5, 2.0])
    truth = torch.distributions.Normal(mean, scale)
    for objective, steps in (("flow_matching", 500), ("flow_matching_ot", 120)):
        torch.manual_seed(0)
        flow = build({"kind": "cnf", "features": 2, "hidden": [32, 32]})
        opt = torch.optim.Adam(flow.parameters(), lr=5e-3)
        for _ in range(steps):
            x = mean + scale * torch.randn(256, 2)
            loss = flow(x, objective=objective).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        flow.eval()
        x = truth.sample((1000,))
        with torch.no_grad():
            kl = (truth.log_prob(x).sum(1) - flow.log_prob(x)).mean().item()
        assert kl < 0.05, (objective, kl)


def test_nll_training_step_and_adjoint_gradients_agree():
    flow = make_cnf(context=1, std=0.2)
    x = torch.randn(16, 2, dtype=torch.float64)
    c = torch.randn(16, 1, dtype=torch.float64)
    flow.log_prob(x, c).mean().backward()
    direct = [p.grad.clone() for p in flow.parameters()]
    adj = make_cnf(context=1, std=0.2, adjoint=True)
    adj.log_prob(x, c).mean().backward()
    for g, h in zip(direct, (p.grad for p in adj.parameters())):
        assert torch.allclose(g, h, atol=1e-4, rtol=1e-3)


def test_ot_pairing_lowers_transport_cost_and_rejects_context():
    torch.manual_seed(0)
    x0, x1 = torch.randn(64, 2), torch.randn(64, 2)
    perm = ot_pairing(x0, x1)
    assert sorted(perm.tolist()) == list(range(64))
    assert (x0 - x1[perm]).pow(2).sum() < (x0 - x1).pow(2).sum()
    flow = make_cnf(context=1)
    with pytest.raises(ValueError, match="unconditional"):
        flow(torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64),
             objective="flow_matching_ot")


def test_cnf_build_errors():
    with pytest.raises(ValueError, match="trace"):
        build({"kind": "cnf", "features": 2, "trace": "skilling"})
    with pytest.raises(ValueError, match="base normal"):
        build({"kind": "cnf", "features": 2, "domain": "unit"})
    with pytest.raises(ValueError, match="rtol"):
        build({"kind": "cnf", "features": 2, "rtol": 0})


def test_sample_without_trace_matches_sample_and_log_prob():
    """``sample`` solves dx/dt = v alone; its points agree with ``sample_and_log_prob``'s
    (same base draws) to the solver tolerance, with fewer field evaluations' worth of work."""
    from flowctl.flows import build

    torch.manual_seed(0)
    flow = build({"kind": "cnf", "features": 2, "context": 1, "hidden": [32, 32],
                  "standardize": True, "rtol": 1e-7, "atol": 1e-7}).double()
    for m in flow.modules():
        if isinstance(m, torch.nn.Linear):
            m.reset_parameters()
    flow.initialize(torch.randn(256, 2, dtype=torch.float64) * 2 + 1,
                    torch.randn(256, 1, dtype=torch.float64))
    ctx = torch.tensor([0.3], dtype=torch.float64)
    with torch.no_grad():
        torch.manual_seed(5)
        fast = flow.sample(200, ctx)
        torch.manual_seed(5)
        full, _ = flow.sample_and_log_prob(200, ctx)
    assert torch.allclose(fast, full, atol=1e-5)
