"""The training batches as part of the answer (VEGAS's weighted average of iterations).

Every online training step draws ``batch`` fresh points from the current sampler and
evaluates f on them; their mean of f/q is an unbiased estimate I_j of the integral with an
error s_j from the batch's spread (the trainer's history). By default only the fresh
estimate after training makes the answer, so the training calls are spent on the sampler
alone. :func:`training_estimate` averages the batches of the last ``1 - start`` share of
the online steps, where the sampler is close to its final state, and :func:`combine` joins
that average with the fresh estimate by inverse-variance weights.

Each batch's weight is 1/s_{j-1}^2, the variance of the batch *before* it: the weight is
fixed before the batch is drawn, so a batch whose points happen to lie low (and, for
positive skewed weights, have a small spread) does not get a larger weight. VEGAS weights
iteration j by its own 1/s_j^2; its documentation calls the resulting bias negligible unless
there are very many iterations (it falls like 1 / points per iteration), and here there are
tens of batches of ~1000 points. The remaining bias is second order (later weights depend
on earlier batches through the sampler's training). The batches'
errors come from their own spread; a tail that a batch did not reach is not in its error,
so the window is checked first: its batches must agree with each other (chi^2/dof of their
spread about the average, Q >= ``q_min``, as VEGAS's Q) and the window's average with the
fresh estimate (within 3 combined errors). Otherwise the fresh estimate alone is the answer
and the reason is reported. The reliability checks (:mod:`.diagnostics`) read the fresh
estimate's weights only.

Only a single sampler's history is combined (a flow, or a flow on a grid); a multi-channel
mixture trains each channel on its own share f a_c, whose batches estimate that channel's
part only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Combined", "TrainingEstimate", "combine", "training_estimate"]


@dataclass
class TrainingEstimate:
    """The weighted average of training batches: integral, error, the batches used, their
    points, chi^2 per degree of freedom about the average and its Q (p-value)."""

    integral: float
    error: float
    batches: int
    calls: int
    chi2_dof: float
    q: float


def training_estimate(history: Sequence[dict[str, Any]], start: float = 0.5
                      ) -> TrainingEstimate | None:
    """Average of the online batches after the first ``start`` share of the steps (history
    records with ``estimate``, ``error`` and ``calls``), each weighted by the inverse
    variance of the batch before it; None when fewer than 2 usable batches remain."""
    from scipy.stats import chi2

    if not 0 <= start < 1:
        raise ValueError(f"start must be in [0, 1), got {start}")
    recs = list(history)
    first = max(1, math.ceil(start * len(recs)))
    num = den = var = 0.0
    used: list[tuple[float, float]] = []
    calls = 0
    for prev, rec in zip(recs[first - 1:], recs[first:]):
        i, s, s_prev = rec.get("estimate"), rec.get("error"), prev.get("error")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (i, s, s_prev)):
            continue
        if s <= 0 or s_prev <= 0:
            continue
        wt = 1.0 / s_prev**2
        num += wt * i
        den += wt
        var += wt * wt * s * s
        used.append((float(i), float(s)))
        calls += int(rec["calls"]) - int(prev["calls"])
    if len(used) < 2 or den <= 0:
        return None
    mean = num / den
    c2 = sum((i - mean) ** 2 / s**2 for i, s in used)
    dof = len(used) - 1
    return TrainingEstimate(mean, math.sqrt(var) / den, len(used), calls, c2 / dof,
                            float(chi2.sf(c2, dof)))


@dataclass
class Combined:
    """The answer: ``integral`` ± ``error`` (the combination, or the fresh estimate alone
    when ``used`` is False, with ``reason``); ``weight_fresh``: the fresh estimate's share
    of the inverse-variance weights; ``training``: the window's average."""

    integral: float
    error: float
    used: bool
    reason: str | None
    weight_fresh: float
    training: TrainingEstimate | None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in d.items()}


def combine(integral: float, error: float, history: Sequence[dict[str, Any]], *,
            start: float = 0.5, q_min: float = 0.05) -> Combined:
    """Join the fresh estimate ``integral`` ± ``error`` with :func:`training_estimate` of
    ``history`` (inverse-variance weights), when the window's batches agree with each other
    (Q >= ``q_min``) and with the fresh estimate (within 3 combined errors)."""
    t = training_estimate(history, start)
    if t is None:
        return Combined(integral, error, False, "fewer than 2 training batches to combine",
                        1.0, None)
    if not (math.isfinite(error) and error > 0 and t.error > 0):
        return Combined(integral, error, False, "an error is zero or not finite", 1.0, t)
    if t.q < q_min:
        return Combined(integral, error, False, f"the training batches disagree (chi2/dof "
                        f"{t.chi2_dof:.2f}, Q {t.q:.2g} < {q_min:g})", 1.0, t)
    gap = abs(t.integral - integral) / math.hypot(t.error, error)
    if gap > 3:
        return Combined(integral, error, False, f"the training average is {gap:.1f} "
                        "errors from the fresh estimate", 1.0, t)
    w0, w1 = 1.0 / error**2, 1.0 / t.error**2
    return Combined((w0 * integral + w1 * t.integral) / (w0 + w1), 1.0 / math.sqrt(w0 + w1),
                    True, None, w0 / (w0 + w1), t)
