"""Posterior estimation with conditional flows: learn p(θ | x) from simulated pairs (θ, x).

Neural posterior estimation (BayesFlow / cINN, arXiv:2003.06281): a flow over the parameters
θ ``[N, P]`` conditioned on the data x ``[N, X]`` is fitted by maximising log q(θ | x) on
pairs from the simulator's joint; it then samples the posterior of any observation.

Config keys: ``flow`` (a :func:`flowctl.flows.build` spec; ``features``/``context`` null or 0
take P and X from the simulator), ``simulator`` (``kind`` or ``target``, ``params``), ``sims``
(``n_train``, ``n_val``, ``n_test``, ``seed``), ``trainer``, ``n`` (posterior samples per
observation for ``sample``), ``observed``/``observed_key`` (a table of observations ``[M, X]``)
and ``eval`` (``n_sbc`` test pairs, ``n_post`` samples each, ``rank_bins``, ``plots``).

``evaluate`` reports simulation-based calibration (SBC, arXiv:1804.06788) rank histograms per
parameter with χ²/ndf against uniform, the expected coverage of the highest-posterior-density
regions of the flow at 50/68/95 % (and a full curve), and where the simulator knows its
posterior the KL divergence E_x KL(p(θ|x) || q(θ|x)) (nats) estimated on the joint test pairs.
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

__all__ = ["COMMANDS", "calibration", "evaluate", "load_flow", "sample", "sample_posterior",
           "simulate", "train"]

LEVELS = (0.5, 0.68, 0.95)


def _simulator(cfg: dict[str, Any]):
    from flowctl.simulators import SimulatorError, make_simulator

    try:
        return make_simulator(cfg.get("simulator") or {})
    except SimulatorError as exc:
        raise UserError(str(exc)) from None


def simulate(cfg: dict[str, Any]) -> tuple[Any, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The simulator and its train/val/test pairs ``(θ [N, P], x [N, X])`` (float32)."""
    from flowctl.simulators import SimulatorError

    sim = _simulator(cfg)
    s = dict(cfg.get("sims") or {})
    seed = int(s.get("seed", 0))
    sets = {}
    for i, key in enumerate(("train", "val", "test")):
        n = int(s.get(f"n_{key}", 0))
        if key == "train" and n < 2:
            raise UserError(f"sims.n_train must be at least 2, got {n}")
        try:
            th, x = sim.sample_joint(n, np.random.default_rng([seed, i]))
        except SimulatorError as exc:
            raise UserError(str(exc)) from None
        sets[key] = (th.astype(np.float32), x.astype(np.float32))
    return sim, sets


def _norm(cfg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    n = cfg.get("context_norm") or {}
    return np.asarray(n["mean"], np.float32), np.asarray(n["std"], np.float32)


def _ctx(cfg: dict[str, Any], x: np.ndarray) -> torch.Tensor:
    mean, std = _norm(cfg)
    return torch.as_tensor((np.asarray(x, np.float32) - mean) / std)


def _flow_spec(cfg: dict[str, Any], p: int, c: int) -> dict[str, Any]:
    spec = dict(cfg["flow"])
    for key, dim, what in (("features", p, "parameters θ"), ("context", c, "data x")):
        if not spec.get(key):
            spec[key] = dim
        elif int(spec[key]) != dim:
            raise UserError(f"flow.{key}={spec[key]} but the simulator has {dim} {what}")
    return spec


def _nll(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    theta, ctx = batch
    return -model.log_prob(theta, ctx).mean()


def train(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Fit q(θ | x) by maximum likelihood on simulated pairs; checkpoints and metrics."""
    from torch.utils.data import TensorDataset

    from flowctl.training import seed_everything
    from flowctl.training import train as fit

    t0 = time.perf_counter()
    sim, sets = simulate(cfg)
    th, x = sets["train"]
    mean, std = x.mean(0), x.std(0)
    std = np.where(std > 1e-12, std, 1.0)
    cfg["context_norm"] = {"mean": mean.tolist(), "std": std.tolist()}
    cfg["flow"] = _flow_spec(cfg, th.shape[1], x.shape[1])
    write_config(run_dir, cfg)
    seed_everything(int(cfg["trainer"].get("seed", 0)))
    flow = build_flow(cfg["flow"])
    ctx = _ctx(cfg, x)
    flow.initialize(torch.from_numpy(th), ctx)
    vt, vx = sets["val"]
    val = TensorDataset(torch.from_numpy(vt), _ctx(cfg, vx)) if len(vt) else None
    summary = fit(flow, _nll, TensorDataset(torch.from_numpy(th), ctx), val, cfg["trainer"],
                  run_dir, run_config=cfg)
    out = {"command": "train", "simulator": sim.info(), "n_train": len(th),
           "parameters": sum(p.numel() for p in flow.parameters()),
           "best_val_nll": summary.get("best_val_loss"), "best_epoch": summary.get("best_epoch"),
           "epochs": summary.get("epochs"), "steps": summary.get("steps"),
           "train_wall_s": round(time.perf_counter() - t0, 2),
           "stopped_reason": summary.get("stopped_reason")}
    update_metrics_json(run_dir, {"train": out})
    if is_main_process():
        v = out["best_val_nll"]
        vs = f"{v:.4f}" if isinstance(v, float) and math.isfinite(v) else str(v)
        print(f"train: posterior of {sim.name} (P={th.shape[1]}, X={x.shape[1]}), "
              f"{out['parameters']} parameters, best val NLL {vs} nats at epoch "
              f"{out['best_epoch']}, {out['train_wall_s']:.1f} s")
        print(f"run directory: {run_dir}")
    return out


def load_flow(cfg: dict[str, Any], run_dir: Path, which: str = "best") -> torch.nn.Module:
    """Rebuild the run's conditional flow and load its best (or last) weights."""
    if not cfg.get("context_norm") or not (cfg.get("flow") or {}).get("features"):
        raise UserError(f"run directory {run_dir}: config.yaml lacks flow.features or "
                        "context_norm; was it written by `flowctl train`?")
    return load_weights(build_flow(dict(cfg["flow"])), run_dir, which)


@torch.no_grad()
def sample_posterior(flow: torch.nn.Module, cfg: dict[str, Any], x: np.ndarray, n: int,
                     batch: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Posterior draws ``[M, n, P]`` and their log q ``[M, n]`` for observations ``x [M, X]``."""
    ctx = _ctx(cfg, x)
    m = len(ctx)
    per = max(1, batch // max(n, 1))
    samples, logq = [], []
    for i in range(0, m, per):
        c = ctx[i:i + per].repeat_interleave(n, 0)
        s, lq = flow.sample_and_log_prob(len(c), c)
        k = len(c) // n
        samples.append(s.float().reshape(k, n, -1).cpu().numpy())
        logq.append(lq.double().reshape(k, n).cpu().numpy())
    return np.concatenate(samples), np.concatenate(logq)


@torch.no_grad()
def _log_q(flow: torch.nn.Module, cfg: dict[str, Any], theta: np.ndarray, x: np.ndarray,
           batch: int = 65536) -> np.ndarray:
    ctx = _ctx(cfg, x)
    th = torch.as_tensor(np.asarray(theta, np.float32))
    return np.concatenate([flow.log_prob(th[i:i + batch], ctx[i:i + batch]).double().numpy()
                           for i in range(0, len(th), batch)])


def _observations(cfg: dict[str, Any], x_dim: int) -> tuple[np.ndarray, str, np.ndarray | None]:
    """``(x [M, X], source, θ_true [M, P] or None)`` from ``observed=FILE`` or one simulation."""
    from flowctl.data.table import DataError, load_table

    path = cfg.get("observed")
    if path:
        try:
            x = load_table(path, key=cfg.get("observed_key"), columns=cfg.get("observed_columns"))
        except DataError as exc:
            raise UserError(str(exc)) from None
        x = np.atleast_2d(np.asarray(x, np.float64))
        if x.shape[1] != x_dim:
            raise UserError(f"observed={path}: has {x.shape[1]} columns but the posterior is "
                            f"conditioned on {x_dim}; pick them with observed_columns=[...]")
        return x, str(path), None
    sim = _simulator(cfg)
    th, x = sim.sample_joint(1, np.random.default_rng([int(cfg.get("seed", 0)), 99]))
    return x, f"simulated ({sim.name}, seed {cfg.get('seed', 0)})", th


def sample(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """``n`` posterior draws per observation into ``run_dir/posterior_samples.h5``:
    ``samples [M, n, P]``, ``observed [M, X]`` (and ``theta_true`` for a simulated one)."""
    from flowctl.apps.common import check_finite
    from flowctl.atomic import write_h5

    n = int(cfg.get("n", 1000))
    if n <= 0:
        raise UserError(f"n must be a positive integer, got {n}")
    flow = load_flow(cfg, run_dir)
    x, source, th_true = _observations(cfg, int(cfg["flow"]["context"]))
    torch.manual_seed(int(cfg.get("seed", 0)))
    t0 = time.perf_counter()
    s, _ = sample_posterior(flow, cfg, x, n)
    dt = time.perf_counter() - t0
    check_finite(s, "posterior samples", run_dir)
    path = run_dir / "posterior_samples.h5"
    if is_main_process():
        sets = {"samples": s, "observed": x}
        if th_true is not None:
            sets["theta_true"] = th_true
        write_h5(path, sets, {"source": source})
    out = {"command": "sample", "observed": source, "n_observations": len(x), "n": n,
           "file": str(path), "seconds": round(dt, 3),
           "posterior_mean": s.mean(1).tolist()[:10], "posterior_std": s.std(1).tolist()[:10]}
    update_metrics_json(run_dir, {"sample": out})
    if is_main_process():
        print(f"sample: {n} posterior draws for each of {len(x)} observation(s) ({source}) in "
              f"{dt:.2f} s -> {path} (dataset 'samples' [M, n, P])")
        for i in range(min(len(x), 3)):
            mu = ", ".join(f"{v:.3f}" for v in s[i].mean(0))
            sd = ", ".join(f"{v:.3f}" for v in s[i].std(0))
            print(f"  observation {i}: posterior mean [{mu}], std [{sd}]")
    return out


def calibration(theta: np.ndarray, samples: np.ndarray, logq_true: np.ndarray,
                logq_samples: np.ndarray, bins: int = 20,
                levels: tuple[float, ...] = LEVELS) -> dict[str, Any]:
    """SBC ranks and HPD expected coverage.

    Args:
        theta: true parameters ``[M, P]``; samples: posterior draws ``[M, L, P]``;
        logq_true: log q(θ | x) ``[M]``; logq_samples: log q of the draws ``[M, L]``.

    Returns ranks ``[M, P]`` (0..L), rank histograms ``[P, bins]`` with χ²/ndf against uniform,
    coverage at ``levels`` with binomial errors and the coverage curve on 21 levels.
    """
    m, n_post = samples.shape[:2]
    ranks = (samples < theta[:, None, :]).sum(1)                       # [M, P]
    edges = np.linspace(0, n_post + 1, bins + 1)
    hist = np.stack([np.histogram(ranks[:, d], edges)[0] for d in range(theta.shape[1])])
    expect = m / bins
    chi2 = ((hist - expect) ** 2 / expect).sum(1) / (bins - 1)
    # the true θ lies in the α-HPD region iff fewer than α of the draws are more probable
    frac = (logq_samples > logq_true[:, None]).mean(1)                 # [M]
    cov = {}
    for a in levels:
        c = float((frac < a).mean())
        cov[f"{round(100 * a)}"] = {"nominal": a, "coverage": c,
                                    "error": math.sqrt(max(c * (1 - c), 1e-12) / m)}
    grid = np.linspace(0.0, 1.0, 21)
    return {"ranks": ranks, "rank_hist": hist, "rank_chi2_ndf": chi2.tolist(), "coverage": cov,
            "curve": (grid, np.array([(frac < a).mean() for a in grid]))}


def _plots(run_dir: Path, cal: dict[str, Any], n_post: int) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from flowctl.plots.density import save

    hist = cal["rank_hist"]
    p = len(hist)
    fig, axes = plt.subplots(1, p, figsize=(3.2 * p, 2.8), squeeze=False)
    m = hist.sum(1)[0]
    bins = hist.shape[1]
    for d, ax in enumerate(axes[0]):
        ax.bar(np.arange(bins), hist[d], width=1.0, color="tab:blue", alpha=0.7)
        mu, sd = m / bins, math.sqrt(m / bins * (1 - 1 / bins))
        ax.axhspan(mu - 2 * sd, mu + 2 * sd, color="grey", alpha=0.3)
        ax.set_title(f"θ{d}: χ²/ndf {cal['rank_chi2_ndf'][d]:.2f}", fontsize=9)
        ax.set_xlabel(f"rank bin (L={n_post})")
    fig.suptitle("SBC rank histograms (band: ±2σ of uniform)", fontsize=9)
    out = [str(save(fig, run_dir / "plots" / "sbc_ranks.png"))]
    grid, curve = cal["curve"]
    fig, ax = plt.subplots(figsize=(3.6, 3.4))
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.plot(grid, curve, "o-", ms=3)
    ax.set_xlabel("credibility level")
    ax.set_ylabel("expected coverage")
    out.append(str(save(fig, run_dir / "plots" / "coverage.png")))
    return out


def evaluate(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """SBC rank histograms, expected coverage at 50/68/95 % and (exact simulators) the KL."""
    ev = dict(cfg.get("eval") or {})
    flow = load_flow(cfg, run_dir)
    sim, sets = simulate(cfg)
    th, x = sets["test"]
    m = min(int(ev.get("n_sbc", 1000)), len(th))
    if m < 10:
        raise UserError(f"evaluate needs at least 10 test simulations (sims.n_test, "
                        f"eval.n_sbc), got {m}")
    n_post = int(ev.get("n_post", 200))
    torch.manual_seed(int(cfg.get("seed", 0)))
    t0 = time.perf_counter()
    samples, lq_s = sample_posterior(flow, cfg, x[:m], n_post)
    lq_true_all = _log_q(flow, cfg, th, x)
    cal = calibration(th[:m].astype(np.float64), samples, lq_true_all[:m], lq_s,
                      int(ev.get("rank_bins", 20)))
    out: dict[str, Any] = {
        "command": "evaluate", "simulator": sim.info(), "n_sbc": m, "n_post": n_post,
        "test_nll": float(-lq_true_all.mean()),
        "test_nll_se": float(lq_true_all.std(ddof=1) / math.sqrt(len(lq_true_all))),
        "coverage": cal["coverage"], "sbc_rank_chi2_ndf": cal["rank_chi2_ndf"],
        "sbc_rank_hist": cal["rank_hist"].tolist(),
        "coverage_curve": {"level": cal["curve"][0].tolist(),
                           "coverage": cal["curve"][1].tolist()}}
    if sim.exact:
        d = sim.log_posterior(th.astype(np.float64), x.astype(np.float64)) - lq_true_all
        out["kl"] = float(d.mean())
        out["kl_se"] = float(d.std(ddof=1) / math.sqrt(len(d)))
        out["test_nll_truth"] = float(-sim.log_posterior(th, x).mean())
        if hasattr(sim, "posterior_mean"):
            err = samples.mean(1) - sim.posterior_mean(x[:m].astype(np.float64))
            out["posterior_mean_rmse"] = np.sqrt((err**2).mean(0)).tolist()
            out["posterior_std_ratio"] = (samples.std(1).mean(0)
                                          / np.sqrt(np.diag(sim.cov))).tolist()
    out["seconds"] = round(time.perf_counter() - t0, 2)
    if is_main_process() and ev.get("plots", True):
        out["plots"] = _plots(run_dir, cal, n_post)
    update_metrics_json(run_dir, {"evaluate": out})
    if is_main_process():
        cv = "; ".join(f"{k} %: {v['coverage']:.3f} ± {v['error']:.3f}"
                       for k, v in cal["coverage"].items())
        print(f"evaluate: {sim.name}, {m} test simulations × {n_post} posterior draws")
        print(f"  expected coverage (HPD) {cv}")
        print("  SBC rank χ²/ndf per parameter: "
              + ", ".join(f"{c:.2f}" for c in cal["rank_chi2_ndf"]))
        line = f"  test NLL {out['test_nll']:.4f} ± {out['test_nll_se']:.4f} nats"
        if "kl" in out:
            line += (f"; KL(p||q) {out['kl']:.4f} ± {out['kl_se']:.4f} nats "
                     f"(truth NLL {out['test_nll_truth']:.4f})")
        print(line)
    return out


COMMANDS = {"train": train, "sample": sample, "evaluate": evaluate}
