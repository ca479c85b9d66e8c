"""A training loss compiled with ``torch.compile`` while gradients are on, eager otherwise.

Small flows at small batches spend an optimizer step on Python and dispatch overhead rather
than arithmetic; compiling the loss (and with it the flow's forward and backward) removes most
of it. The compile costs tens of seconds once per process and model, so the apps turn it on
only for long trainings (``compile: auto``). Validation runs under ``no_grad`` and stays eager.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable

import torch

__all__ = ["CompiledLoss", "check_setting", "compile_wanted", "has_cxx"]

LossFn = Callable[[torch.nn.Module, tuple[torch.Tensor, ...]], torch.Tensor]


def has_cxx() -> bool:
    """A C++ compiler on PATH (inductor needs one on the CPU)."""
    return any(shutil.which(c) for c in ("c++", "g++", "clang++"))


def check_setting(value: object) -> bool | str:
    """A ``compile`` setting: true, false or ``"auto"``; ValueError naming the value otherwise."""
    if isinstance(value, bool) or value == "auto":
        return value
    raise ValueError(f"compile={value!r}: expected auto, true or false")


def compile_wanted(value: object, work: int, auto_from: int, device: str = "auto") -> bool:
    """Whether to compile: ``value`` true/false, or ``auto``: when ``work`` (simulations,
    optimizer steps: what the caller's threshold counts) reaches ``auto_from`` and training
    runs on a CPU with a C++ compiler."""
    setting = check_setting(value)
    if isinstance(setting, bool):
        return setting
    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    return work >= auto_from and on_cpu and has_cxx()


class CompiledLoss:
    """``fn`` compiled (dynamic batch size) while gradients are on, eager under ``no_grad``.

    If the first compiled call fails (no working compiler), it says so once on stderr and
    stays eager."""

    def __init__(self, fn: LossFn) -> None:
        self.fn = fn
        self.compiled: LossFn | None = torch.compile(fn, dynamic=True)
        self.checked = False

    def __call__(self, model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if self.compiled is None or not torch.is_grad_enabled():
            return self.fn(model, batch)
        if self.checked:
            return self.compiled(model, batch)
        try:
            out = self.compiled(model, batch)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: fall back to eager
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            print(f"warning: torch.compile of the loss failed ({first[:200]}); training eager",
                  file=sys.stderr)
            self.compiled = None
            return self.fn(model, batch)
        self.checked = True
        return out
