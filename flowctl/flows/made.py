"""MADE: masked autoencoder for distribution estimation (Germain et al. 2015, arXiv:1502.03509).

Input ``i`` (1-based) has degree ``i``; a hidden unit of degree ``d`` sees inputs ``1..d``; the
parameters of output dimension ``i`` see hidden units of degree ``< i``. Hidden units are laid
out **sorted by degree**, so "all units of degree ≤ d" is a prefix of every hidden layer (the
incremental inversion in :mod:`flowctl.flows.autoregressive` relies on this).
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from .linear import Linear, linear

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh,
               "elu": nn.ELU, "leaky_relu": nn.LeakyReLU}


def make_activation(name: str) -> nn.Module:
    """Activation by name (relu, gelu, silu, tanh, elu, leaky_relu)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def activate_fresh(activation: nn.Module, h: Tensor) -> Tensor:
    """``activation(h)`` for an ``h`` that nothing else holds (a layer's fresh output): a ReLU
    then works in place, which saves one allocation and pass over the hidden state."""
    if type(activation) is nn.ReLU:
        return torch.relu_(h)
    return activation(h)


def hidden_degrees(width: int, features: int) -> Tensor:
    """Sorted degrees in ``1..max(1, D-1)`` spread evenly over ``width`` units."""
    top = max(1, features - 1)
    return torch.arange(width) * top // width + 1


SKIP_BLOCKS = 8  # row blocks of the zero-skipping product (see MaskedLinear)


def prefix_blocks(in_degrees: Tensor, out_degrees: Tensor, strict: bool,
                  blocks: int = SKIP_BLOCKS) -> tuple[tuple[int, int, int], ...]:
    """``(row_start, row_end, cols)`` for ``blocks`` contiguous row blocks of a mask whose rows
    and columns are sorted by degree: rows ``row_start:row_end`` read only the first ``cols``
    inputs. Empty if the degrees are not sorted (then there is nothing to skip safely)."""
    out_d, in_d = out_degrees.cpu(), in_degrees.cpu()
    if bool((out_d[1:] < out_d[:-1]).any()) or bool((in_d[1:] < in_d[:-1]).any()):
        return ()
    rows = len(out_d)
    edges = sorted({rows * j // blocks for j in range(blocks + 1)})
    out = []
    for r0, r1 in itertools.pairwise(edges):
        top = out_d[r1 - 1]
        cols = int((in_d < top).sum() if strict else (in_d <= top).sum())
        out.append((r0, r1, cols))
    return tuple(out)


# With autograd the blocked product pays only for large layers and batches (measured on a
# CPU: 1.4x less CPU time for W1's 504 -> 11 592 output layer at batch 256, none for 128 x 128)
MIN_SKIP_ROWS = 128
MIN_SKIP_WEIGHTS = 1 << 16
# Without autograd, blocked / dense time on a 2-core CPU (2 threads; 1 thread alike): W1's
# 504 -> 11 592 output layer (5.8M weights) 0.52-0.77 at 64-1024 rows, its 504 x 504 hidden layer
# 1.07-1.22, a 128 x 128 layer 1.07 (4096 rows) to 5 (64 rows), 4 -> 128 and 128 -> 32 3-12:
# eight small products cost more than the multiply-adds they skip.
MIN_SKIP_WEIGHTS_NO_GRAD = 1 << 20


def _blocked_linear(x: Tensor, weight: Tensor, mask: Tensor, bias: Tensor,
                    blocks: tuple[tuple[int, int, int], ...]) -> tuple[Tensor, list[Tensor]]:
    """``x @ (weight * mask).T + bias`` reading only the prefix blocks; also returns the masked
    weight blocks ``[r1 - r0, c]`` (for the backward)."""
    out = x.new_empty(x.shape[0], weight.shape[0])
    masked = []
    for r0, r1, c in blocks:
        w = weight[r0:r1, :c] * mask[r0:r1, :c]
        torch.addmm(bias[r0:r1], x[:, :c], w.t(), out=out[:, r0:r1])
        masked.append(w)
    return out, masked


class _BlockedMaskedLinear(torch.autograd.Function):
    """Autograd of the zero-skipping masked product: the forward and both backward products
    (input and weight gradients) multiply only the blocks the mask can reach (about 56 % of
    the dense multiply-adds with 8 blocks). The gradients are those of the dense
    ``F.linear(x, weight * mask, bias)``: zero on masked-out weights. Under ``create_graph``
    the backward falls back to the dense, differentiable formulas."""

    @staticmethod
    def forward(ctx: object, x: Tensor, weight: Tensor, mask: Tensor, bias: Tensor,
                blocks: tuple[tuple[int, int, int], ...]) -> Tensor:
        out, masked = _blocked_linear(x, weight, mask, bias, blocks)
        ctx.blocks = blocks
        ctx.save_for_backward(x, weight, mask, *masked)
        return out

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, mask, *masked = ctx.saved_tensors
        need_x, need_w, _, need_b, _ = ctx.needs_input_grad
        if torch.is_grad_enabled():  # double backward: dense, differentiable
            wm = weight * mask
            gx = grad @ wm if need_x else None
            gw = (grad.t() @ x) * mask if need_w else None
            gb = grad.sum(0) if need_b else None
            return gx, gw, None, gb, None
        grad = grad.contiguous()
        gx = gw = gb = None
        if need_x:  # the widest block writes its prefix, the others add to theirs
            order = sorted(range(len(ctx.blocks)), key=lambda j: -ctx.blocks[j][2])
            gx = x.new_empty(x.shape)
            r0, r1, c = ctx.blocks[order[0]]
            torch.mm(grad[:, r0:r1], masked[order[0]], out=gx[:, :c])
            gx[:, c:].zero_()
            for j in order[1:]:
                r0, r1, c = ctx.blocks[j]
                if c:
                    gx[:, :c].addmm_(grad[:, r0:r1], masked[j])
        if need_w:  # zero only what no block writes
            gw = weight.new_empty(weight.shape)
            for r0, r1, c in ctx.blocks:
                block = gw[r0:r1, :c]
                torch.mm(grad[:, r0:r1].t(), x[:, :c], out=block)
                block.mul_(mask[r0:r1, :c])
                gw[r0:r1, c:].zero_()
        if need_b:
            gb = grad.sum(0)
        return gx, gw, None, gb, None


class MaskedLinear(nn.Linear):
    """``nn.Linear`` whose weight is multiplied by a fixed 0/1 mask ``[out, in]``.

    With degree-sorted units the mask is block lower-triangular. On the CPU the product skips
    the all-zero blocks (each of ``SKIP_BLOCKS`` row blocks reads only the input prefix it can
    see: about 56 % of the dense multiply-adds) where that measured faster: without autograd
    from ``MIN_SKIP_WEIGHTS_NO_GRAD`` weights on, with autograd (then also in both backward
    products) from ``MIN_SKIP_ROWS`` rows and ``MIN_SKIP_WEIGHTS`` weights on. Otherwise, on a
    GPU and for unsorted degrees it is one dense product.
    """

    def __init__(self, in_degrees: Tensor, out_degrees: Tensor, strict: bool) -> None:
        super().__init__(len(in_degrees), len(out_degrees))
        if strict:
            mask = out_degrees[:, None] > in_degrees[None, :]
        else:
            mask = out_degrees[:, None] >= in_degrees[None, :]
        self.register_buffer("mask", mask.to(self.weight.dtype))
        self.register_buffer("in_degrees", in_degrees.clone())
        self.register_buffer("out_degrees", out_degrees.clone())
        self.blocks = prefix_blocks(in_degrees, out_degrees, strict)

    def forward(self, x: Tensor) -> Tensor:
        if len(self.blocks) >= 2 and x.device.type == "cpu" and x.dim() == 2:
            weights = self.weight.numel()
            if not torch.is_grad_enabled():
                if weights >= MIN_SKIP_WEIGHTS_NO_GRAD:
                    return _blocked_linear(x, self.weight, self.mask, self.bias, self.blocks)[0]
            elif x.shape[0] >= MIN_SKIP_ROWS and weights >= MIN_SKIP_WEIGHTS:
                return _BlockedMaskedLinear.apply(x, self.weight, self.mask, self.bias,
                                                  self.blocks)
        return linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Autoregressive conditioner ``x [N, D] (+ context [N, C]) -> params [N, D, P]``.

    ``params[:, i]`` depends only on ``x[:, :i]`` (and the context).

    Args:
        features: D.
        params_per_dim: P, e.g. 2 for affine, 3K-1 for an RQ spline.
        hidden: widths of the hidden layers; with ``residual=True`` all must be equal and
            every entry after the first adds a residual block of two masked layers
            (pre-activation ResMADE).
        context: C, added to the first hidden layer through an unmasked linear map.
        dropout: dropout probability on hidden activations.
        zero_init: zero the output layer, so that the conditioner outputs 0 (identity flow).
    """

    def __init__(self, features: int, params_per_dim: int, hidden: list[int],
                 context: int = 0, residual: bool = False, dropout: float = 0.0,
                 activation: str = "relu", zero_init: bool = True) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("MADE needs at least one hidden layer")
        if residual and len(set(hidden)) != 1:
            raise ValueError(f"residual MADE needs equal hidden widths, got {hidden}")
        self.features = features
        self.params_per_dim = params_per_dim
        self.residual = residual
        in_deg = torch.arange(1, features + 1)
        degrees = [hidden_degrees(h, features) for h in hidden]
        self.input_layer = MaskedLinear(in_deg, degrees[0], strict=False)
        self.context_layer = Linear(context, hidden[0]) if context > 0 else None
        if residual:  # one residual block of two masked layers per further entry of `hidden`
            pairs = [(degrees[0], degrees[0])] * (2 * (len(hidden) - 1))
        else:
            pairs = [(degrees[i], degrees[i + 1]) for i in range(len(hidden) - 1)]
        self.hidden_layers = nn.ModuleList(
            MaskedLinear(d_in, d_out, strict=False) for d_in, d_out in pairs)
        out_deg = torch.arange(1, features + 1).repeat_interleave(params_per_dim)
        self.output_layer = MaskedLinear(degrees[-1], out_deg, strict=True)
        self.activation = make_activation(activation)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if zero_init:
            nn.init.zeros_(self.output_layer.weight)
            nn.init.zeros_(self.output_layer.bias)
        if residual:
            for second in self.hidden_layers[1::2]:
                nn.init.uniform_(second.weight, -1e-3, 1e-3)

    def hidden_state(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Last hidden layer after its activation (and dropout), ``[N, H]``."""
        h = self.input_layer(x)
        if self.context_layer is not None:
            h = h + self.context_layer(context)
        if self.residual:
            for first, second in zip(self.hidden_layers[0::2], self.hidden_layers[1::2]):
                r = first(self.activation(h))
                r = second(self.dropout(activate_fresh(self.activation, r)))
                h = h + r
            return self.dropout(activate_fresh(self.activation, h))
        h = self.dropout(activate_fresh(self.activation, h))
        for layer in self.hidden_layers:
            h = self.dropout(activate_fresh(self.activation, layer(h)))
        return h

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``x [N, D] -> params [N, D, P]``."""
        out = self.output_layer(self.hidden_state(x, context))
        return out.view(x.shape[0], self.features, self.params_per_dim)
