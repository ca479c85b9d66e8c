"""Integration: neural importance sampling (i-flow, arXiv:2001.05486) with honest errors.

This module only wires a config to the machinery of :mod:`flowctl.integration` (losses,
buffer, trainer, VEGAS grid, channels, diagnostics, VEGAS peer) and writes the run directory.
``flowctl integrate`` trains the sampler on |f| with no samples of f, then takes the answer
from *fresh* points, independent of training (integral, standard error, relative std per
point, ESS, unweighting efficiency, and the reliability checks of
:mod:`flowctl.integration.diagnostics`). Plain Monte Carlo and VEGAS get the same total number
of integrand calls in the same run. ``sample`` writes unweighted events, ``evaluate`` draws
plots.

Config sections: ``integrand`` (see :func:`flowctl.integrands.resolve`), ``flow`` (a
:func:`flowctl.flows.build` spec; ``transforms: null`` = 2 ceil(log2 D)), ``trainer``,
``estimate``, ``peers``, ``unweight``, ``reliability``, ``eval``, ``n`` and ``seed``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowctl.apps.common import (
    UserError,
    build_flow,
    is_main_process,
    load_weights,
    update_metrics_json,
    write_config,
)
from flowctl.integrands import Integrand, IntegrandError, resolve
from flowctl.integration import (
    THRESHOLDS,
    TRAINER_DEFAULTS,
    Guarded,
    IntegrationError,
    NonFinite,
    build_sampler,
    channel_centres,
    check_trainer,
    flow_weights,
    plain_mc,
    run_vegas,
    train_nis,
    vegas_available,
)
from flowctl.integration.answer import finite_or_fail, flowctl_answer
from flowctl.integration.peers import diagnosis, plain_peer, vegas_peer
from flowctl.integration.persist import save_sampler
from flowctl.integration.report import method_row, results_table, write_history
from flowctl.integration.sampling import embedded, sampling_dim
from flowctl.integration.unweight import unweight
from flowctl.metrics.integration import estimate, pull, unweighting_efficiency

__all__ = ["COMMANDS", "DEFAULTS", "evaluate", "flow_spec", "integrate", "load_integrand",
           "load_sampler", "sample", "sampling_dim"]

DEFAULTS: dict[str, dict[str, Any]] = {
    "flow": {"kind": "coupling", "domain": "unit", "mask": "binary", "transforms": None,
             "hidden": [64, 64], "transform": "rqs", "bins": 16},
    "trainer": dict(TRAINER_DEFAULTS),
    "estimate": {"calls": 50000, "batch": 50000, "stratify": True, "combine_training": True,
                 "combine_from": 0.25},
    "peers": {"plain": True, "vegas": True, "vegas_iterations": 30, "vegas_adapt": 10,
              "vegas_unweight_calls": 20000},
    "unweight": {"replicas": 1000, "replica_size": None},
    "reliability": {**THRESHOLDS, "max_nonfinite": 1.0e-4},
    "eval": {"n": 100000, "bins": 50, "plots": True},
}


# ----------------------------------------------------------------------------- settings


def _section(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    got = dict(cfg.get(name) or {})
    unknown = sorted(set(got) - set(DEFAULTS[name]))
    if unknown and name != "flow":
        raise UserError(f"unknown key {name}.{unknown[0]}; valid: "
                        f"{', '.join(DEFAULTS[name])}")
    return {**DEFAULTS[name], **got}


def _pos_int(section: dict[str, Any], key: str, where: str, minimum: int = 1) -> int:
    v = section.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or v < minimum:
        raise UserError(f"{where}.{key} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _reliability(cfg: dict[str, Any]) -> dict[str, Any]:
    rel = _section(cfg, "reliability")
    for key in ("k_max", "min_tail_share", "min_ess", "max_share", "max_error_of_error",
                "max_nonfinite"):
        v = rel[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise UserError(f"reliability.{key} must be a number >= 0, got {v!r}")
    for key in ("max_nonfinite", "min_tail_share"):
        if rel[key] > 1:
            raise UserError(f"reliability.{key} must be a fraction in [0, 1], got "
                            f"{rel[key]!r}")
    _pos_int(rel, "subbatches", "reliability", 2)
    return rel


def load_integrand(cfg: dict[str, Any]) -> Integrand:
    """The config's integrand (one-line :class:`UserError` for bad targets/settings)."""
    try:
        return resolve(cfg.get("integrand") or {})
    except IntegrandError as exc:
        raise UserError(str(exc)) from None


def flow_spec(cfg: dict[str, Any], dim: int) -> dict[str, Any]:
    """The flow spec with features = D and transforms defaulting to 2 ceil(log2 D)."""
    spec = _section(cfg, "flow")
    spec["features"] = dim
    if spec.get("transforms") is None:
        spec["transforms"] = 2 * math.ceil(math.log2(dim))
    return spec


def _device(name: str) -> torch.device:
    from flowctl.training import TrainingError, resolve_device

    try:
        return resolve_device(str(name))
    except TrainingError as exc:
        raise UserError(str(exc)) from None


def _n_channels(ig: Integrand, tr: dict[str, Any], dim: int) -> int:
    try:
        c = channel_centres(ig, tr, dim)
    except IntegrationError as exc:
        raise UserError(str(exc)) from None
    return 1 if c is None else len(c[0])


# ----------------------------------------------------------------------------- commands


def integrate(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Train the sampler, estimate from fresh points, check the estimate's reliability, run
    plain MC and VEGAS; print a table and one reliability line."""
    from flowctl.training import seed_everything

    run_dir = Path(run_dir)
    ig = load_integrand(cfg)
    tr = _section(cfg, "trainer")
    es = _section(cfg, "estimate")
    peers = _section(cfg, "peers")
    uw = _section(cfg, "unweight")
    rel = _reliability(cfg)
    try:
        check_trainer(tr)
    except IntegrationError as exc:
        raise UserError(str(exc)) from None
    seed = int(cfg.get("seed", 0))
    dim = sampling_dim(ig)
    n_ch = _n_channels(ig, tr, dim)
    cfg = dict(cfg)
    cfg["flow"] = flow_spec(cfg, dim)
    n_est = _pos_int(es, "calls", "estimate", 2)
    _pos_int(es, "batch", "estimate", 1)
    start = es["combine_from"]
    if isinstance(start, bool) or not isinstance(start, (int, float)) or not 0 <= start < 1:
        raise UserError(f"estimate.combine_from must be a fraction in [0, 1), got {start!r}")
    write_config(run_dir, cfg)
    seed_everything(seed)
    device = _device(tr["device"])
    counter = NonFinite(float(rel["max_nonfinite"]))
    f = Guarded(embedded(ig), counter)
    main = is_main_process()

    def make_flow() -> torch.nn.Module:
        return build_flow(cfg["flow"]).to(device)

    if main:
        ex = f" (exact {ig.exact:.10g})" if ig.exact is not None else ""
        n_par = sum(p.numel() for p in make_flow().parameters()) * n_ch
        extras = []
        if tr.get("grid"):
            extras.append(f"VEGAS grid ({tr['grid_bins']} bins) under the flow")
        if n_ch > 1:
            extras.append(f"{n_ch} channels (one per peak)")
        print(f"integrate: {ig.name} in D={ig.dim}{ex}; flow {cfg['flow']['transforms']} "
              f"coupling RQS layers, {n_par} parameters"
              + (f", {', '.join(extras)}" if extras else "")
              + f"; loss {tr['loss']}, {tr['calls']} training + {n_est} estimate calls"
              + (" (1-D: embedded in 2-D with a flat dummy axis)" if ig.dim == 1 else ""))
    torch.manual_seed(seed)
    ckdir = run_dir / "checkpoints"
    try:
        res = train_nis(make_flow, f, dim, tr, integrand=ig, seed=seed,
                        checkpoint=ckdir / "last.pt", run_config=cfg, verbose=main)
    except IntegrationError as exc:
        raise UserError(str(exc)) from None
    from flowctl.training.checkpoint import copy_atomic

    if res.channels > 1 or tr.get("grid"):
        save_sampler(res.sampler, ckdir / "last.pt", cfg, res)
    copy_atomic(ckdir / "last.pt", ckdir / "best.pt")
    if main:
        write_history(run_dir / "metrics.jsonl", res.history)
    train_nonfinite = counter.count

    t0 = time.perf_counter()
    # the estimate's points: independent of training; stratified in the latent space
    est, _, _ = flowctl_answer(res, f, ig, n_est, es, rel, uw, seed=seed,
                               extra=[r for r in [counter.reason()] if r])
    est["wall_s"] = res.wall_s + time.perf_counter() - t0
    total = est["calls"]
    rows = [method_row("flowctl", est, ig.exact, ig.exact_error)]

    if peers.get("plain"):
        rows.append(method_row("plain MC", plain_peer(f, dim, total, seed, rel, uw),
                                ig.exact, ig.exact_error))
        finite_or_fail("plain MC", rows[-1])
    vegas_note = None
    if peers.get("vegas"):
        if vegas_available():
            v = vegas_peer(f, dim, total, seed, peers, uw, ig)
            finite_or_fail("VEGAS", v)
            rows.append(method_row("VEGAS", v, ig.exact, ig.exact_error))
        else:
            vegas_note = "VEGAS skipped: install the optional extra `pip install flowctl[peers]`"

    out = {
        "command": "integrate", "integrand": ig.name, "dim": ig.dim, "exact": ig.exact,
        "exact_error": ig.exact_error, "units": ig.units, "loss": tr["loss"],
        "calls_total": total, "train": {"calls": res.calls, "grid_calls": res.grid_calls,
                                        "steps": res.steps,
                                        "online_steps": res.online_steps,
                                        "channels": res.channels,
                                        "nonfinite_losses": res.nonfinite_losses,
                                        "nonfinite_values": train_nonfinite,
                                        "wall_s": round(res.wall_s, 3),
                                        "resumed": res.resumed},
        "nonfinite": counter.as_dict(),
        "methods": {r["method"]: r for r in rows},
    }
    out.update({k: est[k] for k in ("integral", "error", "rel_std", "rel_std_iid",
                                    "stratified", "ess", "ess_fraction",
                                    "reliable", "reason", "pareto_k", "tail_variance_share",
                                    "max_weight_share", "error_of_error",
                                    "fresh_integral", "fresh_error")})
    if "combined" in est:
        out["combined"] = est["combined"]
    out["pull"] = rows[0]["pull"]
    out["unweighting_efficiency"] = est["unweighting"]["efficiency"]
    if vegas_note:
        out["vegas_note"] = vegas_note
    update_metrics_json(run_dir, {"integrate": out})
    if main:
        print(results_table(rows, ig.units))
        for r in rows:
            if r.get("modes"):
                print(f"{r['method']}: {r['modes']['summary']}")
        print(est["summary"])
        comb = est.get("combined")
        if comb and comb.get("used"):
            t = comb["training"]
            print(f"flowctl: {t['batches']} late training batches ({t['calls']} calls) joined "
                  f"to the fresh estimate: error {est['fresh_error']:.3g} -> {est['error']:.3g}")
        elif comb:
            print(f"flowctl: fresh estimate alone ({comb['reason']})")
        if res.nonfinite_losses:
            print(f"flowctl: {res.nonfinite_losses} training steps had a non-finite loss "
                  "(skipped)")
        if vegas_note:
            print(vegas_note)
        if peers.get("vegas") and vegas_available() and peers.get("vegas_unweight_calls"):
            print("flowctl: fresh-sample estimate from points independent of training; "
                  "VEGAS unweighting from extra points of its final map")
        print(f"run directory: {run_dir}")
    return out


def load_sampler(cfg: dict[str, Any], run_dir: Path) -> tuple[torch.nn.Module, Integrand]:
    """Rebuild the run's integrand and trained sampler (a flow, or a flow on a VEGAS grid,
    or a mixture of channels, as its ``trainer`` section says)."""
    ig = load_integrand(cfg)
    spec = dict(cfg.get("flow") or {})
    if spec.get("features") is None:
        raise UserError(f"run directory {run_dir}: config.yaml has no flow.features; was it "
                        "written by `flowctl integrate`?")
    tr = _section(cfg, "trainer")
    dim = int(spec["features"])
    sampler = build_sampler(lambda: build_flow(spec), dim, tr, _n_channels(ig, tr, dim))
    return load_weights(sampler, run_dir), ig


def sample(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Unweighted events by accept/reject on the trained flow -> ``run_dir/events.h5``.

    w_max is the bootstrap median maximum of ``unweight.replicas`` replicas of a calibration
    sample (``estimate.calls`` fresh points, counted in the calls). An event at x is kept with
    probability min(|w|/w_max, 1); over-weights keep weight |w|/w_max. Datasets: ``x`` [n, D]
    (unit-cube point), ``momenta`` [n, P, 4] (E, px, py, pz in GeV; integrands that define them),
    ``weights`` [n] (sign times max(1, |w|/w_max); unit for most events) and attributes with
    the efficiency and the integral.
    """
    import h5py

    n = int(cfg.get("n", 10000))
    if n <= 0:
        raise UserError(f"n must be a positive integer, got {n}")
    seed = int(cfg.get("seed", 0))
    es, uw = _section(cfg, "estimate"), _section(cfg, "unweight")
    flow, ig = load_sampler(cfg, run_dir)
    counter = NonFinite(float(_reliability(cfg)["max_nonfinite"]))
    f = Guarded(embedded(ig), counter)
    t0 = time.perf_counter()
    torch.manual_seed(seed + 2)
    n_cal = int(es["calls"])
    w_cal, _ = flow_weights(flow, f, n_cal, batch=int(es["batch"]))
    stats = unweighting_efficiency(w_cal, int(uw["replicas"]), uw["replica_size"], seed=seed)
    w_max = stats.w_max
    try:
        ev = unweight(flow, f, n, w_max, w_cal, stats.efficiency, int(es["batch"]), seed)
    except IntegrationError as exc:
        raise UserError(str(exc)) from None
    x, wt, tried, efficiency = ev.x, ev.weights, ev.tried, ev.efficiency
    x_ig = x[:, : ig.dim]
    est = estimate(ev.all_weights)
    path = run_dir / "events.h5"
    mom = None
    if ig.momenta is not None:
        mom = ig.momenta(torch.from_numpy(x_ig), torch.Generator().manual_seed(seed + 4)).numpy()
    dt = time.perf_counter() - t0
    if is_main_process():
        tmp = path.with_suffix(".h5.tmp")
        with h5py.File(tmp, "w") as h:
            h.create_dataset("x", data=x_ig, compression="gzip", compression_opts=1)
            if mom is not None:
                d = h.create_dataset("momenta", data=mom, compression="gzip", compression_opts=1)
                d.attrs["particles"] = ",".join(ig.particles)
                d.attrs["components"] = "E,px,py,pz"
                d.attrs["units"] = "GeV"
            if bool(cfg.get("write_weights", True)):
                h.create_dataset("weights", data=wt)
            h.attrs.update({"n": n, "integrand": ig.name, "efficiency": efficiency,
                            "w_max": w_max, "integral": est.integral, "error": est.error,
                            "calls": n_cal + tried, "seed": seed,
                            "overweight_fraction": float(np.mean(np.abs(wt) > 1))})
        tmp.replace(path)
    out = {"command": "sample", "n": n, "file": str(path), "efficiency": efficiency,
           "efficiency_predicted": stats.efficiency, "w_max": w_max,
           "overweight_events": int(np.sum(np.abs(wt) > 1)), "calls": n_cal + tried,
           "integral": est.integral, "error": est.error, "seconds": round(dt, 3)}
    update_metrics_json(run_dir, {"sample": out})
    if is_main_process():
        what = "four-momenta + x" if mom is not None else "x"
        print(f"sample: {n} unweighted events ({what}) -> {path}; unweighting efficiency "
              f"{100 * efficiency:.2f}% (bootstrap prediction {100 * stats.efficiency:.2f}%), "
              f"{out['overweight_events']} over-weight events, {n_cal + tried} calls, "
              f"{dt:.1f} s")
    return out


def evaluate(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Plots: weight distributions, marginals against a VEGAS-weighted reference (plain MC
    when vegas is absent), the 2-D plane (the (x1, x2) Dalitz plane for events with momenta),
    and the training curve. Also re-estimates the integral from ``eval.n`` fresh points."""
    from flowctl.apps.common import read_metrics_jsonl
    from flowctl.plots import integration as P

    ev, uw, peers = _section(cfg, "eval"), _section(cfg, "unweight"), _section(cfg, "peers")
    seed = int(cfg.get("seed", 0))
    flow, ig = load_sampler(cfg, run_dir)
    rel = _reliability(cfg)
    counter = NonFinite(float(rel["max_nonfinite"]))
    f = Guarded(embedded(ig), counter)
    n = _pos_int(ev, "n", "eval", 2)
    torch.manual_seed(seed + 5)
    w, x = flow_weights(flow, f, n, keep_x=True)
    assert x is not None
    est = estimate(w)
    stats = unweighting_efficiency(w, int(uw["replicas"]), uw["replica_size"], seed=seed)
    p = pull(est.integral, est.error, ig.exact, ig.exact_error)
    ref_name = "plain MC"
    if peers.get("vegas") and vegas_available():
        v = run_vegas(f, sampling_dim(ig), n, int(peers["vegas_iterations"]),
                      int(peers["vegas_adapt"]), seed, unweight_calls=n)
        w_ref, x_ref = v["weights"], v["points"]
        ref_name = "VEGAS"
    else:
        w_ref = plain_mc(f, sampling_dim(ig), n, seed)
        x_ref = torch.rand(n, sampling_dim(ig), dtype=torch.float64,
                           generator=torch.Generator().manual_seed(seed + 777)).numpy()
    w_plain = plain_mc(f, sampling_dim(ig), n, seed + 1)
    d = ig.dim
    x, x_ref = x[:, :d], x_ref[:, :d]
    plots: list[str] = []
    main = is_main_process()
    if main and ev.get("plots", True):
        pdir = run_dir / "plots"
        bins = int(ev["bins"])
        plots.append(str(P.save(P.weight_distribution(
            {"flowctl": w, ref_name: w_ref, "plain MC": w_plain}, bins=bins),
            pdir / "weights.png")))
        plots.append(str(P.save(P.marginals(x, w, x_ref, w_ref, ig.coordinate_labels(),
                                            ref_name=ref_name, bins=bins),
                                pdir / "marginals.png")))
        if ig.momenta is not None:
            g = torch.Generator().manual_seed(seed)
            e = ig.momenta(torch.from_numpy(x), g)[..., 0].numpy()
            er = ig.momenta(torch.from_numpy(x_ref), g)[..., 0].numpy()
            xe = 2 * e[:, :2] / e.sum(1, keepdims=True)
            xr = 2 * er[:, :2] / er.sum(1, keepdims=True)
            plots.append(str(P.save(P.plane(xe, w, xr, w_ref, ("x1", "x2"), ref_name=ref_name,
                                            bins=bins, title="Dalitz plane"),
                                    pdir / "dalitz.png")))
        elif d >= 2:
            lab = ig.coordinate_labels()
            plots.append(str(P.save(P.plane(x[:, :2], w, x_ref[:, :2], w_ref,
                                            (lab[0], lab[1]), ref_name=ref_name, bins=bins),
                                    pdir / "plane.png")))
        hist = read_metrics_jsonl(run_dir)
        if hist:
            plots.append(str(P.save(P.training_curve(hist, ig.exact), pdir / "training.png")))
    diag = diagnosis(w, rel, [r for r in [counter.reason()] if r])
    out = {"command": "evaluate", "n": n, **est.as_dict(), "pull": p,
           "unweighting": stats.as_dict(), "reference": ref_name, "plots": plots,
           **{k: v for k, v in diag.items() if k != "summary"}}
    update_metrics_json(run_dir, {"evaluate": out})
    if main:
        print(f"evaluate: {ig.name}: {est.integral:.8g} ± {est.error:.3g} from {n} fresh "
              f"points" + (f", pull {p:+.2f}" if p is not None else "")
              + f"; rel. std/pt {est.rel_std:.4g}, ESS/N {est.ess_fraction:.3f}, unweighting "
              f"efficiency {100 * stats.efficiency:.2f}%")
        print(diag["summary"])
        if plots:
            print(f"plots: {run_dir / 'plots'}")
    return out


COMMANDS = {"integrate": integrate, "sample": sample, "evaluate": evaluate}
