"""Adam/AdamW fused where PyTorch has the kernel: same updates as the per-tensor loop."""

from __future__ import annotations

import pytest
import torch

from flowctl.training.optimizers import adam, fused_supported


def test_fused_on_cpu_float_parameters_only():
    assert fused_supported([torch.zeros(3, requires_grad=True), torch.zeros(2, 2)])
    assert not fused_supported([])
    assert not fused_supported([torch.zeros(3, dtype=torch.long)])
    opt = adam([torch.zeros(3, requires_grad=True)], lr=1e-3, decoupled=True)
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["fused"] is True
    assert type(adam([torch.zeros(3, requires_grad=True)], lr=1e-3)) is torch.optim.Adam


@pytest.mark.parametrize("decoupled", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_updates_match_the_loop(decoupled, dtype):
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(s, generator=gen, dtype=dtype) for s in [(7, 5), (5,), (3, 3, 2)]]
    fused = [p.clone().requires_grad_() for p in start]
    loop = [p.clone().requires_grad_() for p in start]
    opt_f = adam(fused, lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-3, decoupled=decoupled)
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    opt_l = cls(loop, lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-3, foreach=False)
    for _ in range(25):
        for a, b in zip(fused, loop):
            g = torch.randn(a.shape, generator=gen, dtype=dtype)
            a.grad, b.grad = g.clone(), g.clone()
        opt_f.step()
        opt_l.step()
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for a, b in zip(fused, loop):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_state_dict_round_trip_from_a_loop_optimizer():
    """A checkpoint written by the per-tensor loop (runs before this change) loads."""
    p = torch.nn.Parameter(torch.ones(4))
    old = torch.optim.AdamW([p], lr=1e-3)
    p.grad = torch.ones(4)
    old.step()
    new = adam([p], lr=1e-3, decoupled=True)
    new.load_state_dict(old.state_dict())
    p.grad = torch.ones(4)
    new.step()
    assert float(new.state[p]["step"]) == 2.0
