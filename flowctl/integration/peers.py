"""The peers ``flowctl integrate`` runs beside its own estimate, with the same diagnostics.

:func:`plain_peer` (plain Monte Carlo) and :func:`vegas_peer` (VEGAS, optional extra) each
return a dict of the estimate (integral, error, rel. std per point, ...), its reliability
(``reliable``, ``reason``) and unweighting statistics, ready for a results table;
:func:`census` says which peaks of a multi-peak integrand a sampler's points found;
:func:`reference_sample` gives the weighted reference points that ``evaluate`` plots
against.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from torch import Tensor

from flowctl.integration.diagnostics import diagnose
from flowctl.integration.sampling import plain_mc
from flowctl.integration.vegas import run_vegas, vegas_available
from flowctl.metrics.integration import estimate, mode_census, unweighting_efficiency

__all__ = ["census", "diagnosis", "plain_peer", "reference_sample", "vegas_peer"]


def census(ig: Any, x: np.ndarray, w: np.ndarray) -> dict[str, Any]:
    """Mode census of points x [N, >= D] with weights w [N] for an integrand with
    ``modes`` and ``mode_width`` (the camel): found, core shares and a one-line summary."""
    c = mode_census(x[:, :ig.dim], w, ig.modes, ig.mode_width)
    return {**c.as_dict(), "summary": c.summary()}


def diagnosis(w: np.ndarray, rel: dict[str, Any], extra: list[str]) -> dict[str, Any]:
    """:func:`~.diagnostics.diagnose` with the ``reliability`` section ``rel``, as a dict
    with its one-line ``summary``."""
    d = diagnose(w, k_max=float(rel["k_max"]),
                 min_tail_share=float(rel.get("min_tail_share", 0.5)),
                 min_ess=float(rel["min_ess"]),
                 max_share=float(rel["max_share"]),
                 max_error_of_error=float(rel["max_error_of_error"]),
                 subbatches=int(rel["subbatches"]), extra=extra)
    return {**d.as_dict(), "summary": d.summary()}


def plain_peer(f: Callable[[Tensor], Tensor], dim: int, calls: int, seed: int,
               rel: dict[str, Any], unweight: dict[str, Any]) -> dict[str, Any]:
    """Plain MC with ``calls`` uniform points: estimate, diagnostics, unweighting."""
    t0 = time.perf_counter()
    w = plain_mc(f, dim, calls, seed)
    e = estimate(w).as_dict()
    e.update(diagnosis(w, rel, []))
    e["unweighting"] = unweighting_efficiency(w, int(unweight["replicas"]),
                                              unweight["replica_size"], seed=seed).as_dict()
    e["wall_s"] = time.perf_counter() - t0
    return e


def vegas_peer(f: Callable[[Tensor], Tensor], dim: int, calls: int, seed: int,
               peers: dict[str, Any], unweight: dict[str, Any], ig: Any = None
               ) -> dict[str, Any]:
    """VEGAS with ``calls`` calls (``peers``: iterations, adaptation iterations, extra
    unweighting calls of its final map). Flagged unreliable when its iterations disagree
    (Q < 0.05) or, for an integrand with ``modes``, its map misses a peak."""
    v = run_vegas(f, dim, calls, int(peers["vegas_iterations"]), int(peers["vegas_adapt"]),
                  seed, int(peers.get("vegas_unweight_calls") or 0))
    wv = v.pop("weights", None)
    xv = v.pop("points", None)
    reasons = []
    if v.get("Q") is not None and v["Q"] < 0.05:
        reasons.append(f"its iterations disagree (Q = {v['Q']:.2g} < 0.05)")
    if wv is not None:
        if ig is not None and getattr(ig, "modes", None) and xv is not None:
            v["modes"] = census(ig, xv, wv)
            if not v["modes"]["all_found"]:
                reasons.append("missed peak(s)")
        v["unweighting"] = unweighting_efficiency(
            wv, int(unweight["replicas"]), unweight["replica_size"], seed=seed).as_dict()
        v["unweighting"]["extra_calls"] = len(wv)
        v["ess_fraction"] = estimate(wv).ess_fraction
        mean = float(np.mean(wv))
        v["rel_std_map"] = float(np.std(wv) / abs(mean)) if mean else None
    v["reliable"] = not reasons
    v["reason"] = "; ".join(reasons) or None
    return v


def reference_sample(f: Callable[[Tensor], Tensor], dim: int, n: int, peers: dict[str, Any],
                     seed: int) -> tuple[str, np.ndarray, np.ndarray]:
    """Weighted reference points for plots: (name, weights [n'], points [n', dim]) from
    VEGAS's final map (``n`` calls and ``n`` extra points) when ``peers.vegas`` is on and
    vegas is installed, else plain MC (``n`` uniform points)."""
    if peers.get("vegas") and vegas_available():
        v = run_vegas(f, dim, n, int(peers["vegas_iterations"]), int(peers["vegas_adapt"]),
                      seed, unweight_calls=n)
        return "VEGAS", v["weights"], v["points"]
    w, x = plain_mc(f, dim, n, seed, keep_x=True)
    return "plain MC", w, x
