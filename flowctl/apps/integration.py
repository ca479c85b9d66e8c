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
    plain_mc,
    train_nis,
    vegas_available,
)
from flowctl.integration.answer import finite_or_fail, flowctl_answer, iid_answer
from flowctl.integration.diagnostics import check_thresholds
from flowctl.integration.peers import plain_peer, reference_sample, vegas_peer
from flowctl.integration.persist import save_sampler
from flowctl.integration.report import (
    header_line,
    integrate_record,
    method_row,
    results_table,
    summary_lines,
    write_history,
)
from flowctl.integration.sampling import embedded, sampling_dim
from flowctl.integration.trainer import pos_int
from flowctl.integration.unweight import calibrated_unweight
from flowctl.metrics.integration import estimate

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
    try:
        return pos_int(section, key, where, minimum)
    except IntegrationError as exc:
        raise UserError(str(exc)) from None


def _reliability(cfg: dict[str, Any]) -> dict[str, Any]:
    rel = _section(cfg, "reliability")
    try:
        check_thresholds(rel)
    except IntegrationError as exc:
        raise UserError(str(exc)) from None
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
        n_par = sum(p.numel() for p in make_flow().parameters()) * n_ch
        print(header_line(ig, cfg["flow"], n_par, tr, n_ch, n_est))
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

    out = integrate_record(ig, str(tr["loss"]), res, train_nonfinite, counter.as_dict(), est,
                           rows, vegas_note)
    update_metrics_json(run_dir, {"integrate": out})
    if main:
        print(results_table(rows, ig.units))
        for line in summary_lines(rows, est, res.nonfinite_losses, vegas_note, bool(
                peers.get("vegas") and vegas_available() and peers.get("vegas_unweight_calls"))):
            print(line)
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
    from flowctl.atomic import write_h5

    n = int(cfg.get("n", 10000))
    if n <= 0:
        raise UserError(f"n must be a positive integer, got {n}")
    seed = int(cfg.get("seed", 0))
    es, uw = _section(cfg, "estimate"), _section(cfg, "unweight")
    flow, ig = load_sampler(cfg, run_dir)
    counter = NonFinite(float(_reliability(cfg)["max_nonfinite"]))
    f = Guarded(embedded(ig), counter)
    t0 = time.perf_counter()
    n_cal = int(es["calls"])
    try:
        ev, stats = calibrated_unweight(flow, f, n, n_cal, int(es["batch"]),
                                        int(uw["replicas"]), uw["replica_size"], seed)
    except IntegrationError as exc:
        raise UserError(str(exc)) from None
    w_max = stats.w_max
    x, wt, tried, efficiency = ev.x, ev.weights, ev.tried, ev.efficiency
    x_ig = x[:, : ig.dim]
    est = estimate(ev.all_weights)
    path = run_dir / "events.h5"
    mom = None
    if ig.momenta is not None:
        mom = ig.momenta(torch.from_numpy(x_ig), torch.Generator().manual_seed(seed + 4)).numpy()
    dt = time.perf_counter() - t0
    if is_main_process():
        data: dict[str, Any] = {"x": x_ig}
        if mom is not None:
            data["momenta"] = mom
        if bool(cfg.get("write_weights", True)):
            data["weights"] = wt
        write_h5(path, data, attrs={
            "n": n, "integrand": ig.name, "efficiency": efficiency, "w_max": w_max,
            "integral": est.integral, "error": est.error, "calls": n_cal + tried,
            "seed": seed, "overweight_fraction": float(np.mean(np.abs(wt) > 1))},
            dataset_attrs={"momenta": {"particles": ",".join(ig.particles),
                                       "components": "E,px,py,pz", "units": "GeV"}})
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
    ref_name, w_ref, x_ref = reference_sample(f, sampling_dim(ig), n, peers, seed)
    w_plain = plain_mc(f, sampling_dim(ig), n, seed + 1)
    # the re-estimate from i.i.d. fresh points; its reliability line also counts the
    # non-finite values of the reference runs above (as before)
    out_est, w, x = iid_answer(flow, f, ig, n, rel, uw, seed=seed,
                               extra=[r for r in [counter.reason()] if r])
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
    out = {"command": "evaluate", "n": n,
           **{k: v for k, v in out_est.items() if k != "summary"},
           "reference": ref_name, "plots": plots}
    update_metrics_json(run_dir, {"evaluate": out})
    if main:
        p = out["pull"]
        print(f"evaluate: {ig.name}: {out['integral']:.8g} ± {out['error']:.3g} from {n} "
              f"fresh points" + (f", pull {p:+.2f}" if p is not None else "")
              + f"; rel. std/pt {out['rel_std']:.4g}, ESS/N {out['ess_fraction']:.3f}, "
              f"unweighting efficiency {100 * out['unweighting']['efficiency']:.2f}%")
        print(out_est["summary"])
        if plots:
            print(f"plots: {run_dir / 'plots'}")
    return out


COMMANDS = {"integrate": integrate, "sample": sample, "evaluate": evaluate}
