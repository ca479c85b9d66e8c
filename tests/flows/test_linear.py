"""The thin-input linear layer: same values and gradients as ``F.linear``, wherever it applies."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from flowctl.flows.coupling import MLP
from flowctl.flows.linear import THIN_FEATURES, THIN_ROWS, Linear, _ThinLinear, linear
from flowctl.flows.made import MADE


def _grads(fn, x, w, b):
    out = fn(x, w, b)
    g = torch.randn_like(out, generator=torch.Generator().manual_seed(5))
    return out, torch.autograd.grad(out, [t for t in (x, w, b) if t is not None and
                                         t.requires_grad], g)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("features", sorted({THIN_FEATURES[0], 4, THIN_FEATURES[1]}))
@pytest.mark.parametrize("x_grad", [True, False])
@pytest.mark.parametrize("with_bias", [True, False])
def test_values_and_gradients_match_f_linear(dtype, features, x_grad, with_bias):
    gen = torch.Generator().manual_seed(features)
    x = torch.randn(THIN_ROWS, features, generator=gen, dtype=dtype).requires_grad_(x_grad)
    w = torch.randn(37, features, generator=gen, dtype=dtype).requires_grad_()
    b = torch.randn(37, generator=gen, dtype=dtype).requires_grad_() if with_bias else None
    out, grads = _grads(linear, x, w, b)
    ref_out, ref_grads = _grads(F.linear, x, w, b)
    assert out.grad_fn.name().startswith("_ThinLinear")  # the rewritten path ran
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out, ref_out, rtol=tol, atol=tol)
    assert len(grads) == len(ref_grads) == 1 + x_grad + with_bias
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def test_outside_the_measured_range_f_linear_runs():
    """One feature, more than the upper width, fewer rows, no grad, 3-d: the plain product."""
    low, high = THIN_FEATURES
    for rows, features in [(THIN_ROWS, low - 1), (THIN_ROWS, high + 1), (THIN_ROWS - 1, low)]:
        w = torch.randn(8, features, requires_grad=True)
        out = linear(torch.randn(rows, features), w)
        assert not out.grad_fn.name().startswith("_ThinLinear"), (rows, features)
    w = torch.randn(8, low, requires_grad=True)
    with torch.no_grad():
        assert linear(torch.randn(THIN_ROWS, low), w).grad_fn is None
    batched = linear(torch.randn(2, THIN_ROWS, low), w)
    assert not batched.grad_fn.name().startswith("_ThinLinear")


def test_double_backward_gradcheck():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_ThinLinear.apply, (x, w, b))
    assert torch.autograd.gradgradcheck(_ThinLinear.apply, (x, w, b))


def test_linear_module_keeps_nn_linear_state_dict():
    torch.manual_seed(0)
    plain = torch.nn.Linear(4, 9)
    ours = Linear(4, 9)
    ours.load_state_dict(plain.state_dict())
    x = torch.randn(11, 4)
    torch.testing.assert_close(ours(x), plain(x))


@pytest.mark.parametrize("make", [
    lambda: MLP(3, 10, [32, 32]),
    lambda: MADE(5, 2, [24, 24], context=2),  # input (5) and context (2) layers
])
def test_conditioner_gradients_unchanged(make, monkeypatch):
    """A coupling MLP and a conditional MADE give the same parameter gradients with the thin
    path on and off (an empty ``THIN_FEATURES`` range turns it off)."""
    torch.manual_seed(3)
    net = make()
    for p in net.parameters():  # undo the zeroed output layer so every gradient is non-zero
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(THIN_ROWS, 3 if isinstance(net, MLP) else 5, requires_grad=True)
    args = (x,) if isinstance(net, MLP) else (x, torch.randn(THIN_ROWS, 2))

    def grads():
        out = net(*args)
        return torch.autograd.grad(out.square().sum(), [x, *net.parameters()])

    assert net.input_layer(x).grad_fn.name().startswith("_ThinLinear")
    on = grads()
    monkeypatch.setattr("flowctl.flows.linear.THIN_FEATURES", (1, 0))
    off = grads()
    for a, b in zip(on, off):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

