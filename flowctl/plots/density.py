"""Figures for density estimation, made from arrays (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

__all__ = ["density_heatmaps", "loss_curve", "samples_figure", "save"]


def save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG (atomically, creating the folder) and close it."""
    import io

    from flowctl.atomic import write_bytes

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return write_bytes(path, buf.getvalue(), fsync=False)


def density_heatmaps(xs: np.ndarray, ys: np.ndarray, log_q: np.ndarray,
                     log_p: np.ndarray | None = None) -> Figure:
    """Learned density ``exp(log_q)`` (and the truth ``exp(log_p)``) on a 2-D grid.

    ``xs`` [nx], ``ys`` [ny]; ``log_q``/``log_p`` are ``[ny, nx]``.
    """
    panels = [("learned density", log_q)]
    if log_p is not None:
        panels.insert(0, ("true density", log_p))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels) + 0.8, 4),
                             squeeze=False, layout="constrained")
    vmax = max(float(np.nanmax(np.exp(p))) for _, p in panels)
    extent = (xs[0], xs[-1], ys[0], ys[-1])
    for ax, (title, lp) in zip(axes[0], panels):
        im = ax.imshow(np.exp(lp), origin="lower", extent=extent, vmin=0.0, vmax=vmax,
                       cmap="viridis", aspect="auto")
        ax.set_title(title)
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
    fig.colorbar(im, ax=list(axes[0]), shrink=0.85, label="density")
    return fig


def samples_figure(samples: np.ndarray, reference: np.ndarray | None = None,
                   names: Sequence[str] | None = None, max_dims: int = 6) -> Figure:
    """Flow samples vs reference data: 2-D histograms for D=2, marginals otherwise."""
    samples = np.asarray(samples)
    d = samples.shape[1]
    if d == 2:
        sets = [("flow samples", samples)]
        if reference is not None:
            sets.insert(0, ("data", np.asarray(reference)))
        both = np.concatenate([s for _, s in sets])
        lo, hi = np.quantile(both, [0.001, 0.999], axis=0)
        rng = [[lo[0], hi[0]], [lo[1], hi[1]]]
        fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 4), squeeze=False)
        for ax, (title, s) in zip(axes[0], sets):
            ax.hist2d(s[:, 0], s[:, 1], bins=120, range=rng, cmap="magma")
            ax.set_title(title)
            ax.set_xlabel(names[0] if names else "$x_1$")
            ax.set_ylabel(names[1] if names else "$x_2$")
        return fig
    k = min(d, max_dims)
    fig, axes = plt.subplots(1, k, figsize=(3.2 * k, 3), squeeze=False)
    for i, ax in enumerate(axes[0]):
        col = samples[:, i]
        ref = None if reference is None else np.asarray(reference)[:, i]
        both = col if ref is None else np.concatenate([col, ref])
        bins = np.linspace(*np.quantile(both, [0.001, 0.999]), 60)
        if ref is not None:
            ax.hist(ref, bins=bins, density=True, histtype="step", color="k", label="data")
        ax.hist(col, bins=bins, density=True, histtype="step", color="C1", label="flow")
        ax.set_xlabel(names[i] if names else f"$x_{{{i + 1}}}$")
        if i == 0:
            ax.legend(frameon=False)
    return fig


def loss_curve(records: Sequence[dict]) -> Figure:
    """Train/validation loss per epoch from metrics.jsonl records."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        pts = [(r["epoch"], r[key]) for r in records
               if r.get(key) is not None and "epoch" in r and np.isfinite(r[key])]
        if pts:
            e, v = zip(*pts)
            ax.plot(e, v, marker="o", ms=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (NLL, nats)")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    return fig
