"""Cost of one optimizer step of the two-moons posterior flow (conditional RQ-spline MAF, 5
transforms, hidden [50, 50], 10 bins: ``posterior_moons``) at batch sizes 32/128/512, a bare
loop without the trainer, then a cProfile of 200 steps at batch 32. Run with one thread:

    OMP_NUM_THREADS=1 python benchmarks/posterior_step_profile.py

Prints ms per step (wall, 3 s per batch size) and the profile; timings depend on the load.
"""

from __future__ import annotations

import cProfile
import pstats
import time

import torch

from flowctl.apps.common import build_flow


def main() -> None:
    torch.set_num_threads(1)
    spec = {"kind": "maf", "features": 2, "context": 2, "transforms": 5, "hidden": [50, 50],
            "transform": "rqs", "bins": 10, "tail_bound": 3.0, "permutation": "reverse",
            "base": "normal", "standardize": True}
    flow = build_flow(spec)
    th, x = torch.randn(2000, 2), torch.randn(2000, 2)
    flow.initialize(th, x)
    opt = torch.optim.AdamW(flow.parameters(), lr=1e-3)

    def step(bs: int) -> None:
        i = torch.randint(0, 2000, (bs,))
        loss = -flow.log_prob(th[i], x[i]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    for bs in (32, 128, 512):
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < 3:
            step(bs)
            n += 1
        print(f"batch {bs}: {1e3 * (time.perf_counter() - t0) / n:.1f} ms/step")
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(200):
        step(32)
    pr.disable()
    pstats.Stats(pr).sort_stats("cumtime").print_stats(25)


if __name__ == "__main__":
    main()
