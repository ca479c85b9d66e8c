"""Flow cases shared by the flow-library tests: specs, devices and randomised flows."""

from __future__ import annotations

import torch

from flowctl.flows import build

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# Every kind x element-wise family, plus the variants that change the code path.
SPECS = {
    "coupling-affine": {"kind": "coupling", "transform": "affine"},
    "coupling-rqs": {"kind": "coupling", "transform": "rqs"},
    "coupling-rqs-residual-actnorm": {"kind": "coupling", "transform": "rqs", "residual": True,
                                      "hidden": [16, 16, 16], "norm": "actnorm"},
    "maf-affine": {"kind": "maf", "transform": "affine"},
    "maf-rqs": {"kind": "maf", "transform": "rqs"},
    "maf-rqs-residual-batchnorm": {"kind": "maf", "transform": "rqs", "residual": True,
                                   "hidden": [16, 16, 16], "norm": "batchnorm"},
    "maf-rqs-randperm-3layers": {"kind": "maf", "transform": "rqs", "permutation": "random",
                                 "hidden": [16, 16, 16]},
    "iaf-affine": {"kind": "iaf", "transform": "affine"},
    "iaf-rqs": {"kind": "iaf", "transform": "rqs"},
    "iaf-rqs-inverse-map": {"kind": "iaf", "transform": "rqs", "iaf_map": "inverse"},
}


def randomize(module: torch.nn.Module, std: float = 0.5, seed: int = 0) -> None:
    """Add N(0, std²) noise to every parameter (the zeroed output layers included), so that
    flows are far from the identity while the hidden layers keep their default scale."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std)


def make_flow(name: str, features: int = 3, context: int = 0, dtype=torch.float64,
              device: str = "cpu", std: float = 0.5, **extra) -> torch.nn.Module:
    spec = {"features": features, "context": context, "transforms": 3, "hidden": [16, 16],
            "bins": 6, "tail_bound": 3.0, **SPECS[name], **extra}
    torch.manual_seed(0)
    flow = build(spec)
    randomize(flow, std)
    flow = flow.to(device=device, dtype=dtype)
    # Give BatchNorm non-trivial running statistics, then freeze them (eval mode).
    flow.train()
    with torch.no_grad():
        ctx = torch.randn(64, context, dtype=dtype, device=device) if context else None
        flow.log_prob(torch.randn(64, features, dtype=dtype, device=device) * 1.5, ctx)
    flow.eval()
    return flow
