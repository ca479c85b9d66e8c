"""The incremental MAF inverse (MAF sampling, IAF density) equals the naive D-pass loop."""

from __future__ import annotations

import pytest
import torch
from flowcases import randomize

from flowctl.flows import build
from flowctl.flows.autoregressive import MaskedAutoregressive
from flowctl.flows.elementwise import RQS, Affine, ElementwiseFamily, UnitRQS
from flowctl.flows.incremental import incremental_inverse, make_plan, needs_naive


@pytest.fixture(autouse=True)
def one_thread():
    """Many small ops: one thread avoids OpenMP wake-ups on a loaded machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _family(name: str) -> ElementwiseFamily:
    return {"affine": Affine(), "rqs": RQS(5, 3.0), "unit": UnitRQS(4)}[name]


def _layer(d: int, hidden: list[int], family: str, context: int = 0, residual: bool = False,
           dtype=torch.float64, std: float = 0.3, seed: int = 0, **kw) -> MaskedAutoregressive:
    torch.manual_seed(seed)
    layer = MaskedAutoregressive(d, _family(family), hidden, context=context, residual=residual,
                                 activation="tanh", **kw)
    randomize(layer, std, seed)  # perturbs the zero-initialised output layer too
    return layer.to(dtype).eval()


def _inputs(n: int, d: int, c: int, family: str, dtype, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    z = torch.rand(n, d, generator=g) if family == "unit" else torch.randn(n, d, generator=g) * 2
    ctx = torch.randn(n, c, generator=g) if c else None
    return z.to(dtype), None if ctx is None else ctx.to(dtype)


# (D, hidden, residual, context, family, batch)
SHAPES = [
    (2, [8], False, 0, "affine", 16),
    (3, [16, 16], False, 2, "rqs", 16),
    (5, [7], True, 1, "rqs", 16),             # residual MADE without blocks
    (7, [20, 20, 20], True, 3, "rqs", 16),    # two residual blocks, context
    (13, [5, 30, 9], False, 0, "affine", 16),  # uneven widths, some narrower than D
    (24, [40, 40, 40], False, 2, "unit", 16),  # unit-interval splines, 3 hidden layers
    (64, [100, 100], True, 0, "rqs", 8),
    (504, [96, 96], False, 4, "rqs", 2),       # CaloFlow size, narrow hidden to stay fast
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"D{s[0]}-{len(s[1])}x{s[1][0]}"
                         f"{'-res' if s[2] else ''}{'-ctx' if s[3] else ''}-{s[4]}")
def test_incremental_equals_naive_float64(shape):
    d, hidden, residual, c, fam, n = shape
    layer = _layer(d, hidden, fam, c, residual)
    z, ctx = _inputs(n, d, c, fam, torch.float64)
    with torch.no_grad():
        x_ref, ld_ref = layer.naive_inverse(z, ctx)
        blocks = (1, 3, 32) if d < 100 else (32,)
        for block in blocks:
            layer.block = block
            x, ld = layer.inverse(z, ctx)
            assert torch.allclose(x, x_ref, rtol=0, atol=1e-10 * (1 + x_ref.abs().max())), block
            assert torch.allclose(ld, ld_ref, rtol=0, atol=1e-10 * (1 + ld_ref.abs().max()))
        # and it is the inverse of the one-pass forward
        z_back, ld_fwd = layer(x, ctx)
    assert torch.allclose(z_back, z, atol=1e-9)
    assert torch.allclose(ld_fwd, -ld, atol=1e-9)


@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[3], SHAPES[6]], ids=["ctx", "res", "D64"])
def test_incremental_equals_naive_float32(shape):
    d, hidden, residual, c, fam, n = shape
    layer = _layer(d, hidden, fam, c, residual, dtype=torch.float32, std=0.1)
    z, ctx = _inputs(n, d, c, fam, torch.float32)
    with torch.no_grad():
        x_ref, ld_ref = layer.naive_inverse(z, ctx)
        x, ld = layer.inverse(z, ctx)
    assert ((x - x_ref).abs() / (1 + x_ref.abs())).max().item() < 1e-4
    assert ((ld - ld_ref).abs() / (1 + ld_ref.abs())).max().item() < 1e-4


def test_plan_slices_are_contiguous_prefixes():
    layer = _layer(13, [5, 30, 9], "affine")
    plan = make_plan(layer.made)
    for rows, cols in zip(plan.rows, plan.cols):
        assert all(a <= b for a, b in rows)
        assert all(rows[i][1] == rows[i + 1][0] for i in range(len(rows) - 1))
        assert list(cols) == sorted(cols)
    assert plan.rows[-1][0] == (0, 2) and plan.cols[-1][0] == 0  # dim 1: bias only


def test_iaf_log_prob_incremental_equals_naive_with_gradients():
    spec = {"kind": "iaf", "features": 6, "context": 2, "transforms": 3, "hidden": [24, 24],
            "transform": "rqs", "bins": 5, "residual": True}
    flows = {}
    for loop in ("incremental", "naive"):
        torch.manual_seed(0)
        flow = build({**spec, "exact_loop": loop}).double()
        randomize(flow, 0.3)
        flows[loop] = flow
    x = torch.randn(20, 6, dtype=torch.float64)
    ctx = torch.randn(20, 2, dtype=torch.float64)
    lp = {k: f.log_prob(x, ctx) for k, f in flows.items()}
    assert torch.allclose(lp["incremental"], lp["naive"], atol=1e-10)
    # the incremental path writes nothing in place: it trains an IAF by maximum likelihood
    grads = {}
    for k, f in flows.items():
        lp[k].sum().backward()
        grads[k] = torch.cat([p.grad.flatten() for p in f.parameters()])
    assert torch.allclose(grads["incremental"], grads["naive"], atol=1e-8)


def test_maf_from_build_samples_identically_with_both_loops():
    spec = {"kind": "maf", "features": 10, "context": 3, "transforms": 3, "hidden": [32, 32],
            "transform": "rqs", "bins": 6, "permutation": "random"}
    samples = {}
    for loop in ("incremental", "naive"):
        torch.manual_seed(0)
        flow = build({**spec, "exact_loop": loop})
        randomize(flow, 0.2)
        flow.eval()
        layers = [t for t in flow.transform if isinstance(t, MaskedAutoregressive)]
        assert layers and all(t.exact_loop == loop for t in layers)
        torch.manual_seed(7)  # the same base noise
        with torch.no_grad():
            samples[loop] = flow.sample_and_log_prob(50, torch.randn(3))
    (xi, li), (xn, ln) = samples["incremental"], samples["naive"]
    assert torch.allclose(xi, xn, atol=1e-5, rtol=1e-5)
    assert torch.allclose(li, ln, atol=1e-4, rtol=1e-5)


def test_exact_loop_validation_and_switching():
    with pytest.raises(ValueError, match="exact_loop"):
        MaskedAutoregressive(3, Affine(), [8], exact_loop="fast")
    with pytest.raises(ValueError, match="exact_loop"):
        build({"kind": "maf", "features": 3, "exact_loop": "fast"})
    layer = _layer(3, [8], "affine")
    with pytest.raises(ValueError):
        layer.exact_loop = "fast"
    layer.exact_loop = "naive"
    assert layer.exact_loop == "naive"


def test_dropout_eval_uses_incremental_and_train_falls_back_to_naive():
    layer = _layer(6, [16, 16], "rqs", context=1, dropout=0.3)
    z, ctx = _inputs(8, 6, 1, "rqs", torch.float64)
    assert not needs_naive(layer.made)  # eval mode: dropout is the identity
    with torch.no_grad():
        x, ld = layer.inverse(z, ctx)
        x_ref, ld_ref = layer.naive_inverse(z, ctx)
    assert torch.allclose(x, x_ref, atol=1e-12) and torch.allclose(ld, ld_ref, atol=1e-12)
    layer.train()
    assert needs_naive(layer.made)
    torch.manual_seed(3)
    with torch.no_grad():
        x_train, _ = layer.inverse(z, ctx)
    torch.manual_seed(3)
    with torch.no_grad():
        x_naive, _ = layer.naive_inverse(z, ctx)
    assert torch.equal(x_train, x_naive)


def test_weights_changed_in_place_are_seen():
    layer = _layer(5, [12, 12], "rqs", context=2)
    z, ctx = _inputs(4, 5, 2, "rqs", torch.float64)
    with torch.no_grad():
        before, _ = layer.inverse(z, ctx)
        layer.made.output_layer.weight.mul_(1.5)
        layer.made.context_layer.bias.add_(0.2)
        after, _ = layer.inverse(z, ctx)
        ref, _ = layer.naive_inverse(z, ctx)
    assert not torch.allclose(before, after)
    assert torch.allclose(after, ref, atol=1e-12)


def test_function_returns_elementwise_logdet():
    layer = _layer(4, [10], "affine")
    z, _ = _inputs(3, 4, 0, "affine", torch.float64)
    x, ld = incremental_inverse(layer.made, layer.family, z, block=2)
    assert x.shape == ld.shape == (3, 4)
    assert torch.allclose(ld.sum(-1), layer.naive_inverse(z)[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_incremental_and_graph_equal_naive():
    layer = _layer(40, [64, 64], "rqs", context=2, residual=True).cuda()
    z, ctx = _inputs(32, 40, 2, "rqs", torch.float64)
    z, ctx = z.cuda(), ctx.cuda()
    with torch.no_grad():
        x_ref, ld_ref = layer.naive_inverse(z, ctx)
        x, ld = layer.inverse(z, ctx)
        layer.cuda_graph = True
        for _ in range(2):  # capture, then replay
            xg, ldg = layer.inverse(z, ctx)
            assert torch.allclose(xg, x_ref, atol=1e-10) and torch.allclose(ldg, ld_ref, atol=1e-9)
        layer.made.output_layer.weight.mul_(1.1)  # in-place update seen by the replay
        xg, _ = layer.inverse(z, ctx)
        layer.cuda_graph = False
        x2, _ = layer.inverse(z, ctx)
    assert torch.allclose(x, x_ref, atol=1e-10) and torch.allclose(ld, ld_ref, atol=1e-9)
    assert torch.allclose(xg, x2, atol=1e-12) and not torch.allclose(x2, x)


@pytest.mark.parametrize("context", [0, 3])
def test_chunked_one_pass_equals_whole_batch(context):
    """Without autograd the one-pass direction (MAF density, IAF sampling) takes the rows in
    chunks on the CPU; the result must not depend on the chunk size, and with autograd the
    values are the same and gradients reach every row."""
    layer = _layer(6, [24, 24], "rqs", context=context, chunk_elements=6 * RQS(5).num_params * 7)
    x, ctx = _inputs(50, 6, context, "rqs", torch.float64)
    whole = MaskedAutoregressive(6, _family("rqs"), [24, 24], context=context,
                                 activation="tanh", chunk_elements=0).to(torch.float64).eval()
    whole.load_state_dict(layer.state_dict())
    with torch.no_grad():
        z, ladj = layer(x, ctx)  # 8 chunks of <= 7 rows
        z0, ladj0 = whole(x, ctx)
    torch.testing.assert_close(z, z0, rtol=0, atol=1e-12)
    torch.testing.assert_close(ladj, ladj0, rtol=0, atol=1e-12)
    if context:  # one context row broadcast to the whole batch
        with torch.no_grad():
            z1, _ = layer(x, ctx[:1])
            z2, _ = whole(x, ctx[:1].expand(50, -1))
        torch.testing.assert_close(z1, z2, rtol=0, atol=1e-12)
    xg = x.clone().requires_grad_(True)
    zg, lg = layer(xg, ctx)
    (zg.sum() + lg.sum()).backward()
    torch.testing.assert_close(zg.detach(), z0, rtol=0, atol=1e-12)
    assert bool((xg.grad != 0).all(dim=1).all())


def test_row_chunk_bounds():
    from flowctl.flows.autoregressive import row_chunk

    assert row_chunk(10_000, 504 * 25, 1 << 22) == (1 << 22) // (504 * 25)
    assert row_chunk(10_000, 504 * 25, 0) == 10_000
    assert row_chunk(10, 1 << 30, 1 << 22) == 1
    assert row_chunk(10, 2, 1 << 22) == 10


@pytest.mark.parametrize("residual", [False, True])
def test_zero_skipping_masked_product_equals_dense(residual, monkeypatch):
    """Without autograd MaskedLinear multiplies only the blocks its mask can reach (here for
    every size: the threshold is lowered); every skipped column block must be all zero in the
    mask, and the result equal the dense one."""
    from flowctl.flows.made import MADE, MaskedLinear

    monkeypatch.setattr("flowctl.flows.made.MIN_SKIP_WEIGHTS_NO_GRAD", 0)
    torch.manual_seed(0)
    made = MADE(37, 4, [50, 50] if residual else [50, 23], context=2, residual=residual)
    for p in made.parameters():
        torch.nn.init.normal_(p, 0.0, 0.3)
    made = made.to(torch.float64).eval()
    layers = [m for m in made.modules() if isinstance(m, MaskedLinear)]
    for layer in layers:
        assert len(layer.blocks) == 8
        assert layer.blocks[0][0] == 0 and layer.blocks[-1][1] == layer.out_features
        for r0, r1, c in layer.blocks:
            assert not bool(layer.mask[r0:r1, c:].any())
        assert sum((r1 - r0) * c for r0, r1, c in layer.blocks) < layer.mask.numel()
    x = torch.randn(9, 37, dtype=torch.float64)
    ctx = torch.randn(9, 2, dtype=torch.float64)
    dense = made(x, ctx)  # autograd on: one dense product
    with torch.no_grad():
        skipped = made(x, ctx)
    torch.testing.assert_close(skipped, dense.detach(), rtol=0, atol=1e-12)
    # the skipped blocks are really skipped: NaN weights there poison only the dense product
    out = made.output_layer
    with torch.no_grad():
        for r0, r1, c in out.blocks:
            out.weight[r0:r1, c:] = float("nan")
        assert bool(made(x, ctx).isfinite().all())
    assert not bool(made(x, ctx).isfinite().all())


def test_small_layers_without_autograd_use_one_dense_product():
    """Below MIN_SKIP_WEIGHTS_NO_GRAD weights the no-grad product is the dense one (measured
    faster): a NaN in a masked-out weight then reaches the output (NaN * 0), which the blocked
    product would never read."""
    from flowctl.flows.made import MIN_SKIP_WEIGHTS_NO_GRAD, MaskedLinear, hidden_degrees

    layer = MaskedLinear(hidden_degrees(128, 16), hidden_degrees(128, 16), strict=False)
    assert layer.weight.numel() < MIN_SKIP_WEIGHTS_NO_GRAD and len(layer.blocks) >= 2
    r0, r1, c = layer.blocks[0]
    with torch.no_grad():
        layer.weight[r0:r1, c:] = float("nan")
        assert not bool(layer(torch.randn(4096, 128)).isfinite().all())


def test_blocked_masked_product_under_autograd_matches_dense_gradients():
    """From MIN_SKIP_ROWS rows and MIN_SKIP_WEIGHTS weights MaskedLinear runs the zero-skipping
    product under autograd too (custom backward): values and first and second derivatives must
    equal those of the dense ``F.linear(x, weight * mask, bias)``."""
    import torch.nn.functional as F

    from flowctl.flows.made import MIN_SKIP_ROWS, MIN_SKIP_WEIGHTS, MaskedLinear, hidden_degrees

    torch.manual_seed(0)
    d_in, d_out = 300, 320
    assert d_in * d_out >= MIN_SKIP_WEIGHTS
    layer = MaskedLinear(hidden_degrees(d_in, 40), hidden_degrees(d_out, 40), strict=False)
    layer = layer.to(torch.float64)
    assert len(layer.blocks) >= 2
    x = torch.randn(MIN_SKIP_ROWS + 72, d_in, dtype=torch.float64, requires_grad=True)
    up = torch.randn(MIN_SKIP_ROWS + 72, d_out, dtype=torch.float64)

    def grads(fn):
        out = fn(x)
        gx, gw, gb = torch.autograd.grad((out * up).sum(), (x, layer.weight, layer.bias))
        gx2, = torch.autograd.grad((fn(x) * up).sum(), x, create_graph=True)
        (ggw,) = torch.autograd.grad((gx2 ** 2).sum(), layer.weight)  # double backward
        return out.detach(), gx, gw, gb, ggw

    blocked = grads(layer)
    dense = grads(lambda v: F.linear(v, layer.weight * layer.mask, layer.bias))
    for a, b in zip(blocked, dense):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    assert not bool(blocked[2][layer.mask == 0].any())  # no gradient on masked-out weights
