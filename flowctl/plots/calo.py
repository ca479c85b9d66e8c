"""Figures for calorimeter showers, made from arrays (matplotlib, Agg backend).

``average_showers`` (mean image per layer, truth vs generated), ``feature_histograms`` (one
panel per high-level feature, with its separation power) and ``roc_figure``.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from flowctl.metrics.calo import feature_bins, layer_slices
from flowctl.plots.density import save

__all__ = ["average_showers", "feature_histograms", "roc_figure", "save"]


def average_showers(samples: dict[str, np.ndarray],
                    layer_shapes: Sequence[Sequence[int]],
                    layer_names: Sequence[int | str] | None = None) -> Figure:
    """Mean voxel energy (MeV, log colour scale) per layer; one row per sample
    (``{"truth": voxels [N, V], "generated": ...}``). CaloChallenge layers are drawn as
    (alpha bin x r bin) images; ``layer_names`` label the columns (default 0, 1, ...)."""
    sl = layer_slices(layer_shapes)
    n_rows, n_cols = len(samples), len(sl)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.6 * n_cols, 2.6 * n_rows),
                             squeeze=False)
    means = {k: v.mean(0) for k, v in samples.items()}
    for j, s in enumerate(sl):
        shape = tuple(layer_shapes[j])
        if len(shape) == 1:
            shape = (1, shape[0])
        vals = np.concatenate([m[s] for m in means.values()])
        pos = vals[vals > 0]
        vmin = max(float(pos.min()), float(pos.max()) * 1e-5) if len(pos) else 1e-3
        vmax = float(pos.max()) if len(pos) else 1.0
        for i, (name, m) in enumerate(means.items()):
            ax = axes[i, j]
            im = ax.imshow(np.clip(m[s].reshape(shape), vmin, None), aspect="auto",
                           norm=LogNorm(vmin=vmin, vmax=vmax), cmap="viridis",
                           interpolation="nearest")
            lab = layer_names[j] if layer_names is not None else j
            ax.set_title(f"{name}: layer {lab}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.colorbar(im, ax=axes[:, j].tolist(), shrink=0.8, label="MeV")
    return fig


def feature_histograms(truth: dict[str, np.ndarray], generated: dict[str, np.ndarray],
                       separation: dict[str, float] | None = None, bins: int = 50,
                       ncols: int = 4) -> Figure:
    """Histograms of each feature (truth filled, generated as a line) with the separation
    power in the title."""
    keys = [k for k in truth if k in generated]
    nrows = max(1, -(-len(keys) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.6 * nrows), squeeze=False)
    for ax, k in zip(axes.flat, keys):
        edges = feature_bins(truth[k], generated[k], bins)
        t = np.clip(truth[k], edges[0], edges[-1])
        g = np.clip(generated[k], edges[0], edges[-1])
        ax.hist(t, edges, density=True, histtype="stepfilled", alpha=0.35, color="C0",
                label="truth")
        ax.hist(g, edges, density=True, histtype="step", color="C3", lw=1.3, label="generated")
        if edges[0] > 0 and edges[-1] / edges[0] > 100:
            ax.set_xscale("log")
        title = k if separation is None or k not in separation else \
            f"{k}\nsep. power {separation[k]:.3f}"
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    if keys:
        axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray, float]]) -> Figure:
    """ROC curves ``{label: (fpr, tpr, auc)}`` with the diagonal."""
    fig, ax = plt.subplots(figsize=(4.2, 4))
    for name, (fpr, tpr, a) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUC {a:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=8, loc="lower right")
    return fig
