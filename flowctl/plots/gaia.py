"""Plots of the Gaia stream search: the anomaly-score map and the top-scored stars."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flowctl.data.gaia import GaiaPatch

__all__ = ["gaia_plots"]


def gaia_plots(out_dir: Path, patch: GaiaPatch, score: np.ndarray, keep: np.ndarray,
               top: np.ndarray, cond: str) -> list[str]:
    """``score_map.png`` (max log R per sky cell of the scored stars ``keep [N]``) and
    ``top_stars.png`` (the ``top [k]`` star indices on the sky, in proper motion and in the
    CMD, over the patch and, when known, the injected stream) in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    m = keep & np.isfinite(score)
    fig, ax = plt.subplots(figsize=(7, 6))
    hb = ax.hexbin(patch["phi"][m], patch["lam"][m], C=score[m], reduce_C_function=np.max,
                   gridsize=70, cmap="magma", mincnt=1)
    fig.colorbar(hb, ax=ax, label="max log R per cell")
    ax.set(xlabel="φ [deg]", ylabel="λ [deg]", aspect="equal",
           title=f"ANODE score map (SR stars, fiducial cuts; condition {cond})")
    p = out_dir / "score_map.png"
    fig.savefig(p, dpi=110, bbox_inches="tight")
    plt.close(fig)
    paths.append(str(p))

    lab = patch.labels
    rng = np.random.default_rng(0)
    bg = rng.choice(len(patch), size=min(len(patch), 30000), replace=False)
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    panels = [("phi", "lam", "φ [deg]", "λ [deg]"), ("pmphi", "pmlam", "μ_φ* [mas/yr]",
              "μ_λ [mas/yr]"), ("bp_rp", "g", "b−r [mag]", "g [mag]")]
    for ax, (a, b, xl, yl) in zip(axes, panels):
        ax.scatter(patch[a][bg], patch[b][bg], s=0.5, c="0.8", rasterized=True, label="patch")
        if lab is not None:
            st = np.flatnonzero(lab == 1)
            ax.scatter(patch[a][st], patch[b][st], s=2, c="tab:orange", alpha=0.4,
                       label="injected stream (truth)")
            hit = top[lab[top] == 1]
            miss = top[lab[top] == 0]
            ax.scatter(patch[a][miss], patch[b][miss], s=10, c="tab:blue", label="top-k, field")
            ax.scatter(patch[a][hit], patch[b][hit], s=10, c="tab:red", label="top-k, stream")
        else:
            ax.scatter(patch[a][top], patch[b][top], s=10, c="tab:red", label="top-k")
        ax.set(xlabel=xl, ylabel=yl)
    axes[1].set(xlim=(-25, 15), ylim=(-25, 15))
    axes[2].set(xlim=(0.0, 1.6))
    axes[2].invert_yaxis()
    axes[0].legend(loc="lower left", fontsize=7, markerscale=3)
    fig.suptitle(f"top {len(top)} stars by ANODE score (after fiducial cuts)")
    p = out_dir / "top_stars.png"
    fig.savefig(p, dpi=110, bbox_inches="tight")
    plt.close(fig)
    paths.append(str(p))
    return paths
