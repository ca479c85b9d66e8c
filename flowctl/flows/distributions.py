"""Base distributions of flows: modules with ``log_prob(z) -> [N]`` and ``sample(n)``."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class StandardNormal(nn.Module):
    """N(0, I) on R^D."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.features = features

    def log_prob(self, z: Tensor) -> Tensor:
        """``z [N, D] -> [N]``."""
        return -0.5 * (z * z).sum(-1) - 0.5 * self.features * math.log(2 * math.pi)

    def sample(self, n: int, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> Tensor:
        return torch.randn(n, self.features, dtype=dtype, device=device)


class BoxUniform(nn.Module):
    """Uniform on the box [low, high]^D (default the unit hypercube); -inf outside."""

    def __init__(self, features: int, low: float = 0.0, high: float = 1.0) -> None:
        super().__init__()
        if not high > low:
            raise ValueError(f"uniform base needs high > low, got [{low}, {high}]")
        self.features = features
        self.low = low
        self.high = high

    def log_prob(self, z: Tensor) -> Tensor:
        inside = ((z >= self.low) & (z <= self.high)).all(-1)
        value = -self.features * math.log(self.high - self.low)
        return torch.where(inside, z.new_full(z.shape[:1], value),
                           z.new_full(z.shape[:1], -math.inf))

    def sample(self, n: int, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> Tensor:
        u = torch.rand(n, self.features, dtype=dtype, device=device)
        return self.low + (self.high - self.low) * u


def make_base(name: str, features: int) -> nn.Module:
    """``"normal"`` or ``"uniform"`` -> base distribution module."""
    if name == "normal":
        return StandardNormal(features)
    if name == "uniform":
        return BoxUniform(features)
    raise ValueError(f"unknown base distribution {name!r}; expected 'normal' or 'uniform'")
