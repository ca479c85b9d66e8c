"""Summaries over independent runs: medians with 16–84 % bands, and the headline max SIC.

CATHODE (arXiv:2109.00546, reference/anomaly.md §2.5, §5.2) reports, per method, the
**max of the median SIC curve** over ~10 independent runs: every run's ROC is put on a common
grid of TPR values, points with FPR below the floor (1.8382353e-5) are dropped, the median is
taken per TPR and its maximum read off. That is not the median of the per-run max SICs, which
:func:`summarize_runs` gives alongside (with the 16/84 % quantiles as the band).

>>> per_run = [{"cathode": anomaly_metrics(y, s)} for y, s in runs]      # doctest: +SKIP
>>> table = summarize_runs(per_run)                                      # doctest: +SKIP
>>> table["cathode"]["max_sic_of_median"] = max_sic_of_median(curves)[0]  # doctest: +SKIP
>>> print(format_table(table, ["auc", "max_sic", "max_sic_of_median"]))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from flowctl.metrics.sic import FPR_FLOOR, roc_pairs, sic_band

__all__ = ["format_table", "max_sic_of_median", "quantile_summary", "summarize_runs"]

#: Quantiles of the band (the ±1σ range of a Gaussian), as in the CATHODE figures.
Q_LO, Q_HI = 0.16, 0.84


def quantile_summary(values: Sequence[float]) -> dict[str, float]:
    """``{"median", "q16", "q84", "n"}`` of ``values`` (numpy's linear quantiles); NaNs are
    left out of the quantiles and of ``n``; ``nan`` everywhere if nothing is left. Infinite
    values (e.g. a rejection with FPR 0) are ranked last, and a quantile that falls between
    two of them is ``inf``."""
    v = np.asarray(values, np.float64).reshape(-1)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return {"median": math.nan, "q16": math.nan, "q84": math.nan, "n": 0}
    with np.errstate(invalid="ignore"):
        q = np.quantile(v, [0.5, Q_LO, Q_HI])
    if np.isnan(q).any():       # linear interpolation between two infinities
        q = np.where(np.isnan(q), np.quantile(v, [0.5, Q_LO, Q_HI], method="nearest"), q)
    return {"median": float(q[0]), "q16": float(q[1]), "q84": float(q[2]), "n": int(v.size)}


def summarize_runs(per_run_metrics: Sequence[Mapping[str, Mapping[str, Any]]]
                   ) -> dict[str, dict[str, dict[str, float]]]:
    """Median, 16 % and 84 % quantiles and count over runs, per method and metric.

    ``per_run_metrics[r][method][metric]`` is a number (e.g. one
    :func:`flowctl.metrics.sic.anomaly_metrics` dict per method and run); a method or metric
    missing from some runs is summarised over the runs that have it, and non-numeric values
    (strings, lists, booleans) are skipped. Returns
    ``{method: {metric: {"median", "q16", "q84", "n"}}}`` in first-seen order.
    """
    values: dict[str, dict[str, list[float]]] = {}
    for run in per_run_metrics:
        for method, metrics in run.items():
            slot = values.setdefault(method, {})
            for name, v in metrics.items():
                if isinstance(v, numbers.Real) and not isinstance(v, bool):
                    slot.setdefault(name, []).append(float(v))
    return {m: {k: quantile_summary(v) for k, v in ms.items()} for m, ms in values.items()}


def max_sic_of_median(curves: Sequence[tuple[np.ndarray, np.ndarray]],
                      fpr_floor: float = FPR_FLOOR, min_runs: int = 1, n_grid: int = 1000,
                      kind: str = "auto") -> tuple[float, float, float]:
    """The paper's headline number: ``(max SIC, its TPR, its FPR)`` of the **median** SIC
    curve over runs.

    ``curves`` are one pair per run, ``(labels, scores)`` or ``(fpr, tpr)``
    (:func:`flowctl.metrics.sic.roc_pairs`, ``kind``). Each run contributes on a grid of
    ``n_grid`` TPR values where its FPR is >= ``fpr_floor``; grid points with fewer than
    ``min_runs`` runs are ignored (CATHODE's figures use 5). The FPR returned is that of the
    median curve, ``(TPR / SIC)^2``. ``nan`` values if no grid point qualifies.
    """
    grid, med, _, _ = sic_band(roc_pairs(curves, kind), n_grid=n_grid, min_runs=min_runs,
                               fpr_floor=fpr_floor)
    if not np.isfinite(med).any():
        return math.nan, math.nan, math.nan
    i = int(np.nanargmax(med))
    return float(med[i]), float(grid[i]), float((grid[i] / med[i]) ** 2)


def _fmt(v: float, digits: int) -> str:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}g}"


def _cells(e: Any, digits: int) -> tuple[str, str, str, str] | None:
    """``(median, q16, q84, n)`` strings of one summary entry; ``None`` to skip it."""
    if isinstance(e, Mapping) and "median" in e:
        n = e.get("n")
        return (_fmt(float(e["median"]), digits), _fmt(float(e.get("q16", math.nan)), digits),
                _fmt(float(e.get("q84", math.nan)), digits), "" if n is None else str(n))
    if isinstance(e, tuple) and e and isinstance(e[0], numbers.Real):
        e = e[0]            # (max SIC, TPR, FPR) of max_sic_of_median: the max SIC
    if isinstance(e, numbers.Real) and not isinstance(e, bool):
        return _fmt(float(e), digits), "", "", ""
    return None


def format_table(summary: Mapping[str, Mapping[str, Any]],
                 metrics: Sequence[str] | None = None, digits: int = 4) -> str:
    """Plain-text table for the CLI, one line per method and metric:
    ``method  metric  median  q16  q84  n``.

    A :func:`summarize_runs` entry fills all columns; a plain number (e.g. the
    :func:`max_sic_of_median` value added by the caller) only the median column, and so does
    a tuple of numbers, with its first one (the max SIC of a :func:`max_sic_of_median`
    triple). Other values (lists of run ids, strings) are left out. ``metrics`` picks and
    orders the metrics (default: all, in each method's order); numbers have ``digits``
    significant digits.
    """
    rows = [["method", "metric", "median", "q16", "q84", "n"]]
    for method, ms in summary.items():
        first = True
        for k in (ms if metrics is None else [k for k in metrics if k in ms]):
            c = _cells(ms[k], digits)
            if c is None:
                continue
            rows.append([str(method) if first else "", str(k), *c])
            first = False
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows]
    lines.insert(1, "-" * max(len(ln) for ln in lines))
    return "\n".join(lines)
