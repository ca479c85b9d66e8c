"""When does a Pareto k above 0.7 mean a heavy tail? The guard of flowctl's reliability check.

For each case: the Pareto k of the weights' tail, the share of sum (w - mean w)^2 carried by
the tail's points (:func:`flowctl.integration.diagnostics.tail_variance_share`), ESS/N,
max w / mean w, and the verdicts of the check without the guard (k > 0.7 alone) and with it
(k > 0.7 and share >= 0.5). Cases:

* synthetic: Pareto tails with index alpha (k = 1/alpha), exponential, lognormal, a mixture
  of a near-constant bulk with 1 % from a Pareto(1.2) tail, and near-constant weights with a
  bounded steep top (the shape of the false alarms), at N = 5e4 and 5e5, 3 draws each;
* weights of real runs (``--runs``): flowctl on e+e- -> q qbar g at 150k calls with grid
  damping 0.7 (the false alarm of seed 0, k 0.81), the shipped ee_qqg at 150k, plain MC and
  VEGAS's map on ridge 6-d and camel 16-d, MadNIS on ridge 6-d (150k calls), and the
  under-converged narrow ridge of the test suite; with ``--big`` also ee_qqg at 1.5M calls
  (seeds ``--big-seeds``, ~1000 s of training each on a loaded core).

    python benchmarks/integration_tails.py --runs --out benchmarks/results/integration-tails-20261201.json
    python benchmarks/integration_tails.py --big-only --big-seeds 2 --out benchmarks/results/integration-tails-qqg1p5M-20261201.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _row(case: str, w: np.ndarray, **extra: Any) -> dict[str, Any]:
    from flowctl.integration.diagnostics import diagnose

    d = diagnose(w)
    a = np.abs(w)
    old = d.pareto_k > 0.7
    return {"case": case, "n": len(w), "pareto_k": d.pareto_k,
            "tail_variance_share": d.tail_variance_share, "ess_fraction": d.ess_fraction,
            "max_over_mean": float(a.max() / a.mean()) if a.mean() > 0 else None,
            "k_flag_without_guard": bool(old),
            "k_flag_with_guard": bool(any("Pareto k" in r for r in d.reasons)),
            "reliable": d.reliable, "reasons": d.reasons, **extra}


def synthetic(rows: list[dict[str, Any]]) -> None:
    gens = {
        "pareto alpha=1.1 (k 0.91)": lambda r, n: r.pareto(1.1, n) + 1,
        "pareto alpha=1.43 (k 0.7)": lambda r, n: r.pareto(1.43, n) + 1,
        "pareto alpha=2 (k 0.5)": lambda r, n: r.pareto(2.0, n) + 1,
        "lognormal sigma=2": lambda r, n: r.lognormal(0, 2, n),
        "exponential (k 0)": lambda r, n: r.exponential(size=n),
        "bulk 1+-0.02, 1% pareto(1.2)": lambda r, n: np.where(
            r.uniform(size=n) < 0.01, 1 + r.pareto(1.2, n), 1 + 0.02 * r.standard_normal(n)),
        "bulk 1+-0.03, bounded steep top (false-alarm shape)": _steep_top,
    }
    for name, g in gens.items():
        for n in (50000, 500000):
            for seed in range(3):
                rows.append(_row(name, g(np.random.default_rng(seed), n), seed=seed,
                                 kind="synthetic"))


def _steep_top(r: np.random.Generator, n: int) -> np.ndarray:
    w = 1 + 0.03 * r.standard_normal(n)
    m = int(0.014 * n)
    w[:m] = 1.08 + np.minimum(0.002 * r.pareto(1.0, m), 0.4)
    return w


def _bench_weights(job: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """Run one job of benchmarks/integration.py and catch the weights it diagnoses."""
    import flowctl.integration as fi
    from benchmarks.integration import run_job

    seen: dict[str, np.ndarray] = {}
    orig = fi.diagnose

    def spy(w: np.ndarray, **kw: Any) -> Any:
        seen["w"] = np.asarray(w)
        return orig(w, **kw)

    fi.diagnose = spy
    try:
        row = run_job({"threads": 1, "trainer": None, "flow": None, **job})
    finally:
        fi.diagnose = orig
    keep = {k: row.get(k) for k in ("pull", "rel_std", "integral", "error", "wall_s", "calls",
                                    "fresh_integral", "fresh_error", "combined", "exact")}
    return seen["w"], keep


def _big_jobs(seeds: list[int]) -> list[tuple[str, dict[str, Any]]]:
    return [("ee_qqg flowctl 1.5M, shipped", {"workload": "ee_qqg", "method": "shipped",
             "seed": s, "calls": 1500000, "est_calls": 500000}) for s in seeds]


def _run_jobs(rows: list[dict[str, Any]], jobs: list[tuple[str, dict[str, Any]]]) -> None:
    for case, job in jobs:
        try:
            w, keep = _bench_weights(job)
        except ImportError as exc:  # madnis not installed
            print(f"skip {case}: {exc}")
            continue
        rows.append(_row(case, w, seed=job["seed"], kind="run", **keep))
        print(f"{case} seed {job['seed']}: k {rows[-1]['pareto_k']:.2f}, share "
              f"{rows[-1]['tail_variance_share']:.3f}", flush=True)


def big_runs(rows: list[dict[str, Any]], seeds: list[int]) -> None:
    """ee_qqg at 1.5M calls, the shipped config (the false alarms of the first 1.5M runs)."""
    _run_jobs(rows, _big_jobs(seeds))


def runs(rows: list[dict[str, Any]], big: bool, big_seeds: list[int]) -> None:
    import torch

    from flowctl.integrands import SHIPPED
    from flowctl.integration import run_vegas

    jobs = [("ee_qqg flowctl 150k, grid damping 0.7", {"workload": "ee_qqg",
             "method": "shipped", "seed": s, "calls": 150000, "est_calls": 50000,
             "trainer": {"grid_alpha": 0.7}}) for s in range(3)]
    jobs += [("ee_qqg flowctl 150k, shipped", {"workload": "ee_qqg", "method": "shipped",
              "seed": s, "calls": 150000, "est_calls": 50000}) for s in range(3)]
    jobs += [(f"{wl} plain MC {c // 1000}k", {"workload": wl, "method": "plain", "seed": 0,
              "calls": c, "est_calls": 50000})
             for wl in ("ridge6", "camel16") for c in (150000, 1500000)]
    jobs += [("ridge6 MadNIS 150k", {"workload": "ridge6", "method": "madnis", "seed": 0,
              "calls": 150000, "est_calls": 50000})]
    if big:
        jobs += _big_jobs(big_seeds)
    _run_jobs(rows, jobs)

    for wl, name, dim in (("ridge6", "ridge", 6), ("camel16", "camel", 16)):
        for calls in (150000, 1500000):
            v = run_vegas(SHIPPED[name](dim), dim, calls, 30, 10, 0, unweight_calls=500000)
            rows.append(_row(f"{wl} VEGAS map after {calls // 1000}k calls (500k points)",
                             v["weights"], seed=0, kind="run"))
    # the under-converged narrow ridge of tests/integrate/test_integrate_reliability.py
    from flowctl.apps.integration import DEFAULTS, flow_spec
    from flowctl.flows import build as build_flow
    from flowctl.integration import flow_weights, train_sampler

    ig = SHIPPED["ridge"](6, width=0.005, length=0.12)
    torch.manual_seed(0)
    flow = build_flow(flow_spec({"flow": {"hidden": [16, 16], "bins": 8}}, 6))
    tr = {**DEFAULTS["trainer"], "calls": 3000, "batch": 500, "buffer": 3000,
          "buffered_steps": 2, "lr": 3e-3, "loss": "variance", "log_every": 10**9}
    train_sampler(flow, ig, tr, seed=0, verbose=False)
    torch.manual_seed(1)
    w, _ = flow_weights(flow, ig, 20000)
    rows.append(_row("narrow ridge 6-d after 3000 calls (test)", w, seed=0, kind="run"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", action="store_true", help="also the weights of real runs")
    ap.add_argument("--big", action="store_true", help="also ee_qqg at 1.5M calls")
    ap.add_argument("--big-seeds", default="0,1,2")
    ap.add_argument("--big-only", action="store_true",
                    help="only the ee_qqg runs at 1.5M calls (no synthetic cases, no other runs)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    seeds = [int(s) for s in args.big_seeds.split(",") if s]
    if args.big_only:
        big_runs(rows, seeds)
    else:
        synthetic(rows)
    if args.runs and not args.big_only:
        runs(rows, args.big, seeds)
    head = f"{'case':<58} {'N':>7} {'k':>6} {'share':>6} {'ESS/N':>7} {'max/mean':>9} {'old':>4} {'new':>4}"
    print(head)
    for r in rows:
        mm = r["max_over_mean"]
        print(f"{r['case'][:58]:<58} {r['n']:>7} {r['pareto_k']:>6.2f} "
              f"{r['tail_variance_share']:>6.3f} {r['ess_fraction']:>7.3g} "
              f"{(f'{mm:.3g}' if mm is not None else '-'):>9} "
              f"{'FLAG' if r['k_flag_without_guard'] else '-':>4} "
              f"{'FLAG' if r['k_flag_with_guard'] else '-':>4}")
    if args.out:
        from benchmarks.common import machine_info, save_results

        save_results(Path(args.out), json.loads(json.dumps(
            {"benchmark": "integration_tails", "argv": sys.argv[1:] if argv is None
             else list(argv), "machine": machine_info(torch.device("cpu"), {}), "rows": rows,
             "wall_s": round(time.perf_counter() - t0, 1)}, default=float)))
        print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
