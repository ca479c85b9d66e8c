"""The fully connected classifier network and batched prediction.

``build_mlp(F, [H1, H2, ...])`` is ``Linear(F, H1) → act [→ Dropout] → ... → Linear(H_last, 1)``,
one logit per row; ``act`` is LeakyReLU (slope 0.01; the CaloChallenge/CaloFlow DNN) or ReLU
(CATHODE's classifier).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["ACTIVATIONS", "build_mlp", "predict_proba", "standardizer"]

ACTIVATIONS = {"leaky_relu": nn.LeakyReLU, "relu": nn.ReLU}


def build_mlp(n_in: int, hidden: Sequence[int], activation: str = "leaky_relu",
              dropout: float = 0.0) -> nn.Sequential:
    """An MLP ``[N, n_in] -> [N, 1]`` logits with the given hidden widths."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, "
                         f"got {activation!r}")
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(n_in, int(h)), ACTIVATIONS[activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        n_in = int(h)
    layers.append(nn.Linear(n_in, 1))
    return nn.Sequential(*layers)


def standardizer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature ``(mean, std)`` ``[F]`` of ``x [N, F]``; zero-spread features get std 1."""
    mean = x.mean(0)
    std = x.std(0)
    return mean, np.where(std > 1e-12, std, 1.0)


@torch.no_grad()
def predict_proba(models: Sequence[nn.Module], x: np.ndarray, batch: int = 20000
                  ) -> np.ndarray:
    """Mean over ``models`` of ``sigmoid(logit)`` for ``x [N, F]`` (already scaled) -> ``[N]``
    float64; each model is put in eval mode and fed in its own dtype and device."""
    out = np.zeros(len(x))
    if not len(x) or not models:
        return out
    for m in models:
        m.eval()
    for i in range(0, len(x), batch):
        acc = None
        for m in models:
            p = next(m.parameters())
            xb = torch.as_tensor(x[i:i + batch], dtype=p.dtype, device=p.device)
            s = torch.sigmoid(m(xb).squeeze(-1).double())
            acc = s if acc is None else acc + s
        out[i:i + batch] = (acc / len(models)).cpu().numpy()
    return out
