"""Training a flow as an importance sampler for f without samples of f (NIS).

Each online step draws ``batch`` fresh points from the flow (no gradient through the
sampling), evaluates f, takes one optimizer step on a loss of :mod:`.losses` (weights
detached), keeps the points in a :class:`~.buffer.Buffer` and takes ``buffered_steps`` more
steps on points drawn from it (importance-corrected). Adam with cosine lr and gradient-norm
clipping. Non-finite losses are counted; the step is skipped, and the run stops once they are
more than ``max_nonfinite_losses`` of the steps (and more than 5).

Annealing (``anneal`` > 0): during the first ``anneal`` share of the online steps the flow
learns |f|^beta instead of |f|, with beta rising geometrically from ``anneal_beta0`` to 1.
For a narrow peak |f|^beta is a peak 1/sqrt(beta) times wider, which a flow that starts
uniform can find; it then follows the peak as it narrows (tempering, as in annealed
importance sampling, Neal 1998).

Stratified batches (``stratify_batches``, a unit flow only): each online batch's latent
points are drawn in VEGAS's hypercubes (:mod:`.strata`) instead of i.i.d. Every point is
still distributed as q, so losses and buffer are unchanged; the batch's estimate and error
(the history, which :mod:`.combine` joins to the answer) are the stratified ones.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from flowctl.integration.buffer import Buffer
from flowctl.integration.errors import IntegrationError, NonFiniteError
from flowctl.integration.losses import LOSSES
from flowctl.integration.strata import (
    is_unit_flow,
    strata_per_axis,
    stratified_mean,
    stratified_uniform,
    unit_latent_map,
)
from flowctl.training.optimizers import adam

__all__ = ["FORMAT", "TRAINER_DEFAULTS", "NISResult", "beta_at", "check_trainer", "lr_at",
           "pos_int",
           "train_sampler"]

FORMAT = "flowctl-integration-1"

TRAINER_DEFAULTS: dict[str, Any] = {
    "loss": "kl", "calls": 100000, "batch": 2000, "buffer": 0, "buffered_steps": 0,
    "buffer_batch": None, "lr": 1.0e-3, "min_lr": 1.0e-5, "schedule": "cosine",
    "grad_clip": 10.0, "device": "auto", "checkpoint_every": 10, "log_every": 10,
    "resume": False, "max_nonfinite_losses": 0.05, "grid": False, "grid_calls": 0.2,
    "grid_bins": 256, "grid_alpha": 0.5, "channels": "auto", "anneal": 0.0,
    "anneal_beta0": 0.02, "stratify_batches": False,
}
"""Settings of :func:`train_sampler` (``trainer`` section of the integrate configs); ``grid*``
and ``channels`` are read by :mod:`flowctl.integration.sampler`."""


def pos_int(section: dict[str, Any], key: str, where: str, minimum: int = 1) -> int:
    """``section[key]`` as an int >= ``minimum`` (one-line :class:`IntegrationError`)."""
    v = section.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or v < minimum:
        raise IntegrationError(f"{where}.{key} must be an integer >= {minimum}, got {v!r}")
    return int(v)


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
    nonfinite_losses: int = 0


def lr_at(step: int, total: int, tr: dict[str, Any]) -> float:
    """Learning rate at ``step`` of ``total``: cosine from ``lr`` to ``min_lr`` or constant."""
    lr, lo = float(tr["lr"]), float(tr["min_lr"])
    if tr["schedule"] == "constant" or total <= 1:
        return lr
    frac = min(step / total, 1.0)
    return lo + (lr - lo) * 0.5 * (1 + math.cos(math.pi * frac))


def beta_at(online: int, n_online: int, tr: dict[str, Any]) -> float:
    """Annealing exponent at online step ``online`` of ``n_online`` (1 without annealing)."""
    frac = float(tr.get("anneal") or 0.0)
    if frac <= 0 or n_online <= 0:
        return 1.0
    t = online / max(frac * n_online, 1.0)
    if t >= 1:
        return 1.0
    b0 = float(tr.get("anneal_beta0", 0.02))
    return float(b0 ** (1.0 - t))


def _bar(total: int, initial: int, enabled: bool) -> Any:
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="call", unit_scale=True, leave=False,
                dynamic_ncols=True, desc="train")


def check_trainer(tr: dict[str, Any]) -> None:
    """Validate the trainer settings before any work (one-line :class:`IntegrationError`)."""
    if str(tr["loss"]) not in LOSSES:
        raise IntegrationError(f"trainer.loss must be one of {', '.join(LOSSES)}, got "
                               f"{tr['loss']!r}")
    pos_int(tr, "calls", "trainer", 0)
    pos_int(tr, "batch", "trainer", 2)
    pos_int(tr, "buffer", "trainer", 0)
    pos_int(tr, "buffered_steps", "trainer", 0)
    if tr["schedule"] not in ("cosine", "constant"):
        raise IntegrationError(f"trainer.schedule must be cosine or constant, got "
                               f"{tr['schedule']!r}")
    for key in ("anneal", "anneal_beta0"):
        v = tr.get(key, 0.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise IntegrationError(f"trainer.{key} must be a number in [0, 1], got {v!r}")
    if tr.get("anneal") and not tr.get("anneal_beta0"):
        raise IntegrationError("trainer.anneal_beta0 must be > 0 when trainer.anneal is on")
    if not isinstance(tr.get("stratify_batches", False), bool):
        raise IntegrationError(f"trainer.stratify_batches must be true or false, got "
                               f"{tr.get('stratify_batches')!r}")
    m = tr.get("max_nonfinite_losses", 0.05)
    if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 <= m <= 1:
        raise IntegrationError(f"trainer.max_nonfinite_losses must be a fraction in [0, 1], "
                               f"got {m!r}")


def train_sampler(flow: torch.nn.Module, f: Callable[[Tensor], Tensor], tr: dict[str, Any],
                  *, seed: int = 0, checkpoint: Path | None = None,
                  run_config: dict[str, Any] | None = None, verbose: bool = True
                  ) -> NISResult:
    """Train ``flow`` as an importance sampler for ``f`` using ``tr["calls"]`` calls of f.

    ``flow`` has ``features``, ``sample_and_log_prob(n)`` and ``log_prob(x)`` on [0,1]^D.
    With ``checkpoint`` the state is written atomically every ``checkpoint_every`` online
    steps and, if ``tr["resume"]``, training continues from it (plain-data checkpoint).
    """
    from flowctl.training import CHECKPOINT_FORMAT_VERSION, load_checkpoint, save_checkpoint

    t0 = time.perf_counter()
    tr = {**TRAINER_DEFAULTS, **tr}
    check_trainer(tr)
    loss_fn = LOSSES[str(tr["loss"])]
    budget = pos_int(tr, "calls", "trainer", 0)
    batch = pos_int(tr, "batch", "trainer", 2)
    cap = pos_int(tr, "buffer", "trainer", 0)
    k_buf = pos_int(tr, "buffered_steps", "trainer", 0) if cap > 0 else 0
    b_buf = int(tr.get("buffer_batch") or batch)
    max_bad = float(tr.get("max_nonfinite_losses", 0.05))
    device = next(flow.parameters()).device
    dim = int(flow.features)
    n_online = math.ceil(budget / batch) if budget else 0
    total_steps = n_online * (1 + k_buf)
    opt = adam(flow.parameters(), lr=float(tr["lr"]))
    buf = Buffer(cap, dim, device) if cap > 0 else None
    gen = torch.Generator(device=device).manual_seed(seed + 12345)
    strat = bool(tr.get("stratify_batches")) and is_unit_flow(flow)
    sgen = torch.Generator().manual_seed(seed + 777)
    calls = steps = online = bad_losses = 0
    history: list[dict[str, float]] = []
    resumed = False
    if checkpoint is not None and tr.get("resume") and checkpoint.exists():
        ck = load_checkpoint(checkpoint, map_location=device)
        flow.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        calls, steps, online = int(ck["calls"]), int(ck["steps"]), int(ck["online_steps"])
        bad_losses = int(ck.get("nonfinite_losses", 0))
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
            "online_steps": online, "history": history, "nonfinite_losses": bad_losses,
            "buffer": buf.state_dict() if buf is not None else None,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "rng_buffer": gen.get_state(), "config": run_config or {},
        }
        save_checkpoint(state, path)

    def step(loss: Tensor) -> float:
        nonlocal steps, bad_losses
        for g in opt.param_groups:
            g["lr"] = lr_at(steps, total_steps, tr)
        opt.zero_grad(set_to_none=True)
        steps += 1
        if not torch.isfinite(loss):
            bad_losses += 1
            if bad_losses > 5 and bad_losses > max_bad * steps:
                raise NonFiniteError(
                    f"the training loss was non-finite on {bad_losses} of {steps} steps "
                    f"(more than trainer.max_nonfinite_losses={max_bad:g}); try a smaller "
                    "trainer.lr or loss=kl")
            return float("nan")
        loss.backward()
        if tr.get("grad_clip"):
            torch.nn.utils.clip_grad_norm_(flow.parameters(), float(tr["grad_clip"]))
        opt.step()
        return float(loss.detach())

    bar = _bar(budget, calls, verbose)
    log_every = int(tr.get("log_every") or 10)
    ck_every = int(tr.get("checkpoint_every") or 0)
    flow.train()
    try:
        while calls < budget:
            m = min(batch, budget - calls)
            cube = None
            with torch.no_grad():
                if strat and m >= 4:
                    strata = strata_per_axis(m, dim)
                    z, cube = stratified_uniform(m, strata, sgen)
                    x, log_q = unit_latent_map(flow, z)
                else:
                    x, log_q = flow.sample_and_log_prob(m)
                fx = f(x)
            calls += m
            f_abs = fx.abs()
            log_q = log_q.double()
            w = fx * torch.exp(-log_q)
            if cube is not None:  # the stratified mean; std: its error times sqrt(m)
                mean, var = stratified_mean(w, cube, math.prod(strata))
                std = math.sqrt(max(var, 0.0) * m)
            else:
                mean = float(w.mean())
                std = float(w.std()) if m > 1 else float("nan")
            beta = beta_at(online, n_online, tr)
            target = f_abs if beta == 1.0 else f_abs.pow(beta)
            loss = step(loss_fn(target, flow.log_prob(x), log_q)) if m >= 2 else float("nan")
            online += 1
            if buf is not None:
                buf.add(x, f_abs, log_q)
                for _ in range(k_buf):
                    xb, fb, lb = buf.draw(b_buf, gen)
                    step(loss_fn(fb if beta == 1.0 else fb.pow(beta), flow.log_prob(xb), lb))
            rec = {"online_step": online, "step": steps, "calls": calls, "loss": loss,
                   "estimate": mean, "error": std / math.sqrt(m),
                   "rel_std": std / abs(mean) if mean else float("inf"),
                   "lr": lr_at(steps, total_steps, tr), "nonfinite_losses": bad_losses,
                   "beta": beta}
            history.append(rec)
            if bar is not None:
                bar.update(m)
                bar.set_postfix_str(f"I={mean:.5g}±{rec['error']:.2g} "
                                    f"rel.std={rec['rel_std']:.3g} loss={loss:.3g}")
            elif verbose and (online % log_every == 0 or calls >= budget):
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
    return NISResult(flow, calls, steps, online, history, time.perf_counter() - t0, resumed,
                     bad_losses)
