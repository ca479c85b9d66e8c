"""flowctl integrate vs MadNIS vs VEGAS vs plain MC at the same number of integrand calls.

Workloads of BENCH.md (integration): camel 2/4/8/16-d, gauss 16-d, polynomial 18-d,
e+e- -> q qbar g, and the narrow correlated ridge in 4/6/8-d; every method gets ``--calls``
integrand calls in total (flowctl: training + fresh estimate; MadNIS 1.0 with its defaults:
training capped at the same calls + the same fresh estimate; VEGAS: 10 adaptation + 20
measurement iterations, its rel. std per point from the measurement calls; plain MC: all of
them). flowctl runs the shipped settings of configs/integrate_<name>.yaml (variant
``shipped``) unless ``--variants``/``--trainer``/``--flow`` say otherwise. Reported per method
and seed: integral ± error, pull, relative std per point, unweighting efficiency (bootstrap,
reference §6), calls, wall time, and whether the reliability diagnostics
(:mod:`flowctl.integration.diagnostics`) trust the error; for camel whether each peak is found
(:func:`flowctl.metrics.integration.mode_census` on the fresh estimate points, and on extra
points of VEGAS's final map). Then a summary over seeds.

    python benchmarks/integration.py --seeds 3            # all workloads, 150 000 calls
    python benchmarks/integration.py --only camel16,ridge6 --seeds 3 --peers madnis,vegas
    python benchmarks/integration.py --only camel8 --seeds 3 --trainer '{"buffered_steps": 10}'
    python benchmarks/integration.py --only camel4,camel8 --variants shipped,variance --jobs 2

Results go to results/integration-<time>.json (``--out`` elsewhere, ``--no-save`` nowhere),
rewritten after every job. Jobs run seed by seed, in parallel processes with ``--jobs``, each
with ``torch.set_num_threads(--threads)``.
"""

from __future__ import annotations

import argparse
import json
import math
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
    "gauss2": ("gauss", 2, {}),
    "gauss16": ("gauss", 16, {}),
    "poly18": ("polynomial", 18, {}),
    "ee_qqg": ("ee_qqg", 2, {}),
    "ee_mumu": ("ee_mumu", 2, {}),
    "annulus": ("annulus", 2, {}),
    "circles": ("circles", 2, {}),
    "ridge4": ("ridge", 4, {}),
    "ridge6": ("ridge", 6, {}),
    "ridge8": ("ridge", 8, {}),
}

# flowctl settings: "shipped" = the trainer and flow sections of configs/integrate_<name>.yaml
# (what `flowctl integrate config=integrate_<name>` runs); the others override its trainer.
VARIANTS: dict[str, dict[str, Any]] = {
    "shipped": {},
    "variance": {"loss": "variance", "batch": 1000, "buffer": 100000, "buffered_steps": 10,
                 "lr": 3e-3},
    "variance-k30": {"loss": "variance", "batch": 1000, "buffer": 100000,
                     "buffered_steps": 30, "lr": 3e-3},
    "kl": {"loss": "kl", "batch": 1000, "buffer": 100000, "buffered_steps": 10, "lr": 3e-3},
    "kl-noreuse": {"loss": "kl", "batch": 1000, "buffer": 0, "buffered_steps": 0, "lr": 1e-3},
    "plainflow": {"grid": False, "channels": "none"},
    "grid": {"grid": True},
    "nogrid": {"grid": False},
    "onechannel": {"channels": "none"},
    "anneal": {"anneal": 0.5},
    "grid-anneal": {"grid": True, "anneal": 0.5},
}


def shipped_settings(name: str) -> dict[str, dict[str, Any]]:
    """``trainer`` and ``flow`` sections of configs/integrate.yaml merged with
    configs/integrate_<name>.yaml: what ``flowctl integrate config=integrate_<name>`` uses."""
    from omegaconf import OmegaConf

    cdir = Path(__file__).resolve().parents[1] / "configs"
    cfg = OmegaConf.load(cdir / "integrate.yaml")
    own = cdir / f"integrate_{name}.yaml"
    if own.exists():
        child = OmegaConf.load(own)
        child.pop("defaults", None)
        cfg = OmegaConf.merge(cfg, child)
    out = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(out, dict)
    return {"trainer": dict(out.get("trainer") or {}), "flow": dict(out.get("flow") or {}),
            "estimate": dict(out.get("estimate") or {})}


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """One (workload, method, seed) run; returns a result row."""
    import torch

    torch.set_num_threads(job["threads"])
    from flowctl.apps.integration import DEFAULTS, flow_spec
    from flowctl.flows import build as build_flow
    from flowctl.integrands import SHIPPED
    from flowctl.integration import diagnose, fresh_estimate, plain_mc, run_vegas, train_nis
    from flowctl.integration.peers import census
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
                   calls=v["calls"], Q=v["Q"], chi2_dof=v["chi2_dof"],
                   rel_std_map=float(np.std(w) / abs(np.mean(w))) if np.mean(w) else None)
    elif method == "madnis":
        from flowctl.integration.madnis import run_madnis

        m = run_madnis(ig, dim, calls - job["est_calls"], job["est_calls"], seed)
        w, x = m["weights"], m["points"]
        e = estimate(w)
        row.update(integral=e.integral, error=e.error, rel_std=e.rel_std, calls=m["calls"],
                   steps=m["steps"], train_s=round(m["train_s"], 1),
                   settings={"madnis": "1.0.0 defaults (KL loss, batch 1024, lr 1e-3)"})
    else:
        torch.manual_seed(seed)
        shipped = shipped_settings(name)
        fl = {**shipped["flow"], **(job.get("flow") or {})}
        spec = flow_spec({"flow": fl}, dim)
        tr = {**DEFAULTS["trainer"], **shipped["trainer"], **VARIANTS[method],
              **(job.get("trainer") or {}), "calls": calls - job["est_calls"],
              "log_every": job.get("progress") or 10**9, "device": "cpu"}
        res = train_nis(lambda: build_flow(spec), ig, dim, tr, integrand=ig, seed=seed,
                        verbose=bool(job.get("progress")))
        strat = bool(job.get("stratify", shipped["estimate"].get("stratify", True)))
        est, w, x = fresh_estimate(res.sampler, ig, job["est_calls"], stratify=strat,
                                   seed=seed)
        row.update(integral=est["integral"], error=est["error"], rel_std=est["rel_std"],
                   rel_std_iid=est["rel_std_iid"], stratified=est["stratified"],
                   fresh_integral=est["integral"], fresh_error=est["error"],
                   calls=res.calls + job["est_calls"], steps=res.steps,
                   grid_calls=res.grid_calls, channels=res.channels,
                   train_s=round(res.wall_s, 1),
                   settings={"trainer": {k: v for k, v in tr.items() if k in (
                       "loss", "calls", "batch", "buffer", "buffered_steps", "buffer_batch",
                       "lr", "min_lr", "schedule", "grad_clip", "grid", "grid_calls",
                       "grid_bins", "grid_alpha", "channels", "anneal")},
                       "flow": {k: spec[k] for k in ("transforms", "hidden", "bins")}})
        comb = job.get("combine", shipped["estimate"].get("combine_training", False))
        if comb and res.channels == 1:
            from flowctl.integration.combine import combine

            start = job.get("combine_from", shipped["estimate"].get("combine_from", 0.25))
            c = combine(est["integral"], est["error"], res.history, start=float(start))
            row.update(integral=c.integral, error=c.error, combined=c.as_dict())
    row["pull"] = pull(row["integral"], row["error"], ig.exact, ig.exact_error)
    row["unweighting"] = unweighting_efficiency(w, 1000, seed=seed).efficiency
    if ig.modes and x is not None:
        # flowctl/MadNIS: their fresh estimate points; VEGAS: extra points of its final map
        row["modes"] = census(ig, x, w)
    if method not in ("vegas",):
        d = diagnose(w, extra=[] if not row.get("modes") or row["modes"]["all_found"]
                     else ["missed peak"])
        row.update(reliable=d.reliable, reason="; ".join(d.reasons) or None,
                   pareto_k=d.pareto_k, tail_variance_share=d.tail_variance_share,
                   ess_fraction=d.ess_fraction,
                   max_weight_share=d.max_weight_share, error_of_error=d.error_of_error)
    else:
        row["reliable"] = row["Q"] >= 0.05 and (not row.get("modes")
                                                or row["modes"]["all_found"])
    row["wall_s"] = round(time.perf_counter() - t0, 1)
    print(f"done {row['workload']:<8} {method:<13} seed {seed}: rel.std/pt "
          f"{row['rel_std']:.4g}, pull {row['pull']:+.2f}, {row['wall_s']} s", flush=True)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    """Side-by-side table, one line per (workload, method, seed), ratio to VEGAS."""
    vegas = {(r["workload"], r["seed"]): r["rel_std"] for r in rows if r["method"] == "vegas"}
    head = (f"{'workload':<8} {'method':<13} {'seed':>4} {'integral ± error':>26} "
            f"{'pull':>8} {'rel.std/pt':>10} {'VEGAS/this':>10} {'unw.eff':>8} "
            f"{'modes in core':>14} {'calls':>7} {'wall s':>7} {'reliable':>8}")
    out = [head, "-" * len(head)]
    order = {"flowctl": 0, "madnis": 2, "vegas": 3, "plain": 4}
    for r in sorted(rows, key=lambda r: (list(WORKLOADS).index(r["workload"]),
                                         order.get(r["method"], 1), r["method"], r["seed"])):
        ratio = vegas.get((r["workload"], r["seed"]))
        ratio_s = f"{ratio / r['rel_std']:.2f}x" if ratio and r["rel_std"] else "-"
        m = r.get("modes")
        modes = (f"{sum(m['found'])}/{len(m['found'])} "
                 + "/".join(f"{c:.2f}" for c in m["core_share"])) if m else "-"
        out.append(
            f"{r['workload']:<8} {r['method']:<13} {r['seed']:>4} "
            f"{r['integral']:>13.7g} ± {r['error']:<10.3g} {r['pull']:>+8.2f} "
            f"{r['rel_std']:>10.4g} {ratio_s:>10} {100 * r['unweighting']:>7.2f}% "
            f"{modes:>14} {r['calls']:>7} "
            f"{r['wall_s']:>7} {('-' if r.get('reliable') is None else ('yes' if r['reliable'] else 'NO')):>8}")
    return "\n".join(out)


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (workload, method) over seeds: mean and min/max of rel. std per point, mean |pull|,
    the ratio mean(VEGAS rel. std) / mean(this), and for camel how many seeds found all
    modes."""
    out = []
    keys = sorted({(r["workload"], r["method"]) for r in rows},
                  key=lambda k: (list(WORKLOADS).index(k[0]), k[1] in ("madnis", "vegas", "plain"), k[1]))
    for wl, method in keys:
        rs = [r for r in rows if r["workload"] == wl and r["method"] == method]
        vs = [r["rel_std"] for r in rows if r["workload"] == wl and r["method"] == "vegas"]
        rel = [r["rel_std"] for r in rs]
        item: dict[str, Any] = {
            "workload": wl, "method": method, "seeds": sorted(r["seed"] for r in rs),
            "rel_std_mean": float(np.mean(rel)), "rel_std_min": float(np.min(rel)),
            "rel_std_max": float(np.max(rel)),
            "abs_pull_mean": float(np.mean([abs(r["pull"]) for r in rs])),
            "abs_pull_max": float(np.max([abs(r["pull"]) for r in rs])),
            "vegas_over_this": float(np.mean(vs) / np.mean(rel)) if vs else None,
            "wall_s_mean": float(np.mean([r["wall_s"] for r in rs])),
            "seeds_within_3sigma": sum(abs(r["pull"]) <= 3 for r in rs),
            "seeds_flagged_unreliable": sum(r.get("reliable") is False for r in rs),
            "calls": rs[0]["calls"]}
        # the end-to-end figure: final error times sqrt(all calls, training included) / |I|
        tot = [r["error"] * math.sqrt(r["calls"]) / abs(r["integral"]) for r in rs
               if r["integral"]]
        if tot:
            item["rel_err_total_mean"] = float(np.mean(tot))
        fresh = [r["fresh_error"] * math.sqrt(r["calls"]) / abs(r["fresh_integral"])
                 for r in rs if r.get("fresh_error") is not None and r.get("fresh_integral")]
        if fresh and len(fresh) == len(rs):  # flowctl: the fresh points alone
            item["rel_err_total_fresh_mean"] = float(np.mean(fresh))
            item["seeds_combined"] = sum(bool((r.get("combined") or {}).get("used"))
                                         for r in rs)
        for key in ("rel_std_iid", "rel_std_map"):  # flowctl i.i.d. / VEGAS map only
            vals = [r[key] for r in rs if r.get(key) is not None]
            if vals:
                item[f"{key}_mean"] = float(np.mean(vals))
        if all("modes" in r for r in rs):
            item["seeds_all_modes_found"] = sum(r["modes"]["all_found"] for r in rs)
            item["modes_found_per_seed"] = [sum(r["modes"]["found"]) for r in rs]
        out.append(item)
    return out


def summary_table(items: list[dict[str, Any]]) -> str:
    head = (f"{'workload':<8} {'method':<13} {'seeds':>5} {'rel.std/pt mean [min, max]':>28} "
            f"{'VEGAS/this':>10} {'|pull| mean/max':>16} {'<=3sig':>6} {'all modes':>9} "
            f"{'flagged':>7} {'wall s':>7}")
    out = [head, "-" * len(head)]
    for it in items:
        ratio = it["vegas_over_this"]
        modes = (f"{it['seeds_all_modes_found']}/{len(it['seeds'])}"
                 if "seeds_all_modes_found" in it else "-")
        out.append(
            f"{it['workload']:<8} {it['method']:<13} {len(it['seeds']):>5} "
            f"{it['rel_std_mean']:>10.4g} [{it['rel_std_min']:.4g}, {it['rel_std_max']:.4g}]"
            f"{'':>2} {(f'{ratio:.2f}x' if ratio else '-'):>10} "
            f"{it['abs_pull_mean']:>7.2f}/{it['abs_pull_max']:<8.2f} "
            f"{it['seeds_within_3sigma']:>6} {modes:>9} {it['seeds_flagged_unreliable']:>7} "
            f"{it['wall_s_mean']:>7.1f}")
    return "\n".join(out)


def markdown_table(items: list[dict[str, Any]]) -> str:
    """The summary as the markdown table of docs/integration.md."""
    def g(v: float) -> str:
        return f"{v:.4g}"

    out = [("| workload | calls | method | seeds | rel.std/pt mean [min, max] | "
           "err·√calls/\\|I\\| (fresh alone) | i.i.d. / VEGAS map | VEGAS/this | "
           "\\|pull\\| mean / max | within 3σ | peaks found | flagged | wall s |"),
           "|" + "---|" * 13]
    for it in items:
        n = len(it["seeds"])
        e2e = it.get("rel_err_total_mean")
        e2e_s = "-" if e2e is None else f"{e2e:.3g}"
        if it.get("rel_err_total_fresh_mean") is not None and it.get("seeds_combined"):
            e2e_s += f" ({it['rel_err_total_fresh_mean']:.3g})"
        iid = it.get("rel_std_iid_mean", it.get("rel_std_map_mean"))
        ratio = it.get("vegas_over_this")
        modes = (f"{it['seeds_all_modes_found']}/{n}" if "seeds_all_modes_found" in it
                 else "-")
        method = "**flowctl**" if it["method"] in ("flowctl", "shipped") else it["method"]
        out.append(
            f"| {it['workload']} | {round(it['calls'] / 1000)}k | {method} | {n} | "
            f"{g(it['rel_std_mean'])} [{it['rel_std_min']:.3g}, {it['rel_std_max']:.3g}] | "
            f"{e2e_s} | {'-' if iid is None else f'{iid:.3g}'} | "
            f"{'-' if not ratio else f'{ratio:.2f}x'} | "
            f"{it['abs_pull_mean']:.3g} / {it['abs_pull_max']:.3g} | "
            f"{it['seeds_within_3sigma']}/{n} | {modes} | "
            f"{it['seeds_flagged_unreliable']}/{n} | {it['wall_s_mean']:.0f} |")
    return "\n".join(out)


def merge(files: list[str], rename: dict[str, str], out: str | None,
          drop: list[str] | None = None) -> int:
    """Rows of several results files as one table and summary (written to ``out``);
    ``drop``: "FILE:WORKLOAD", "FILE:WORKLOAD:METHOD" or "FILE:WORKLOAD:METHOD:SEED" whose
    rows are left out (superseded by a later file)."""
    rows: list[dict[str, Any]] = []
    dropped = set(drop or [])
    for f in files:
        name = Path(f).name
        for r in json.loads(Path(f).read_text())["rows"]:
            if {f"{name}:{r['workload']}", f"{name}:{r['workload']}:{r['method']}",
                    f"{name}:{r['workload']}:{r['method']}:{r['seed']}"} & dropped:
                continue
            # "FILE:OLD" (this file only) before "OLD"; an empty new name drops the rows
            m = rename.get(f"{name}:{r['method']}", rename.get(r["method"], r["method"]))
            if m:
                rows.append({**r, "method": m, "file": name})
    print(table(rows))
    print()
    print(summary_table(summary(rows)))
    print()
    print(markdown_table(summary(rows)))
    if out:
        from benchmarks.common import save_results

        save_results(Path(out), json.loads(json.dumps(
            {"benchmark": "integration", "merged_from": [Path(f).name for f in files],
             "rename": rename, "drop": sorted(dropped), "rows": rows,
             "summary": summary(rows)}, default=float)))
        print(f"results: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=150000, help="integrand calls per method")
    ap.add_argument("--est-calls", type=int, default=50000,
                    help="flowctl: calls for the fresh estimate (the rest trains)")
    ap.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads")
    ap.add_argument("--variants", default="shipped",
                    help=f"flowctl variants, comma-separated: {', '.join(VARIANTS)}")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    ap.add_argument("--threads", type=int, default=1, help="torch threads per job")
    ap.add_argument("--trainer", type=json.loads, default=None,
                    help='flowctl trainer overrides as JSON, e.g. \'{"buffered_steps": 30}\'')
    ap.add_argument("--flow", type=json.loads, default=None,
                    help='flowctl flow overrides as JSON, e.g. \'{"hidden": [128, 128]}\'')
    ap.add_argument("--seed0", type=int, default=0, help="first seed")
    ap.add_argument("--combine", type=int, choices=(0, 1), default=None,
                    help="flowctl: 1 = join the late training batches with the fresh "
                         "estimate (flowctl.integration.combine), 0 = fresh estimate alone "
                         "(default: the shipped estimate.combine_training)")
    ap.add_argument("--combine-from", type=float, default=None,
                    help="flowctl: share of the online steps before the joined batches "
                         "(default: the shipped estimate.combine_from)")
    ap.add_argument("--iid", action="store_true",
                    help="flowctl: i.i.d. estimate points instead of the shipped stratified ones")
    ap.add_argument("--peers", default="madnis,vegas,plain",
                    help="peers to run (those installed): madnis, vegas, plain")
    ap.add_argument("--no-peers", action="store_true", help="flowctl only")
    ap.add_argument("--progress", type=int, default=0, metavar="N",
                    help="flowctl: print a training line (calls, loss, batch estimate) to "
                         "stderr every N online steps (0: quiet)")
    ap.add_argument("--out", default=None,
                    help="JSON file for the results (default results/integration-<time>.json)")
    ap.add_argument("--no-save", action="store_true", help="do not write a JSON file")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="run nothing: merge the rows of these results files, print the "
                         "tables and write the merged summary (--out)")
    ap.add_argument("--rename", action="append", default=[], metavar="OLD=NEW",
                    help="with --merge: rename a method (e.g. a variant that equals shipped); "
                         "FILE:OLD=NEW in that file only; OLD= drops its rows")
    ap.add_argument("--drop", action="append", default=[],
                    metavar="FILE:WORKLOAD[:METHOD[:SEED]]",
                    help="with --merge: leave out that file's rows of that workload (and "
                         "method, and seed)")
    args = ap.parse_args(argv)
    if args.merge:
        return merge(args.merge, dict(r.split("=", 1) for r in args.rename), args.out,
                     args.drop)
    methods = [v for v in args.variants.split(",") if v]
    for v in methods:
        if v not in VARIANTS:
            ap.error(f"unknown variant {v!r}; available: {', '.join(VARIANTS)}")
    if not args.no_peers:
        from flowctl.integration import vegas_available
        from flowctl.integration.madnis import madnis_available

        have = {"madnis": madnis_available(), "vegas": vegas_available(), "plain": True}
        for p in [p for p in args.peers.split(",") if p]:
            if p not in have:
                ap.error(f"unknown peer {p!r}; available: madnis, vegas, plain")
            if have[p]:
                methods.append(p)
            else:
                print(f"{p} not installed (pip install flowctl[peers]): its column skipped")
    jobs = [{"workload": w, "method": m, "seed": s, "calls": args.calls,
             "est_calls": args.est_calls, "threads": args.threads, "trainer": args.trainer,
             "flow": args.flow, "progress": args.progress,
             **({"stratify": False} if args.iid else {}),
             **({"combine": bool(args.combine)} if args.combine is not None else {}),
             **({"combine_from": args.combine_from} if args.combine_from is not None else {})}
            for w in args.only.split(",") for m in methods
            for s in range(args.seed0, args.seed0 + args.seeds)]
    for j in jobs:
        if j["workload"] not in WORKLOADS:
            ap.error(f"unknown workload {j['workload']!r}; available: {', '.join(WORKLOADS)}")
    # seed by seed (an interrupted run has whole seeds), slowest first so the pool stays busy
    jobs.sort(key=lambda j: (j["seed"], j["method"] in ("madnis", "vegas", "plain"),
                             -WORKLOADS[j["workload"]][1]))
    import torch

    from benchmarks.common import machine_info, results_path, save_results

    path = None if args.no_save else (Path(args.out) if args.out else
                                      results_path("integration"))
    head = (f"flowctl integrate vs VEGAS vs plain MC, {args.calls} calls each "
            f"(flowctl: {args.calls - args.est_calls} training + {args.est_calls} fresh)")
    payload: dict[str, Any] = {
        "benchmark": "integration", "title": head, "argv": sys.argv[1:] if argv is None
        else list(argv), "calls": args.calls, "est_calls": args.est_calls,
        "variants": {m: VARIANTS[m] for m in methods if m in VARIANTS},
        "shipped": {w: shipped_settings(WORKLOADS[w][0]) for w in args.only.split(",")},
        "machine": machine_info(torch.device("cpu"), {}), "rows": [], "summary": []}
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []

    def keep(row: dict[str, Any]) -> None:
        rows.append(row)
        if path is not None:  # rewritten after every job: an interrupted run keeps its rows
            payload["rows"], payload["summary"] = rows, summary(rows)
            payload["wall_s"] = round(time.perf_counter() - t0, 1)
            save_results(path, json.loads(json.dumps(payload, default=float)))

    if args.jobs > 1:
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            for row in pool.imap_unordered(run_job, jobs, chunksize=1):
                keep(row)
    else:
        for j in jobs:
            keep(run_job(j))
    print()
    print(f"{head}, {args.threads} thread(s) per job, total "
          f"{time.perf_counter() - t0:.0f} s")
    print(table(rows))
    print()
    print(summary_table(summary(rows)))
    if path is not None:
        print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
