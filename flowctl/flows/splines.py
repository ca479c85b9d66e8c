r"""Monotonic rational-quadratic splines (Durkan et al. 2019, arXiv:1906.04032).

A spline with K bins on ``[left, right]`` (x) onto ``[bottom, top]`` (y) is given per element by
K bin widths, K bin heights and K+1 knot derivatives. Inside bin k, with
``θ = (x - x_k)/w_k`` and ``s_k = h_k/w_k``,

.. math::
    y = y_k + \frac{h_k [s_k θ^2 + d_k θ(1-θ)]}{s_k + (d_k + d_{k+1} - 2 s_k) θ(1-θ)}.

Numerics (reference/flow-libraries.md §2.4): floors on widths, heights and derivatives; the
end knots are pinned exactly; the bin index is a compare-sum over the interior knots, so it is
always in ``[0, K-1]``; elements outside the interval are computed on safe dummy values and
replaced by the identity with ``torch.where`` (static shapes, no boolean indexing, no asserts);
the inverse uses the cancellation-free root chosen by the sign of ``b``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

MIN_BIN_WIDTH = 1e-3
MIN_BIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3

Bounds = tuple[float, float, float, float]  # left, right, bottom, top

#: Below this many elements, without autograd, the per-row reference operations are cheaper
#: than the knot-major table's extra copies and fills (~1000 on a CPU thread, measured:
#: 256 elements 350 vs 380 us, 4096 elements 960 vs 790 us per call).
KNOT_MAJOR_MIN_ELEMENTS = 1024


def _knots(logits: Tensor, low: float, high: float, min_size: float) -> Tensor:
    """Logits ``[..., K]`` -> knot positions ``[..., K+1]``, the ends pinned at low and high."""
    k = logits.shape[-1]
    # softmax written out: PyTorch's CPU softmax over a last dimension of ~8 is 2-3x slower
    expo = torch.exp(logits - logits.detach().amax(-1, keepdim=True))
    frac = expo / expo.sum(-1, keepdim=True)
    frac = min_size + (1.0 - min_size * k) * frac
    inner = low + (high - low) * torch.cumsum(frac[..., :-1], dim=-1)
    ends = inner[..., :1]
    return torch.cat([torch.full_like(ends, low), inner, torch.full_like(ends, high)], dim=-1)


def derivative_offset(min_derivative: float = MIN_DERIVATIVE) -> float:
    """Offset ``c`` such that ``min_d + softplus(0 + c) == 1`` (identity at zero logits)."""
    return math.log(math.expm1(1.0 - min_derivative))


def knot_derivatives(logits: Tensor, min_derivative: float = MIN_DERIVATIVE) -> Tensor:
    """Unconstrained logits -> derivatives ``> min_derivative``, equal to 1 at zero logits."""
    return min_derivative + F.softplus(logits + derivative_offset(min_derivative))


def _clamp(t: Tensor, low: float, high: float) -> Tensor:
    """Clamp round-off excursions into [low, high] while keeping the gradient of ``t``."""
    return t + (t.clamp(low, high) - t).detach()


def _bin_index(v: Tensor, knots: Tensor) -> Tensor:
    """Bin of ``v [...]`` among ``knots [..., K+1]``, clamped to ``[0, K-1]`` by construction."""
    return (v.unsqueeze(-1) >= knots[..., 1:-1]).sum(-1)


# ------------------------------------------------------------------------------ knot tables
# A spline's knots live in one table of (x, y, derivative) rows, so that both ends of an
# element's bin come out of one gather. The reference (autograd) table is ``[..., 3, K+1]``;
# the fast one, built without autograd, is knot-major ``[3, K+1, M]`` for M elements: every
# reduction over the K bins becomes K-1 operations on long contiguous rows instead of a short
# reduction per element (PyTorch's CPU reductions over a last dimension of ~8 are slow).
# The knot-major path runs on CPU tensors outside torch.compile; on a GPU and under compile the
# reference operations run (what the GPU figures were measured with; inductor fuses them).

def _padded(derivatives: Tensor, pad_ones: bool) -> Tensor:
    """The K+1 knot derivatives: ``derivatives`` itself, or the K-1 interior ones with 1 at
    both ends (``pad_ones``)."""
    if not pad_ones:
        return derivatives
    ones = torch.ones_like(derivatives[..., :1])
    return torch.cat([ones, derivatives, ones], dim=-1)


def _reference_table(width_logits: Tensor, height_logits: Tensor, derivatives: Tensor,
                     bounds: Bounds, min_sizes: tuple[float, float], pad_ones: bool) -> Tensor:
    """The knot table ``[..., 3, K+1]`` as differentiable tensor operations."""
    left, right, bottom, top = bounds
    return torch.stack([_knots(width_logits, left, right, min_sizes[0]),
                        _knots(height_logits, bottom, top, min_sizes[1]),
                        _padded(derivatives, pad_ones)], dim=-2)


def _knot_major(t: Tensor, m: int) -> Tensor:
    """``[..., W]`` -> a ``[W, M]`` view (strided: every reader copies it once)."""
    return t.reshape(m, t.shape[-1]).t()


def _fast_table(width_logits: Tensor, height_logits: Tensor, derivatives: Tensor,
                bounds: Bounds, min_sizes: tuple[float, float], pad_ones: bool
                ) -> tuple[Tensor, Tensor]:
    """Without autograd, from knot-major logits ``[K, M]`` and derivatives ``[K±1, M]``: the
    table ``[3, K+1, M]`` and the width and height softmax ``[2, K, M]``, with the values of
    :func:`_reference_table` up to round-off in the order of the sums."""
    left, right, bottom, top = bounds
    k, m = width_logits.shape
    table = width_logits.new_empty(3, k + 1, m)
    probs = width_logits.new_empty(2, k, m)
    for row, logits in ((0, width_logits), (1, height_logits)):  # softmax as in _knots
        torch.sub(logits, logits.amax(0, keepdim=True), out=probs[row])
    probs.exp_()
    probs.div_(probs.sum(1, keepdim=True))
    for row, low, high, min_size in ((0, left, right, min_sizes[0]),
                                     (1, bottom, top, min_sizes[1])):
        frac = probs[row] * (1.0 - min_size * k)
        frac.add_(min_size).cumsum_(0)
        torch.mul(frac[:k - 1], high - low, out=table[row, 1:k])
        table[row, 1:k].add_(low)
        table[row, 0] = low
        table[row, k] = high
    if pad_ones:
        table[2, 0] = 1.0
        table[2, 1:k] = derivatives
        table[2, k] = 1.0
    else:
        table[2] = derivatives
    return table, probs


def _fast_locate(v: Tensor, table: Tensor, bounds: Bounds, inverse: bool
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`_locate` for flat inputs ``v [M]`` and a knot-major table ``[3, K+1, M]``; the
    ends index is ``[3, 2, M]``, the knots come back as a ``[M, 3, 2]`` view."""
    left, right, bottom, top = bounds
    low, high, row = (bottom, top, 1) if inverse else (left, right, 0)
    inside = (v >= low) & (v <= high)
    safe = torch.where(inside, v, 0.5 * (low + high))
    k = table.shape[1] - 1
    idx = (safe >= table[row, 1:k]).sum(0)
    ends = torch.stack([idx, idx + 1]).unsqueeze(0).expand(3, 2, -1)
    return inside, safe, ends, table.gather(1, ends).permute(2, 0, 1)


# ------------------------------------------------------------------------------ evaluation

def _locate(inputs: Tensor, table: Tensor, bounds: Bounds, inverse: bool
            ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(inside, safe inputs, ends [..., 3, 2], knot [..., 3, 2])``: whether each element is
    in the interval, the input with a dummy outside it, and both ends of its bin."""
    left, right, bottom, top = bounds
    low, high, row = (bottom, top, 1) if inverse else (left, right, 0)
    inside = (inputs >= low) & (inputs <= high)
    safe = torch.where(inside, inputs, 0.5 * (low + high))
    idx = _bin_index(safe, table[..., row, :])
    ends = torch.stack([idx, idx + 1], dim=-1).unsqueeze(-2).expand(*idx.shape, 3, 2)
    return inside, safe, ends, table.gather(-1, ends)


def _bin_quantities(knot: Tensor) -> tuple[Tensor, ...]:
    """``(x_k, y_k, w_k, h_k, s_k, d_k, d_k+1)`` of the located bins."""
    x_k, y_k, d_k = knot[..., 0, 0], knot[..., 1, 0], knot[..., 2, 0]
    w_k = knot[..., 0, 1] - x_k
    h_k = knot[..., 1, 1] - y_k
    return x_k, y_k, w_k, h_k, h_k / w_k, d_k, knot[..., 2, 1]


def _log_derivative(theta: Tensor, s_k: Tensor, d_k: Tensor, d_k1: Tensor,
                    slope_sum: Tensor) -> Tensor:
    """``log dy/dx`` at ``θ`` inside a bin."""
    tt = theta * (1.0 - theta)
    denom = s_k + slope_sum * tt
    deriv_num = s_k * s_k * (d_k1 * theta * theta + 2.0 * s_k * tt + d_k * (1.0 - theta) ** 2)
    return torch.log(deriv_num) - 2.0 * torch.log(denom)


def _forward_values(safe: Tensor, knot: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """x -> y inside the located bins: ``(y, log dy/dx, θ before the clamp)``."""
    x_k, y_k, w_k, h_k, s_k, d_k, d_k1 = _bin_quantities(knot)
    slope_sum = d_k + d_k1 - 2.0 * s_k
    raw = (safe - x_k) / w_k
    theta = _clamp(raw, 0.0, 1.0)
    tt = theta * (1.0 - theta)
    out = y_k + h_k * (s_k * theta * theta + d_k * tt) / (s_k + slope_sum * tt)
    return out, _log_derivative(theta, s_k, d_k, d_k1, slope_sum), raw


def _inverse_values(safe: Tensor, knot: Tensor) -> tuple[Tensor, Tensor]:
    """y -> x inside the located bins: ``(x, log dx/dy)``."""
    x_k, y_k, w_k, h_k, s_k, d_k, d_k1 = _bin_quantities(knot)
    slope_sum = d_k + d_k1 - 2.0 * s_k
    dy = safe - y_k
    a = dy * slope_sum + h_k * (s_k - d_k)
    b = h_k * d_k - dy * slope_sum
    c = -s_k * dy
    disc = (b * b - 4.0 * a * c).clamp_min(torch.finfo(safe.dtype).tiny)
    root = torch.sqrt(disc)
    # The same root in two forms; pick the one without cancellation (a > 0 when b < 0).
    b_pos = b >= 0
    theta = torch.where(b_pos, 2.0 * c / torch.where(b_pos, -b - root, -1.0),
                        (-b + root) / torch.where(b_pos, 1.0, 2.0 * a))
    theta = _clamp(theta, 0.0, 1.0)
    return x_k + theta * w_k, -_log_derivative(theta, s_k, d_k, d_k1, slope_sum)


def _evaluate(inputs: Tensor, table: Tensor, bounds: Bounds, inverse: bool,
              knot_major: bool = False) -> tuple[Tensor, Tensor]:
    """The spline of a knot table ``[..., 3, K+1]`` (differentiable when the table is) or of a
    knot-major one ``[3, K+1, M]`` (then ``inputs`` holds the M elements in any shape)."""
    left, right, bottom, top = bounds
    v = inputs.reshape(-1) if knot_major else inputs
    inside, safe, _, knot = (_fast_locate if knot_major else _locate)(v, table, bounds, inverse)
    if inverse:
        out, ladj = _inverse_values(safe, knot)
        out = _clamp(out, left, right)
    else:
        out, ladj, _ = _forward_values(safe, knot)
        out = _clamp(out, bottom, top)
    out, ladj = torch.where(inside, out, v), torch.where(inside, ladj, 0.0)
    return out.view(inputs.shape), ladj.view(inputs.shape)


# ------------------------------------------------------------------------------ backward

def _knots_backward(grad_knots: Tensor, probs: Tensor, low: float, high: float,
                    min_size: float) -> Tensor:
    """Knot-major gradient of the logits ``[K, M]`` from that of the knots ``[K+1, M]`` (see
    :func:`_knots`; ``probs`` is the softmax of the logits; the end knots are constants)."""
    k = probs.shape[0]
    inner = grad_knots[1:k]
    # d knot_j / d frac_i = (high - low) for i < j: a sum from the right
    g_frac = probs.new_zeros(probs.shape)
    torch.sub(inner.sum(0, keepdim=True), inner.cumsum(0), out=g_frac[:k - 1])
    g_frac[:k - 1].add_(inner).mul_((high - low) * (1.0 - min_size * k))
    return probs * (g_frac - (probs * g_frac).sum(0, keepdim=True))


def _forward_backward(grad_out: Tensor, grad_ladj: Tensor, inside: Tensor, knot: Tensor,
                      raw: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients of the flat inputs ``[M]`` and of the bins' knots ``[3, 2, M]`` from those of
    ``(y, log dy/dx)``: the chain rule of :func:`_forward_values` written out, with
    ``y = y_k + h A / den``, ``A = s θ² + d_k θ(1-θ)``, ``den = s + (d_k + d_k+1 - 2 s) θ(1-θ)``
    and ``log dy/dx = 2 log s + log D - 2 log den``, ``D = d_k+1 θ² + 2 s θ(1-θ) + d_k (1-θ)²``."""
    go = torch.where(inside, grad_out, 0.0)
    gl = torch.where(inside, grad_ladj, 0.0)
    _, _, w, h, s, d0, d1 = _bin_quantities(knot)
    theta = raw.clamp(0.0, 1.0)
    one_minus = 1.0 - theta
    tt = theta * one_minus
    slope_sum = d0 + d1 - 2.0 * s
    denom = s + slope_sum * tt
    a = s * theta * theta + d0 * tt
    big_d = d1 * theta * theta + 2.0 * s * tt + d0 * one_minus * one_minus
    q = go * h / denom                   # dL/dA
    u = gl / big_d                       # dL/dD
    g_den = -(q * a + 2.0 * gl) / denom  # dL/d den, through y and through log dy/dx
    lin = 1.0 - 2.0 * theta
    g_theta = (q * (2.0 * s * theta + d0 * lin) + g_den * slope_sum * lin
               + 2.0 * u * (d1 * theta + s * lin - d0 * one_minus))
    g_s = q * theta * theta + g_den * (1.0 - 2.0 * tt) + 2.0 * u * tt + 2.0 * gl / s
    g_d0 = (q + g_den) * tt + u * one_minus * one_minus
    g_d1 = g_den * tt + u * theta * theta
    g_h = go * a / denom + g_s / w
    g_w = -(g_s * s + g_theta * raw) / w
    g_inputs = torch.where(inside, g_theta / w, grad_out)
    # x_k = xs[i], w = xs[i+1] - xs[i]; likewise y_k, h; d_k = ds[i], d_k+1 = ds[i+1]
    local = torch.stack([-g_theta / w - g_w, g_w, go - g_h, g_h, g_d0, g_d1])
    return g_inputs, local.view(3, 2, -1)


@dataclass(frozen=True)
class SplineLayout:
    """How a conditioner's ``[..., P]`` output holds a spline: K width logits, K height
    logits, then the derivative logits (K-1 interior ones with the end derivatives 1, or all
    K+1), and the interval."""

    bins: int
    bounds: Bounds
    pad_ones: bool
    min_derivative: float = MIN_DERIVATIVE
    min_sizes: tuple[float, float] = (MIN_BIN_WIDTH, MIN_BIN_HEIGHT)

    def split(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        k = self.bins
        return params[..., :k], params[..., k:2 * k], params[..., 2 * k:]


def _table_from_params(params_km: Tensor, layout: SplineLayout) -> tuple[Tensor, Tensor, Tensor]:
    """Knot-major table and softmax from knot-major parameters ``[P, M]``; also the
    derivative logits plus offset ``[K±1, M]`` (for the softplus backward)."""
    k = layout.bins
    shifted = params_km[2 * k:] + derivative_offset(layout.min_derivative)
    derivatives = F.softplus(shifted).add_(layout.min_derivative)
    table, probs = _fast_table(params_km[:k], params_km[k:2 * k], derivatives, layout.bounds,
                               layout.min_sizes, layout.pad_ones)
    return table, probs, shifted


class _ForwardSpline(torch.autograd.Function):
    """The x -> y spline of flat inputs ``[M]`` and knot-major conditioner outputs ``[P, M]``
    under autograd as one node with a hand-written, knot-major backward: the values of the
    reference up to round-off, its gradients up to round-off (tests/flows/test_spline_paths.py),
    without the autograd graph of ~70 small operations and the zero-filled gradients of every
    slice. A double backward (``create_graph``) differentiates the reference instead."""

    @staticmethod
    def forward(ctx: Any, v: Tensor, params_km: Tensor, layout: SplineLayout
                ) -> tuple[Tensor, Tensor]:
        table, probs, shifted = _table_from_params(params_km, layout)
        inside, safe, ends, knot = _fast_locate(v, table, layout.bounds, inverse=False)
        out, ladj, raw = _forward_values(safe, knot)
        out = torch.where(inside, out.clamp_(*layout.bounds[2:]), v)
        ladj = torch.where(inside, ladj, 0.0)
        ctx.layout = layout
        ctx.save_for_backward(v, params_km, inside, ends, knot, raw, probs, shifted)
        return out, ladj

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor | None, grad_ladj: Tensor | None
                 ) -> tuple[Tensor | None, ...]:
        v, params_km, inside, ends, knot, raw, probs, shifted = ctx.saved_tensors
        layout: SplineLayout = ctx.layout
        if grad_out is None:
            grad_out = torch.zeros_like(v)
        if grad_ladj is None:
            grad_ladj = torch.zeros_like(v)
        needs = ctx.needs_input_grad[:2]
        if torch.is_grad_enabled():  # double backward: differentiate the reference
            out, ladj = _reference_spline(v, *layout.split(params_km.t()), layout, False)
            wanted = [t for t, n in zip((v, params_km), needs) if n]
            got = iter(torch.autograd.grad((out, ladj), wanted, (grad_out, grad_ladj),
                                           create_graph=True, allow_unused=True))
            grads = [next(got) if n else None for n in needs]
            return (*[torch.zeros_like(t) if n and g is None else g
                      for g, t, n in zip(grads, (v, params_km), needs)], None)
        left, right, bottom, top = layout.bounds
        g_inputs, local = _forward_backward(grad_out, grad_ladj, inside, knot, raw)
        g_params = None
        if needs[1]:
            k, m = layout.bins, v.shape[0]
            table = local.new_zeros(3, k + 1, m).scatter_add_(1, ends, local)
            g_params = local.new_empty(params_km.shape)
            g_params[:k] = _knots_backward(table[0], probs[0], left, right, layout.min_sizes[0])
            g_params[k:2 * k] = _knots_backward(table[1], probs[1], bottom, top,
                                                layout.min_sizes[1])
            g_deriv = table[2, 1:k] if layout.pad_ones else table[2]
            torch.mul(g_deriv, torch.sigmoid(shifted), out=g_params[2 * k:])
        return g_inputs if needs[0] else None, g_params, None


def _reference_spline(inputs: Tensor, width_logits: Tensor, height_logits: Tensor,
                      derivative_logits: Tensor, layout: SplineLayout, inverse: bool
                      ) -> tuple[Tensor, Tensor]:
    """The spline as plain differentiable tensor operations."""
    derivatives = knot_derivatives(derivative_logits, layout.min_derivative)
    table = _reference_table(width_logits, height_logits, derivatives, layout.bounds,
                             layout.min_sizes, layout.pad_ones)
    return _evaluate(inputs, table, layout.bounds, inverse)


def _check_layout(layout: SplineLayout) -> None:
    k = layout.bins
    if layout.min_sizes[0] * k >= 1.0 or layout.min_sizes[1] * k >= 1.0:
        raise ValueError(f"minimal bin size times {k} bins must be below 1")


def spline_layout(bins: int, bound: float | None = None,
                  min_derivative: float = MIN_DERIVATIVE) -> SplineLayout:
    """The parameter layout of :func:`unconstrained_rqs` on ``[-bound, bound]`` (3K-1
    parameters per element) or, with ``bound=None``, of :func:`unit_rqs` (3K+1)."""
    if bound is None:
        layout = SplineLayout(bins, (0.0, 1.0, 0.0, 1.0), pad_ones=False,
                              min_derivative=min_derivative)
    else:
        layout = SplineLayout(bins, (-bound, bound, -bound, bound), pad_ones=True,
                              min_derivative=min_derivative)
    _check_layout(layout)
    return layout


def spline_knot_major(v: Tensor, params_km: Tensor, layout: SplineLayout, inverse: bool = False
                      ) -> tuple[Tensor, Tensor]:
    """The spline of flat inputs ``v [M]`` from knot-major conditioner outputs ``[P, M]``
    (row ``j`` holds parameter ``j`` of every element, in the order of
    :func:`spline_from_params`): ``(out [M], log|d out / d in| [M])``. No layout copies:
    for conditioners that can write their output transposed (the coupling layers)."""
    expected = 3 * layout.bins + (-1 if layout.pad_ones else 1)
    if params_km.shape != (expected, v.shape[0]):
        raise ValueError(f"knot-major spline parameters of shape {tuple(params_km.shape)}: "
                         f"expected {(expected, v.shape[0])}")
    if torch.compiler.is_compiling() or v.device.type != "cpu":
        # inductor fuses the reference operations itself; GPUs are measured on them
        return _reference_spline(v, *layout.split(params_km.t()), layout, inverse)
    if not (torch.is_grad_enabled() and (v.requires_grad or params_km.requires_grad)):
        table, _, _ = _table_from_params(params_km, layout)
        return _evaluate(v, table, layout.bounds, inverse, knot_major=True)
    if not inverse:
        return _ForwardSpline.apply(v, params_km, layout)
    return _reference_spline(v, *layout.split(params_km.t()), layout, inverse)


def spline_from_params(inputs: Tensor, params: Tensor, bins: int, bound: float | None = None,
                       inverse: bool = False, min_derivative: float = MIN_DERIVATIVE
                       ) -> tuple[Tensor, Tensor]:
    """An RQ spline per element from a conditioner's raw output.

    Args:
        inputs: ``[...]`` values.
        params: ``[..., 3K-1]`` (K width logits, K height logits, K-1 interior derivative
            logits: the spline of :func:`unconstrained_rqs` on ``[-bound, bound]``) or, with
            ``bound=None``, ``[..., 3K+1]`` (all K+1 derivative logits: :func:`unit_rqs` on
            ``[0, 1]``).
        bins: K.
        inverse: map y -> x instead of x -> y.

    Returns:
        outputs ``[...]`` and ``log|d out / d in|`` ``[...]``, as those two functions (up to
        round-off). Without autograd, and x -> y under autograd, it runs knot-major (see the
        knot tables above; one transposing copy of ``params``); y -> x under autograd runs
        the reference operations.
    """
    layout = spline_layout(bins, bound, min_derivative)
    expected = 3 * bins + (1 if bound is None else -1)
    if params.shape[-1] != expected or params.shape[:-1] != inputs.shape:
        raise ValueError(f"spline parameters of shape {tuple(params.shape)} for inputs of shape "
                         f"{tuple(inputs.shape)}: expected {(*inputs.shape, expected)} "
                         f"({bins} bins)")
    grad = torch.is_grad_enabled() and (inputs.requires_grad or params.requires_grad)
    m = inputs.numel()
    if ((grad and inverse) or (not grad and m < KNOT_MAJOR_MIN_ELEMENTS)
            or torch.compiler.is_compiling() or inputs.device.type != "cpu"):
        return _reference_spline(inputs, *layout.split(params), layout, inverse)
    out, ladj = spline_knot_major(inputs.reshape(m), _knot_major(params, m).contiguous(),
                                  layout, inverse)
    return out.view(inputs.shape), ladj.view(inputs.shape)


def _spline(inputs: Tensor, width_logits: Tensor, height_logits: Tensor, derivatives: Tensor,
            layout: SplineLayout, inverse: bool) -> tuple[Tensor, Tensor]:
    """The spline from separate, already constrained parameters: knot-major without autograd
    (when the shapes line up), the reference operations otherwise."""
    _check_layout(layout)
    args = (inputs, width_logits, height_logits, derivatives)
    batch = inputs.shape
    aligned = all(t.shape[:-1] == batch for t in args[1:])
    fast = aligned and inputs.device.type == "cpu" and not torch.compiler.is_compiling()
    if fast and not (torch.is_grad_enabled() and any(t.requires_grad for t in args)):
        m = inputs.numel()
        table, _ = _fast_table(_knot_major(width_logits, m), _knot_major(height_logits, m),
                               _knot_major(derivatives, m), layout.bounds, layout.min_sizes,
                               layout.pad_ones)
        return _evaluate(inputs, table, layout.bounds, inverse, knot_major=True)
    table = _reference_table(width_logits, height_logits, derivatives, layout.bounds,
                             layout.min_sizes, layout.pad_ones)
    return _evaluate(inputs, table, layout.bounds, inverse)


def rational_quadratic_spline(
    inputs: Tensor,
    width_logits: Tensor,
    height_logits: Tensor,
    derivatives: Tensor,
    left: float,
    right: float,
    bottom: float,
    top: float,
    inverse: bool = False,
    min_bin_width: float = MIN_BIN_WIDTH,
    min_bin_height: float = MIN_BIN_HEIGHT,
) -> tuple[Tensor, Tensor]:
    """Bounded RQ spline with identity outside ``[left, right]`` (or ``[bottom, top]`` inverted).

    Args:
        inputs: ``[...]`` values.
        width_logits, height_logits: ``[..., K]`` unconstrained.
        derivatives: ``[..., K+1]`` positive knot derivatives (already constrained).
        inverse: map y -> x instead of x -> y.

    Returns:
        outputs ``[...]`` and the element-wise ``log|d out / d in|`` ``[...]``
        (zero outside the interval).
    """
    layout = SplineLayout(width_logits.shape[-1], (left, right, bottom, top), pad_ones=False,
                          min_sizes=(min_bin_width, min_bin_height))
    return _spline(inputs, width_logits, height_logits, derivatives, layout, inverse)


def unconstrained_rqs(
    inputs: Tensor,
    width_logits: Tensor,
    height_logits: Tensor,
    derivative_logits: Tensor,
    bound: float,
    inverse: bool = False,
    min_derivative: float = MIN_DERIVATIVE,
) -> tuple[Tensor, Tensor]:
    """RQ spline on ``[-bound, bound]`` with identity tails, boundary derivatives exactly 1.

    ``derivative_logits`` are the K-1 interior knots ``[..., K-1]``.
    """
    layout = SplineLayout(width_logits.shape[-1], (-bound, bound, -bound, bound), pad_ones=True)
    return _spline(inputs, width_logits, height_logits,
                   knot_derivatives(derivative_logits, min_derivative), layout, inverse)


def unit_rqs(
    inputs: Tensor,
    width_logits: Tensor,
    height_logits: Tensor,
    derivative_logits: Tensor,
    inverse: bool = False,
    min_derivative: float = MIN_DERIVATIVE,
) -> tuple[Tensor, Tensor]:
    """RQ spline mapping ``[0, 1]`` onto ``[0, 1]``; all K+1 knot derivatives learned.

    For unit-hypercube flows (neural importance sampling). Inputs outside [0, 1] pass unchanged.
    """
    layout = SplineLayout(width_logits.shape[-1], (0.0, 1.0, 0.0, 1.0), pad_ones=False)
    return _spline(inputs, width_logits, height_logits,
                   knot_derivatives(derivative_logits, min_derivative), layout, inverse)
