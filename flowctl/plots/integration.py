"""Figures for integration, made from arrays (matplotlib, Agg backend)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from flowctl.plots.density import save

__all__ = ["marginals", "plane", "save", "training_curve", "weight_distribution"]




def weight_distribution(weights: Mapping[str, np.ndarray], bins: int = 50) -> Figure:
    """Histograms of log10(|w| / <|w|>) for each method (zero weights left out); a narrow peak
    at 0 means a good sampler."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    logs = {}
    for name, w in weights.items():
        a = np.abs(np.asarray(w, dtype=np.float64))
        a = a[a > 0]
        if len(a):
            logs[name] = np.log10(a / a.mean())
    if logs:
        lo = max(min(float(np.quantile(v, 0.001)) for v in logs.values()), -8.0)
        hi = max(float(v.max()) for v in logs.values())
        edges = np.linspace(lo, max(hi, lo + 1e-3), bins + 1)
        for name, v in logs.items():
            ax.hist(np.clip(v, lo, None), bins=edges, histtype="step", density=True,
                    label=f"{name} (rel. std {np.std(10**v) :.3g})")
    ax.set_yscale("log")
    ax.set_xlabel(r"$\log_{10}(|w| / \langle |w| \rangle)$")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title("weight distribution")
    return fig


def marginals(x: np.ndarray, w: np.ndarray, x_ref: np.ndarray, w_ref: np.ndarray,
              labels: Sequence[str], ref_name: str = "VEGAS", bins: int = 50,
              max_panels: int = 16) -> Figure:
    """1-D marginals of the target: flow points weighted by w, against the reference points
    weighted by w_ref, and the flow's own density q (unweighted points). ``x`` [N, D]."""
    d = min(x.shape[1], max_panels)
    cols = min(d, 4)
    rows = math.ceil(d / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    edges = np.linspace(0.0, 1.0, bins + 1)
    for i in range(rows * cols):
        ax = axes[i // cols][i % cols]
        if i >= d:
            ax.axis("off")
            continue
        ax.hist(x_ref[:, i], bins=edges, weights=w_ref, density=True, histtype="stepfilled",
                alpha=0.35, color="gray", label=f"{ref_name}, weighted")
        ax.hist(x[:, i], bins=edges, weights=w, density=True, histtype="step", color="C0",
                label="flowctl, weighted")
        ax.hist(x[:, i], bins=edges, density=True, histtype="step", color="C1", ls="--",
                label="flowctl q (unweighted)")
        ax.set_xlabel(labels[i] if i < len(labels) else f"x{i + 1}")
        if i == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plane(x: np.ndarray, w: np.ndarray, x_ref: np.ndarray, w_ref: np.ndarray,
          labels: tuple[str, str], ref_name: str = "VEGAS", bins: int = 50,
          title: str = "") -> Figure:
    """2-D histograms of the target in the plane of the first two columns of ``x`` [N, 2]:
    flow points weighted by w, reference weighted by w_ref, and the flow density q."""
    lo = np.minimum(x.min(0), x_ref.min(0))
    hi = np.maximum(x.max(0), x_ref.max(0))
    ex = [np.linspace(lo[0], hi[0], bins + 1), np.linspace(lo[1], hi[1], bins + 1)]
    panels = [(f"{ref_name}, weighted", x_ref, w_ref), ("flowctl, weighted", x, w),
              ("flowctl q (unweighted)", x, None)]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    for ax, (name, pts, wt) in zip(axes, panels):
        h, _, _ = np.histogram2d(pts[:, 0], pts[:, 1], bins=ex, weights=wt, density=True)
        ax.imshow(np.log10(np.maximum(h.T, 1e-6 * max(h.max(), 1e-300))), origin="lower",
                  extent=(ex[0][0], ex[0][-1], ex[1][0], ex[1][-1]), aspect="auto",
                  cmap="viridis")
        ax.set_title(f"{name} (log10)", fontsize=9)
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def training_curve(records: Sequence[dict], exact: float | None = None) -> Figure:
    """Loss and per-batch relative std against integrand calls, and the batch estimates."""
    calls = np.array([r.get("calls", i) for i, r in enumerate(records)], dtype=float)

    def col(key: str) -> np.ndarray:
        return np.array([np.nan if r.get(key) is None else r[key] for r in records], float)

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(calls, col("loss"))
    axes[0].set_ylabel("loss")
    axes[1].plot(calls, col("rel_std"))
    axes[1].set_yscale("log")
    axes[1].set_ylabel("rel. std per point (batch)")
    est, err = col("estimate"), col("error")
    axes[2].errorbar(calls, est, yerr=err, fmt=".", ms=2, lw=0.5)
    if exact is not None:
        axes[2].axhline(exact, color="k", lw=0.8, ls="--", label="exact")
        axes[2].legend(fontsize=8)
    axes[2].set_ylabel("batch estimate")
    for ax in axes:
        ax.set_xlabel("integrand calls")
    fig.tight_layout()
    return fig
