"""Accuracy of the NAF inverse and of the CNF's two ODE directions (docs/flows.md).

NAF: max relative round-trip error |x - inverse(forward(x))| / (1 + |x|) of random 3-layer
flows (D = 4, context 2, conditioner weights + N(0, std²) noise) at 4000 points (half N(0, 4),
half U(-30, 30)), per kind and dtype, with the most negative log|det dz/dx| seen. CNF: max
|sample_and_log_prob - log_prob| over 300 samples of a random 2-D conditional field, per
solver tolerance. Writes ``benchmarks/results/flow_numerics-<date>.json``.

    OMP_NUM_THREADS=1 python benchmarks/flow_numerics.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "flows"))

from flowcases import randomize

from flowctl.flows import build


def naf_round_trip(kind: str, dtype: torch.dtype, std: float) -> dict:
    torch.manual_seed(0)
    flow = build({"kind": kind, "features": 4, "context": 2, "transforms": 3,
                  "hidden": [16, 16], "transform": "naf", "sigmoids": 4,
                  "activation": "tanh"})
    randomize(flow, std)
    flow = flow.to(dtype).eval()
    g = torch.Generator().manual_seed(3)
    x = torch.cat([torch.randn(2000, 4, generator=g) * 2,
                   (torch.rand(2000, 4, generator=g) * 2 - 1) * 30]).to(dtype)
    ctx = torch.randn(x.shape[0], 2, generator=g).to(dtype)
    with torch.no_grad():
        z, ld = flow.transform(x, ctx)
        back, _ = flow.transform.inverse(z, ctx)
    err = ((x - back).abs() / (1 + x.abs())).max().item()
    return {"kind": kind, "dtype": str(dtype).removeprefix("torch."), "std": std,
            "max_rel_error": err, "min_logdet": ld.min().item()}


def naf_inverse_cost(kind: str, dtype: torch.dtype) -> dict:
    """Evaluations of the sigmoidal map per element-wise inverse call (bracket doubling,
    Newton/bisection to 16 eps and the autograd step), 1000 points of N(0, 4)."""
    import flowctl.flows.monotonic as mono

    torch.manual_seed(0)
    flow = build({"kind": kind, "features": 4, "context": 2, "transforms": 3,
                  "hidden": [16, 16], "transform": "naf", "sigmoids": 4,
                  "activation": "tanh"})
    randomize(flow, 0.3)
    flow = flow.to(dtype).eval()
    g = torch.Generator().manual_seed(5)
    x = (torch.randn(1000, 4, generator=g) * 2).to(dtype)
    ctx = torch.randn(1000, 2, generator=g).to(dtype)
    counts = {"map": 0, "inverse": 0}
    original_map, original_inverse = mono.sigmoidal, mono.Sigmoidal.inverse

    def counted_map(*args):
        counts["map"] += 1
        return original_map(*args)

    def counted_inverse(self, y, params):
        counts["inverse"] += 1
        return original_inverse(self, y, params)

    with torch.no_grad():
        z, _ = flow.transform(x, ctx)
        mono.sigmoidal, mono.Sigmoidal.inverse = counted_map, counted_inverse
        try:
            flow.transform.inverse(z, ctx)
        finally:
            mono.sigmoidal, mono.Sigmoidal.inverse = original_map, original_inverse
    return {"kind": kind, "dtype": str(dtype).removeprefix("torch."),
            "map_evaluations_per_inverse": counts["map"] / counts["inverse"]}


def cnf_consistency(tol: float) -> dict:
    torch.manual_seed(0)
    flow = build({"kind": "cnf", "features": 2, "context": 1, "hidden": [32, 32],
                  "rtol": tol, "atol": tol})
    randomize(flow, 0.3)
    flow = flow.double().eval()
    c = torch.randn(1, dtype=torch.float64)
    with torch.no_grad():
        x, lp = flow.sample_and_log_prob(300, c)
        again = flow.log_prob(x, c)
    return {"rtol_atol": tol, "max_abs_nats": (lp - again).abs().max().item(),
            "field_evaluations": flow.cnf.last_evaluations}


def main() -> None:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out = REPO / "benchmarks" / "results" / f"flow_numerics-{stamp}.json"
    res = {"command": "OMP_NUM_THREADS=1 python benchmarks/flow_numerics.py", "date_utc": stamp,
           "naf": [naf_round_trip(k, dt, s) for k in ("maf", "iaf", "coupling")
                   for dt in (torch.float64, torch.float32) for s in (0.3, 1.0)],
           "naf_inverse_cost": [naf_inverse_cost(k, dt) for k in ("maf", "coupling")
                                for dt in (torch.float64, torch.float32)],
           "cnf": [cnf_consistency(t) for t in (1e-5, 1e-6, 1e-7)]}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1))
    tmp.replace(out)
    print(json.dumps(res, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
