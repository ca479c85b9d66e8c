"""The posterior app's training loss, optionally compiled with ``torch.compile``.

The two-moons flow of the SBI benchmark (conditional RQ-spline MAF, 2-D, ~29k parameters) is
a few hundred tiny tensor operations per step, so on a CPU an optimizer step costs Python and
dispatch overhead, not arithmetic: ~16-31 ms eager against ~6-18 ms compiled at batch
32-512 (one thread, loaded 2-core machine; benchmarks/results/posterior-compile-*.txt). The
compile itself costs ~30-110 s once per process (less with inductor's on-disk cache), so it
only pays for long trainings: ``compile: auto`` compiles from 10⁴ simulations on, on a CPU with
a C++ compiler. Validation (under ``no_grad``) stays eager: it is a few forward passes an epoch
and would need a second graph.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from flowctl.apps.common import UserError
from flowctl.training.compiled_loss import CompiledLoss, compile_wanted

__all__ = ["AUTO_MIN_SIMULATIONS", "make_loss", "nll", "use_compile"]

#: ``compile: auto`` compiles from this simulation budget on (below it the compile costs more
#: than it saves: 10³ simulations train in ~2-10 k steps of ~5-15 ms).
AUTO_MIN_SIMULATIONS = 10_000

LossFn = Callable[[torch.nn.Module, tuple[torch.Tensor, ...]], torch.Tensor]


def nll(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Mean negative log q(θ | x) (nats) of a batch ``(θ [B, P], x [B, X])``."""
    theta, ctx = batch
    return -model.log_prob(theta, ctx).mean()


def use_compile(setting: Any, n_simulations: int, device: str = "auto") -> bool:
    """Whether to compile the loss: ``setting`` true/false, or ``auto`` (from
    :data:`AUTO_MIN_SIMULATIONS` simulations on, when training on a CPU with a C++ compiler).

    Raises :class:`UserError` for any other value."""
    try:
        return compile_wanted(setting, n_simulations, AUTO_MIN_SIMULATIONS, device)
    except ValueError as err:
        raise UserError(str(err)) from None


_COMPILED: CompiledLoss | None = None


def make_loss(compiled: bool) -> LossFn:
    """The loss for the trainer: :func:`nll`, or one compiled wrapper shared by every fit of
    the process (a sequential run's rounds reuse its graphs)."""
    global _COMPILED
    if not compiled:
        return nll
    if _COMPILED is None:
        _COMPILED = CompiledLoss(nll)
    return _COMPILED
