"""The :class:`Integrand` container and the loading of user integrands."""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["Integrand", "IntegrandError", "load_target", "resolve"]


class IntegrandError(ValueError):
    """A user integrand (or its settings) cannot be used; the message is one line."""


@dataclass
class Integrand:
    """A function on the unit hypercube with its exact integral when known.

    Attributes:
        name: short label used in tables and plots.
        dim: dimension D of the hypercube.
        fn: vectorised ``x [N, D] (float64, in [0, 1]) -> f(x) [N]``; may change sign.
        exact: the exact integral (None when unknown).
        exact_error: uncertainty of ``exact`` (0 for analytic values).
        momenta: optional ``(x [N, D], generator) -> [N, P, 4]`` four-momenta (E, px, py, pz)
            of the events at ``x`` (used by ``flowctl sample``), in GeV.
        particles: names of the P particles of ``momenta``.
        units: the unit of the integral (for printing).
        labels: names of the D coordinates (for plots).
        modes: centres [K][D] of the target's Gaussian peaks exp(-|x - c|^2 / mode_width^2),
            each of equal share, when it has several (the camel); ``integrate`` and the
            benchmark then report whether each sampler found each peak
            (:func:`flowctl.metrics.integration.mode_census`).
        mode_width: the width of those peaks.
    """

    name: str
    dim: int
    fn: Callable[[Tensor], Tensor]
    exact: float | None = None
    exact_error: float = 0.0
    momenta: Callable[[Tensor, torch.Generator | None], Tensor] | None = None
    particles: tuple[str, ...] = ()
    units: str = ""
    labels: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    modes: tuple[tuple[float, ...], ...] = ()
    mode_width: float = 0.0

    def __call__(self, x: Tensor) -> Tensor:
        """``f(x)`` as float64 ``[N]`` on x's device (x is cast to float64 first)."""
        y = self.fn(x.to(torch.float64))
        if isinstance(y, np.ndarray):
            y = torch.from_numpy(y)
        if not isinstance(y, Tensor):
            y = torch.as_tensor(y)
        return y.to(dtype=torch.float64, device=x.device).reshape(-1)

    def coordinate_labels(self) -> list[str]:
        """``labels`` or ``x1 .. xD``."""
        return list(self.labels) if len(self.labels) == self.dim else \
            [f"x{i + 1}" for i in range(self.dim)]


def load_target(target: str) -> Callable[[Tensor], Any]:
    """Import ``package.module:function`` (or ``package.module.function``); one-line errors."""
    if not isinstance(target, str) or not target.strip():
        raise IntegrandError("integrand.target must be 'package.module:function'")
    target = target.strip()
    if ":" in target:
        mod_name, _, attr = target.partition(":")
    else:
        mod_name, _, attr = target.rpartition(".")
    if not mod_name or not attr:
        raise IntegrandError(f"integrand.target={target!r} is not of the form "
                             "'package.module:function'")
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        raise IntegrandError(f"integrand.target={target!r}: cannot import module {exc.name!r} "
                             "(is it on PYTHONPATH / installed?)") from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed at import
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise IntegrandError(f"integrand.target={target!r}: importing {mod_name!r} failed: "
                             f"{type(exc).__name__}: {first}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(module) if not n.startswith("_")
                     and callable(getattr(module, n, None))]
            hint = f"; it has: {', '.join(names[:8])}" if names else ""
            raise IntegrandError(f"integrand.target={target!r}: module {mod_name!r} has no "
                                 f"attribute {attr!r}{hint}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise IntegrandError(f"integrand.target={target!r} is a {type(obj).__name__}, "
                             "not a function")
    return obj


def _probe(ig: Integrand, n: int = 16) -> None:
    """Call the integrand once on a small batch and check its output shape and values."""
    x = torch.rand(n, ig.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    try:
        y = ig.fn(x)
    except Exception as exc:  # noqa: BLE001 - user code: report as one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise IntegrandError(f"integrand {ig.name!r} failed on a [{n}, {ig.dim}] batch: "
                             f"{type(exc).__name__}: {first} (it must take an [N, D] tensor "
                             "and return [N])") from None
    try:
        y = torch.as_tensor(np.asarray(y) if not isinstance(y, Tensor) else y)
    except Exception:  # noqa: BLE001
        raise IntegrandError(f"integrand {ig.name!r} returned a {type(y).__name__}, "
                             "not a tensor or array") from None
    if tuple(y.shape) not in ((n,), (n, 1)):
        raise IntegrandError(f"integrand {ig.name!r} returned shape {tuple(y.shape)} for an "
                             f"input of shape [{n}, {ig.dim}]; expected [{n}]")
    if y.is_complex() or not torch.isfinite(y.to(torch.float64)).all():
        raise IntegrandError(f"integrand {ig.name!r} returned non-finite or complex values "
                             "on uniform points")


def resolve(cfg: Mapping[str, Any]) -> Integrand:
    """Build the integrand of a config's ``integrand`` section.

    Keys: ``name`` (a shipped integrand, see :data:`flowctl.integrands.SHIPPED`) or ``target``
    (``package.module:function``), ``dim``, ``exact`` (overrides the shipped value; null:
    unknown/shipped) and ``params`` (keyword arguments of the shipped factory).
    """
    from flowctl.integrands import SHIPPED

    cfg = dict(cfg or {})
    target, name = cfg.get("target"), cfg.get("name")
    dim = cfg.get("dim")
    if dim is None or isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise IntegrandError(f"integrand.dim must be a positive integer, got {dim!r}")
    params = dict(cfg.get("params") or {})
    if target:
        fn = load_target(str(target))
        ig = Integrand(name=str(name or str(target).replace(":", ".").rsplit(".", 1)[-1]),
                       dim=dim, fn=fn)
        if params:
            try:
                inspect.signature(fn).bind(None, **params)
            except TypeError as exc:
                raise IntegrandError(f"integrand.params for {target!r}: {exc}") from None
            base = fn
            ig.fn = lambda x: base(x, **params)
        _probe(ig)
    elif name:
        if name not in SHIPPED:
            raise IntegrandError(f"unknown integrand {name!r}; shipped: {', '.join(SHIPPED)} "
                                 "(or set integrand.target=package.module:function)")
        try:
            ig = SHIPPED[name](dim, **params)
        except TypeError as exc:
            raise IntegrandError(f"integrand.params for {name!r}: {exc}") from None
    else:
        raise IntegrandError("set integrand.target=package.module:function (your integrand) or "
                             "integrand.name to a shipped one")
    exact = cfg.get("exact")
    if exact is not None:
        try:
            ig.exact = float(exact)
        except (TypeError, ValueError):
            raise IntegrandError(f"integrand.exact must be a number, got {exact!r}") from None
        if not math.isfinite(ig.exact):
            raise IntegrandError(f"integrand.exact must be finite, got {exact!r}")
        ig.exact_error = float(cfg.get("exact_error") or 0.0)
    return ig
