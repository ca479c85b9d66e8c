"""Generic numerical checks over every flow kind: inverse, log-det, normalisation, context."""

from __future__ import annotations

import math

import pytest
import torch
from flowcases import SPECS, make_flow

from flowctl.flows import build

NAMES = list(SPECS)
TOL_INV = {torch.float64: 1e-8, torch.float32: 1e-4}


def _inputs(n: int, d: int, bound: float, dtype, device, gen_seed: int = 1) -> torch.Tensor:
    """Points inside the spline box and far outside it (out to 10·B)."""
    g = torch.Generator().manual_seed(gen_seed)
    inside = (torch.rand(n, d, generator=g) * 2 - 1) * bound
    outside = (torch.rand(n, d, generator=g) * 2 - 1) * 10 * bound
    edges = torch.tensor([[bound] * d, [-bound] * d, [10 * bound] * d, [-10 * bound] * d])
    return torch.cat([inside, outside, edges]).to(device=device, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", NAMES)
def test_invertibility(name, dtype, device):
    # Bounded (tanh) conditioners keep the random maps well conditioned even for inputs at
    # 10·B: a spline slope of 1e-6 alone would amplify float32 round-off in y by 1e6 in x.
    flow = make_flow(name, features=4, context=2, dtype=dtype, device=device, std=0.2,
                     activation="tanh")
    x = _inputs(64, 4, 3.0, dtype, device)
    ctx = torch.randn(x.shape[0], 2, dtype=dtype, device=device)
    with torch.no_grad():
        z, ld = flow.transform(x, ctx)
        x_back, ld_inv = flow.transform.inverse(z, ctx)
    scale = 1.0 + x.abs()
    assert ((x - x_back).abs() / scale).max().item() <= TOL_INV[dtype]
    assert (ld + ld_inv).abs().max().item() <= 1e3 * TOL_INV[dtype]


def _full_jacobian(fn, x: torch.Tensor) -> torch.Tensor:
    return torch.autograd.functional.jacobian(lambda v: fn(v.unsqueeze(0))[0].squeeze(0), x)


@pytest.mark.parametrize("name", NAMES)
def test_logdet_matches_autograd_both_directions(name):
    d = 5
    # well-conditioned random maps (see test_invertibility): slogdet of a Jacobian with
    # entries of 1e13 is itself not accurate to 1e-6
    flow = make_flow(name, features=d, context=2, std=0.3, activation="tanh")
    x = _inputs(6, d, 3.0, torch.float64, "cpu")
    ctx = torch.randn(x.shape[0], 2, dtype=torch.float64)
    z, ld = flow.transform(x, ctx)
    _, ld_inv = flow.transform.inverse(z, ctx)
    for i in range(x.shape[0]):
        c = ctx[i:i + 1]
        jac = _full_jacobian(lambda v, c=c: flow.transform(v, c), x[i])
        assert torch.allclose(torch.linalg.slogdet(jac).logabsdet, ld[i], atol=1e-6), i
        jac_inv = _full_jacobian(lambda v, c=c: flow.transform.inverse(v, c), z[i])
        assert torch.allclose(torch.linalg.slogdet(jac_inv).logabsdet, ld_inv[i], atol=1e-6)


@pytest.mark.parametrize("name", ["maf-affine", "maf-rqs", "iaf-rqs", "maf-rqs-residual-batchnorm"])
def test_autoregressive_layer_is_triangular(name):
    """A single MAF/IAF layer (no permutation) has a lower-triangular Jacobian."""
    flow = make_flow(name, features=6, context=1, transforms=1)
    layer = flow.transform[-1]
    x = torch.randn(6, dtype=torch.float64)
    c = torch.randn(1, 1, dtype=torch.float64)
    for fn in (layer.forward, layer.inverse):
        jac = _full_jacobian(lambda v, fn=fn: fn(v, c), x)
        upper = torch.triu(jac, diagonal=1)
        assert upper.abs().max().item() == 0.0
        assert (jac.diagonal().abs() > 0).all()


def test_made_connectivity():
    from flowctl.flows import MADE

    for residual, hidden in [(False, [7, 5]), (True, [9, 9, 9])]:
        made = MADE(5, 3, hidden, context=2, residual=residual, zero_init=False).double()
        x = torch.randn(5, dtype=torch.float64)
        c = torch.randn(1, 2, dtype=torch.float64)
        jac = torch.autograd.functional.jacobian(
            lambda v, c=c, made=made: made(v.unsqueeze(0), c)[0], x)  # [D, P, D]
        for i in range(5):
            assert jac[i, :, i:].abs().max().item() == 0.0
        # and with enough width the conditioner does depend on all earlier inputs
        assert jac[4, :, :4].abs().sum(0).min().item() > 0.0


@pytest.mark.parametrize("name", ["coupling-rqs", "maf-rqs", "iaf-affine", "coupling-affine",
                                  "iaf-rqs-inverse-map"])
def test_two_dimensional_density_integrates_to_one(name):
    flow = make_flow(name, features=2, std=0.15)
    n = 600
    lim = 8.0
    grid = torch.linspace(-lim, lim, n, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], dim=1)
    with torch.no_grad():
        p = flow.log_prob(pts).exp()
    cell = (grid[1] - grid[0]) ** 2
    assert abs(p.sum().item() * cell - 1.0) < 0.01


@pytest.mark.parametrize("name", NAMES)
def test_sample_and_log_prob_agrees_with_log_prob(name):
    flow = make_flow(name, features=3, context=2)
    ctx = torch.randn(2, dtype=torch.float64)
    with torch.no_grad():
        x, lp = flow.sample_and_log_prob(200, ctx)
        assert x.shape == (200, 3)
        assert torch.allclose(flow.log_prob(x, ctx), lp, atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_finite_far_outside_and_for_extreme_parameters(name):
    flow = make_flow(name, features=3, context=1, std=8.0)  # extreme conditioner outputs
    flow.train()
    x = torch.cat([torch.full((4, 3), 3e3), torch.full((4, 3), -3e3), torch.randn(8, 3) * 3])
    x = x.double().requires_grad_()
    ctx = torch.randn(x.shape[0], 1, dtype=torch.float64)
    lp = flow.log_prob(x, ctx)
    lp.sum().backward()
    assert torch.isfinite(lp).all()
    assert torch.isfinite(x.grad).all()
    for p in flow.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_batched_context_equals_per_sample_and_shared_broadcasts(name):
    flow = make_flow(name, features=3, context=2)
    x = torch.randn(5, 3, dtype=torch.float64)
    ctx = torch.randn(5, 2, dtype=torch.float64)
    with torch.no_grad():
        batched = flow.log_prob(x, ctx)
        single = torch.cat([flow.log_prob(x[i:i + 1], ctx[i:i + 1]) for i in range(5)])
        shared = flow.log_prob(x, ctx[0])
        repeated = flow.log_prob(x, ctx[0].expand(5, 2))
    assert torch.allclose(batched, single, atol=1e-10)
    assert torch.allclose(shared, repeated, atol=1e-12)
    with torch.no_grad():
        s = flow.sample(7, ctx[0])
    assert s.shape == (7, 3)


@pytest.mark.parametrize("name", NAMES)
def test_identity_at_initialisation(name):
    spec = {"features": 3, "transforms": 3, "hidden": [8, 8], **SPECS[name]}
    flow = build(spec).double()
    flow.eval()
    x = (torch.rand(50, 3, dtype=torch.float64) * 2 - 1) * 2.9
    with torch.no_grad():
        z, ld = flow.transform(x)
        base = flow.base.log_prob(z)
    # the map is a permutation of the coordinates with log-det 0 (BatchNorm: up to its eps)
    tol = 1e-4 if spec.get("norm") == "batchnorm" else 1e-12
    assert torch.allclose(ld, torch.zeros_like(ld), atol=tol)
    assert torch.allclose(torch.sort(z.abs(), dim=1).values, torch.sort(x.abs(), dim=1).values,
                          atol=tol)
    assert torch.allclose(flow.log_prob(x), base + ld, atol=1e-12)
    expected = -0.5 * (x ** 2).sum(1) - 1.5 * math.log(2 * math.pi)
    assert torch.allclose(flow.log_prob(x), expected, atol=max(tol, 1e-10))


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name, tmp_path):
    flow = make_flow(name, features=3, context=1)
    path = tmp_path / "w.pt"
    torch.save(flow.state_dict(), path)
    spec = {"features": 3, "context": 1, "transforms": 3, "hidden": [16, 16], "bins": 6,
            "tail_bound": 3.0, **SPECS[name]}
    fresh = build(spec).double()
    fresh.load_state_dict(torch.load(path, weights_only=True))
    fresh.eval()
    x = torch.randn(20, 3, dtype=torch.float64)
    c = torch.randn(20, 1, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(flow.log_prob(x, c), fresh.log_prob(x, c))


def test_torch_compile_fullgraph_rqs_coupling():
    flow = build({"kind": "coupling", "features": 4, "transforms": 4, "hidden": [32, 32],
                  "transform": "rqs", "bins": 8, "tail_bound": 3.0})
    flow.eval()
    x = torch.randn(256, 4) * 2
    compiled = torch.compile(flow.log_prob, fullgraph=True, backend="eager")
    with torch.no_grad():
        assert torch.allclose(compiled(x), flow.log_prob(x), atol=1e-5)
    explanation = torch._dynamo.explain(flow.log_prob)(x)
    assert explanation.graph_break_count == 0
    assert explanation.graph_count == 1


def test_uniform_base_unit_domain_flow_stays_in_unit_cube():
    flow = build({"kind": "coupling", "features": 5, "domain": "unit", "mask": "binary",
                  "transforms": 6, "hidden": [16, 16], "bins": 6}).double()
    from flowcases import randomize

    randomize(flow, 0.2)
    with torch.no_grad():
        x, lp = flow.sample_and_log_prob(2000)
    assert x.min() >= 0 and x.max() <= 1
    assert torch.allclose(flow.log_prob(x), lp, atol=1e-8)
    # normalisation by importance sampling from the uniform: E_u[q] = 1
    with torch.no_grad():
        u = torch.rand(200_000, 5, dtype=torch.float64)
        mean = flow.log_prob(u).exp().mean().item()
    assert abs(mean - 1.0) < 0.02


def test_binary_masks_separate_every_pair():
    from flowctl.flows import binary_masks

    for d in (2, 3, 5, 8, 9):
        masks = binary_masks(d)
        assert len(masks) == 2 * math.ceil(math.log2(d))
        for i in range(d):
            for j in range(i + 1, d):
                assert any(bool(m[i]) != bool(m[j]) for m in masks)


@pytest.mark.parametrize("perm", ["none", "reverse", "random"])
def test_every_feature_is_transformed_by_a_coupling_flow(perm):
    for d in (2, 3, 7):
        flow = build({"kind": "coupling", "features": d, "transforms": 4, "permutation": perm,
                      "hidden": [8]}).double()
        from flowcases import randomize

        randomize(flow)
        x = torch.randn(d, dtype=torch.float64)
        jac = _full_jacobian(lambda v, f=flow: f.transform(v), x)
        # each output depends on its own input somewhere: no row of J equals a unit vector
        # for every feature (i.e. nothing is passed through untouched)
        assert not any(torch.allclose(jac[:, i].abs(), torch.eye(d, dtype=jac.dtype)[:, i])
                       and torch.allclose(jac[i].abs(), torch.eye(d, dtype=jac.dtype)[i])
                       for i in range(d))


def test_explicit_permutations_within_blocks():
    perm_a = [2, 1, 0, 5, 4, 3]
    flow = build({"kind": "maf", "features": 6, "transforms": 3, "permutation": perm_a,
                  "hidden": [8]})
    perms = [m.perm.tolist() for m in flow.transform.transforms if hasattr(m, "perm")]
    assert perms == [perm_a, perm_a]
    per_layer = [[1, 0, 2, 3, 4, 5], [0, 1, 2, 4, 3, 5]]
    flow = build({"kind": "maf", "features": 6, "transforms": 3, "permutation": per_layer,
                  "hidden": [8]})
    perms = [m.perm.tolist() for m in flow.transform.transforms if hasattr(m, "perm")]
    assert perms == per_layer
    with pytest.raises(ValueError, match="not a permutation"):
        build({"kind": "maf", "features": 3, "transforms": 2, "permutation": [0, 0, 1]})


def test_build_rejects_bad_specs_with_clear_messages():
    with pytest.raises(ValueError, match="did you mean transforms"):
        build({"kind": "maf", "features": 2, "transfroms": 3})
    with pytest.raises(ValueError, match="'kind' must be one of"):
        build({"kind": "glow", "features": 2})
    with pytest.raises(ValueError, match="'features' must be an integer"):
        build({"kind": "maf", "features": "two"})
    with pytest.raises(ValueError, match="unknown transform"):
        build({"kind": "maf", "features": 2, "transform": "cubic"})
    with pytest.raises(ValueError, match="unconditional"):
        build({"kind": "maf", "features": 2}).log_prob(torch.randn(3, 2), torch.randn(3, 1))
    with pytest.raises(ValueError, match=r"shape \[N, 2\]"):
        build({"kind": "maf", "features": 2}).log_prob(torch.randn(3, 3))


def test_initialize_fits_standardization_and_likelihood_is_in_data_units():
    """An identity flow behind a fitted standardization is the Gaussian fit of the data."""
    torch.manual_seed(0)
    mean = torch.tensor([100.0, -3.0], dtype=torch.float64)
    std = torch.tensor([20.0, 0.01], dtype=torch.float64)
    data = mean + std * torch.randn(50_000, 2, dtype=torch.float64)
    flow = build({"kind": "maf", "features": 2, "standardize": True}).double()
    flow.initialize(data)
    x = data[:10]
    m, s = data.mean(0), data.std(0)
    exact = torch.distributions.Normal(m, s).log_prob(x).sum(1)
    with torch.no_grad():
        assert torch.allclose(flow.log_prob(x), exact, atol=1e-10)


def test_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    for name in ("coupling-rqs", "maf-rqs", "iaf-affine"):
        cpu = make_flow(name, features=4, context=2)
        gpu = make_flow(name, features=4, context=2, device="cuda")
        x = torch.randn(100, 4, dtype=torch.float64)
        c = torch.randn(100, 2, dtype=torch.float64)
        with torch.no_grad():
            assert torch.allclose(cpu.log_prob(x, c), gpu.log_prob(x.cuda(), c.cuda()).cpu(),
                                  atol=1e-9)
