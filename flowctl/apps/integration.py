"""Integration: neural importance sampling (i-flow, arXiv:2001.05486) with honest errors.

``flowctl integrate`` trains a coupling RQS flow q on [0, 1]^D (uniform base, i-flow binary
masks) to match |f| without any samples of f: points are drawn from q, f is evaluated there,
and a divergence between p = |f|/I and q (KL, Pearson chi^2 = variance, or i-flow's
exponential) is minimised with the weights detached (score-function gradients). Optionally the
points are kept in a buffer and reused with the importance correction q_test / q_sample.
Afterwards the answer comes from *fresh* points, independent of training: integral, standard
error, relative std per point, ESS, unweighting efficiency. Plain Monte Carlo and VEGAS get the
same total number of integrand calls in the same run. ``sample`` writes unweighted events,
``evaluate`` draws plots.

Config sections: ``integrand`` (see :func:`flowctl.integrands.resolve`), ``flow`` (a
:func:`flowctl.flows.build` spec; ``transforms: null`` = 2 ceil(log2 D)), ``trainer``,
``estimate``, ``peers``, ``unweight``, ``eval``, ``n`` and ``seed``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowctl.apps.common import (
    UserError,
    build_flow,
    is_main_process,
    load_weights,
    update_metrics_json,
    write_config,
)
from flowctl.integrands import Integrand, IntegrandError, resolve
from flowctl.metrics.integration import estimate, mode_census, pull, unweighting_efficiency

__all__ = [
    "COMMANDS",
    "LOSSES",
    "Buffer",
    "NISResult",
    "evaluate",
    "exponential_loss",
    "flow_weights",
    "integrate",
    "kl_loss",
    "plain_mc",
    "run_vegas",
    "sample",
    "train_sampler",
    "variance_loss",
]

FORMAT = "flowctl-integration-1"

DEFAULTS: dict[str, dict[str, Any]] = {
    "flow": {"kind": "coupling", "domain": "unit", "mask": "binary", "transforms": None,
             "hidden": [64, 64], "transform": "rqs", "bins": 16},
    "trainer": {"loss": "kl", "calls": 100000, "batch": 2000, "buffer": 0,
                "buffered_steps": 0, "buffer_batch": None, "lr": 1.0e-3, "min_lr": 1.0e-5,
                "schedule": "cosine", "grad_clip": 10.0, "device": "auto",
                "checkpoint_every": 10, "log_every": 10, "resume": False},
    "estimate": {"calls": 50000, "batch": 50000},
    "peers": {"plain": True, "vegas": True, "vegas_iterations": 30, "vegas_adapt": 10,
              "vegas_unweight_calls": 20000},
    "unweight": {"replicas": 1000, "replica_size": None},
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


def load_integrand(cfg: dict[str, Any]) -> Integrand:
    """The config's integrand (one-line :class:`UserError` for bad targets/settings)."""
    try:
        return resolve(cfg.get("integrand") or {})
    except IntegrandError as exc:
        raise UserError(str(exc)) from None


class _Embedded:
    """A 1-D integrand seen as 2-D with a flat dummy coordinate (coupling flows need D >= 2)."""

    def __init__(self, ig: Integrand) -> None:
        self.ig = ig

    def __call__(self, x: Tensor) -> Tensor:
        return self.ig(x[:, :1])


def sampling_dim(ig: Integrand) -> int:
    """Dimension of the flow: D, or 2 for a 1-D integrand (embedded with a flat dummy axis)."""
    return max(ig.dim, 2)


def _target(ig: Integrand) -> Callable[[Tensor], Tensor]:
    return ig if ig.dim >= 2 else _Embedded(ig)


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


# ----------------------------------------------------------------------------- losses
# All losses take |f| [N] (detached, >= 0), log q_test [N] (the current flow's log density at
# the points, with gradient) and log q_sample [N] (the density the points were drawn from,
# detached). For fresh points q_test == q_sample numerically; for buffered points the ratio is
# the importance correction. Computed in float64.


def _weights(f_abs: Tensor, log_q_sample: Tensor) -> tuple[Tensor, Tensor]:
    """Importance weights w = |f| / q_sample [N] and their mean (the MC integral of |f|)."""
    w = f_abs * torch.exp(-log_q_sample)
    return w, w.mean().clamp_min(1e-300)


def kl_loss(f_abs: Tensor, log_q_test: Tensor, log_q_sample: Tensor) -> Tensor:
    """KL(p||q) ~ mean_{q_sample}[(p/q_sample)(log p - log q_test)], p = |f|/I."""
    f_abs, ls, lt = f_abs.double(), log_q_sample.double(), log_q_test.double()
    w, norm = _weights(f_abs, ls)
    pos = f_abs > 0
    log_p = torch.log(torch.where(pos, f_abs, torch.ones_like(f_abs))) - torch.log(norm)
    terms = torch.where(pos, (w / norm) * (log_p - lt), torch.zeros_like(w))
    return terms.mean()


def variance_loss(f_abs: Tensor, log_q_test: Tensor, log_q_sample: Tensor) -> Tensor:
    """Pearson chi^2 / relative variance per point (MadNIS form): mean[(q_t/q_s)(f/q_t - mu)^2]
    / mu^2, mu = mean(|f|/q_s); its gradient is that of the IS variance int f^2/q."""
    f_abs, ls, lt = f_abs.double(), log_q_sample.double(), log_q_test.double()
    _, mu = _weights(f_abs, ls)
    ratio = torch.exp(lt - ls)
    return (ratio * (f_abs * torch.exp(-lt) - mu) ** 2).mean() / mu**2


def exponential_loss(f_abs: Tensor, log_q_test: Tensor, log_q_sample: Tensor) -> Tensor:
    """i-flow's exponential divergence: mean[(p/q_sample)(log p - log q_test)^2]."""
    f_abs, ls, lt = f_abs.double(), log_q_sample.double(), log_q_test.double()
    w, norm = _weights(f_abs, ls)
    pos = f_abs > 0
    log_p = torch.log(torch.where(pos, f_abs, torch.ones_like(f_abs))) - torch.log(norm)
    terms = torch.where(pos, (w / norm) * (log_p - lt) ** 2, torch.zeros_like(w))
    return terms.mean()


LOSSES: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "kl": kl_loss,
    "variance": variance_loss,
    "chi2": variance_loss,
    "exponential": exponential_loss,
}


# ----------------------------------------------------------------------------- buffer


class Buffer:
    """Circular store of training points: x [C, D], |f| [C] and log q_sample [C]."""

    def __init__(self, capacity: int, dim: int, device: torch.device,
                 dtype: torch.dtype = torch.float32) -> None:
        self.capacity = capacity
        self.x = torch.zeros(capacity, dim, device=device, dtype=dtype)
        self.f = torch.zeros(capacity, device=device, dtype=torch.float64)
        self.log_q = torch.zeros(capacity, device=device, dtype=torch.float64)
        self.size = 0
        self.pos = 0

    def add(self, x: Tensor, f_abs: Tensor, log_q: Tensor) -> None:
        """Append a batch, overwriting the oldest points when full."""
        n = len(x)
        if n >= self.capacity:
            x, f_abs, log_q = x[-self.capacity:], f_abs[-self.capacity:], log_q[-self.capacity:]
            n = self.capacity
        idx = (self.pos + torch.arange(n, device=self.x.device)) % self.capacity
        self.x[idx] = x.to(self.x.dtype)
        self.f[idx], self.log_q[idx] = f_abs.double(), log_q.double()
        self.pos = int((self.pos + n) % self.capacity)
        self.size = min(self.capacity, self.size + n)

    def draw(self, n: int, generator: torch.Generator | None = None
             ) -> tuple[Tensor, Tensor, Tensor]:
        """``n`` points drawn uniformly (with replacement) from the filled part."""
        idx = torch.randint(0, self.size, (n,), device=self.x.device, generator=generator)
        return self.x[idx], self.f[idx], self.log_q[idx]

    def state_dict(self) -> dict[str, Any]:
        s = self.size
        return {"x": self.x[:s].cpu(), "f": self.f[:s].cpu(), "log_q": self.log_q[:s].cpu(),
                "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        s = len(state["x"])
        dev = self.x.device
        self.x[:s], self.f[:s], self.log_q[:s] = (state["x"].to(dev), state["f"].to(dev),
                                                  state["log_q"].to(dev))
        self.size, self.pos = s, int(state["pos"])


# ----------------------------------------------------------------------------- sampling


@torch.no_grad()
def flow_weights(flow: torch.nn.Module, f: Callable[[Tensor], Tensor], n: int,
                 batch: int = 50000, keep_x: bool = False
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """Draw ``n`` fresh points from ``flow`` and return the signed weights f/q [n] (float64)
    and, if ``keep_x``, the points [n, D]."""
    ws, xs = [], []
    for i in range(0, n, batch):
        m = min(batch, n - i)
        x, log_q = flow.sample_and_log_prob(m)
        fx = f(x)
        w = fx * torch.exp(-log_q.double())
        w = torch.where(fx == 0, torch.zeros_like(w), w)
        ws.append(w.cpu().numpy())
        if keep_x:
            xs.append(x.double().cpu().numpy())
    w = np.concatenate(ws) if ws else np.zeros(0)
    return w, (np.concatenate(xs) if keep_x and xs else None)


@dataclass
class NISResult:
    """What :func:`train_sampler` returns."""

    flow: torch.nn.Module
    calls: int
    steps: int
    online_steps: int
    history: list[dict[str, float]]
    wall_s: float
    resumed: bool = False


def _lr_at(step: int, total: int, tr: dict[str, Any]) -> float:
    lr, lo = float(tr["lr"]), float(tr["min_lr"])
    if tr["schedule"] == "constant" or total <= 1:
        return lr
    frac = min(step / total, 1.0)
    return lo + (lr - lo) * 0.5 * (1 + math.cos(math.pi * frac))


def _bar(total: int, initial: int, enabled: bool) -> Any:
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="call", unit_scale=True, leave=False,
                dynamic_ncols=True, desc="train")


def train_sampler(flow: torch.nn.Module, f: Callable[[Tensor], Tensor], tr: dict[str, Any],
                  *, seed: int = 0, checkpoint: Path | None = None,
                  run_config: dict[str, Any] | None = None, verbose: bool = True
                  ) -> NISResult:
    """Train ``flow`` as an importance sampler for ``f`` using ``tr["calls"]`` calls of f.

    Each online step draws ``tr["batch"]`` fresh points (no gradient through the sampling),
    evaluates f, takes one optimizer step on the loss (weights detached), stores the points in
    the buffer (capacity ``tr["buffer"]``) and then takes ``tr["buffered_steps"]`` steps on
    ``buffer_batch`` points drawn from it. Adam with cosine lr and gradient-norm clipping.
    With ``checkpoint`` the state is written atomically every ``checkpoint_every`` online
    steps and, if ``tr["resume"]``, training continues from it.
    """
    from flowctl.training import CHECKPOINT_FORMAT_VERSION, load_checkpoint, save_checkpoint

    t0 = time.perf_counter()
    loss_name = str(tr["loss"])
    if loss_name not in LOSSES:
        raise UserError(f"trainer.loss must be one of {', '.join(LOSSES)}, got {loss_name!r}")
    loss_fn = LOSSES[loss_name]
    budget = _pos_int(tr, "calls", "trainer", 0)
    batch = _pos_int(tr, "batch", "trainer", 2)
    cap = _pos_int(tr, "buffer", "trainer", 0)
    k_buf = _pos_int(tr, "buffered_steps", "trainer", 0) if cap > 0 else 0
    b_buf = int(tr.get("buffer_batch") or batch)
    if tr["schedule"] not in ("cosine", "constant"):
        raise UserError(f"trainer.schedule must be cosine or constant, got {tr['schedule']!r}")
    device = next(flow.parameters()).device
    dim = int(flow.features)
    n_online = math.ceil(budget / batch) if budget else 0
    total_steps = n_online * (1 + k_buf)
    opt = torch.optim.Adam(flow.parameters(), lr=float(tr["lr"]))
    buf = Buffer(cap, dim, device) if cap > 0 else None
    gen = torch.Generator(device=device).manual_seed(seed + 12345)
    calls = steps = online = 0
    history: list[dict[str, float]] = []
    resumed = False
    if checkpoint is not None and tr.get("resume") and checkpoint.exists():
        ck = load_checkpoint(checkpoint, map_location=device)
        flow.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        calls, steps, online = int(ck["calls"]), int(ck["steps"]), int(ck["online_steps"])
        history = list(ck.get("history", []))
        if buf is not None and ck.get("buffer") is not None:
            buf.load_state_dict(ck["buffer"])
        torch.set_rng_state(ck["rng_cpu"])
        if device.type == "cuda" and ck.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(ck["rng_cuda"], device)
        gen.set_state(ck["rng_buffer"].to(gen.get_state().device)
                      if device.type == "cpu" else ck["rng_buffer"])
        resumed = True

    def save(path: Path) -> None:
        state = {
            "format_version": CHECKPOINT_FORMAT_VERSION, "kind": FORMAT,
            "model": {k: v.detach().cpu() for k, v in flow.state_dict().items()},
            "optimizer": opt.state_dict(), "calls": calls, "steps": steps,
            "online_steps": online, "history": history,
            "buffer": buf.state_dict() if buf is not None else None,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "rng_buffer": gen.get_state(), "config": run_config or {},
        }
        save_checkpoint(state, path)

    def step(loss: Tensor) -> float:
        nonlocal steps
        for g in opt.param_groups:
            g["lr"] = _lr_at(steps, total_steps, tr)
        opt.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            steps += 1
            return float("nan")
        loss.backward()
        if tr.get("grad_clip"):
            torch.nn.utils.clip_grad_norm_(flow.parameters(), float(tr["grad_clip"]))
        opt.step()
        steps += 1
        return float(loss.detach())

    show = verbose and is_main_process()
    bar = _bar(budget, calls, show)
    log_every = int(tr.get("log_every") or 10)
    ck_every = int(tr.get("checkpoint_every") or 0)
    flow.train()
    try:
        while calls < budget:
            m = min(batch, budget - calls)
            with torch.no_grad():
                x, log_q = flow.sample_and_log_prob(m)
                fx = f(x)
            calls += m
            f_abs = fx.abs()
            log_q = log_q.double()
            w = fx * torch.exp(-log_q)
            mean = float(w.mean())
            std = float(w.std()) if m > 1 else float("nan")
            if m >= 2:
                loss = step(loss_fn(f_abs, flow.log_prob(x), log_q))
            else:
                loss = float("nan")
            online += 1
            if buf is not None:
                buf.add(x, f_abs, log_q)
                for _ in range(k_buf):
                    xb, fb, lb = buf.draw(b_buf, gen)
                    step(loss_fn(fb, flow.log_prob(xb), lb))
            rec = {"online_step": online, "step": steps, "calls": calls, "loss": loss,
                   "estimate": mean, "error": std / math.sqrt(m),
                   "rel_std": std / abs(mean) if mean else float("inf"),
                   "lr": _lr_at(steps, total_steps, tr)}
            history.append(rec)
            if bar is not None:
                bar.update(m)
                bar.set_postfix_str(f"I={mean:.5g}±{rec['error']:.2g} "
                                    f"rel.std={rec['rel_std']:.3g} loss={loss:.3g}")
            elif show and (online % log_every == 0 or calls >= budget):
                print(f"train: {calls}/{budget} calls, step {steps}, loss {loss:.4g}, batch "
                      f"estimate {mean:.6g} ± {rec['error']:.2g} (rel. std/pt "
                      f"{rec['rel_std']:.3g})", file=sys.stderr, flush=True)
            if checkpoint is not None and ck_every and online % ck_every == 0:
                save(checkpoint)
    finally:
        if bar is not None:
            bar.close()
    if checkpoint is not None:
        save(checkpoint)
    flow.eval()
    return NISResult(flow, calls, steps, online, history, time.perf_counter() - t0, resumed)


# ----------------------------------------------------------------------------- peers


def plain_mc(f: Callable[[Tensor], Tensor], dim: int, calls: int, seed: int = 0,
             batch: int = 100000) -> np.ndarray:
    """Weights f(u) [calls] of uniform points: plain Monte Carlo."""
    g = torch.Generator().manual_seed(seed + 777)
    out = []
    for i in range(0, calls, batch):
        m = min(batch, calls - i)
        u = torch.rand(m, dim, dtype=torch.float64, generator=g)
        out.append(f(u).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def vegas_available() -> bool:
    """Whether the optional ``vegas`` package (extra ``flowctl[peers]``) is importable."""
    try:
        import vegas  # noqa: F401
    except ImportError:
        return False
    return True


def run_vegas(f: Callable[[Tensor], Tensor], dim: int, calls: int, iterations: int = 30,
              adapt_iterations: int = 10, seed: int = 0, unweight_calls: int = 0
              ) -> dict[str, Any]:
    """VEGAS with ``calls`` integrand calls in total: ``adapt_iterations`` iterations of
    calls/iterations points to adapt the grid (result discarded), then the rest measured (the
    package's weighted average). Returns integral, error, rel. std per point (error times
    sqrt(measurement calls) / |integral|), chi2/dof, Q, calls; and, if ``unweight_calls``,
    weights of that many extra points from the adapted map (no stratification) for
    unweighting statistics.
    """
    import vegas

    counter = {"n": 0}

    @vegas.lbatchintegrand
    def fv(x: np.ndarray) -> np.ndarray:
        counter["n"] += len(x)
        return f(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))).cpu().numpy()

    np.random.seed(seed % 2**32)
    neval = max(calls // iterations, 10)
    integ = vegas.Integrator(dim * [[0.0, 1.0]], ran_array_generator=np.random.random)
    t0 = time.perf_counter()
    n_adapt = max(0, min(adapt_iterations, iterations - 1))
    if n_adapt:
        integ(fv, nitn=n_adapt, neval=neval)
    adapt_calls = counter["n"]
    res = integ(fv, nitn=iterations - n_adapt, neval=neval)
    measure_calls = counter["n"] - adapt_calls
    mean, sdev = float(res.mean), float(res.sdev)
    out: dict[str, Any] = {
        "integral": mean, "error": sdev, "calls": counter["n"], "calls_adapt": adapt_calls,
        "calls_measure": measure_calls,
        "rel_std": sdev * math.sqrt(measure_calls) / abs(mean) if mean else math.inf,
        "chi2_dof": float(res.chi2 / res.dof) if res.dof else None, "Q": float(res.Q),
        "wall_s": time.perf_counter() - t0,
    }
    if unweight_calls:
        out["weights"], out["points"] = vegas_weights(integ, f, unweight_calls)
    return out


def vegas_weights(integ: Any, f: Callable[[Tensor], Tensor], n: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Signed weights f(x) J(x) [n] and points [n, D] from an adapted VEGAS map (x = map(y),
    y uniform; the map's Jacobian J), without the stratification."""
    amap = integ.map
    y = np.random.random((n, amap.dim))
    x = np.empty_like(y)
    jac = np.empty(n)
    amap.map(y, x, jac)
    fx = f(torch.from_numpy(x)).cpu().numpy()
    return fx * jac, x


# ----------------------------------------------------------------------------- commands


def _fmt(v: Any, spec: str = ".6g") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return format(v, spec)


def _method_row(name: str, est: dict[str, Any], exact: float | None, exact_err: float
                ) -> dict[str, Any]:
    row = dict(est)
    row["method"] = name
    row["pull"] = pull(row["integral"], row["error"], exact, exact_err)
    return row


def _table(rows: list[dict[str, Any]], units: str) -> str:
    head = (f"{'method':<10} {'integral':>14} {'error':>10} {'pull':>7} {'rel.std/pt':>10} "
            f"{'ESS/N':>7} {'unw.eff':>8} {'calls':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        unw = r.get("unweighting") or {}
        eff = unw.get("efficiency")
        lines.append(
            f"{r['method']:<10} {_fmt(r['integral'], '.8g'):>14} {_fmt(r['error'], '.3g'):>10} "
            f"{_fmt(r.get('pull'), '+.2f'):>7} {_fmt(r.get('rel_std'), '.4g'):>10} "
            f"{_fmt(r.get('ess_fraction'), '.3f'):>7} "
            f"{(f'{100 * eff:.2f}%' if eff is not None else '-'):>8} {r.get('calls', 0):>9}")
    if units:
        lines.append(f"(integral in {units})")
    return "\n".join(lines)


def integrate(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Train the sampler, estimate from fresh points, run plain MC and VEGAS; print a table."""
    from flowctl.training import seed_everything

    run_dir = Path(run_dir)
    ig = load_integrand(cfg)
    tr = _section(cfg, "trainer")
    es = _section(cfg, "estimate")
    peers = _section(cfg, "peers")
    uw = _section(cfg, "unweight")
    seed = int(cfg.get("seed", 0))
    dim = sampling_dim(ig)
    cfg = dict(cfg)
    cfg["flow"] = flow_spec(cfg, dim)
    write_config(run_dir, cfg)
    seed_everything(seed)
    device = _device(tr["device"])
    flow = build_flow(cfg["flow"]).to(device)
    f = _target(ig)
    n_est = _pos_int(es, "calls", "estimate", 2)
    main = is_main_process()
    if main:
        ex = f" (exact {ig.exact:.10g})" if ig.exact is not None else ""
        print(f"integrate: {ig.name} in D={ig.dim}{ex}; flow {cfg['flow']['transforms']} "
              f"coupling RQS layers, {sum(p.numel() for p in flow.parameters())} parameters; "
              f"loss {tr['loss']}, {tr['calls']} training + {n_est} estimate calls"
              + (" (1-D: embedded in 2-D with a flat dummy axis)" if ig.dim == 1 else ""))
    ckdir = run_dir / "checkpoints"
    res = train_sampler(flow, f, tr, seed=seed, checkpoint=ckdir / "last.pt", run_config=cfg,
                        verbose=main)
    from flowctl.training.checkpoint import copy_atomic

    copy_atomic(ckdir / "last.pt", ckdir / "best.pt")
    _write_history(run_dir, res.history)

    t0 = time.perf_counter()
    torch.manual_seed(seed + 1)  # the estimate's points: independent of training
    w, x_est = flow_weights(flow, f, n_est, batch=int(es["batch"]), keep_x=bool(ig.modes))
    est = estimate(w).as_dict()
    if ig.modes and x_est is not None:
        est["modes"] = _census(ig, x_est, w)
    est["unweighting"] = unweighting_efficiency(w, int(uw["replicas"]), uw["replica_size"],
                                                seed=seed).as_dict()
    est["wall_s"] = res.wall_s + time.perf_counter() - t0
    est["calls_train"] = res.calls
    est["calls_estimate"] = n_est
    est["calls"] = res.calls + n_est
    total = est["calls"]
    rows = [_method_row("flowctl", est, ig.exact, ig.exact_error)]

    if peers.get("plain"):
        t0 = time.perf_counter()
        wp = plain_mc(f, dim, total, seed)
        e = estimate(wp).as_dict()
        e["unweighting"] = unweighting_efficiency(wp, int(uw["replicas"]), uw["replica_size"],
                                                  seed=seed).as_dict()
        e["wall_s"] = time.perf_counter() - t0
        rows.append(_method_row("plain MC", e, ig.exact, ig.exact_error))
    vegas_note = None
    if peers.get("vegas"):
        if vegas_available():
            v = run_vegas(f, dim, total, int(peers["vegas_iterations"]),
                          int(peers["vegas_adapt"]), seed,
                          int(peers.get("vegas_unweight_calls") or 0))
            wv = v.pop("weights", None)
            xv = v.pop("points", None)
            if wv is not None:
                if ig.modes and xv is not None:
                    v["modes"] = _census(ig, xv, wv)
                v["unweighting"] = unweighting_efficiency(
                    wv, int(uw["replicas"]), uw["replica_size"], seed=seed).as_dict()
                v["unweighting"]["extra_calls"] = len(wv)
                ev = estimate(wv)
                v["ess_fraction"] = ev.ess_fraction
            rows.append(_method_row("VEGAS", v, ig.exact, ig.exact_error))
        else:
            vegas_note = "VEGAS skipped: install the optional extra `pip install flowctl[peers]`"

    out = {
        "command": "integrate", "integrand": ig.name, "dim": ig.dim, "exact": ig.exact,
        "exact_error": ig.exact_error, "units": ig.units, "loss": tr["loss"],
        "calls_total": total, "train": {"calls": res.calls, "steps": res.steps,
                                        "online_steps": res.online_steps,
                                        "wall_s": round(res.wall_s, 3),
                                        "resumed": res.resumed},
        "methods": {r["method"]: r for r in rows},
    }
    out.update({k: est[k] for k in ("integral", "error", "rel_std", "ess", "ess_fraction")})
    out["pull"] = rows[0]["pull"]
    out["unweighting_efficiency"] = est["unweighting"]["efficiency"]
    if vegas_note:
        out["vegas_note"] = vegas_note
    update_metrics_json(run_dir, {"integrate": out})
    if main:
        print(_table(rows, ig.units))
        for r in rows:
            if r.get("modes"):
                print(f"{r['method']}: {r['modes']['summary']}")
        if vegas_note:
            print(vegas_note)
        print("flowctl: fresh-sample estimate from points independent of training; "
              "VEGAS unweighting from extra points of its final map" if peers.get("vegas")
              and vegas_available() and peers.get("vegas_unweight_calls") else "")
        print(f"run directory: {run_dir}")
    return out


def _census(ig: Integrand, x: np.ndarray, w: np.ndarray) -> dict[str, Any]:
    """Mode census of a sampler's points for an integrand with several peaks (the camel)."""
    c = mode_census(x[:, :ig.dim], w, ig.modes, ig.mode_width)
    return {**c.as_dict(), "summary": c.summary()}


def _write_history(run_dir: Path, history: list[dict[str, float]]) -> None:
    import json

    if not is_main_process():
        return
    path = run_dir / "metrics.jsonl"
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w") as fh:
        fh.writelines(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v)
                                  for k, v in rec.items()}) + "\n" for rec in history)
    tmp.replace(path)


def load_sampler(cfg: dict[str, Any], run_dir: Path) -> tuple[torch.nn.Module, Integrand]:
    """Rebuild the run's integrand and trained flow."""
    ig = load_integrand(cfg)
    spec = dict(cfg.get("flow") or {})
    if spec.get("features") is None:
        raise UserError(f"run directory {run_dir}: config.yaml has no flow.features; was it "
                        "written by `flowctl integrate`?")
    return load_weights(build_flow(spec), run_dir), ig


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
    f = _target(ig)
    t0 = time.perf_counter()
    torch.manual_seed(seed + 2)
    n_cal = int(es["calls"])
    w_cal, _ = flow_weights(flow, f, n_cal, batch=int(es["batch"]))
    stats = unweighting_efficiency(w_cal, int(uw["replicas"]), uw["replica_size"], seed=seed)
    w_max = stats.w_max
    if w_max <= 0:
        raise UserError("the integrand is zero on all calibration points; cannot unweight")
    gen = torch.Generator().manual_seed(seed + 3)
    xs, ws = [], []
    kept = tried = 0
    all_w: list[np.ndarray] = [w_cal]
    batch = max(1000, int(min(es["batch"], 4 * n / max(stats.efficiency, 1e-3))))
    while kept < n:
        w, x = flow_weights(flow, f, batch, batch=batch, keep_x=True)
        assert x is not None
        tried += len(w)
        all_w.append(w)
        r = np.abs(w) / w_max
        u = torch.rand(len(w), generator=gen, dtype=torch.float64).numpy()
        acc = u < np.minimum(r, 1.0)
        xs.append(x[acc])
        ws.append(np.sign(w[acc]) * np.maximum(r[acc], 1.0))
        kept += int(acc.sum())
        if tried > 1000 * n + 10_000_000:
            raise UserError(f"unweighting stalled: {kept} events from {tried} points")
    x = np.concatenate(xs)[:n]
    wt = np.concatenate(ws)[:n]
    x_ig = x[:, : ig.dim]
    efficiency = kept / tried
    est = estimate(np.concatenate(all_w))
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
    f = _target(ig)
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
    out = {"command": "evaluate", "n": n, **est.as_dict(), "pull": p,
           "unweighting": stats.as_dict(), "reference": ref_name, "plots": plots}
    update_metrics_json(run_dir, {"evaluate": out})
    if main:
        print(f"evaluate: {ig.name}: {est.integral:.8g} ± {est.error:.3g} from {n} fresh "
              f"points" + (f", pull {p:+.2f}" if p is not None else "")
              + f"; rel. std/pt {est.rel_std:.4g}, ESS/N {est.ess_fraction:.3f}, unweighting "
              f"efficiency {100 * stats.efficiency:.2f}%")
        if plots:
            print(f"plots: {run_dir / 'plots'}")
    return out


COMMANDS = {"integrate": integrate, "sample": sample, "evaluate": evaluate}
