"""Round trips of random RQS flows far from training's regime, with ``logit_bound``.

The stress (issue 18): RQS coupling flows in float64 whose conditioners' output layers are
perturbed by N(0, 0.5). Unbounded logits let a bin's interior slope fall to ~1e-8, so the inverse
amplifies round-off enormously and six layers lose all precision (median max error 3.6 in
benchmarks/results/spline_stress-20261130-174345.json; zuko 1.6.0, which soft-bounds its
logits: 4.8e-5). With ``logit_bound: 3.45`` flowctl reaches 1.6e-8.
"""

from __future__ import annotations

import statistics

import pytest
import torch

from flowctl.flows import build
from flowctl.flows.elementwise import RQS, UnitRQS, soft_bound


def _stressed(seed: int, spec: dict, pert: float = 0.5) -> torch.nn.Module:
    torch.manual_seed(seed)
    flow = build(spec).double()
    with torch.no_grad():
        for name, p in flow.named_parameters():
            if "output_layer" in name:
                p.add_(torch.randn_like(p) * pert)
    return flow


def _round_trip(flow: torch.nn.Module, d: int, n: int = 1024) -> float:
    x = torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        z, ld = flow.transform(x)
        back, ld_inv = flow.transform.inverse(z)
    assert torch.isfinite(z).all() and torch.isfinite(ld).all()
    assert (ld + ld_inv).abs().max() < 1e-5
    return float((back - x).abs().max())


@pytest.mark.parametrize("kind", ["coupling", "maf"])
def test_bounded_logits_survive_the_stress(kind: str) -> None:
    spec = {"kind": kind, "features": 8, "transforms": 6, "hidden": [128, 128],
            "transform": "rqs", "bins": 8, "tail_bound": 3.0, "logit_bound": 3.45}
    errors = [_round_trip(_stressed(seed, spec), 8) for seed in range(5)]
    assert statistics.median(errors) < 1e-6, errors


def test_soft_bound_is_identity_at_zero_and_bounded() -> None:
    t = torch.tensor([-1e9, -3.0, 0.0, 1e-6, 3.0, 1e9], dtype=torch.float64)
    b = soft_bound(t, 3.45)
    assert b[2] == 0 and abs(b[3] - 1e-6) < 1e-11
    assert (b.abs() < 3.45).all() and torch.all(b[1:] >= b[:-1])


@pytest.mark.parametrize("family", [RQS(8, 3.0, 3.45), UnitRQS(8, 3.45)])
def test_bounded_family_log_det_matches_autograd(family: torch.nn.Module) -> None:
    torch.manual_seed(0)
    params = torch.randn(1, 3, family.num_params, dtype=torch.float64) * 20
    x = torch.rand(1, 3, dtype=torch.float64) * (0.9 if isinstance(family, UnitRQS) else 5.0)
    if isinstance(family, RQS):
        x = x - 2.5
    y, ladj = family(x, params)

    def f(v: torch.Tensor) -> torch.Tensor:
        return family(v.view(1, 3), params)[0].view(3)

    jac = torch.autograd.functional.jacobian(f, x.view(3))
    assert torch.allclose(torch.diagonal(jac).log(), ladj.view(3), atol=1e-9)
    back, _ = family.inverse(y, params)
    assert torch.allclose(back, x, atol=1e-9)


def test_zero_parameters_stay_the_identity_with_a_bound() -> None:
    flow = build({"kind": "coupling", "features": 4, "transforms": 4, "logit_bound": 3.45,
                  "permutation": "none"})
    x = torch.randn(64, 4)
    z, ld = flow.transform(x)
    assert torch.allclose(z, x, atol=1e-6) and ld.abs().max() < 1e-5


def test_logit_bound_is_validated() -> None:
    with pytest.raises(ValueError, match="logit_bound"):
        build({"kind": "coupling", "features": 4, "transforms": 4, "logit_bound": -1.0})
