"""Eager against compiled (``torch.compile``, the posterior app's ``compile: auto``) optimizer
steps of the two-moons posterior flow (``posterior_moons``: conditional RQ-spline MAF, 5
transforms, hidden [50, 50], 10 bins), interleaved in one process at batch 32/128/512, one
thread. Prints the compile seconds (first call; less when inductor's disk cache is warm) and
ms per step per round of the interleaving. Run:

    OMP_NUM_THREADS=1 python benchmarks/posterior_compile.py [--repeats 3] [--seconds 1.5]

Timings depend on the load of the machine; only the ratio inside one round is meaningful.
"""

from __future__ import annotations

import argparse
import time

import torch

from flowctl.apps.common import build_flow
from flowctl.apps.posterior_loss import make_loss, nll


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=1.5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    spec = {"kind": "maf", "features": 2, "context": 2, "transforms": 5, "hidden": [50, 50],
            "transform": "rqs", "bins": 10, "tail_bound": 3.0, "permutation": "reverse",
            "base": "normal", "standardize": True}
    flow = build_flow(spec)
    th, x = torch.rand(20000, 2) * 2 - 1, torch.randn(20000, 2)
    flow.initialize(th, x)
    opt = torch.optim.AdamW(flow.parameters(), lr=1e-4)
    losses = {"eager": nll, "compiled": make_loss(True)}

    def step(bs: int, name: str) -> None:
        i = torch.randint(0, len(th), (bs,))
        loss = losses[name](flow, (th[i], x[i]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for bs in (32, 512):  # both graphs (below and from 128 rows the masked layers differ)
        t0 = time.perf_counter()
        step(bs, "compiled")
        print(f"compile (first call at batch {bs}): {time.perf_counter() - t0:.1f} s", flush=True)
    for rep in range(args.repeats):
        for bs in (32, 128, 512):
            ms = {}
            for name in ("eager", "compiled"):
                t0, n = time.perf_counter(), 0
                while time.perf_counter() - t0 < args.seconds:
                    step(bs, name)
                    n += 1
                ms[name] = 1e3 * (time.perf_counter() - t0) / n
            print(f"round {rep}: batch {bs}: eager {ms['eager']:.2f} ms/step, compiled "
                  f"{ms['compiled']:.2f} ms/step, ratio {ms['eager'] / ms['compiled']:.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
