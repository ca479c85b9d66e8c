"""Posterior estimation with conditional flows: learn p(θ | x) from simulated pairs (θ, x).

Neural posterior estimation (BayesFlow / cINN, arXiv:2003.06281): a flow over the parameters
θ ``[N, P]`` conditioned on the data x ``[N, X]`` is fitted by maximising log q(θ | x) on
pairs from the simulator's joint; it then samples the posterior of any observation.

Config keys: ``flow`` (a :func:`flowctl.flows.build` spec; ``features``/``context`` null or 0
take P and X from the simulator), ``simulator`` (``kind`` or ``target``, ``params``), ``sims``
(``n_train`` the simulation budget, ``n_val`` extra validation simulations or null to hold out
``val_fraction`` of the budget, ``n_test``, ``seed``, ``rounds``, ``truncation``), ``trainer``
(early stopping by ``patience``; the top-level ``batch_size: auto`` picks the mini-batch size
from the budget), ``n``
(posterior samples per observation for ``sample``), ``observed``/``observed_key`` (a table of
observations ``[M, X]``), ``prior_support`` (reject draws outside a bounded prior, as sbi) and
``eval`` (``n_sbc`` test pairs, ``n_post`` samples each, ``rank_bins``, ``plots``, and the
C2ST settings ``c2st_observations``, ``c2st_draws``, ``c2st_folds``, ``reference``).

``sims.rounds: R > 1`` trains sequentially for one observation (truncated sequential NPE,
arXiv:2210.04815): the budget is split over R rounds; round 1 simulates from the prior, each
later round from the prior truncated to the region of the current q(θ | x_o) holding
``1 − sims.truncation`` of its mass (:mod:`flowctl.simulators.truncation`); the flow is
trained on all pairs so far with the plain NPE loss (inside the truncated prior no proposal
correction is needed) and warm-started from the previous round; ``batch_size: auto`` is picked
again each round from the number of pairs trained on; ``sims.round_patience`` shortens rounds
1..R-1 and ``sims.refine`` (0.1) continues the last round at 0.1 × the learning rate.
The top-level ``compile: auto`` compiles the training loss with ``torch.compile`` from 10⁴
simulations on (:mod:`flowctl.apps.posterior_loss`).

``evaluate`` reports simulation-based calibration (SBC, arXiv:1804.06788) rank histograms per
parameter with χ²/ndf against uniform, the expected coverage of the highest-posterior-density
regions of the flow at 50/68/95 % (and a full curve), TARP expected coverage
(arXiv:2302.03026), where the simulator knows its posterior the KL divergence
E_x KL(p(θ|x) || q(θ|x)) (nats) estimated on the joint test pairs, and the C2ST accuracy
(arXiv:2101.04653; 0.5 is perfect) of the flow's draws against reference posterior draws.
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
    check_finite,
    is_main_process,
    load_weights,
    update_metrics_json,
    write_config,
)

__all__ = ["COMMANDS", "auto_batch_size", "calibration", "evaluate", "load_flow", "posterior_draws",
           "round_patience", "sample", "sample_posterior", "simulate", "train"]

LEVELS = (0.5, 0.68, 0.95)


def auto_batch_size(n_train: int) -> int:
    """Mini-batch size for ``n_train`` training pairs: about n/64 rounded to a power of two,
    within [32, 512] (32 at 10³ simulations, 128 at 10⁴, 512 from 10⁵ on)."""
    return int(min(512, max(32, 2 ** round(math.log2(max(n_train, 1) / 64)))))


def round_patience(setting: int | str, patience: int | None, n_train: int, batch_size: int
                   ) -> int | None:
    """Early-stopping patience (epochs) of a sequential round before the last.

    ``setting`` a number: that. ``auto``: enough epochs to cover ~600 optimizer steps, at least
    10 and at most ``patience`` (the last round's): the full patience where epochs are a few
    steps (10³ simulations in 5 rounds: 6-23 steps per epoch), 10-12 epochs from ~10⁴ on."""
    if setting != "auto":
        return int(setting)
    if patience is None:
        return None
    per_epoch = math.ceil(n_train / batch_size)
    return int(min(patience, max(10, math.ceil(600 / per_epoch))))


def _simulator(cfg: dict[str, Any]):
    from flowctl.simulators import SimulatorError, make_simulator

    try:
        return make_simulator(cfg.get("simulator") or {})
    except SimulatorError as exc:
        raise UserError(str(exc)) from None


def _val_split(n: int, s: dict[str, Any]) -> int:
    """How many of ``n`` budget simulations go to validation (``sims.n_val`` null)."""
    frac = float(s.get("val_fraction", 0.1) or 0.0)
    if not 0.0 <= frac < 1.0:
        raise UserError(f"sims.val_fraction must be in [0, 1), got {frac}")
    return min(n - 2, round(frac * n)) if frac > 0 else 0


def simulate(cfg: dict[str, Any], which: tuple[str, ...] = ("train", "val", "test")
             ) -> tuple[Any, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The simulator and its train/val/test pairs ``(θ [N, P], x [N, X])`` (float32).

    ``sims.n_train`` is the simulation budget; with ``sims.n_val: null`` a fraction
    ``sims.val_fraction`` of it is held out for validation (as sbi does), otherwise ``n_val``
    more are simulated."""
    from flowctl.simulators import SimulatorError

    sim = _simulator(cfg)
    s = dict(cfg.get("sims") or {})
    seed = int(s.get("seed", 0))
    n_train = int(s.get("n_train", 0))
    if n_train < 2:
        raise UserError(f"sims.n_train must be at least 2, got {n_train}")
    sets: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    hold = _val_split(n_train, s) if s.get("n_val") is None else 0
    for i, key in enumerate(("train", "val", "test")):
        if key not in which or (key == "val" and hold):
            continue
        n = n_train if key == "train" else int(s.get(f"n_{key}") or 0)
        try:
            th, x = sim.sample_joint(n, np.random.default_rng([seed, i]))
        except SimulatorError as exc:
            raise UserError(str(exc)) from None
        sets[key] = (th.astype(np.float32), x.astype(np.float32))
    if hold and "train" in sets:
        th, x = sets["train"]
        sets["val"] = (th[n_train - hold:], x[n_train - hold:])
        sets["train"] = (th[:n_train - hold], x[:n_train - hold])
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


def _trainer_cfg(cfg: dict[str, Any], n_train: int) -> dict[str, Any]:
    """The trainer group with the app's ``batch_size`` (``auto``: :func:`auto_batch_size` of
    ``n_train``; a number; null: keep ``trainer.batch_size``) filled in."""
    t = dict(cfg["trainer"])
    b = cfg.get("batch_size")
    if b == "auto":
        t["batch_size"] = auto_batch_size(n_train)
    elif b is not None:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise UserError(f"batch_size={b!r}: expected auto, null or a positive integer")
        t["batch_size"] = b
    return t


def _compile(cfg: dict[str, Any], n_simulations: int) -> bool:
    """Whether the training loss is compiled (top-level ``compile``: auto | true | false)."""
    from flowctl.apps.posterior_loss import use_compile

    return use_compile(cfg.get("compile", False), n_simulations,
                       str((cfg.get("trainer") or {}).get("device", "auto")))


def _fit(flow: torch.nn.Module, cfg: dict[str, Any], train_set: tuple[np.ndarray, np.ndarray],
         val_set: tuple[np.ndarray, np.ndarray], run_dir: Path,
         trainer_over: dict[str, Any] | None = None, compiled: bool = False) -> dict[str, Any]:
    """One maximum-likelihood fit of q(θ | x) on ``(θ, x)`` pairs; returns the trainer summary
    and leaves the best epoch's weights in ``flow``. ``trainer_over`` overrides trainer keys
    for this fit only (a sequential round's patience); ``compiled``: torch.compile the loss."""
    from torch.utils.data import TensorDataset

    from flowctl.apps.posterior_loss import make_loss
    from flowctl.training import train as fit

    th, x = train_set
    vt, vx = val_set
    val = TensorDataset(torch.from_numpy(vt), _ctx(cfg, vx)) if len(vt) else None
    summary = fit(flow, make_loss(compiled), TensorDataset(torch.from_numpy(th), _ctx(cfg, x)), val,
                  {**_trainer_cfg(cfg, len(th)), **(trainer_over or {})}, run_dir,
                  run_config=cfg)
    if summary.get("best_epoch") is not None:
        load_weights(flow, run_dir, "best")
    return summary


def _setup(cfg: dict[str, Any], th: np.ndarray, x: np.ndarray, run_dir: Path) -> torch.nn.Module:
    """Context normalisation from ``x``, the flow spec filled in, config.yaml, the flow."""
    from flowctl.training import seed_everything

    mean, std = x.mean(0), x.std(0)
    std = np.where(std > 1e-12, std, 1.0)
    cfg["context_norm"] = {"mean": mean.tolist(), "std": std.tolist()}
    cfg["flow"] = _flow_spec(cfg, th.shape[1], x.shape[1])
    cfg["trainer"] = _trainer_cfg(cfg, len(th))
    cfg["batch_size"] = None  # resolved into trainer.batch_size for every later fit
    write_config(run_dir, cfg)
    seed_everything(int(cfg["trainer"].get("seed", 0)))
    flow = build_flow(cfg["flow"])
    flow.initialize(torch.from_numpy(th), _ctx(cfg, x))
    return flow


def train(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Fit q(θ | x) by maximum likelihood on simulated pairs; checkpoints and metrics.

    With ``sims.rounds`` > 1: truncated sequential NPE for one observation (module doc)."""
    t0 = time.perf_counter()
    rounds = int((cfg.get("sims") or {}).get("rounds", 1) or 1)
    if rounds < 1:
        raise UserError(f"sims.rounds must be a positive integer, got {rounds}")
    if rounds > 1:
        return _train_sequential(cfg, run_dir, rounds, t0)
    compiled = _compile(cfg, int((cfg.get("sims") or {}).get("n_train", 0)))
    sim, sets = simulate(cfg, ("train", "val"))
    th, x = sets["train"]
    flow = _setup(cfg, th, x, run_dir)
    summary = _fit(flow, cfg, sets["train"], sets.get("val", (th[:0], x[:0])), run_dir,
                   compiled=compiled)
    return _train_report(cfg, run_dir, sim, flow, summary, len(th) + len(sets["val"][0]), t0,
                         {"compiled": compiled})


def _train_report(cfg: dict[str, Any], run_dir: Path, sim: Any, flow: torch.nn.Module,
                  summary: dict[str, Any], n_sims: int, t0: float,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    p, c = int(cfg["flow"]["features"]), int(cfg["flow"]["context"])
    out = {"command": "train", "simulator": sim.info(), "n_simulations": n_sims,
           "n_train": n_sims, "batch_size": cfg["trainer"]["batch_size"],
           "parameters": sum(q.numel() for q in flow.parameters()),
           "best_val_nll": summary.get("best_val_loss"), "best_epoch": summary.get("best_epoch"),
           "epochs": summary.get("epochs"), "steps": summary.get("steps"),
           "train_wall_s": round(time.perf_counter() - t0, 2),
           "stopped_reason": summary.get("stopped_reason"), **(extra or {})}
    update_metrics_json(run_dir, {"train": out})
    if is_main_process():
        v = out["best_val_nll"]
        vs = f"{v:.4f}" if isinstance(v, float) and math.isfinite(v) else str(v)
        print(f"train: posterior of {sim.name} (P={p}, X={c}), {out['parameters']} parameters, "
              f"{n_sims} simulations, best val NLL {vs} nats at epoch {out['best_epoch']} "
              f"({out['stopped_reason']}), {out['train_wall_s']:.1f} s")
        print(f"run directory: {run_dir}")
    return out


def _train_sequential(cfg: dict[str, Any], run_dir: Path, rounds: int, t0: float
                      ) -> dict[str, Any]:
    """Truncated sequential NPE: R rounds of n_train / R simulations focused on one x_o."""
    from flowctl.simulators.truncation import TruncationError, hdr_threshold, sample_truncated

    s = dict(cfg.get("sims") or {})
    sim = _simulator(cfg)
    if not sim.separable:
        raise UserError(f"sims.rounds={rounds}: sequential rounds need a simulator with a "
                        f"separate prior and forward model; {sim.name} only samples the joint "
                        "(use sims.rounds=1)")
    eps = float(s.get("truncation", 1e-4))
    if not 0.0 < eps < 0.5:
        raise UserError(f"sims.truncation must be in (0, 0.5), got {eps}")
    n_total = int(s.get("n_train", 0))
    if n_total < 2 * rounds or n_total // rounds < 10:
        raise UserError(f"sims.n_train={n_total} is too small for sims.rounds={rounds} "
                        "(at least 10 simulations per round)")
    if s.get("n_val") is not None:
        raise UserError("sims.rounds > 1 holds out sims.val_fraction of each round for "
                        "validation; set sims.n_val=null")
    rp = s.get("round_patience")
    if rp is not None and rp != "auto" and (isinstance(rp, bool) or not isinstance(rp, int)
                                            or rp < 1):
        raise UserError(f"sims.round_patience={rp!r}: expected auto, null or a positive integer")
    refine = s.get("refine")
    if refine is not None and (isinstance(refine, bool) or not isinstance(refine, int | float)
                               or not 0.0 < refine < 1.0):
        raise UserError(f"sims.refine={refine!r}: expected null or a learning-rate factor in "
                        "(0, 1)")
    compiled = _compile(cfg, n_total)
    x_o, source, _ = _observations(cfg, sim.x_dim)
    if len(x_o) != 1:
        raise UserError(f"observed={cfg.get('observed')}: sequential rounds focus on one "
                        f"observation, the file has {len(x_o)} rows")
    seed = int(s.get("seed", 0))
    rng = np.random.default_rng([seed, 0])
    trs: list[tuple[np.ndarray, np.ndarray]] = []
    vals: list[tuple[np.ndarray, np.ndarray]] = []
    log: list[dict[str, Any]] = []
    flow: torch.nn.Module | None = None
    summary: dict[str, Any] = {}
    auto = cfg.get("batch_size") == "auto"  # re-picked each round from the pairs so far
    for r in range(rounds):
        n_r = n_total // rounds + (n_total % rounds if r == rounds - 1 else 0)
        info: dict[str, Any] = {"round": r + 1, "n_sims": n_r}
        t_r, c_r = time.perf_counter(), time.process_time()
        if flow is None:
            th = sim.sample_prior(n_r, rng)
        else:
            thr = _truncation_level(flow, cfg, x_o, eps, hdr_threshold)
            try:
                th, acc = sample_truncated(
                    n_r, lambda k: sim.sample_prior(k, rng),
                    lambda t, f=flow: _log_q(f, cfg, t, np.repeat(x_o, len(t), 0)), thr)
            except TruncationError as exc:
                raise UserError(f"round {r + 1}: {exc}") from None
            info.update(threshold=thr, **acc)
        info["proposal_s"] = round(time.perf_counter() - t_r, 2)
        x = sim.simulate(th, rng)
        th, x = th.astype(np.float32), x.astype(np.float32)
        hold = _val_split(n_r, s)
        trs.append((th[:n_r - hold], x[:n_r - hold]))
        vals.append((th[n_r - hold:], x[n_r - hold:]))
        tr = tuple(np.concatenate(a) for a in zip(*trs, strict=True))
        va = tuple(np.concatenate(a) for a in zip(*vals, strict=True))
        if flow is None:
            cfg["sequential"] = {"rounds": rounds, "truncation": eps, "observed": x_o.tolist(),
                                 "source": source}
            flow = _setup(cfg, *tr, run_dir)
        if auto:
            cfg["trainer"]["batch_size"] = auto_batch_size(len(tr[0]))
        info["batch_size"] = cfg["trainer"]["batch_size"]
        last = r == rounds - 1
        rdir = run_dir if last and refine is None else run_dir / "rounds" / f"{r + 1}"
        # rounds before the last only need their best weights: no last.pt every epoch
        over = None if last else {"checkpoint_every_epoch": False, **(
            {"patience": round_patience(rp, cfg["trainer"].get("patience"), len(tr[0]),
                                        int(cfg["trainer"]["batch_size"]))}
            if rp is not None else {})}
        summary = _fit(flow, cfg, tr, va, rdir, over, compiled)
        info.update(best_val_nll=summary.get("best_val_loss"), epochs=summary.get("epochs"),
                    best_epoch=summary.get("best_epoch"), steps=summary.get("steps"),
                    patience={**cfg["trainer"], **(over or {})}.get("patience"),
                    wall_s=round(time.perf_counter() - t_r, 2),
                    cpu_s=round(time.process_time() - c_r, 2))
        log.append(info)
        if is_main_process():
            acc_s = (f", acceptance {info['acceptance']:.3g}" if "acceptance" in info else "")
            print(f"round {r + 1}/{rounds}: {n_r} simulations{acc_s}, batch "
                  f"{info['batch_size']}, {summary.get('epochs')} epochs, best val NLL "
                  f"{summary.get('best_val_loss')}, {info['wall_s']:.1f} s")
    assert flow is not None
    extra: dict[str, Any] = {"rounds": log, "observed": source, "compiled": compiled}
    if refine is not None:
        summary = extra["refine"] = _refine(flow, cfg, tr, va, run_dir, float(refine), compiled)
    return _train_report(cfg, run_dir, sim, flow, summary, n_total, t0, extra)


def _refine(flow: torch.nn.Module, cfg: dict[str, Any], tr: tuple[np.ndarray, np.ndarray],
            va: tuple[np.ndarray, np.ndarray], run_dir: Path, factor: float, compiled: bool
            ) -> dict[str, Any]:
    """After the last round stopped (constant lr): continue from its best weights on all pairs
    at ``factor`` × the learning rate until the validation loss stops improving again; this
    fit is the run's (``run_dir/checkpoints``). Returns its trainer summary and costs."""
    t_f, c_f = time.perf_counter(), time.process_time()
    lr = float(cfg["trainer"]["lr"]) * factor
    summary = _fit(flow, cfg, tr, va, run_dir, {"lr": lr}, compiled)
    out = {**summary, "lr": lr, "lr_factor": factor,
           "wall_s": round(time.perf_counter() - t_f, 2),
           "cpu_s": round(time.process_time() - c_f, 2)}
    if is_main_process():
        print(f"refine: lr {lr:g}, {summary.get('epochs')} epochs, best val NLL "
              f"{summary.get('best_val_loss')}, {out['wall_s']:.1f} s")
    return out


@torch.no_grad()
def _truncation_level(flow: torch.nn.Module, cfg: dict[str, Any], x_o: np.ndarray, eps: float,
                      hdr_threshold: Any) -> float:
    """log q level of the HDR of q(θ | x_o) holding 1 − eps (from max(10⁴, 20/eps) draws)."""
    n = int(min(200_000, max(10_000, 20 / eps)))
    _, lq = sample_posterior(flow, cfg, x_o, n)
    return hdr_threshold(lq[0], eps)


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


def posterior_draws(flow: torch.nn.Module, cfg: dict[str, Any], sim: Any, x: np.ndarray, n: int,
                    run_dir: Path | str = "", max_rounds: int = 50) -> tuple[np.ndarray, float]:
    """``n`` draws ``[M, n, P]`` per observation ``x [M, X]`` inside the simulator's prior box
    (rejection, as sbi does; ``prior_support: false`` or an unbounded prior: raw flow draws)
    and the fraction of flow draws that were inside."""
    bounds = getattr(sim, "prior_bounds", None)
    if bounds is None or not cfg.get("prior_support", True):
        return sample_posterior(flow, cfg, x, n)[0], 1.0
    lo, hi = (np.asarray(b, np.float32) for b in bounds)
    m = len(x)
    out = np.zeros((m, n, len(lo)), np.float32)
    have = np.zeros(m, int)
    drawn = kept = 0
    for _ in range(max_rounds):
        todo = np.flatnonzero(have < n)
        if not len(todo):
            break
        s, _ = sample_posterior(flow, cfg, x[todo], n)
        check_finite(s, "posterior draws", run_dir)
        ok = ((s >= lo) & (s <= hi)).all(-1)                              # [m', n]
        drawn += ok.size
        kept += int(ok.sum())
        for j, i in enumerate(todo):
            take = s[j][ok[j]][: n - have[i]]
            out[i, have[i]:have[i] + len(take)] = take
            have[i] += len(take)
    if (have < n).any():
        raise UserError(f"fewer than {n} of the flow's draws fell inside the prior's support "
                        f"for {int((have < n).sum())} observation(s) (acceptance "
                        f"{kept / max(drawn, 1):.2e}); retrain, or set prior_support=false")
    return out, kept / max(drawn, 1)


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
    seq = cfg.get("sequential") or {}
    if seq.get("observed") is not None:
        return (np.asarray(seq["observed"], np.float64).reshape(1, -1),
                str(seq.get("source", "the sequential run's observation")), None)
    sim = _simulator(cfg)
    th, x = sim.sample_joint(1, np.random.default_rng([int(cfg.get("seed", 0)), 99]))
    return x, f"simulated ({sim.name}, seed {cfg.get('seed', 0)})", th


def sample(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """``n`` posterior draws per observation into ``run_dir/posterior_samples.h5``:
    ``samples [M, n, P]``, ``observed [M, X]`` (and ``theta_true`` for a simulated one)."""
    from flowctl.atomic import write_h5

    n = int(cfg.get("n", 1000))
    if n <= 0:
        raise UserError(f"n must be a positive integer, got {n}")
    flow = load_flow(cfg, run_dir)
    x, source, th_true = _observations(cfg, int(cfg["flow"]["context"]))
    torch.manual_seed(int(cfg.get("seed", 0)))
    t0 = time.perf_counter()
    s, inside = posterior_draws(flow, cfg, _simulator(cfg), x, n, run_dir)
    dt = time.perf_counter() - t0
    check_finite(s, "posterior samples", run_dir)
    path = run_dir / "posterior_samples.h5"
    if is_main_process():
        sets = {"samples": s, "observed": x}
        if th_true is not None:
            sets["theta_true"] = th_true
        write_h5(path, sets, {"source": source})
    out = {"command": "sample", "observed": source, "n_observations": len(x), "n": n,
           "file": str(path), "seconds": round(dt, 3), "inside_prior_fraction": inside,
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


def _plots(run_dir: Path, cal: dict[str, Any], n_post: int, tarp_res: dict[str, Any],
           pair: tuple[np.ndarray, np.ndarray] | None) -> list[str]:
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
    ax.plot(grid, curve, "o-", ms=3, label="HPD (flow density)")
    ax.plot(tarp_res["alpha"], tarp_res["ecp"], "-", label="TARP (random points)")
    ax.set_xlabel("credibility level")
    ax.set_ylabel("expected coverage")
    ax.legend(fontsize=7)
    out.append(str(save(fig, run_dir / "plots" / "coverage.png")))
    if pair is not None:
        q, ref = pair
        panels = max(1, min(q.shape[1] - 1, 3))
        fig, axes = plt.subplots(1, panels, figsize=(3.2 * panels, 3.0), squeeze=False)
        for j, ax in enumerate(axes[0]):
            if q.shape[1] == 1:
                ax.hist([ref[:, 0], q[:, 0]], bins=50, histtype="step",
                        label=["reference", "flow"], density=True)
                ax.set_xlabel("θ0")
            else:
                ax.scatter(ref[:3000, j], ref[:3000, j + 1], s=1, alpha=0.3, label="reference")
                ax.scatter(q[:3000, j], q[:3000, j + 1], s=1, alpha=0.3, label="flow")
                ax.set_xlabel(f"θ{j}")
                ax.set_ylabel(f"θ{j + 1}")
        axes[0][0].legend(fontsize=7, markerscale=5)
        fig.suptitle("posterior draws for observation 0: flow vs reference", fontsize=9)
        out.append(str(save(fig, run_dir / "plots" / "posterior_vs_reference.png")))
    return out


def _reference_draws(cfg: dict[str, Any], sim: Any, n: int
                     ) -> tuple[np.ndarray, np.ndarray, str] | str:
    """``(x [M, X], reference draws [M, n, P], source)`` for C2ST, or why there are none."""
    from flowctl.data.table import DataError, load_table

    ev = dict(cfg.get("eval") or {})
    path = ev.get("reference")
    p = sim.theta_dim
    if path:
        x, _, _ = _observations(cfg, sim.x_dim)
        path = Path(str(path)).expanduser()
        try:
            if path.suffix.lower() in (".h5", ".hdf5", ".hdf"):
                import h5py

                with h5py.File(path, "r") as f:
                    key = ev.get("reference_key") or "samples"
                    if key not in f:
                        raise UserError(f"eval.reference={path}: no dataset {key!r} (set "
                                        "eval.reference_key)")
                    ref = np.asarray(f[key], np.float64)
            elif path.suffix.lower() == ".npy":
                ref = np.load(path, allow_pickle=False).astype(np.float64)
            else:
                ref = np.asarray(load_table(path), np.float64)
        except (OSError, ValueError, DataError) as exc:
            raise UserError(f"eval.reference={path}: cannot read ({exc})") from None
        ref = ref[None] if ref.ndim == 2 else ref
        if ref.ndim != 3 or ref.shape[0] != len(x) or ref.shape[2] != p:
            raise UserError(f"eval.reference={path}: shape {ref.shape}; expected [L, {p}] for "
                            f"one observation or [{len(x)}, L, {p}] for the {len(x)} observed")
        if not np.isfinite(ref).all():
            raise UserError(f"eval.reference={path}: holds NaN or inf")
        return x, ref, str(path)
    if not sim.has_reference:
        return (f"{sim.name} has no reference posterior; give eval.reference=FILE with "
                "observed=FILE")
    rng = np.random.default_rng([int((cfg.get("sims") or {}).get("seed", 0)), 7])
    seq = cfg.get("sequential") or {}
    if seq.get("observed") is not None:
        x = np.asarray(seq["observed"], np.float64).reshape(1, -1)
        source = "the sequential run's observation"
    elif cfg.get("observed"):
        x, source, _ = _observations(cfg, sim.x_dim)
    else:
        m = int(ev.get("c2st_observations", 10))
        _, x = sim.sample_joint(m, rng)
        source = f"{m} observations simulated from the prior"
    ref = np.stack([sim.sample_reference(xi, n, rng) for xi in x])
    return x, ref, f"{source}, {sim.name} reference posterior"


def _c2st_inputs(cfg: dict[str, Any], sim: Any
                 ) -> tuple[np.ndarray, np.ndarray, str] | str:
    """Checked C2ST settings and ``(x, reference draws, source)``, or why there is no C2ST
    (read before any sampling, so a bad reference file fails first)."""
    ev = dict(cfg.get("eval") or {})
    n = int(ev.get("c2st_draws", 10000))
    if int(ev.get("c2st_observations", 10)) <= 0 or n <= 0:
        return "eval.c2st_observations or eval.c2st_draws is 0"
    folds = int(ev.get("c2st_folds", 5))
    if folds < 2 or n < folds:
        raise UserError(f"eval.c2st_folds must be in [2, c2st_draws], got {folds}")
    return _reference_draws(cfg, sim, n)


def _c2st(flow: torch.nn.Module, cfg: dict[str, Any], sim: Any, run_dir: Path,
          got: tuple[np.ndarray, np.ndarray, str] | str
          ) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray] | None]:
    """C2ST of the flow's draws (inside the prior's support) against reference draws."""
    from flowctl.metrics.c2st import C2STConfig, c2st_many

    if isinstance(got, str):
        return {"c2st": None, "reason": got}, None
    ev = dict(cfg.get("eval") or {})
    folds = int(ev.get("c2st_folds", 5))
    x, ref, source = got
    n = ref.shape[1]
    q, inside = posterior_draws(flow, cfg, sim, x, n, run_dir)
    t0 = time.perf_counter()
    acc = c2st_many([(ref[i], q[i]) for i in range(len(x))],
                    C2STConfig(folds=folds, seed=int(cfg.get("seed", 0)),
                               max_epochs=int(ev.get("c2st_max_epochs", 1000))))
    per = acc.mean(1)
    return ({"c2st": float(per.mean()), "c2st_per_observation": per.tolist(),
             "c2st_fold_std": float(acc.std(1).mean()), "n_observations": len(x),
             "draws": n, "folds": folds, "reference": source, "inside_prior_fraction": inside,
             "seconds": round(time.perf_counter() - t0, 2)}, (q[0], ref[0]))


def evaluate(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """SBC rank histograms, HPD and TARP expected coverage, C2ST against reference draws and
    (exact simulators) the KL."""
    from flowctl.metrics.tarp import tarp

    ev = dict(cfg.get("eval") or {})
    flow = load_flow(cfg, run_dir)
    sim, sets = simulate(cfg, ("test",))
    th, x = sets["test"]
    m = min(int(ev.get("n_sbc", 1000)), len(th))
    if m < 10:
        raise UserError(f"evaluate needs at least 10 test simulations (sims.n_test, "
                        f"eval.n_sbc), got {m}")
    c2st_in = _c2st_inputs(cfg, sim)
    n_post = int(ev.get("n_post", 200))
    torch.manual_seed(int(cfg.get("seed", 0)))
    t0 = time.perf_counter()
    samples, lq_s = sample_posterior(flow, cfg, x[:m], n_post)
    check_finite(samples, "posterior draws", run_dir)
    lq_true_all = _log_q(flow, cfg, th, x)
    cal = calibration(th[:m].astype(np.float64), samples, lq_true_all[:m], lq_s,
                      int(ev.get("rank_bins", 20)))
    tr = tarp(th[:m], samples, rng=np.random.default_rng(int(cfg.get("seed", 0))))
    out: dict[str, Any] = {
        "command": "evaluate", "simulator": sim.info(), "n_sbc": m, "n_post": n_post,
        "test_nll": float(-lq_true_all.mean()),
        "test_nll_se": float(lq_true_all.std(ddof=1) / math.sqrt(len(lq_true_all))),
        "coverage": cal["coverage"], "sbc_rank_chi2_ndf": cal["rank_chi2_ndf"],
        "sbc_rank_hist": cal["rank_hist"].tolist(),
        "coverage_curve": {"level": cal["curve"][0].tolist(),
                           "coverage": cal["curve"][1].tolist()},
        "tarp": {"coverage": tr["at"], "max_deviation": tr["max_deviation"], "atc": tr["atc"],
                 "ks_pvalue": tr["ks_pvalue"], "alpha": tr["alpha"].tolist(),
                 "ecp": tr["ecp"].tolist()}}
    if cfg.get("sequential"):
        out["note"] = ("sequential run: trained for one observation, so SBC, coverage and "
                       "TARP over the prior predictive are not expected to be calibrated; "
                       "C2ST at that observation is the measure")
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
    c2, pair = _c2st(flow, cfg, sim, run_dir, c2st_in)
    out["c2st"] = c2
    out["seconds"] = round(time.perf_counter() - t0, 2)
    if is_main_process() and ev.get("plots", True):
        out["plots"] = _plots(run_dir, cal, n_post, tr, pair)
    update_metrics_json(run_dir, {"evaluate": out})
    if is_main_process():
        cv = "; ".join(f"{k} %: {v['coverage']:.3f} ± {v['error']:.3f}"
                       for k, v in cal["coverage"].items())
        tv = "; ".join(f"{k} %: {v['ecp']:.3f}" for k, v in tr["at"].items())
        print(f"evaluate: {sim.name}, {m} test simulations × {n_post} posterior draws")
        print(f"  expected coverage (HPD) {cv}")
        print(f"  TARP expected coverage {tv}; max |ECP − α| {tr['max_deviation']:.3f}")
        print("  SBC rank χ²/ndf per parameter: "
              + ", ".join(f"{c:.2f}" for c in cal["rank_chi2_ndf"]))
        line = f"  test NLL {out['test_nll']:.4f} ± {out['test_nll_se']:.4f} nats"
        if "kl" in out:
            line += (f"; KL(p||q) {out['kl']:.4f} ± {out['kl_se']:.4f} nats "
                     f"(truth NLL {out['test_nll_truth']:.4f})")
        print(line)
        if c2["c2st"] is not None:
            print(f"  C2ST {c2['c2st']:.3f} (0.5 is perfect; {c2['n_observations']} "
                  f"observation(s) × {c2['draws']} draws, {c2['folds']}-fold MLP; "
                  f"{c2['reference']})")
        else:
            print(f"  C2ST: not computed ({c2['reason']})")
        if "note" in out:
            print(f"  note: {out['note']}")
    return out


COMMANDS = {"train": train, "sample": sample, "evaluate": evaluate}
