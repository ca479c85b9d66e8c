"""iCaloFlow's layer-by-layer model for many-layer calorimeters (Buckley, Krause, Pang, Shih,
arXiv:2305.11934), for the CaloChallenge DS2 (45 x 144 voxels) and DS3 (45 x 900).

A single flow over 6480 or 40500 voxels is out of reach; iCaloFlow factorises

    p(shower | E_inc) = p(E_0..E_{L-1} | E_inc)                       Flow I (energies)
                        x p(x_0 | E_inc, E_0)                          Flow II (first layer)
                        x prod_{i>=1} p(x_i | E_inc, E_i, E_{i-1}, i, x_{i-1})   Flow III

where ``x_i [Vl]`` are layer i's voxels normalised to sum 1. Flow III is one conditional flow
shared by all layers i >= 1, told which layer it is by a one-hot vector. Each of Flows II
and III has a MAF teacher and can be distilled into an IAF student. Sampling runs layer
after layer, each step one batched call of Flow III.

This module holds the data layout (contexts, rows) and the sampling loop; the flows come
from :func:`flowctl.flows.build`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

__all__ = ["first_context", "layer_context", "layer_rows", "sample_layers"]


def first_context(log_einc: np.ndarray, log_el: np.ndarray) -> np.ndarray:
    """Flow II context ``[N, 2]``: ``log10(E_inc/e_ref)`` and layer 0's ``log10 E``."""
    return np.stack([log_einc, log_el[:, 0]], 1)


def layer_context(log_einc: torch.Tensor, log_el: torch.Tensor, i: int,
                  prev: torch.Tensor) -> torch.Tensor:
    """Flow III context of layer ``i >= 1`` ``[n, 3 + (L-1) + Vl]``: ``log E_inc``,
    ``log E_i``, ``log E_{i-1}``, one-hot(i - 1) and the previous layer's voxels ``prev``."""
    n, n_layers = log_el.shape
    onehot = torch.zeros(n, n_layers - 1, dtype=prev.dtype, device=prev.device)
    onehot[:, i - 1] = 1.0
    return torch.cat([log_einc[:, None].to(prev.dtype), log_el[:, i:i + 1].to(prev.dtype),
                      log_el[:, i - 1:i].to(prev.dtype), onehot, prev], 1)


def layer_rows(x: np.ndarray, log_einc: np.ndarray, log_el: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Flow III training rows from showers ``x [N, L, Vl]`` (normalised voxels): every
    (shower, layer i >= 1) pair -> (inputs ``[N (L-1), Vl]``, contexts ``[N (L-1), C]``)."""
    n_layers = x.shape[1]
    xs, cs = [], []
    le, ll = torch.from_numpy(np.asarray(log_einc)), torch.from_numpy(np.asarray(log_el))
    for i in range(1, n_layers):
        prev = torch.from_numpy(x[:, i - 1])
        cs.append(layer_context(le, ll, i, prev).numpy())
        xs.append(x[:, i])
    return np.concatenate(xs).astype(np.float32), np.concatenate(cs).astype(np.float32)


def sample_layers(sample_first: Callable[[torch.Tensor], torch.Tensor],
                  sample_layer: Callable[[torch.Tensor], torch.Tensor],
                  log_einc: torch.Tensor, log_el: torch.Tensor,
                  clean: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Normalised voxels ``[n, L, Vl]``, layer after layer.

    ``sample_first(ctx [n, 2])`` and ``sample_layer(ctx [n, C])`` return ``[n, Vl]`` draws;
    ``clean`` maps a draw to a valid normalised layer (non-negative, sum 1) before it becomes
    the next layer's context.
    """
    n_layers = log_el.shape[1]
    x0 = clean(sample_first(torch.stack([log_einc, log_el[:, 0]], 1)))
    out = [x0]
    for i in range(1, n_layers):
        ctx = layer_context(log_einc, log_el, i, out[-1])
        out.append(clean(sample_layer(ctx)))
    return torch.stack(out, 1)
