"""Learning-rate schedules as pure functions of the optimizer step (exact on resume).

``lr_at(step)`` is the learning rate used for optimizer step ``step`` (0-based), before the
trainer's ``lr_scale`` (halved after each non-finite restore) is applied.

- ``constant``: ``lr``.
- ``cosine``: ``min_lr + (lr - min_lr) * (1 + cos(pi * t)) / 2`` with
  ``t = (step - warmup) / (total - warmup)`` clamped to ``[0, 1]``.
- ``step``: ``max(min_lr, lr * gamma ** #{m in milestones : m <= step})``.
- ``onecycle``: cosine ramp from ``lr / 25`` up to ``lr`` over the first 30 % of ``total``,
  then cosine anneal down to ``min_lr`` (Smith & Topin, arXiv:1708.07120); momentum is not
  cycled.

``constant``, ``cosine`` and ``step`` start with a linear warm-up
``lr * (step + 1) / warmup_steps`` for ``step < warmup_steps``; ``onecycle`` has its own ramp.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

ONECYCLE_PCT = 0.3
ONECYCLE_DIV = 25.0


def _cos_interp(start: float, end: float, t: float) -> float:
    t = min(max(t, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))


class LRSchedule:
    """Learning rate as a function of the optimizer step; see the module docstring."""

    def __init__(
        self,
        kind: str,
        lr: float,
        total_steps: int,
        *,
        warmup_steps: int = 0,
        min_lr: float = 0.0,
        milestones: Sequence[int] = (),
        gamma: float = 0.1,
    ) -> None:
        if kind not in ("constant", "cosine", "onecycle", "step"):
            raise ValueError(f"unknown schedule {kind!r}")
        self.kind = kind
        self.lr = float(lr)
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = int(warmup_steps)
        self.min_lr = float(min_lr)
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)

    def lr_at(self, step: int) -> float:
        """Learning rate for the 0-based optimizer step ``step``."""
        if self.kind == "onecycle":
            peak = max(1, round(ONECYCLE_PCT * self.total_steps))
            if step < peak:
                return _cos_interp(self.lr / ONECYCLE_DIV, self.lr, step / peak)
            return _cos_interp(self.lr, self.min_lr, (step - peak) / max(self.total_steps - peak, 1))
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return self.lr
        if self.kind == "cosine":
            span = max(self.total_steps - self.warmup_steps, 1)
            return _cos_interp(self.lr, self.min_lr, (step - self.warmup_steps) / span)
        n = bisect.bisect_right(self.milestones, step)
        return max(self.min_lr, self.lr * self.gamma**n)
