"""Element-wise monotone maps parametrised by a conditioner's output.

Each family maps ``x [...]`` with parameters ``params [..., P]`` to ``(y [...], ladj [...])``
(element-wise ``log|dy/dx|``) and back. All are the identity when ``params == 0``, so a
conditioner whose last layer is zeroed gives an identity flow.
"""

from __future__ import annotations

from torch import Tensor, nn

from .splines import SplineLayout, spline_from_params, spline_layout


class ElementwiseFamily(nn.Module):
    """A family of scalar bijections; ``num_params`` parameters per element."""

    num_params: int

    def knot_major_layout(self) -> SplineLayout | None:
        """The parameter layout when the family can take knot-major parameters ``[P, M]``
        (:func:`flowctl.flows.splines.spline_knot_major`), else None."""
        return None

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError


class Affine(ElementwiseFamily):
    """``y = x · exp(s) + t`` with a smoothly bounded log-scale ``s = c · tanh(raw / c)``.

    ``params[..., 0]`` is the raw log-scale, ``params[..., 1]`` the shift. The bound ``c``
    (default 5, scales in ``(e^-5, e^5)``) keeps a bad batch from overflowing ``exp``.
    """

    num_params = 2

    def __init__(self, log_scale_bound: float = 5.0) -> None:
        super().__init__()
        self.log_scale_bound = log_scale_bound

    def _scale_shift(self, params: Tensor) -> tuple[Tensor, Tensor]:
        c = self.log_scale_bound
        raw, shift = params.unbind(-1)  # one stack in backward instead of two zero-filled slices
        return c * (raw / c).tanh(), shift

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        log_scale, shift = self._scale_shift(params)
        return x * log_scale.exp() + shift, log_scale

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        log_scale, shift = self._scale_shift(params)
        return (y - shift) * (-log_scale).exp(), -log_scale

    def extra_repr(self) -> str:
        return f"log_scale_bound={self.log_scale_bound}"


class Inverted(ElementwiseFamily):
    """The inverse of ``base`` with the same parameters: ``forward`` is ``base.inverse``.

    An IAF layer built on ``Inverted(RQS(...))`` samples ``x = τ⁻¹(z; θ(z_<d))`` in one pass
    (CaloFlow's IAF student): its conditioner then has the meaning of a MAF teacher's, whose
    density pass is ``z = τ(x; θ(x_<d))``, so the teacher's weights carry over unchanged.
    """

    def __init__(self, base: ElementwiseFamily) -> None:
        super().__init__()
        self.base = base
        self.num_params = base.num_params

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return self.base.inverse(x, params)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return self.base.forward(y, params)


def soft_bound(t: Tensor, bound: float) -> Tensor:
    """``t / (1 + |t| / bound)``: the identity near 0, smoothly bounded to ``(-bound, bound)``."""
    return t / (1.0 + t.abs() * (1.0 / bound))


class _SplineParams(ElementwiseFamily):
    """Splits conditioner outputs into width, height and derivative logits, optionally bounded.

    With ``logit_bound = b`` the width and height logits are soft-bounded to ``(-b, b)`` and the
    derivative logits to ``(-2b, 2b)`` (:func:`soft_bound`; zero stays zero, so a zeroed
    conditioner is still the identity). With ``b = ln(1000) / 2 ≈ 3.45`` neighbouring bins differ
    in width or height by at most ~1000x and knot derivatives stay below ~7, which caps how
    ill-conditioned the inverse can get: on random coupling flows with perturbed conditioners the
    float64 round-trip error falls from O(1) to ~1e-8 (tests/flows/test_spline_stress.py).
    ``None`` (the default) keeps the unbounded parametrisation every shipped config and figure
    was trained and measured with.
    """

    bins: int
    logit_bound: float | None

    #: ``[-bound, bound]`` of the spline's interval, or None for ``[0, 1]``
    interval: float | None

    def _bounded(self, params: Tensor) -> Tensor:
        """The raw conditioner output ``[..., P]``, soft-bounded per column if ``logit_bound``
        is set (:func:`soft_bound` with ``b`` on the width and height logits, ``2b`` on the
        derivative logits)."""
        b = self.logit_bound
        if b is None:
            return params
        inv = params.new_full((self.num_params,), 1.0 / b)
        inv[2 * self.bins:] = 0.5 / b
        return params / (1.0 + params.abs() * inv)

    def knot_major_layout(self) -> SplineLayout | None:
        # the coupling layers' transposed hand-off skips _bounded, so only unbounded splines
        return spline_layout(self.bins, self.interval) if self.logit_bound is None else None

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return spline_from_params(x, self._bounded(params), self.bins, self.interval)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return spline_from_params(y, self._bounded(params), self.bins, self.interval,
                                  inverse=True)

    def _check_bound(self, logit_bound: float | None) -> None:
        if logit_bound is not None and not (0 < logit_bound < float("inf")):
            raise ValueError(f"logit_bound must be a positive number or null, got {logit_bound}")
        self.logit_bound = None if logit_bound is None else float(logit_bound)


class RQS(_SplineParams):
    """Rational-quadratic spline on ``[-bound, bound]`` with identity tails.

    ``3K - 1`` parameters: K width logits, K height logits, K-1 interior derivative logits.
    """

    def __init__(self, bins: int = 8, bound: float = 3.0,
                 logit_bound: float | None = None) -> None:
        super().__init__()
        if bins < 2:
            raise ValueError(f"a spline needs at least 2 bins, got {bins}")
        if not bound > 0:
            raise ValueError(f"tail_bound must be positive, got {bound}")
        self.bins = bins
        self.bound = self.interval = float(bound)
        self.num_params = 3 * bins - 1
        self._check_bound(logit_bound)

    def extra_repr(self) -> str:
        extra = f", logit_bound={self.logit_bound}" if self.logit_bound is not None else ""
        return f"bins={self.bins}, bound={self.bound}{extra}"


class UnitRQS(_SplineParams):
    """Rational-quadratic spline mapping ``[0, 1]`` onto itself (i-flow style).

    ``3K + 1`` parameters: K widths, K heights and all K+1 knot derivatives.
    """

    def __init__(self, bins: int = 8, logit_bound: float | None = None) -> None:
        super().__init__()
        if bins < 2:
            raise ValueError(f"a spline needs at least 2 bins, got {bins}")
        self.bins = bins
        self.interval = None
        self.num_params = 3 * bins + 1
        self._check_bound(logit_bound)

    def extra_repr(self) -> str:
        return f"bins={self.bins}"


def make_family(name: str, bins: int = 8, tail_bound: float = 3.0,
                domain: str = "real", logit_bound: float | None = None) -> ElementwiseFamily:
    """``transform: affine | rqs`` and ``domain: real | unit`` -> element-wise family."""
    if name == "affine":
        if domain == "unit":
            raise ValueError("domain 'unit' needs transform 'rqs' (affine maps leave [0, 1])")
        return Affine()
    if name == "rqs":
        if domain == "unit":
            return UnitRQS(bins, logit_bound)
        return RQS(bins, tail_bound, logit_bound)
    raise ValueError(f"unknown transform {name!r}; expected 'affine' or 'rqs'")
