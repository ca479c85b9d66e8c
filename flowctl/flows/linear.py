"""Affine layers whose backward avoids MKL's slow narrow-operand products on the CPU.

A conditioner's first layer often reads only a few features (a coupling layer of 8 dims reads
4). Its two backward products then have a narrow operand: ``grad_W = g^T x`` is
``[H, N] x [N, K]`` and ``grad_x = g W`` is ``[N, H] x [H, K]`` with ``K < 16``. MKL computes
both several times slower than the same products written with the narrow operand on the left,
``(x^T g)^T`` and ``(W^T g^T)^T`` (same numbers, different order of the same multiply-adds).
Measured on a 2-core AMD EPYC (AVX-512), N = 4096, H = 128, K = 4, two threads:
466 -> 92 us and 282 -> 106 us per product; one thread 639 -> 89 and 545 -> 101 us. At K = 16
neither form wins on both thread counts, so the rewrite applies below ``THIN_FEATURES``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

THIN_FEATURES = 16  # input widths below this take the rewritten backward (CPU, autograd)


class _ThinLinear(torch.autograd.Function):
    """``x [N, K] @ weight[H, K]^T + bias [H]`` with the backward products narrow-side first.

    Under ``create_graph`` the backward uses the plain differentiable formulas."""

    @staticmethod
    def forward(ctx: object, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        if torch.is_grad_enabled():  # double backward: differentiable formulas
            gx = grad @ weight if need_x else None
            gw = grad.t() @ x if need_w else None
        else:
            gx = (weight.t() @ grad.t()).t() if need_x else None
            gw = (x.t() @ grad).t() if need_w else None
        gb = grad.sum(0) if need_b and ctx.has_bias else None
        return gx, gw, gb


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear`` for 2-d inputs, with the rewritten backward where it pays (CPU, autograd,
    fewer than ``THIN_FEATURES`` input features)."""
    if (x.dim() == 2 and x.shape[1] < THIN_FEATURES and x.device.type == "cpu"
            and torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
        return _ThinLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state dict) that calls :func:`linear`."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
