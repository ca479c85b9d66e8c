"""Figures for resonant anomaly detection, made from arrays (matplotlib, Agg backend).

``roc_sic_figure``: CATHODE's ``performance_comparison`` figure (arXiv:2109.00546, Fig. 5;
reference/anomaly.md §2.5): background rejection 1/FPR and SIC = TPR/√FPR against the signal
efficiency TPR, each method as the median over runs with its 16–84 % band.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from flowctl.metrics.sic import FPR_FLOOR, rejection_band, roc_pairs, sic_band
from flowctl.plots.density import save

__all__ = ["roc_sic_figure", "save"]


def roc_sic_figure(curves: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]],
                   fpr_floor: float = FPR_FLOOR, n_grid: int = 1000, min_runs: int = 1,
                   kind: str = "auto", title: str | None = None) -> Figure:
    """Two panels against TPR: rejection 1/FPR (log scale, the random classifier's 1/TPR
    dashed) and SIC (random: √TPR), per method the median over runs with the 16–84 % band.

    ``curves[method]`` is a list with one pair per run, either ``(labels [N], scores [N])``
    or ``(fpr [M], tpr [M])`` (see :func:`flowctl.metrics.sic.roc_pairs` and ``kind``).
    Runs contribute where their FPR is >= ``fpr_floor``; grid points with fewer than
    ``min_runs`` runs are not drawn. The legend gives each method's max of the median SIC
    curve and the number of runs. Save with :func:`save`.
    """
    if not curves:
        raise ValueError("roc_sic_figure needs at least one method")
    fig, (ax_r, ax_s) = plt.subplots(1, 2, figsize=(10.5, 4.2), layout="constrained")
    grid = np.linspace(0.0, 1.0, n_grid + 1)[1:]
    for i, (method, pairs) in enumerate(curves.items()):
        rocs = roc_pairs(pairs, kind)
        color = f"C{i % 10}"
        _, r_med, r_lo, r_hi = rejection_band(rocs, n_grid, min_runs, fpr_floor)
        _, s_med, s_lo, s_hi = sic_band(rocs, n_grid, min_runs, fpr_floor)
        best = float(np.nanmax(s_med)) if np.isfinite(s_med).any() else float("nan")
        label = f"{method} (max SIC {best:.2f}, {len(rocs)} run{'s' * (len(rocs) != 1)})"
        for ax, med, lo, hi in ((ax_r, r_med, r_lo, r_hi), (ax_s, s_med, s_lo, s_hi)):
            ax.plot(grid, med, color=color, lw=1.6, label=label)
            if len(rocs) > 1:
                ax.fill_between(grid, lo, hi, color=color, alpha=0.25, lw=0)
    ax_r.plot(grid, 1.0 / grid, "k--", lw=1.0, label="random")
    ax_s.plot(grid, np.sqrt(grid), "k--", lw=1.0, label="random")
    ax_r.set_yscale("log")
    ax_r.set_ylim(bottom=0.8)              # rejection >= 1
    ax_r.set_ylabel(r"background rejection $1/\epsilon_B$")
    ax_s.set_ylabel(r"SIC $\epsilon_S/\sqrt{\epsilon_B}$")
    ax_s.set_ylim(bottom=0.0)
    for ax in (ax_r, ax_s):
        ax.set_xlabel(r"signal efficiency $\epsilon_S$ (TPR)")
        ax.set_xlim(0.0, 1.0)
        ax.grid(alpha=0.3)
    ax_s.legend(fontsize="small", loc="upper right")
    fig.suptitle(title or f"median and 16–84 % over runs (FPR ≥ {fpr_floor:.3g})",
                 fontsize="medium")
    return fig
