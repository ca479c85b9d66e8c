"""symmetry: exact invariance under every group element, normalisation, sampling, context."""

from __future__ import annotations

import pytest
import torch
from flowcases import randomize

from flowctl.flows import build
from flowctl.flows.symmetry import dihedral_matrices, permutation_matrices

CASES = {
    "dihedral-coupling": ({"kind": "coupling", "features": 2, "context": 2},
                          {"group": "dihedral", "order": 3}),
    "sign-maf": ({"kind": "maf", "features": 3, "context": 2}, {"group": "sign"}),
    "permutation-maf": ({"kind": "maf", "features": 6, "context": 2},
                        {"group": "permutation", "particles": 3}),
    "dihedral-naf": ({"kind": "maf", "features": 2, "context": 0, "transform": "naf",
                      "sigmoids": 3}, {"group": "dihedral", "order": 5}),
}


def make_symmetric(name: str, dtype=torch.float64, std: float = 0.3):
    spec, sym = CASES[name]
    torch.manual_seed(0)
    flow = build({**spec, "transforms": 3, "hidden": [16, 16], "symmetry": sym})
    randomize(flow, std)
    return flow.to(dtype).eval()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", list(CASES))
def test_density_is_invariant_under_every_group_element(name, dtype):
    flow = make_symmetric(name, dtype)
    d, c = flow.features, flow.context_features
    x = torch.randn(20, d, dtype=torch.float64).to(dtype) * 1.5
    ctx = torch.randn(20, c).to(dtype) if c else None
    with torch.no_grad():
        lp = flow.log_prob(x, ctx)
        images = flow.orbit(x)
        for g in range(flow.order):
            lp_g = flow.log_prob(images[g], ctx)
            tol = 1e-10 if dtype == torch.float64 else 1e-4
            assert (lp_g - lp).abs().max().item() < tol, g
        # and the inner flow alone is not invariant (the test could fail)
        inner = flow.flow.log_prob(images.reshape(-1, d), None if ctx is None
                                   else ctx.repeat(flow.order, 1)).view(flow.order, -1)
        assert (inner - inner[:1]).abs().max().item() > 1e-3


@pytest.mark.parametrize("name", ["dihedral-coupling", "dihedral-naf"])
def test_symmetric_two_dimensional_density_integrates_to_one(name):
    flow = make_symmetric(name, std=0.2)
    grid = torch.linspace(-7, 7, 180, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1)
    ctx = torch.zeros(flow.context_features, dtype=torch.float64) if flow.context_features \
        else None
    with torch.no_grad():
        mass = flow.log_prob(pts, ctx).exp().sum().item() * (grid[1] - grid[0]).item() ** 2
    assert abs(mass - 1.0) < 0.01


def test_sampling_is_symmetric_and_consistent():
    torch.manual_seed(0)
    flow = build({"kind": "maf", "features": 2, "transforms": 1, "hidden": [8],
                  "transform": "affine", "symmetry": {"group": "sign"}}).double()
    with torch.no_grad():  # inner flow N((3, 0), I): shift -3 of dimension 0 (z = x - 3)
        flow.flow.transform[-1].made.output_layer.bias[1] = -3.0
    x, lp = flow.sample_and_log_prob(4000)
    assert abs((x[:, 0] > 0).double().mean().item() - 0.5) < 0.05  # both modes
    assert abs(x[:, 0].abs().mean().item() - 3.0) < 0.1
    assert torch.allclose(flow.log_prob(x), lp)


def test_context_shared_and_per_row_agree():
    flow = make_symmetric("permutation-maf")
    x = torch.randn(5, 6, dtype=torch.float64)
    c = torch.randn(2, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(flow.log_prob(x, c), flow.log_prob(x, c.expand(5, 2)))
        assert flow.sample(7, c).shape == (7, 6)
        assert not torch.allclose(flow.log_prob(x, c), flow.log_prob(x, c + 1))


def test_group_elements_are_orthogonal_and_closed():
    for mats in (dihedral_matrices(6), permutation_matrices(3, 2)):
        eye = torch.eye(mats.shape[1], dtype=torch.float64)
        assert torch.allclose(mats @ mats.transpose(1, 2), eye.expand_as(mats), atol=1e-12)
        flat = mats.reshape(len(mats), -1)
        for a in mats:
            prods = (a @ mats).reshape(len(mats), -1)
            dist = torch.cdist(prods, flat)
            assert (dist.min(1).values < 1e-12).all()  # every product is an element
    assert len(dihedral_matrices(6)) == 12 and len(permutation_matrices(3, 2)) == 6


def test_symmetric_cnf_flow_matching_objective_and_state_dict(tmp_path):
    spec = {"kind": "cnf", "features": 2, "hidden": [8, 8],
            "symmetry": {"group": "dihedral", "order": 4}}
    flow = build(spec)
    loss = flow(torch.randn(16, 2), objective="flow_matching")
    assert loss.shape == (16,) and torch.isfinite(loss).all()
    loss.mean().backward()
    torch.save(flow.state_dict(), tmp_path / "w.pt")
    fresh = build(spec)
    fresh.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))


def test_symmetry_spec_errors():
    with pytest.raises(ValueError, match="2-D"):
        build({"kind": "maf", "features": 3, "symmetry": {"group": "dihedral", "order": 4}})
    with pytest.raises(ValueError, match="does not divide"):
        build({"kind": "maf", "features": 5, "symmetry": {"group": "permutation",
                                                          "particles": 2}})
    with pytest.raises(ValueError, match="at most 6"):
        build({"kind": "maf", "features": 7, "symmetry": {"group": "permutation",
                                                          "particles": 7}})
    with pytest.raises(ValueError, match="one of"):
        build({"kind": "maf", "features": 2, "symmetry": {"group": "lorentz"}})
    with pytest.raises(ValueError, match="unknown"):
        build({"kind": "maf", "features": 2, "symmetry": {"group": "sign", "order": 2}})
