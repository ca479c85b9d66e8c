"""Preprocessing bijections with exact log-dets, so that likelihoods stay in data units.

Statistics (mean/std, min/max) are buffers: fitted by ``initialize(x)`` (or ``fit(x)``),
saved in the ``state_dict`` and frozen afterwards.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .core import Transform


class Logit(Transform):
    """``z = logit(α + (1 - 2α) x)`` for ``x ∈ [0, 1]``; ``α`` keeps the ends finite."""

    def __init__(self, alpha: float = 1e-6) -> None:
        super().__init__()
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"logit alpha must be in [0, 0.5), got {alpha}")
        self.alpha = alpha

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        u = self.alpha + (1.0 - 2.0 * self.alpha) * x
        z = torch.log(u) - torch.log1p(-u)
        ladj = math.log1p(-2.0 * self.alpha) - torch.log(u) - torch.log1p(-u)
        return z, ladj.sum(-1)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = (torch.sigmoid(z) - self.alpha) / (1.0 - 2.0 * self.alpha)
        ladj = F.logsigmoid(z) + F.logsigmoid(-z) - math.log1p(-2.0 * self.alpha)
        return x, ladj.sum(-1)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class Standardize(Transform):
    """``z = (x - mean) / std`` with per-feature statistics fitted on data."""

    def __init__(self, features: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("std", torch.ones(features))

    @torch.no_grad()
    def fit(self, x: Tensor) -> None:
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp_min(self.eps))

    def initialize(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        self.fit(x)
        return self.forward(x)[0]

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return (x - self.mean) / self.std, (-torch.log(self.std).sum()).expand(x.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return z * self.std + self.mean, torch.log(self.std).sum().expand(z.shape[0])


class MinMax(Transform):
    """``z = (x - lo) / (hi - lo)`` onto ``[0, 1]``, with ``lo/hi`` the data range widened by
    ``margin`` of the range on each side (so held-out data rarely leaves [0, 1])."""

    def __init__(self, features: int, margin: float = 0.0) -> None:
        super().__init__()
        self.margin = margin
        self.register_buffer("lo", torch.zeros(features))
        self.register_buffer("hi", torch.ones(features))

    @torch.no_grad()
    def fit(self, x: Tensor) -> None:
        lo, hi = x.min(0).values, x.max(0).values
        span = (hi - lo).clamp_min(1e-12)
        self.lo.copy_(lo - self.margin * span)
        self.hi.copy_(hi + self.margin * span)

    def initialize(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        self.fit(x)
        return self.forward(x)[0]

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        width = self.hi - self.lo
        return (x - self.lo) / width, (-torch.log(width).sum()).expand(x.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        width = self.hi - self.lo
        return z * width + self.lo, torch.log(width).sum().expand(z.shape[0])


def make_preprocessing(spec: dict, features: int) -> Transform:
    """``{"kind": "logit", "alpha": 1e-6}``, ``{"kind": "standardize"}`` or
    ``{"kind": "minmax", "margin": 0.0}`` -> transform."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind == "logit":
        return Logit(**spec)
    if kind == "standardize":
        return Standardize(features, **spec)
    if kind == "minmax":
        return MinMax(features, **spec)
    raise ValueError(f"unknown preprocessing kind {kind!r}; expected logit, standardize "
                     "or minmax")
