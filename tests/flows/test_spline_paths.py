"""The spline's two implementations agree: the knot-major path (no autograd, and x -> y with a
hand-written backward) against the reference tensor operations autograd differentiates."""

from __future__ import annotations

import pytest
import torch

from flowctl.flows.splines import SplineLayout, _reference_spline, spline_from_params

K = 8


def _case(unit: bool, scale: float, dtype: torch.dtype, seed: int = 0):
    """Inputs [400, 3] with points at, inside and beyond the interval; raw parameters."""
    g = torch.Generator().manual_seed(seed)
    p = 3 * K + (1 if unit else -1)
    params = (torch.randn(400, 3, p, generator=g) * scale).to(dtype)
    x = torch.randn(400, 3, generator=g).to(dtype) * 2.5
    if unit:
        x = torch.sigmoid(x)
        x[:4, 0] = torch.tensor([0.0, 1.0, -0.1, 1.1], dtype=dtype)
    else:
        x[:4, 0] = torch.tensor([-3.0, 3.0, -3.5, 4.0], dtype=dtype)
    return x, params


def _layout(unit: bool) -> SplineLayout:
    if unit:
        return SplineLayout(K, (0.0, 1.0, 0.0, 1.0), pad_ones=False)
    return SplineLayout(K, (-3.0, 3.0, -3.0, 3.0), pad_ones=True)


def _reference(x, params, unit, inverse):
    return _reference_spline(x, *_layout(unit).split(params), _layout(unit), inverse)


def _fast(x, params, unit, inverse):
    return spline_from_params(x, params, K, None if unit else 3.0, inverse=inverse)


@pytest.mark.parametrize("unit", [False, True])
@pytest.mark.parametrize("inverse", [False, True])
def test_values_match_the_reference_in_float64(unit, inverse):
    x, params = _case(unit, 2.0, torch.float64)
    with torch.no_grad():
        y, ladj = _fast(x, params, unit, inverse)
        y_ref, ladj_ref = _reference(x, params, unit, inverse)
    assert torch.allclose(y, y_ref, rtol=0, atol=1e-11)
    assert torch.allclose(ladj, ladj_ref, rtol=0, atol=1e-10)
    assert torch.equal(y[2:4, 0], x[2:4, 0]) and bool((ladj[2:4, 0] == 0).all())  # tails


@pytest.mark.parametrize("unit", [False, True])
def test_gradients_match_the_reference_in_float64(unit):
    x, params = _case(unit, 2.0, torch.float64, seed=1)
    g = torch.Generator().manual_seed(2)
    go = torch.randn(x.shape, generator=g, dtype=torch.float64)
    gl = torch.randn(x.shape, generator=g, dtype=torch.float64)
    grads = []
    for fn in (_fast, _reference):
        xs, ps = x.clone().requires_grad_(), params.clone().requires_grad_()
        out = fn(xs, ps, unit, False)
        grads.append(torch.autograd.grad(out, (xs, ps), (go, gl)))
    for fast, ref in zip(*grads):
        assert torch.allclose(fast, ref, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("unit", [False, True])
def test_gradcheck_and_double_backward(unit):
    x, params = _case(unit, 1.0, torch.float64, seed=3)
    # rows 4.. : no element exactly on the interval's ends (not differentiable there)
    x, params = x[4:8].clone().requires_grad_(), params[4:8].clone().requires_grad_()

    def fn(a, b):
        return _fast(a, b, unit, False)

    assert torch.autograd.gradcheck(fn, (x, params))
    assert torch.autograd.gradgradcheck(fn, (x, params))


@pytest.mark.parametrize("unit", [False, True])
@pytest.mark.parametrize("inverse", [False, True])
def test_float32_error_is_that_of_the_reference(unit, inverse):
    """Against float64, the fast float32 path errs no more than the reference float32 path
    (x3: both are round-off, summed in another order), for tame and steep parameters."""
    for scale in (0.5, 3.0):
        x, params = _case(unit, scale, torch.float64, seed=4)
        with torch.no_grad():
            truth = _reference(x, params, unit, inverse)
            fast = _fast(x.float(), params.float(), unit, inverse)
            ref = _reference(x.float(), params.float(), unit, inverse)
        for f, r, t in zip(fast, ref, truth):
            err_fast = (f.double() - t).abs().max().item()
            err_ref = (r.double() - t).abs().max().item()
            assert err_fast <= 3 * err_ref + 1e-6, (scale, err_fast, err_ref)


def test_mismatched_parameters_are_an_error():
    x, params = _case(False, 1.0, torch.float64)
    with pytest.raises(ValueError, match=r"expected \(400, 3, 23\)"):
        spline_from_params(x, params[..., :-1], K, 3.0)
    with pytest.raises(ValueError, match=r"expected \(400, 3, 23\)"):
        spline_from_params(x, params[:1], K, 3.0)


@pytest.mark.parametrize("family", ["real", "unit"])
def test_coupling_knot_major_path_equals_the_per_row_path(family):
    """A coupling layer hands its conditioner output to the spline transposed (knot-major);
    switching that off (the families' per-row entry) gives the same values and gradients."""
    from flowctl.flows.coupling import Coupling
    from flowctl.flows.elementwise import RQS, UnitRQS

    torch.manual_seed(0)
    fam = UnitRQS(K) if family == "unit" else RQS(K, 3.0)
    layer = Coupling(torch.tensor([True, False, True, False, False]), fam, [32, 32], context=2)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.rand(300, 5) if family == "unit" else torch.randn(300, 5) * 2
    ctx = torch.randn(300, 2)
    assert "param_major" not in layer.state_dict()  # checkpoints keep their keys

    def run(knot_major: bool):
        fam.knot_major_layout = (lambda: None) if not knot_major else type(fam).knot_major_layout.__get__(fam)
        xs = x.clone().requires_grad_()
        y, ladj = layer(xs, ctx)
        grads = torch.autograd.grad((y * y).sum() + ladj.sum(), [xs, *layer.parameters()])
        with torch.no_grad():
            back, ladj_inv = layer.inverse(y, ctx)
        return y, ladj, back, ladj_inv, grads

    fast, slow = run(True), run(False)
    for a, b in zip(fast[:4], slow[:4]):
        assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(fast[2], x, atol=1e-4)  # and it inverts
    for a, b in zip(fast[4], slow[4]):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_compiled_training_loss_traces_the_reference_path():
    """Under torch.compile (dynamic shapes, gradients on: the posterior app's compiled loss)
    the spline takes the reference operations: the hand-written node is eager-only."""
    from flowctl.flows import build

    torch.manual_seed(0)
    flow = build({"kind": "maf", "features": 2, "context": 2, "transforms": 2,
                  "hidden": [16, 16], "transform": "rqs", "bins": 6, "tail_bound": 3.0})
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))

    def loss(x, c):
        return -flow.log_prob(x, c).mean()

    compiled = torch.compile(loss, dynamic=True, backend="aot_eager")
    for n in (64, 40):
        x, c = torch.randn(n, 2), torch.randn(n, 2)
        got = torch.autograd.grad(compiled(x, c), list(flow.parameters()))
        want = torch.autograd.grad(loss(x, c), list(flow.parameters()))
        for a, b in zip(got, want):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("unit", [False, True])
def test_logit_bound_soft_bounds_each_parameter_group(unit):
    """With ``logit_bound = b`` the families bound width/height logits by b and derivative
    logits by 2b, then run the same spline: equal to bounding the three groups by hand."""
    from flowctl.flows.elementwise import RQS, UnitRQS, soft_bound
    from flowctl.flows.splines import unconstrained_rqs, unit_rqs

    x, params = _case(unit, 3.0, torch.float64)
    fam = UnitRQS(K, logit_bound=3.45) if unit else RQS(K, 3.0, logit_bound=3.45)
    w, h, d = (soft_bound(params[..., :K], 3.45), soft_bound(params[..., K:2 * K], 3.45),
               soft_bound(params[..., 2 * K:], 6.9))
    for inverse in (False, True):
        with torch.no_grad():
            got = (fam.inverse if inverse else fam.forward)(x, params)
            want = (unit_rqs(x, w, h, d, inverse=inverse) if unit
                    else unconstrained_rqs(x, w, h, d, 3.0, inverse=inverse))
        assert torch.allclose(got[0], want[0], rtol=0, atol=1e-11)
        assert torch.allclose(got[1], want[1], rtol=0, atol=1e-10)
    assert fam.knot_major_layout() is None  # the coupling hand-off would skip the bound
