"""flowctl integrate vs VEGAS vs plain MC at the same number of integrand calls.

Workloads of BENCH.md (integration): camel 2/4/8/16-d, gauss 16-d, polynomial 18-d and
e+e- -> q qbar g; every method gets ``--calls`` integrand calls in total (flowctl: training +
fresh estimate; VEGAS: 10 adaptation + 20 measurement iterations; plain MC: all of them).
Reported per method: integral ± error, pull, relative std per point, unweighting efficiency
(bootstrap, reference §6), calls and wall time; for camel whether both modes are found
(fraction of the sampler's points nearer each mode, the target has 1/2 each).

    python benchmarks/integration.py                      # all workloads, 150 000 calls
    python benchmarks/integration.py --only camel4,camel8 --variants variance --jobs 2
    python benchmarks/integration.py --out bench.json     # also write the rows as JSON

Jobs run in parallel processes (``--jobs``), each with ``torch.set_num_threads(--threads)``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORKLOADS: dict[str, tuple[str, int, dict[str, Any]]] = {
    "camel2": ("camel", 2, {}),
    "camel4": ("camel", 4, {}),
    "camel8": ("camel", 8, {}),
    "camel16": ("camel", 16, {}),
    "gauss16": ("gauss", 16, {}),
    "poly18": ("polynomial", 18, {}),
    "ee_qqg": ("ee_qqg", 2, {}),
}

# flowctl settings compared (trainer section overrides; the budget split is train/estimate).
VARIANTS: dict[str, dict[str, Any]] = {
    "variance": {"loss": "variance", "batch": 1000, "buffer": 100000, "buffered_steps": 10,
                 "lr": 3e-3},
    "variance-k30": {"loss": "variance", "batch": 1000, "buffer": 100000,
                     "buffered_steps": 30, "lr": 3e-3},
    "kl": {"loss": "kl", "batch": 1000, "buffer": 100000, "buffered_steps": 10, "lr": 3e-3},
    "kl-noreuse": {"loss": "kl", "batch": 1000, "buffer": 0, "buffered_steps": 0, "lr": 1e-3},
}


def _modes(x: np.ndarray, w: np.ndarray | None = None) -> float:
    """Fraction of points (weighted by |w| if given) nearer the (1/3, ...) camel mode."""
    near = ((x - 1 / 3) ** 2).sum(1) < ((x - 2 / 3) ** 2).sum(1)
    if w is None:
        return float(near.mean())
    a = np.abs(w)
    return float(a[near].sum() / max(a.sum(), 1e-300))


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """One (workload, method, seed) run; returns a result row."""
    import torch

    torch.set_num_threads(job["threads"])
    from flowctl.apps.integration import (
        DEFAULTS,
        build_flow,
        flow_spec,
        flow_weights,
        plain_mc,
        run_vegas,
        train_sampler,
    )
    from flowctl.integrands import SHIPPED
    from flowctl.metrics.integration import estimate, pull, unweighting_efficiency

    name, dim, params = WORKLOADS[job["workload"]]
    ig = SHIPPED[name](dim, **params)
    calls, seed, method = job["calls"], job["seed"], job["method"]
    row: dict[str, Any] = {"workload": job["workload"], "method": method, "seed": seed,
                           "dim": dim, "exact": ig.exact}
    t0 = time.perf_counter()
    x = None
    w: np.ndarray
    if method == "plain":
        w = plain_mc(ig, dim, calls, seed)
        e = estimate(w)
        row.update(integral=e.integral, error=e.error, rel_std=e.rel_std, calls=calls)
    elif method == "vegas":
        v = run_vegas(ig, dim, calls, 30, 10, seed, unweight_calls=job["est_calls"])
        w, x = v.pop("weights"), v.pop("points")
        row.update(integral=v["integral"], error=v["error"], rel_std=v["rel_std"],
                   calls=v["calls"], Q=v["Q"], chi2_dof=v["chi2_dof"])
    else:
        torch.manual_seed(seed)
        spec = flow_spec({"flow": job.get("flow") or {}}, dim)
        flow = build_flow(spec)
        tr = {**DEFAULTS["trainer"], **VARIANTS[method], "calls": calls - job["est_calls"],
              "log_every": 10**9}
        res = train_sampler(flow, ig, tr, seed=seed, verbose=False)
        torch.manual_seed(seed + 1)
        w, x = flow_weights(flow, ig, job["est_calls"], keep_x=True)
        e = estimate(w)
        row.update(integral=e.integral, error=e.error, rel_std=e.rel_std,
                   calls=res.calls + job["est_calls"], steps=res.steps,
                   train_s=round(res.wall_s, 1))
    row["pull"] = pull(row["integral"], row["error"], ig.exact)
    row["unweighting"] = unweighting_efficiency(w, 1000, seed=seed).efficiency
    if name == "camel" and x is not None:
        row["mode_fraction_q"] = _modes(x[:, :dim])
        row["mode_fraction_target"] = _modes(x[:, :dim], w)
    row["wall_s"] = round(time.perf_counter() - t0, 1)
    print(f"done {row['workload']:<8} {method:<13} seed {seed}: rel.std/pt "
          f"{row['rel_std']:.4g}, pull {row['pull']:+.2f}, {row['wall_s']} s", flush=True)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    """Side-by-side table, one line per (workload, method, seed), ratio to VEGAS."""
    vegas = {(r["workload"], r["seed"]): r["rel_std"] for r in rows if r["method"] == "vegas"}
    head = (f"{'workload':<8} {'method':<13} {'seed':>4} {'integral ± error':>26} "
            f"{'pull':>8} {'rel.std/pt':>10} {'VEGAS/this':>10} {'unw.eff':>8} "
            f"{'modes q':>7} {'calls':>7} {'wall s':>7}")
    out = [head, "-" * len(head)]
    order = {"flowctl": 0, "vegas": 2, "plain": 3}
    for r in sorted(rows, key=lambda r: (list(WORKLOADS).index(r["workload"]),
                                         order.get(r["method"], 1), r["method"], r["seed"])):
        ratio = vegas.get((r["workload"], r["seed"]))
        ratio_s = f"{ratio / r['rel_std']:.2f}x" if ratio and r["rel_std"] else "-"
        modes = r.get("mode_fraction_q")
        out.append(
            f"{r['workload']:<8} {r['method']:<13} {r['seed']:>4} "
            f"{r['integral']:>13.7g} ± {r['error']:<10.3g} {r['pull']:>+8.2f} "
            f"{r['rel_std']:>10.4g} {ratio_s:>10} {100 * r['unweighting']:>7.2f}% "
            f"{(f'{modes:.2f}' if modes is not None else '-'):>7} {r['calls']:>7} "
            f"{r['wall_s']:>7}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=150000, help="integrand calls per method")
    ap.add_argument("--est-calls", type=int, default=50000,
                    help="flowctl: calls for the fresh estimate (the rest trains)")
    ap.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads")
    ap.add_argument("--variants", default="variance",
                    help=f"flowctl variants, comma-separated: {', '.join(VARIANTS)}")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    ap.add_argument("--threads", type=int, default=1, help="torch threads per job")
    ap.add_argument("--no-peers", action="store_true", help="flowctl only")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    methods = [v for v in args.variants.split(",") if v]
    for v in methods:
        if v not in VARIANTS:
            ap.error(f"unknown variant {v!r}; available: {', '.join(VARIANTS)}")
    if not args.no_peers:
        from flowctl.apps.integration import vegas_available

        methods += ["vegas", "plain"] if vegas_available() else ["plain"]
        if not vegas_available():
            print("vegas not installed (pip install flowctl[peers]): VEGAS column skipped")
    jobs = [{"workload": w, "method": m, "seed": s, "calls": args.calls,
             "est_calls": args.est_calls, "threads": args.threads}
            for w in args.only.split(",") for m in methods for s in range(args.seeds)]
    for j in jobs:
        if j["workload"] not in WORKLOADS:
            ap.error(f"unknown workload {j['workload']!r}; available: {', '.join(WORKLOADS)}")
    # slowest first so the pool stays busy
    jobs.sort(key=lambda j: (j["method"] in ("vegas", "plain"), -WORKLOADS[j["workload"]][1]))
    t0 = time.perf_counter()
    if args.jobs > 1:
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            rows = pool.map(run_job, jobs, chunksize=1)
    else:
        rows = [run_job(j) for j in jobs]
    print()
    print(f"flowctl integrate vs VEGAS vs plain MC, {args.calls} calls each "
          f"(flowctl: {args.calls - args.est_calls} training + {args.est_calls} fresh), "
          f"{args.threads} thread(s) per job, total {time.perf_counter() - t0:.0f} s")
    print(table(rows))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
