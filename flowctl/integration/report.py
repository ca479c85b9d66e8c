"""What ``flowctl integrate`` prints and writes besides metrics.json: the side-by-side table
of methods, their rows, and the training history (metrics.jsonl)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flowctl.atomic import write_text
from flowctl.metrics.integration import pull

__all__ = ["fmt", "method_row", "results_table", "write_history"]


def fmt(v: Any, spec: str = ".6g") -> str:
    """``v`` formatted with ``spec``; ``-`` for None, ``nan``/``inf`` as such."""
    if v is None:
        return "-"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return format(v, spec)


def method_row(name: str, est: dict[str, Any], exact: float | None, exact_err: float
               ) -> dict[str, Any]:
    """A copy of the estimate dict ``est`` with ``method`` and ``pull`` (None without an
    exact value)."""
    row = dict(est)
    row["method"] = name
    row["pull"] = pull(row["integral"], row["error"], exact, exact_err)
    return row


def results_table(rows: Sequence[dict[str, Any]], units: str) -> str:
    """One line per method: integral, error, pull, rel. std per point, ESS/N, unweighting
    efficiency, calls, reliable; the integral's units below."""
    head = (f"{'method':<10} {'integral':>14} {'error':>10} {'pull':>7} {'rel.std/pt':>10} "
            f"{'ESS/N':>7} {'unw.eff':>8} {'calls':>9} {'reliable':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        unw = r.get("unweighting") or {}
        eff = unw.get("efficiency")
        rel = r.get("reliable")
        lines.append(
            f"{r['method']:<10} {fmt(r['integral'], '.8g'):>14} {fmt(r['error'], '.3g'):>10} "
            f"{fmt(r.get('pull'), '+.2f'):>7} {fmt(r.get('rel_std'), '.4g'):>10} "
            f"{fmt(r.get('ess_fraction'), '.3f'):>7} "
            f"{(f'{100 * eff:.2f}%' if eff is not None else '-'):>8} {r.get('calls', 0):>9} "
            f"{('-' if rel is None else ('yes' if rel else 'NO')):>8}")
    if units:
        lines.append(f"(integral in {units})")
    return "\n".join(lines)


def write_history(path: Path, history: Sequence[dict[str, Any]]) -> Path:
    """The training history, one JSON record per online step (NaN as null), written
    atomically to ``path``."""
    return write_text(path, "".join(
        json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v)
                    for k, v in rec.items()}) + "\n" for rec in history))
