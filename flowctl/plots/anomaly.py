"""Figures for resonant anomaly detection, made from arrays (matplotlib, Agg backend).

``roc_sic_figure``: CATHODE's ``performance_comparison`` figure (arXiv:2109.00546, Fig. 5;
reference/anomaly.md §2.5): background rejection 1/FPR and SIC = TPR/√FPR against the signal
efficiency TPR, each method as the median over runs with its 16–84 % band.

``sculpting_figure``: the mjj spectrum of the scored events (SR and sidebands) before and after
cuts on the anomaly score (background sculpting, LaCATHODE arXiv:2210.14924), selected
counts scaled by 1/ε_B so that an unsculpted background lies on the "all" line.

``scan_figure``: max SIC against the injected S/B (the papers' sensitivity plot), median and
16–84 % band over seeds per method.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from flowctl.metrics.sic import FPR_FLOOR, rejection_band, roc_pairs, sic_band
from flowctl.plots.density import save

__all__ = ["roc_sic_figure", "save", "scan_figure", "sculpting_figure"]


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


def sculpting_figure(panels: Mapping[str, tuple], bins: np.ndarray,
                     sr: Sequence[float]) -> Figure:
    """One column per method. Top: mjj histograms (TeV) of all scored events and of those
    passing each cut, selected counts × 1/ε_B (log scale), the SR shaded. Bottom: the
    selection efficiency per bin over ε_B (1 = the cut keeps that mass bin as often as the SR
    background on average; a sculpted background bends away from 1 in the sidebands, and
    signal lifts it in the SR). The bottom row does not depend on how many sideband events
    were scored (ANODE scores only its sideband flow's validation events).

    ``panels[method] = (sr_mjj [N], sr_scores [N], sb_mjj [M], sb_scores [M],
    {eps_b: threshold})``."""
    if not panels:
        raise ValueError("sculpting_figure needs at least one method")
    n = len(panels)
    fig, axes = plt.subplots(2, n, figsize=(4.6 * n, 5.6), layout="constrained",
                             squeeze=False, sharex="col", height_ratios=[3, 2])
    centers = 0.5 * (bins[1:] + bins[:-1])
    for j, (method, (m_sr, s_sr, m_sb, s_sb, cuts)) in enumerate(panels.items()):
        ax, ax_r = axes[0][j], axes[1][j]
        m = np.r_[np.asarray(m_sr, float), np.asarray(m_sb, float)]
        s = np.r_[np.asarray(s_sr, float), np.asarray(s_sb, float)]
        h_all = np.histogram(m, bins)[0]
        ax.step(centers, h_all, where="mid", color="k", lw=1.4, label="all scored events")
        for i, (eps, thr) in enumerate(sorted(cuts.items(), reverse=True)):
            h = np.histogram(m[s >= thr], bins)[0]
            ax.step(centers, h / eps, where="mid", color=f"C{i}", lw=1.2,
                    label=rf"score cut $\epsilon_B$ = {eps:g} (× {1 / eps:g})")
            with np.errstate(divide="ignore", invalid="ignore"):
                ax_r.step(centers, np.where(h_all > 0, h / (h_all * eps), np.nan),
                          where="mid", color=f"C{i}", lw=1.2)
        for a in (ax, ax_r):
            a.axvspan(sr[0], sr[1], color="0.85", zorder=0)
            a.grid(alpha=0.3)
        ax_r.axhline(1.0, color="k", lw=1.0, ls="--")
        ax.set_yscale("log")
        ax_r.set_yscale("symlog", linthresh=1.0)
        ax_r.set_xlabel(r"$m_{jj}$ [TeV]")
        ax.set_title(f"{method} (SR shaded)", fontsize="medium")
    axes[0][0].set_ylabel("events per bin")
    axes[1][0].set_ylabel(r"selected / (all $\times\ \epsilon_B$)")
    axes[0][-1].legend(fontsize="small", loc="upper right")
    return fig


def scan_figure(scan: Mapping[str, Mapping[str, Sequence[float]]], x_label: str = "S/B in SR",
                y_label: str = "max SIC") -> Figure:
    """Max SIC against the injected signal: ``scan[method] = {"x": [...], "median": [...],
    "q16": [...], "q84": [...]}`` (one point per injection), median line and 16–84 % band,
    log x axis; the random classifier's SIC of 1 dashed."""
    if not scan:
        raise ValueError("scan_figure needs at least one method")
    fig, ax = plt.subplots(figsize=(5.6, 4.0), layout="constrained")
    for i, (method, d) in enumerate(scan.items()):
        x = np.asarray(d["x"], float)
        order = np.argsort(x)
        x = x[order]
        med, lo, hi = (np.asarray(d[k], float)[order] for k in ("median", "q16", "q84"))
        ax.plot(x, med, "o-", color=f"C{i}", lw=1.5, ms=4, label=method)
        ax.fill_between(x, lo, hi, color=f"C{i}", alpha=0.25, lw=0)
    ax.axhline(1.0, color="k", ls="--", lw=1.0, label="random")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.2g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    xs = sorted({float(v) for d in scan.values() for v in d["x"]})
    ax.set_xticks(xs)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return fig
