"""Affine layers whose backward avoids MKL's slow narrow-operand products on the CPU.

A conditioner's first layer often reads only a few features (a coupling layer of 8 dims reads
4). Its two backward products then have a narrow operand: ``grad_W = g^T x`` is
``[H, N] x [N, K]`` and ``grad_x = g W`` is ``[N, H] x [H, K]``. For a few features MKL computes
both several times slower than the same products written with the narrow operand on the left,
``(x^T g)^T`` and ``(W^T g^T)^T`` (same numbers, different order of the same multiply-adds).
Measured on a 2-core AMD EPYC (AVX-512), H = 128, two threads, forward and backward of one
layer, rewritten / plain (us): N = 4096: K = 1 315 / 284, K = 2 718 / 914, K = 4 538 / 880,
K = 8 529 / 988, K = 12 570 / 591; N = 1024: K = 4 176 / 247; N = 256: K = 4 110 / 112 (the
custom autograd node's own cost eats the gain). Hence the rewrite for ``THIN_FEATURES`` input
features and at least ``THIN_ROWS`` rows only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

THIN_FEATURES = (2, 8)  # input widths (inclusive) that take the rewritten backward
THIN_ROWS = 512


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
    ``THIN_FEATURES`` input features, ``THIN_ROWS`` rows or more)."""
    low, high = THIN_FEATURES
    if (x.dim() == 2 and low <= x.shape[1] <= high and x.shape[0] >= THIN_ROWS
            and x.device.type == "cpu" and torch.is_grad_enabled()
            and (x.requires_grad or weight.requires_grad)):
        return _ThinLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state dict) that calls :func:`linear`."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
