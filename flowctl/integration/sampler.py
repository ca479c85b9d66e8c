"""Samplers built from flows: a flow on a VEGAS grid, and a multi-channel mixture.

A sampler has ``features``, ``sample_and_log_prob(n) -> (x [n, D], log q [n])`` and
``log_prob(x) -> [N]`` on [0,1]^D, like a flow. :func:`train_nis` builds and trains the one a
``trainer`` section asks for:

* ``grid: true``: a VEGAS grid (:mod:`.grid`) is adapted first with ``grid_calls`` (a fraction
  of ``calls``), then the flow learns f_y(y) = f(map(y)) J(y); the sampler is
  :class:`GridFlow` (x = map(y), log q(x) = log q_y(y) - log J(y)).
* ``channels: auto`` and an integrand with several peaks (``Integrand.modes``, e.g. the
  camel): multi-channel integration (MadNIS arXiv:2212.06172, with fixed prior channel
  weights). Channel c gets the partition of unity a_c(x) = softmax_c(-|x - m_c|^2 / w^2),
  trains its own sampler on f a_c with an equal share of the calls, and the result is the
  :class:`Mixture` q = sum_c alpha_c q_c with alpha_c proportional to channel c's integral.
  Its weights f/q are the balance-heuristic multi-channel estimate: unbiased whatever a_c is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from flowctl.integration.errors import IntegrationError
from flowctl.integration.grid import GridMap, OnGrid, adapt_grid
from flowctl.integration.trainer import NISResult, train_sampler

__all__ = ["ChannelWeight", "GridFlow", "Mixture", "TrainReport", "build_sampler",
           "channel_centres", "train_nis"]


class GridFlow(nn.Module):
    """x = grid(y), y ~ flow: log q(x) = log q_flow(y) - log J(y)."""

    def __init__(self, flow: nn.Module, grid: GridMap) -> None:
        super().__init__()
        self.flow, self.grid = flow, grid
        self.features = int(flow.features)

    def sample_and_log_prob(self, n: int) -> tuple[Tensor, Tensor]:
        y, log_q = self.flow.sample_and_log_prob(n)
        x, log_j = self.grid(y)
        return x, log_q.double() - log_j

    def sample(self, n: int) -> Tensor:
        return self.sample_and_log_prob(n)[0]

    def log_prob(self, x: Tensor) -> Tensor:
        y, log_jinv = self.grid.inverse(x)
        return self.flow.log_prob(y.to(next(self.flow.parameters()).dtype)).double() + log_jinv


class Mixture(nn.Module):
    """q(x) = sum_c alpha_c q_c(x) over channel samplers; ``log_alpha`` [C] is a buffer."""

    def __init__(self, samplers: Sequence[nn.Module], alpha: Sequence[float] | None = None
                 ) -> None:
        super().__init__()
        self.samplers = nn.ModuleList(samplers)
        self.features = int(samplers[0].features)
        k = len(samplers)
        a = torch.full((k,), 1.0 / k, dtype=torch.float64) if alpha is None else \
            torch.as_tensor(alpha, dtype=torch.float64)
        self.register_buffer("log_alpha", torch.log(a / a.sum()))

    def set_alpha(self, alpha: Sequence[float]) -> None:
        a = torch.as_tensor(alpha, dtype=torch.float64).clamp_min(1e-12)
        self.log_alpha.copy_(torch.log(a / a.sum()))

    def log_prob(self, x: Tensor) -> Tensor:
        parts = torch.stack([s.log_prob(_as_input(s, x)).double() for s in self.samplers], 0)
        return torch.logsumexp(parts + self.log_alpha[:, None], 0)

    def sample_and_log_prob(self, n: int) -> tuple[Tensor, Tensor]:
        counts = torch.distributions.Multinomial(n, probs=self.log_alpha.exp()).sample()
        xs = [s.sample_and_log_prob(int(c))[0].double()
              for s, c in zip(self.samplers, counts.tolist()) if int(c) > 0]
        x = torch.cat(xs, 0)
        x = x[torch.randperm(len(x), device=x.device)]
        return x, self.log_prob(x)

    def sample(self, n: int) -> Tensor:
        return self.sample_and_log_prob(n)[0]


def _as_input(sampler: nn.Module, x: Tensor) -> Tensor:
    """x in the dtype a plain flow expects (a :class:`GridFlow` takes float64)."""
    if isinstance(sampler, GridFlow):
        return x
    return x.to(next(sampler.parameters()).dtype)


class ChannelWeight:
    """f(x) a_c(x) with a_c = softmax_c(-|x - m_c|^2 / w^2) over the channel centres m."""

    def __init__(self, f: Callable[[Tensor], Tensor], centres: Tensor, width: float, c: int
                 ) -> None:
        self.f, self.centres, self.width, self.c = f, centres, float(width), int(c)

    def __call__(self, x: Tensor) -> Tensor:
        d2 = ((x.double()[:, None, :] - self.centres.to(x.device)[None]) ** 2).sum(-1)
        a = torch.softmax(-d2 / self.width**2, 1)[:, self.c]
        fx = self.f(x)
        return torch.where(fx == 0, torch.zeros_like(fx), fx * a)


def channel_centres(ig: Any, tr: dict[str, Any], dim: int) -> tuple[Tensor, float] | None:
    """The channel centres [C, D] and width of ``trainer.channels`` for integrand ``ig``
    (``auto``: its peaks when it has several; ``none``/false: one channel)."""
    mode = tr.get("channels", "auto")
    if mode in (False, None, "none", "off"):
        return None
    if mode not in ("auto", True, "modes"):
        raise IntegrationError(f"trainer.channels must be auto or none, got {mode!r}")
    modes = getattr(ig, "modes", ()) or ()
    if len(modes) < 2:
        return None
    c = torch.tensor([list(m) + [0.5] * (dim - len(m)) for m in modes], dtype=torch.float64)
    return c, float(getattr(ig, "mode_width", 0.0) or 0.2)


def build_sampler(make_flow: Callable[[], nn.Module], dim: int, tr: dict[str, Any],
                  n_channels: int) -> nn.Module:
    """The untrained structure for ``tr`` (to load a saved state into): a flow, a
    :class:`GridFlow`, or a :class:`Mixture` of ``n_channels`` of them."""
    def one() -> nn.Module:
        flow = make_flow()
        return GridFlow(flow, GridMap(dim, int(tr.get("grid_bins", 256)))) if tr.get("grid") \
            else flow
    if n_channels > 1:
        return Mixture([one() for _ in range(n_channels)])
    return one()


@dataclass
class TrainReport:
    """What :func:`train_nis` did: the sampler, calls (grid + flow), steps, per-channel
    shares, the history of the (first) channel's flow training, wall time."""

    sampler: nn.Module
    calls: int
    steps: int
    online_steps: int
    history: list[dict[str, float]]
    wall_s: float
    grid_calls: int = 0
    channels: int = 1
    channel_alpha: list[float] = field(default_factory=list)
    nonfinite_losses: int = 0
    resumed: bool = False


def _split(total: int, k: int) -> list[int]:
    return [total // k + (1 if i < total % k else 0) for i in range(k)]


def train_nis(make_flow: Callable[[], nn.Module], f: Callable[[Tensor], Tensor], dim: int,
              tr: dict[str, Any], *, integrand: Any = None, seed: int = 0,
              checkpoint: Path | None = None, run_config: dict[str, Any] | None = None,
              verbose: bool = True) -> TrainReport:
    """Build and train the sampler of ``tr`` with ``tr["calls"]`` integrand calls in all.

    ``make_flow()`` returns a fresh flow on [0,1]^dim. A plain single flow trains exactly as
    :func:`train_sampler` (checkpoint/resume included); grids and channels do not resume.
    """
    t0 = time.perf_counter()
    centres = channel_centres(integrand, tr, dim)
    grid_on = bool(tr.get("grid"))
    if not grid_on and centres is None:
        flow = make_flow()
        r = train_sampler(flow, f, tr, seed=seed, checkpoint=checkpoint,
                          run_config=run_config, verbose=verbose)
        return TrainReport(r.flow, r.calls, r.steps, r.online_steps, r.history, r.wall_s,
                           nonfinite_losses=r.nonfinite_losses, resumed=r.resumed)
    if tr.get("resume"):
        raise IntegrationError("trainer.resume works for a single flow; this run uses "
                               "trainer.grid or channels (set trainer.resume=false)")
    frac = float(tr.get("grid_calls", 0.2)) if grid_on else 0.0
    if grid_on and not 0 < frac < 1:
        raise IntegrationError(f"trainer.grid_calls must be a fraction in (0, 1), got {frac!r}")
    k = 1 if centres is None else len(centres[0])
    budgets = _split(int(tr["calls"]), k)
    samplers: list[nn.Module] = []
    integrals: list[float] = []
    calls = steps = online = bad = grid_calls = 0
    history: list[dict[str, float]] = []
    for c in range(k):
        fc = f if centres is None else ChannelWeight(f, centres[0], centres[1], c)
        n_grid = round(frac * budgets[c]) if grid_on else 0
        target: Callable[[Tensor], Tensor] = fc
        grid = None
        if grid_on:
            grid, used = adapt_grid(fc, dim, n_grid, int(tr.get("grid_bins", 256)),
                                    float(tr.get("grid_alpha", 0.5)),
                                    seed=seed + 97 * c)
            grid_calls += used
            calls += used
            target = OnGrid(fc, grid)
        flow = make_flow()
        r: NISResult = train_sampler(flow, target, {**tr, "calls": budgets[c] - n_grid,
                                                    "resume": False},
                                     seed=seed + 31 * c, verbose=verbose)
        calls += r.calls
        steps += r.steps
        online += r.online_steps
        bad += r.nonfinite_losses
        if c == 0:
            history = r.history
        tail = [h["estimate"] for h in r.history[-max(1, len(r.history) // 4):]
                if math.isfinite(h["estimate"])]
        integrals.append(abs(sum(tail) / len(tail)) if tail else 1.0)
        samplers.append(GridFlow(r.flow, grid) if grid is not None else r.flow)
    sampler: nn.Module
    if k > 1:
        sampler = Mixture(samplers, [max(i, 1e-300) for i in integrals])
        alpha = sampler.log_alpha.exp().tolist()
    else:
        sampler, alpha = samplers[0], [1.0]
    sampler.eval()
    return TrainReport(sampler, calls, steps, online, history, time.perf_counter() - t0,
                       grid_calls, k, alpha, bad)
