"""Shared tiny model/data/loss for the trainer tests (also imported by subprocess scripts)."""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch.utils.data import TensorDataset


def make_data(n: int = 256, seed: int = 123) -> TensorDataset:
    """Noisy linear regression: x [n, 4], y [n, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


def make_model(seed: int = 0, dropout: float = 0.1) -> torch.nn.Module:
    """Small MLP with dropout (so RNG state matters for exact resume)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Dropout(dropout), torch.nn.Linear(16, 1)
    )


def mse(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def cfg(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "device": "cpu", "batch_size": 32, "epochs": 2, "schedule": "constant", "lr": 1e-2,
        "log_every": 1000, "seed": 0,
    }
    base.update(over)
    return base


def weights_hash(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
