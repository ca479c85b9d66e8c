"""Losses (weights detached, importance correction), the buffer, and training + honest errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowctl.apps.integration import DEFAULTS, flow_spec
from flowctl.flows import build as build_flow
from flowctl.integrands import SHIPPED
from flowctl.integration import (
    LOSSES,
    Buffer,
    exponential_loss,
    flow_weights,
    kl_loss,
    train_sampler,
    variance_loss,
)
from flowctl.metrics.integration import estimate


def _inputs(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    f = torch.rand(n, generator=g, dtype=torch.float64) + 0.1
    ls = torch.randn(n, generator=g, dtype=torch.float64) * 0.3
    lt = (ls + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)).requires_grad_(True)
    return f, lt, ls


def test_gradients_are_score_function_forms() -> None:
    f, lt, ls = _inputs()
    n = len(f)
    w = f * torch.exp(-ls)
    mu = w.mean()
    # KL: dL/dlog q_t = -(p/q_s)/N
    (g,) = torch.autograd.grad(kl_loss(f, lt, ls), lt)
    assert torch.allclose(g, -(w / mu) / n)
    # variance: dL/dlog q_t = -(q_t/q_s)((f/q_t)^2 - mu^2) / (N mu^2)
    (g,) = torch.autograd.grad(variance_loss(f, lt, ls), lt)
    r, fq = torch.exp(lt - ls), f * torch.exp(-lt)
    assert torch.allclose(g, (-(r * (fq**2 - mu**2)) / (n * mu**2)).detach())
    # exponential: dL/dlog q_t = -2 (p/q_s)(log p - log q_t)/N
    (g,) = torch.autograd.grad(exponential_loss(f, lt, ls), lt)
    log_p = torch.log(f / mu)
    assert torch.allclose(g, (-2 * (w / mu) * (log_p - lt) / n).detach())
    # weights are detached: no gradient reaches f or log q_sample
    f2, ls2 = f.clone().requires_grad_(True), ls.clone().requires_grad_(True)
    for fn in LOSSES.values():
        out = fn(f2.detach(), lt, ls2.detach())
        assert out.requires_grad


def test_perfect_sampler_has_zero_loss_and_gradient() -> None:
    g = torch.Generator().manual_seed(1)
    log_q = torch.randn(100, generator=g, dtype=torch.float64) * 0.5
    f = 3.0 * torch.exp(log_q)  # f proportional to q
    lt = log_q.clone().requires_grad_(True)
    for name, fn in LOSSES.items():
        loss = fn(f, lt, log_q)
        (grad,) = torch.autograd.grad(loss, lt)
        if name != "kl":  # KL's per-point gradient is -1/N (sums to zero over a batch of q)
            assert abs(float(loss.detach())) < 1e-12 and grad.abs().max() < 1e-12, name
        else:
            assert abs(float(loss.detach())) < 1e-12


def test_zero_integrand_points_are_harmless() -> None:
    f, lt, ls = _inputs()
    f = torch.where(torch.arange(len(f)) % 2 == 0, f, torch.zeros_like(f))
    for fn in LOSSES.values():
        loss = fn(f, lt, ls)
        (g,) = torch.autograd.grad(loss, lt)
        assert torch.isfinite(loss) and torch.isfinite(g).all()


def test_importance_corrected_variance_is_unbiased() -> None:
    """Points from q_s = uniform estimate the relative variance of another density q_t."""
    g = torch.Generator().manual_seed(2)
    x = torch.rand(400_000, generator=g, dtype=torch.float64)
    f = 2 * x  # integral 1
    lt = torch.log(0.5 + x)  # q_t(x) = 0.5 + x
    ls = torch.zeros_like(x)
    # exact: int f^2/q_t dx - 1 = int 4x^2/(0.5+x) dx - 1
    exact = 4 * ((1.5**2 - 0.5**2) / 2 - 1.0 + 0.25 * math.log(3)) - 1
    assert float(variance_loss(f, lt, ls)) == pytest.approx(exact, rel=0.02)


def test_buffer_wraps() -> None:
    b = Buffer(5, 2, torch.device("cpu"))
    for i in range(3):
        b.add(torch.full((2, 2), float(i)), torch.full((2,), float(i)), torch.zeros(2))
    assert b.size == 5 and b.pos == 1
    assert sorted(b.f.tolist()) == [0.0, 1.0, 1.0, 2.0, 2.0]
    x, f, _lq = b.draw(7, torch.Generator().manual_seed(0))
    assert x.shape == (7, 2) and f.shape == (7,)
    b.add(torch.zeros(9, 2), torch.arange(9.0), torch.zeros(9))
    assert sorted(b.f.tolist()) == [4.0, 5.0, 6.0, 7.0, 8.0]
    c = Buffer(5, 2, torch.device("cpu"))
    c.load_state_dict(b.state_dict())
    assert torch.equal(c.f, b.f) and c.pos == b.pos


def _tiny(dim: int, **tr: object) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    flow = build_flow(flow_spec({"flow": {"hidden": [16, 16], "bins": 8}}, dim))
    cfg = {**DEFAULTS["trainer"], "calls": 6000, "batch": 500, "buffer": 6000,
           "buffered_steps": 2, "lr": 3e-3, **tr}
    return flow, cfg


@pytest.mark.parametrize(("name", "loss"), [("camel", "kl"), ("ee_qqg", "variance"),
                                            ("gauss", "exponential")])
def test_small_budget_within_4_sigma_and_better_than_uniform(name: str, loss: str) -> None:
    ig = SHIPPED[name](2)
    flow, tr = _tiny(2, loss=loss)
    res = train_sampler(flow, ig, tr, verbose=False)
    assert res.calls == 6000 and res.steps == 12 * 3
    torch.manual_seed(11)
    w, _ = flow_weights(flow, ig, 20000)
    e = estimate(w)
    assert abs(e.integral - ig.exact) < 4 * e.error
    g = torch.Generator().manual_seed(5)
    plain = estimate(ig(torch.rand(20000, 2, dtype=torch.float64, generator=g)).numpy())
    assert e.rel_std < plain.rel_std


def test_sign_changing_integrand() -> None:
    """f = camel(x) - camel(1 - x) style: sample |f|, report the signed integral."""
    cam = SHIPPED["camel"](2)

    def f(x: torch.Tensor) -> torch.Tensor:
        return 2 * cam(x) - 1.0  # integral 2 * exact - 1

    flow, tr = _tiny(2, calls=3000)
    train_sampler(flow, f, tr, verbose=False)
    torch.manual_seed(3)
    w, _ = flow_weights(flow, f, 20000)
    assert (w < 0).any() and (w > 0).any()
    e = estimate(w)
    assert abs(e.integral - (2 * cam.exact - 1)) < 4 * e.error


def test_errors_are_honest_over_seeds() -> None:
    """Pulls of fresh-sample estimates over 40 seeds have unit width (within tolerance)."""
    ig = SHIPPED["camel"](2)
    flow, tr = _tiny(2, calls=3000)
    train_sampler(flow, ig, tr, verbose=False)
    pulls = []
    for s in range(40):
        torch.manual_seed(100 + s)
        e = estimate(flow_weights(flow, ig, 4000)[0])
        pulls.append((e.integral - ig.exact) / e.error)
    p = np.array(pulls)
    assert abs(p.mean()) < 0.6 and 0.65 < p.std(ddof=1) < 1.4, (p.mean(), p.std())


def test_resume_continues_from_checkpoint(tmp_path) -> None:
    ig = SHIPPED["gauss"](2)
    flow, tr = _tiny(2, calls=2000, checkpoint_every=1)
    full = train_sampler(flow, ig, tr, checkpoint=tmp_path / "a.pt", verbose=False)
    # interrupted run: first 1000 calls, then resumed up to 2000
    flow2, tr2 = _tiny(2, calls=1000)
    train_sampler(flow2, ig, tr2, checkpoint=tmp_path / "b.pt", verbose=False)
    flow3, _ = _tiny(2)
    res = train_sampler(flow3, ig, {**tr, "resume": True}, checkpoint=tmp_path / "b.pt",
                        verbose=False)
    assert res.resumed and res.calls == 2000 and res.steps == full.steps
    assert len(res.history) == len(full.history)
