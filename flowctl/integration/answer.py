"""flowctl's answer after training: the fresh estimate, the training batches joined to it,
the peak census, the reliability checks and the unweighting efficiency, as one dict.

:func:`flowctl_answer` is what ``flowctl integrate`` reports in its ``flowctl`` row and
``metrics.json``; the benchmark builds the same from the same pieces. :func:`iid_answer` is
the re-estimate of ``flowctl evaluate`` (i.i.d. points of a saved sampler). The integrand ``f``
is usually :class:`~.sampling.Guarded`, so that non-finite values are counted run-wide.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from flowctl.integration.combine import combine
from flowctl.integration.errors import NonFiniteError
from flowctl.integration.peers import census, diagnosis
from flowctl.integration.sampler import TrainReport
from flowctl.integration.sampling import flow_weights
from flowctl.integration.stratified import fresh_estimate
from flowctl.metrics.integration import estimate as weights_estimate
from flowctl.metrics.integration import pull, unweighting_efficiency

__all__ = ["finite_or_fail", "flowctl_answer", "iid_answer"]


def finite_or_fail(name: str, est: dict[str, Any]) -> None:
    """Raise :class:`NonFiniteError` when ``est``'s integral or error is not finite."""
    for key in ("integral", "error"):
        v = est.get(key)
        if v is None or not math.isfinite(v):
            raise NonFiniteError(f"{name}: the {key} is {v} (non-finite weights); no result "
                                 "is reported")


def flowctl_answer(report: TrainReport, f: Callable[[Tensor], Tensor], ig: Any, n: int,
                   estimate: dict[str, Any], rel: dict[str, Any], unweight: dict[str, Any],
                   *, seed: int = 0, extra: list[str] | None = None
                   ) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """The answer of the trained ``report.sampler`` from ``n`` fresh points.

    ``estimate``: the ``estimate`` config section (``stratify``, ``batch``,
    ``combine_training``, ``combine_from``); ``rel``: the ``reliability`` section;
    ``unweight``: the ``unweight`` section; ``extra``: reasons that make the estimate
    unreliable whatever its weights say (e.g. non-finite values). Returns the dict (integral
    and error: the fresh estimate, joined with the late training batches when
    ``combine_training`` is on and they agree; ``fresh_integral``, ``fresh_error`` and
    ``rel_std`` always describe the fresh points alone), the weights [n] and the points
    [n, D].
    """
    sampler: nn.Module = report.sampler
    est, w, x = fresh_estimate(sampler, f, n, stratify=bool(estimate.get("stratify", True)),
                               seed=seed, batch=int(estimate.get("batch", 50000)))
    finite_or_fail("flowctl", est)
    est["fresh_integral"], est["fresh_error"] = est["integral"], est["error"]
    if estimate.get("combine_training"):
        if report.channels > 1:
            est["combined"] = {"used": False, "reason": "multi-channel sampler: its "
                               "channels' batches estimate their own parts"}
        else:
            c = combine(est["integral"], est["error"], report.history,
                        start=float(estimate.get("combine_from", 0.5)))
            est["integral"], est["error"] = c.integral, c.error
            est["combined"] = c.as_dict()
    reasons = list(extra or [])
    if getattr(ig, "modes", None) and x is not None:
        est["modes"] = census(ig, x, w)
        if not est["modes"]["all_found"]:
            missed = [i + 1 for i, v in enumerate(est["modes"]["found"]) if not v]
            reasons.append(f"missed peak(s) {missed}")
    est.update(diagnosis(w, rel, reasons))
    est["unweighting"] = unweighting_efficiency(w, int(unweight["replicas"]),
                                                unweight["replica_size"], seed=seed).as_dict()
    est["calls_train"] = report.calls
    est["calls_grid"] = report.grid_calls
    est["calls_estimate"] = n
    est["calls"] = report.calls + n
    est["channels"] = report.channels
    est["channel_alpha"] = report.channel_alpha
    return est, w, x


def iid_answer(sampler: nn.Module, f: Callable[[Tensor], Tensor], ig: Any, n: int,
               rel: dict[str, Any], unweight: dict[str, Any], *, seed: int = 0,
               extra: list[str] | None = None
               ) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Re-estimate from ``n`` i.i.d. fresh points of a trained ``sampler``: a dict of the
    estimate's fields (integral, error, rel. std per point, ESS, ...), ``pull`` (None
    without an exact value), ``unweighting`` and the reliability checks (``summary``: their
    one line), the weights [n] and the points [n, D]."""
    torch.manual_seed(seed + 5)
    w, x = flow_weights(sampler, f, n, keep_x=True)
    assert x is not None
    est = weights_estimate(w)
    out = {**est.as_dict(),
           "pull": pull(est.integral, est.error, ig.exact, ig.exact_error),
           "unweighting": unweighting_efficiency(w, int(unweight["replicas"]),
                                                 unweight["replica_size"],
                                                 seed=seed).as_dict()}
    out.update(diagnosis(w, rel, list(extra or [])))
    return out, w, x
