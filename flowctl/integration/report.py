"""What ``flowctl integrate`` prints and writes: the opening line, the side-by-side table of
methods and their rows, the lines under the table, the ``integrate`` record of metrics.json
and the training history (metrics.jsonl)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flowctl.atomic import write_text
from flowctl.metrics.integration import pull

__all__ = ["fmt", "header_line", "integrate_record", "method_row", "results_table",
           "summary_lines", "write_history"]


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


def header_line(ig: Any, flow: dict[str, Any], n_params: int, tr: dict[str, Any],
                n_channels: int, n_est: int) -> str:
    """The line ``integrate`` opens with: integrand, D, exact value, flow size, grid and
    channels, loss and the calls."""
    ex = f" (exact {ig.exact:.10g})" if ig.exact is not None else ""
    extras = []
    if tr.get("grid"):
        extras.append(f"VEGAS grid ({tr['grid_bins']} bins) under the flow")
    if n_channels > 1:
        extras.append(f"{n_channels} channels (one per peak)")
    return (f"integrate: {ig.name} in D={ig.dim}{ex}; flow {flow['transforms']} "
            f"coupling RQS layers, {n_params} parameters"
            + (f", {', '.join(extras)}" if extras else "")
            + f"; loss {tr['loss']}, {tr['calls']} training + {n_est} estimate calls"
            + (" (1-D: embedded in 2-D with a flat dummy axis)" if ig.dim == 1 else ""))


_ANSWER_KEYS = ("integral", "error", "rel_std", "rel_std_iid", "stratified", "ess",
                "ess_fraction", "reliable", "reason", "pareto_k", "tail_variance_share",
                "max_weight_share", "error_of_error", "fresh_integral", "fresh_error")


def integrate_record(ig: Any, loss: str, report: Any, train_nonfinite: int,
                     nonfinite: dict[str, Any], est: dict[str, Any],
                     rows: Sequence[dict[str, Any]], vegas_note: str | None
                     ) -> dict[str, Any]:
    """The ``integrate`` record of metrics.json: the integrand, the training (``report``: a
    :class:`~.sampler.TrainReport`), the non-finite counts, every method's row, and
    flowctl's answer ``est`` (:func:`~.answer.flowctl_answer`) at the top level."""
    out: dict[str, Any] = {
        "command": "integrate", "integrand": ig.name, "dim": ig.dim, "exact": ig.exact,
        "exact_error": ig.exact_error, "units": ig.units, "loss": loss,
        "calls_total": est["calls"],
        "train": {"calls": report.calls, "grid_calls": report.grid_calls,
                  "steps": report.steps, "online_steps": report.online_steps,
                  "channels": report.channels, "nonfinite_losses": report.nonfinite_losses,
                  "nonfinite_values": train_nonfinite, "wall_s": round(report.wall_s, 3),
                  "resumed": report.resumed},
        "nonfinite": nonfinite,
        "methods": {r["method"]: r for r in rows},
    }
    out.update({k: est[k] for k in _ANSWER_KEYS})
    if "combined" in est:
        out["combined"] = est["combined"]
    out["pull"] = rows[0]["pull"]
    out["unweighting_efficiency"] = est["unweighting"]["efficiency"]
    if vegas_note:
        out["vegas_note"] = vegas_note
    return out


def summary_lines(rows: Sequence[dict[str, Any]], est: dict[str, Any],
                  nonfinite_losses: int, vegas_note: str | None, vegas_extra_points: bool
                  ) -> list[str]:
    """The lines under the table: each method's peak census, the reliability line, whether
    the training batches were joined, skipped non-finite losses, the VEGAS note."""
    out = [f"{r['method']}: {r['modes']['summary']}" for r in rows if r.get("modes")]
    out.append(est["summary"])
    comb = est.get("combined")
    if comb and comb.get("used"):
        t = comb["training"]
        out.append(f"flowctl: {t['batches']} late training batches ({t['calls']} calls) "
                   f"joined to the fresh estimate: error {est['fresh_error']:.3g} -> "
                   f"{est['error']:.3g}")
    elif comb:
        out.append(f"flowctl: fresh estimate alone ({comb['reason']})")
    if nonfinite_losses:
        out.append(f"flowctl: {nonfinite_losses} training steps had a non-finite loss "
                   "(skipped)")
    if vegas_note:
        out.append(vegas_note)
    if vegas_extra_points:
        out.append("flowctl: fresh-sample estimate from points independent of training; "
                   "VEGAS unweighting from extra points of its final map")
    return out
