r"""Monotonic neural transforms: the deep sigmoidal flow of NAF (Huang et al. 2018,
arXiv:1804.00779), as an element-wise family for ``maf``, ``iaf`` and ``coupling`` layers.

Per element, with ``H`` sigmoid units whose parameters come from the conditioner,

.. math::
    y = \sigma^{-1}\Big(\sum_{j=1}^H w_j\, \sigma(a_j x + b_j)\Big),\qquad
    a_j > 0,\ w = \mathrm{softmax}(\cdot).

``y`` is strictly increasing in ``x``, maps R onto R, and is linear in the far tails (slope
``min_j a_j``). Forward value and ``log dy/dx`` are closed forms, evaluated in log space
(``logsigmoid`` / ``logsumexp``) so that ``S = Σ w σ`` close to 0 or 1 keeps its precision:
``y = log S - log(1 - S)`` with ``1 - S = Σ w σ(-u)``.

Why the deep sigmoidal flow rather than UMNN (Wehenkel & Louppe, arXiv:1908.05164): the
sigmoidal map and its log-derivative are exact closed forms at the cost of ``3H``
exponentials per element, whereas UMNN's forward map is a Clenshaw-Curtis quadrature of a
positive integrand network (tens of network evaluations per element, and the map whose
inverse is taken is the quadrature, not the integral). Both need a root finder to invert.

Parameters (``3H`` per element): ``a = exp(c·tanh(raw_a/c))`` with ``c = 3`` (slopes in
``(e^-3, e^3)``, so a bad batch cannot overflow), ``b = raw_b + b0_j`` with fixed offsets
``b0_j`` spread over ``[-1, 1]``, ``w = softmax(raw_w)``. The offsets break the symmetry
between units: with equal parameters every unit would get the same gradient forever. So unlike
the splines, zero parameters give a near-identity map (slope between ~0.9 at 0 and 1 in the
tails), not the identity.

The inverse (:func:`monotone_inverse`) is a safeguarded Newton iteration inside a bisection
bracket, run without autograd, followed by one Newton step with autograd at the root, which
gives exact first derivatives with respect to ``y`` and the parameters (implicit function
theorem), so an IAF can be trained through it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .elementwise import ElementwiseFamily

SLOPE_BOUND = 3.0  # log-slopes of the sigmoid units soft-bounded in (-3, 3)
OFFSET_SPREAD = 1.0  # fixed bias offsets b0_j in [-spread, spread]


def sigmoidal(x: Tensor, log_a: Tensor, b: Tensor, log_w: Tensor) -> tuple[Tensor, Tensor]:
    """``x [...]``, unit parameters ``[..., H]`` -> ``(y [...], log dy/dx [...])``.

    ``log_a``: log-slopes; ``b``: biases; ``log_w``: log-weights (normalised over H).
    """
    u = log_a.exp() * x.unsqueeze(-1) + b
    ls_pos = F.logsigmoid(u)
    ls_neg = F.logsigmoid(-u)
    log_s = torch.logsumexp(log_w + ls_pos, -1)
    log_1ms = torch.logsumexp(log_w + ls_neg, -1)
    y = log_s - log_1ms
    log_dy = torch.logsumexp(log_w + log_a + ls_pos + ls_neg, -1) - log_s - log_1ms
    return y, log_dy


def monotone_inverse(fn: Callable[[Tensor], tuple[Tensor, Tensor]], y: Tensor,
                     max_iter: int = 100, tol: float | None = None) -> Tensor:
    """Solve ``fn(x)[0] = y`` element-wise for a strictly increasing map of R onto R.

    ``fn(x) -> (f(x), log f'(x))``. A bracket ``[lo, hi]`` is grown by doubling from ``±1``,
    then Newton steps are taken when they land strictly inside the bracket and bisection
    otherwise; the bracket shrinks with the sign of ``f(x) - y`` at every step. Stops when
    every step is below ``tol·(1 + |x|)`` (default ``16·eps`` of the dtype) or after
    ``max_iter`` steps. No autograd; returns ``x [...]``.
    """
    if tol is None:
        tol = 16 * torch.finfo(y.dtype).eps
    with torch.no_grad():
        lo = torch.full_like(y, -1.0)
        hi = torch.full_like(y, 1.0)
        for _ in range(2048):  # doubling reaches the largest finite float long before this
            low_bad = fn(lo)[0] > y
            high_bad = fn(hi)[0] < y
            if not bool((low_bad | high_bad).any()):
                break
            lo = torch.where(low_bad, 2 * lo, lo)
            hi = torch.where(high_bad, 2 * hi, hi)
        x = 0.5 * (lo + hi)
        for _ in range(max_iter):
            fx, log_d = fn(x)
            r = fx - y
            lo = torch.where(r < 0, x, lo)
            hi = torch.where(r > 0, x, hi)
            newton = x - r * torch.exp(-log_d)
            inside = (newton > lo) & (newton < hi)
            x_new = torch.where(inside, newton, 0.5 * (lo + hi))
            x_new = torch.where(r == 0, x, x_new)
            step = (x_new - x).abs()
            x = x_new
            if bool((step <= tol * (1 + x.abs())).all()):
                break
    return x


def polish(fn: Callable[[Tensor], tuple[Tensor, Tensor]], x_root: Tensor,
           y: Tensor) -> tuple[Tensor, Tensor]:
    """One Newton step with autograd at a root found without it.

    ``x = x* - (f(x*) - y) / f'(x*)`` with ``f'`` detached has the value of ``x*`` (up to a
    last correction) and the exact first derivatives ``dx/dy = 1/f'`` and
    ``dx/dθ = -∂f/∂θ / f'``. Returns ``(x, -log f'(x))`` (the inverse's log-derivative).
    """
    fx, log_d = fn(x_root)
    x = x_root - (fx - y) * torch.exp(-log_d.detach())
    return x, -fn(x)[1]


class Sigmoidal(ElementwiseFamily):
    """Deep sigmoidal flow element-wise map with ``sigmoids`` units (``3·sigmoids`` params).

    ``params[..., :H]`` raw log-slopes, ``[..., H:2H]`` raw biases, ``[..., 2H:]`` weight
    logits. Inverse: :func:`monotone_inverse` (see the module doc for its accuracy).
    """

    def __init__(self, sigmoids: int = 8, max_iter: int = 100) -> None:
        super().__init__()
        if sigmoids < 1:
            raise ValueError(f"naf needs at least 1 sigmoid unit, got {sigmoids}")
        self.sigmoids = sigmoids
        self.num_params = 3 * sigmoids
        self.max_iter = max_iter
        offsets = torch.linspace(OFFSET_SPREAD, -OFFSET_SPREAD, sigmoids) if sigmoids > 1 \
            else torch.zeros(1)
        self.register_buffer("offsets", offsets, persistent=False)

    def _unit_params(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = self.sigmoids
        c = SLOPE_BOUND
        log_a = c * torch.tanh(params[..., :h] / c)
        b = params[..., h:2 * h] + self.offsets.to(params.dtype)
        log_w = torch.log_softmax(params[..., 2 * h:], dim=-1)
        return log_a, b, log_w

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return sigmoidal(x, *self._unit_params(params))

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        unit = self._unit_params(params)
        detached = tuple(p.detach() for p in unit)
        x_root = monotone_inverse(lambda v: sigmoidal(v, *detached), y.detach(), self.max_iter)
        return polish(lambda v: sigmoidal(v, *unit), x_root, y)

    def extra_repr(self) -> str:
        return f"sigmoids={self.sigmoids}"
