"""The signal-injection scan: how a method's sensitivity falls with the amount of signal.

The papers' central figure (CATHODE arXiv:2109.00546, reference/anomaly.md §2.5): for each
injected signal count (``data.n_sig``, e.g. 3000 … 300, so S/B in the SR from ~2 % down to
~0.2 %) and several seeds, every method scores the SR data on its own (data-only mode) and the
file's labels give its max SIC; the figure shows the median over seeds and the 16–84 % band
against S/B. The significance after the cut is max SIC × S/√B.

:func:`scan_table` turns per-run records into that table; the driver that makes the runs is
``benchmarks/anomaly_scan.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from flowctl.anomaly.summary import quantile_summary

__all__ = ["RECORD_KEYS", "scan_table"]

#: Numbers of one run that the table summarises over seeds.
RECORD_KEYS = ("max_sic", "auc", "gain_at_fpr0.01", "gain_at_fpr0.001", "s_over_b",
               "s_over_sqrt_b", "significance_after_cut", "sb_chi2_ndf_at_fpr0.01",
               "sb_chi2_ndf_at_fpr0.001")


def scan_table(records: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per method, one row per injection (``n_sig`` descending): ``{"n_sig", "seeds",
    KEY: {"median", "q16", "q84", "n"} for KEY in RECORD_KEYS}``.

    ``records`` hold ``method``, ``n_sig``, ``seed`` and the numbers of one run (``max_sic``,
    ``auc``, ``gain_at_fpr…``, ``s_over_b``, ``s_over_sqrt_b``); ``significance_after_cut``
    is added as ``max_sic · s_over_sqrt_b`` where missing. ``None`` values (e.g. a max SIC
    that no point above the FPR floor gave) are left out of the quantiles and of ``n``."""
    groups: dict[str, dict[int, list[Mapping[str, Any]]]] = {}
    for r in records:
        groups.setdefault(str(r["method"]), {}).setdefault(int(r["n_sig"]), []).append(r)
    out: dict[str, list[dict[str, Any]]] = {}
    for method, by_n in groups.items():
        rows = []
        for n_sig in sorted(by_n, reverse=True):
            rs = by_n[n_sig]
            row: dict[str, Any] = {"n_sig": n_sig, "seeds": sorted(r.get("seed") for r in rs)}
            for key in RECORD_KEYS:
                vals = [_value(r, key) for r in rs]
                row[key] = quantile_summary([np.nan if v is None else v for v in vals])
            rows.append(row)
        out[method] = rows
    return out


def _value(r: Mapping[str, Any], key: str) -> float | None:
    if key == "significance_after_cut" and key not in r:
        a, b = r.get("max_sic"), r.get("s_over_sqrt_b")
        return None if a is None or b is None else float(a) * float(b)
    v = r.get(key)
    return None if v is None else float(v)
