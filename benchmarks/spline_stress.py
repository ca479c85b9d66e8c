"""Round-trip error of random RQS coupling flows far from training's regime (issue 18 stress).

Six RQS coupling layers on 8 dims (conditioners 2 x 128, 8 bins), float64, the conditioners'
output layers perturbed by N(0, sigma); 4096 standard-normal points; per flow the largest
|inverse(forward(x)) - x|; the median over ``--flows`` flows. flowctl with unbounded logits
(the default) and with ``logit_bound: 3.45``, and zuko 1.6.0's NSF (passes=2) when installed.

    python benchmarks/spline_stress.py --flows 10 --sigma 0.5 1.0 2.0
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from flowctl.flows import build

D, N = 8, 4096


def _perturb(params: list[torch.nn.Parameter], sigma: float) -> None:
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * sigma)


def _points() -> torch.Tensor:
    return torch.randn(N, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def flowctl_error(seed: int, sigma: float, logit_bound: float | None) -> float:
    torch.manual_seed(seed)
    flow = build({"kind": "coupling", "features": D, "transforms": 6, "hidden": [128, 128],
                  "transform": "rqs", "bins": 8, "tail_bound": 3.0,
                  "logit_bound": logit_bound}).double()
    _perturb([p for n, p in flow.named_parameters() if "output_layer" in n], sigma)
    x = _points()
    with torch.no_grad():
        z, _ = flow.transform(x)
        back, _ = flow.transform.inverse(z)
    return float((back - x).abs().max())


def zuko_error(seed: int, sigma: float) -> float:
    import zuko

    torch.manual_seed(seed)
    flow = zuko.flows.NSF(features=D, transforms=6, hidden_features=(128, 128), bins=8,
                          passes=2).double()
    last = []
    for module in flow.modules():  # the last Linear of every conditioner network
        linears = [m for m in module.children() if isinstance(m, torch.nn.Linear)]
        if linears and isinstance(module, torch.nn.Sequential):
            last += list(linears[-1].parameters())
    _perturb(last, sigma)
    t = flow.transform()
    x = _points()
    with torch.no_grad():
        back = t.inv(t(x))
    return float((back - x).abs().max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=10)
    ap.add_argument("--sigma", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    torch.set_num_threads(1)
    try:
        import zuko  # noqa: F401
        have_zuko = True
    except ImportError:
        have_zuko = False
    rows = []
    for sigma in args.sigma:
        row = {"sigma": sigma}
        row["flowctl_unbounded"] = statistics.median(
            flowctl_error(s, sigma, None) for s in range(args.flows))
        row["flowctl_logit_bound_3.45"] = statistics.median(
            flowctl_error(s, sigma, 3.45) for s in range(args.flows))
        if have_zuko:
            row["zuko_1.6.0"] = statistics.median(zuko_error(s, sigma) for s in range(args.flows))
        rows.append(row)
        print("  ".join(f"{k} {v:.3g}" for k, v in row.items()), flush=True)
    out = Path(args.out) / f"spline_stress-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": "python benchmarks/spline_stress.py "
                               f"--flows {args.flows} --sigma {' '.join(map(str, args.sigma))}",
                               "points": N, "features": D, "dtype": "float64",
                               "statistic": "median over flows of the max |x' - x|",
                               "rows": rows}, indent=2) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
