"""``kind: cnf`` + ``symmetry: {group: permutation, particles: P}``: an equivariant field gives
an exactly permutation-invariant density for any P (no P! orbit)."""

from __future__ import annotations

import math

import pytest
import torch

from flowctl.flows import build


def _random_cnf(spec: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    flow = build(spec).double()
    for m in flow.modules():  # the zeroed last layer would make the field (and the test) trivial
        if isinstance(m, torch.nn.Linear):
            m.reset_parameters()
    return flow.double()


@pytest.mark.parametrize("context", [0, 3])
def test_density_is_invariant_under_every_tried_permutation(context: int) -> None:
    p, f = 10, 2  # 10! = 3.6M orbit elements: beyond the orbit-averaging wrapper
    flow = _random_cnf({"kind": "cnf", "features": p * f, "context": context, "hidden": [32, 32],
                        "symmetry": {"group": "permutation", "particles": p}})
    x = torch.randn(32, p * f, dtype=torch.float64)
    ctx = torch.randn(32, context, dtype=torch.float64) if context else None
    with torch.no_grad():
        ref = flow.log_prob(x, ctx)
        for seed in range(3):
            perm = torch.randperm(p, generator=torch.Generator().manual_seed(seed))
            xp = x.reshape(32, p, f)[:, perm].reshape(32, p * f)
            assert (flow.log_prob(xp, ctx) - ref).abs().max() < 1e-9
    assert flow.sample(7, ctx[0] if ctx is not None else None).shape == (7, p * f)
    assert flow.flow_matching_loss(x, ctx).shape == (32,)


def test_two_particles_in_one_dimension_normalise() -> None:
    flow = _random_cnf({"kind": "cnf", "features": 2, "hidden": [16, 16],
                        "symmetry": {"group": "permutation", "particles": 2}})
    g = torch.linspace(-6, 6, 121, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    with torch.no_grad():
        dens = flow.log_prob(pts).exp().reshape(121, 121)
    mass = float(dens.sum()) * float(g[1] - g[0]) ** 2
    assert math.isclose(mass, 1.0, abs_tol=0.02), mass
    assert torch.allclose(dens, dens.t(), atol=1e-12)  # p(x, y) = p(y, x)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="standardize: false"):
        build({"kind": "cnf", "features": 4, "standardize": True,
               "symmetry": {"group": "permutation", "particles": 2}})
    with pytest.raises(ValueError, match="divide"):
        build({"kind": "cnf", "features": 5, "symmetry": {"group": "permutation",
                                                          "particles": 2}})
