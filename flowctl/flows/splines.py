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

import torch
import torch.nn.functional as F
from torch import Tensor

MIN_BIN_WIDTH = 1e-3
MIN_BIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3


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
    k = width_logits.shape[-1]
    if min_bin_width * k >= 1.0 or min_bin_height * k >= 1.0:
        raise ValueError(f"minimal bin size times {k} bins must be below 1")
    xs = _knots(width_logits, left, right, min_bin_width)
    ys = _knots(height_logits, bottom, top, min_bin_height)

    if inverse:
        inside = (inputs >= bottom) & (inputs <= top)
        safe = torch.where(inside, inputs, 0.5 * (bottom + top))
        idx = _bin_index(safe, ys)
    else:
        inside = (inputs >= left) & (inputs <= right)
        safe = torch.where(inside, inputs, 0.5 * (left + right))
        idx = _bin_index(safe, xs)

    # One gather of both ends of the bin from a [..., 3, K+1] table of (x, y, d) knots.
    table = torch.stack([xs, ys, derivatives], dim=-2)
    ends = torch.stack([idx, idx + 1], dim=-1).unsqueeze(-2).expand(*idx.shape, 3, 2)
    knot = table.gather(-1, ends)
    x_k, y_k, d_k = knot[..., 0, 0], knot[..., 1, 0], knot[..., 2, 0]
    w_k = knot[..., 0, 1] - x_k
    h_k = knot[..., 1, 1] - y_k
    d_k1 = knot[..., 2, 1]
    s_k = h_k / w_k
    slope_sum = d_k + d_k1 - 2.0 * s_k

    if inverse:
        dy = safe - y_k
        a = dy * slope_sum + h_k * (s_k - d_k)
        b = h_k * d_k - dy * slope_sum
        c = -s_k * dy
        disc = (b * b - 4.0 * a * c).clamp_min(torch.finfo(inputs.dtype).tiny)
        root = torch.sqrt(disc)
        # The same root in two forms; pick the one without cancellation (a > 0 when b < 0).
        b_pos = b >= 0
        theta = torch.where(b_pos, 2.0 * c / torch.where(b_pos, -b - root, -1.0),
                            (-b + root) / torch.where(b_pos, 1.0, 2.0 * a))
        theta = _clamp(theta, 0.0, 1.0)
        out = x_k + theta * w_k
    else:
        theta = _clamp((safe - x_k) / w_k, 0.0, 1.0)
        tt = theta * (1.0 - theta)
        out = y_k + h_k * (s_k * theta * theta + d_k * tt) / (s_k + slope_sum * tt)

    tt = theta * (1.0 - theta)
    denom = s_k + slope_sum * tt
    deriv_num = s_k * s_k * (d_k1 * theta * theta + 2.0 * s_k * tt + d_k * (1.0 - theta) ** 2)
    ladj = torch.log(deriv_num) - 2.0 * torch.log(denom)
    if inverse:
        ladj = -ladj
    out = _clamp(out, left, right) if inverse else _clamp(out, bottom, top)
    out = torch.where(inside, out, inputs)
    ladj = torch.where(inside, ladj, 0.0)
    return out, ladj


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
    inner = knot_derivatives(derivative_logits, min_derivative)
    ones = torch.ones_like(inner[..., :1])
    derivatives = torch.cat([ones, inner, ones], dim=-1)
    return rational_quadratic_spline(inputs, width_logits, height_logits, derivatives,
                                     -bound, bound, -bound, bound, inverse=inverse)


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
    derivatives = knot_derivatives(derivative_logits, min_derivative)
    return rational_quadratic_spline(inputs, width_logits, height_logits, derivatives,
                                     0.0, 1.0, 0.0, 1.0, inverse=inverse)
