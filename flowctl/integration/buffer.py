"""A circular store of past training points, reused with the importance correction."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["Buffer"]


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
        """Plain tensors and numbers (for a ``weights_only`` checkpoint)."""
        s = self.size
        return {"x": self.x[:s].cpu(), "f": self.f[:s].cpu(), "log_q": self.log_q[:s].cpu(),
                "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` wrote."""
        s = len(state["x"])
        dev = self.x.device
        self.x[:s], self.f[:s], self.log_q[:s] = (state["x"].to(dev), state["f"].to(dev),
                                                  state["log_q"].to(dev))
        self.size, self.pos = s, int(state["pos"])
