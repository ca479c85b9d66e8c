"""flowctl's NAF and CNF against zuko 1.6.0's at matched parameter counts (issue 17, item 6).

* NAF: MAF with deep-sigmoidal maps (flowctl ``transform: naf``, 8 sigmoids, MADE [64, 64])
  against ``zuko.flows.NAF`` (its monotonic network, ``signal`` 16), 8 dims, 3 transforms;
  zuko's hidden width is chosen so that the parameter counts agree within 5 %. Timed: a
  training step (log_prob + backward + Adam) at batch 4096, log_prob at 16 384 without grad,
  sampling 4096 (both invert numerically: flowctl by safeguarded Newton, zuko by bisection).
* CNF: 2 dims, vector field MLP [64, 64] (flowctl ``kind: cnf`` with SiLU, zuko ``CNF``), exact
  trace, dopri5 with atol 1e-6 and rtol 1e-5 for both (zuko's defaults). Both fields get
  PyTorch's default random initialisation (flowctl zeroes its last layer for training; a zero
  field would make the ODE trivial), so the solvers work on comparable random fields. Timed:
  log_prob and sampling of 4096 points, with the number of vector-field evaluations (NFE) per
  call, since the time is NFE x cost per evaluation.

Medians of interleaved repetitions (both libraries timed in turn), one CPU thread, float32.

    python benchmarks/families_vs_zuko.py --reps 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import zuko
from torch import nn

from flowctl.flows import build


def count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def interleaved(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 1
                ) -> dict[str, float]:
    for _ in range(warmup):
        for f in fns.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def naf_models() -> tuple[nn.Module, nn.Module, int]:
    ours = build({"kind": "maf", "transform": "naf", "features": 8, "transforms": 3,
                  "hidden": [64, 64], "sigmoids": 8})
    target = count(ours)
    best = None
    for width in range(8, 129):
        z = zuko.flows.NAF(8, transforms=3, signal=16, hidden_features=(width, width))
        if best is None or abs(count(z) - target) < abs(count(best[1]) - target):
            best = (width, z)
    assert best is not None
    return ours, best[1], best[0]


def naf_rows(reps: int) -> list[dict]:
    torch.manual_seed(0)
    ours, theirs, width = naf_models()
    x_train = torch.randn(4096, 8)
    x_eval = torch.randn(16384, 8)
    opt_o = torch.optim.Adam(ours.parameters(), 1e-3)
    opt_z = torch.optim.Adam(theirs.parameters(), 1e-3)

    def step_o() -> None:
        opt_o.zero_grad()
        (-ours.log_prob(x_train).mean()).backward()
        opt_o.step()

    def step_z() -> None:
        opt_z.zero_grad()
        (-theirs().log_prob(x_train).mean()).backward()
        opt_z.step()

    def nograd(f: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return f()
        return run

    rows = []
    counts = {"flowctl": count(ours), "zuko": count(theirs), "zuko_hidden": width}
    for name, fns in (
        ("NAF train step (batch 4096)", {"flowctl": step_o, "zuko": step_z}),
        ("NAF log_prob (16 384)", {"flowctl": nograd(lambda: ours.log_prob(x_eval)),
                                   "zuko": nograd(lambda: theirs().log_prob(x_eval))}),
        ("NAF sample (4096)", {"flowctl": nograd(lambda: ours.sample(4096)),
                               "zuko": nograd(lambda: theirs().sample((4096,)))}),
    ):
        t = interleaved(fns, reps)
        rows.append({"row": name, **{f"{k}_ms": 1e3 * v for k, v in t.items()},
                     "ratio_flowctl_over_zuko": t["flowctl"] / t["zuko"], **counts})
        print(f"{name:32s} flowctl {1e3 * t['flowctl']:9.1f} ms  zuko {1e3 * t['zuko']:9.1f} ms"
              f"  ratio {t['flowctl'] / t['zuko']:.2f}", flush=True)
    return rows


class _Counter:
    def __init__(self, module: nn.Module) -> None:
        self.n = 0
        module.register_forward_hook(self._hook)

    def _hook(self, *args: object) -> None:
        self.n += 1


def cnf_rows(reps: int) -> list[dict]:
    torch.manual_seed(0)
    ours = build({"kind": "cnf", "features": 2, "hidden": [64, 64], "activation": "silu",
                  "rtol": 1e-5, "atol": 1e-6})
    theirs = zuko.flows.CNF(2, hidden_features=(64, 64), atol=1e-6, rtol=1e-5)
    for m in list(ours.modules()) + list(theirs.modules()):
        if isinstance(m, nn.Linear):
            m.reset_parameters()
    field_o = next(m for m in ours.modules() if type(m).__name__ == "VectorField")
    field_z = theirs.transform.ode
    c_o, c_z = _Counter(field_o), _Counter(field_z)
    x = torch.randn(4096, 2)
    counts = {"flowctl": count(ours), "zuko": count(theirs)}
    rows = []
    for name, fns in (
        ("CNF log_prob (4096, exact trace)", {"flowctl": lambda: ours.log_prob(x).detach(),
                                              "zuko": lambda: theirs().log_prob(x).detach()}),
        ("CNF sample (4096)", {"flowctl": lambda: ours.sample(4096).detach(),
                               "zuko": lambda: theirs().sample((4096,)).detach()}),
    ):
        nfe = {}
        for k, f in fns.items():  # one counted call per library
            c = c_o if k == "flowctl" else c_z
            c.n = 0
            f()
            nfe[k] = c.n
        t = interleaved(fns, reps)
        rows.append({"row": name, **{f"{k}_ms": 1e3 * v for k, v in t.items()},
                     **{f"{k}_nfe": v for k, v in nfe.items()},
                     "ratio_flowctl_over_zuko": t["flowctl"] / t["zuko"],
                     "ratio_per_nfe": (t["flowctl"] / nfe["flowctl"]) / (t["zuko"] / nfe["zuko"]),
                     **counts})
        print(f"{name:32s} flowctl {1e3 * t['flowctl']:9.1f} ms ({nfe['flowctl']} NFE)  zuko "
              f"{1e3 * t['zuko']:9.1f} ms ({nfe['zuko']} NFE)  ratio "
              f"{t['flowctl'] / t['zuko']:.2f}, per NFE {rows[-1]['ratio_per_nfe']:.2f}",
              flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = naf_rows(args.reps) + cnf_rows(args.reps)
    out = Path(args.out) / f"families_vs_zuko-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": f"python benchmarks/families_vs_zuko.py --reps "
                                          f"{args.reps}", "threads": 1, "zuko": zuko.__version__,
                               "torch": torch.__version__, "rows": rows}, indent=2) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
