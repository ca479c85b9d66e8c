"""Calorimeter-shower metrics: high-level features, separation power, classifier inputs.

Takes arrays (incident energy ``[N]`` GeV, flattened voxels ``[N, V]`` MeV, layer image shapes)
and returns numbers; nothing here knows about models or files.

* :func:`shower_features`: the quantities CaloFlow / CaloChallenge histogram
  (reference/caloflow.md §2.2): layer energies E_i, E_tot/E_inc, E_i/E_tot, sparsity
  (fraction of voxels above threshold), energy-weighted centroid and width per layer in x
  (columns) and y (rows) in mm, and the brightest voxels per layer as fractions of E_i.
* :func:`separation_power`: triangular discrimination ½ Σ (p − q)² / (p + q)
  (arXiv:2009.03796 eq. 15) of two histograms with common bins.
* :func:`classifier_inputs`: CaloFlow's DNN inputs (reference §2.3), unnormalised or normalised.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

__all__ = ["classifier_inputs", "feature_bins", "layer_slices", "separation_power",
           "separation_powers", "shower_features"]

#: CaloGAN cell sizes (row, column) in mm per layer, for centroids and widths.
CALOGAN_CELLS_MM: tuple[tuple[float, float], ...] = ((160.0, 5.0), (40.0, 40.0), (40.0, 80.0))


def layer_slices(layer_shapes: Sequence[Sequence[int]]) -> list[slice]:
    sizes = [int(np.prod(s)) for s in layer_shapes]
    edges = np.cumsum([0, *sizes])
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def shower_features(energy_gev: np.ndarray, voxels_mev: np.ndarray,
                    layer_shapes: Sequence[Sequence[int]],
                    cell_mm: Sequence[tuple[float, float]] | None = CALOGAN_CELLS_MM,
                    threshold_mev: float = 1e-3, brightest: int = 3) -> dict[str, np.ndarray]:
    """High-level features ``{name: [N]}`` of showers.

    Centroids/widths need 2-D layers and ``cell_mm`` (mm per row, column); they are omitted
    otherwise. Showers with an empty layer get centroid/width 0 there.
    """
    v = np.where(voxels_mev >= threshold_mev, voxels_mev, 0.0)
    n = len(v)
    out: dict[str, np.ndarray] = {}
    sl = layer_slices(layer_shapes)
    e_layers = np.stack([v[:, s].sum(1) for s in sl], 1)
    e_tot = e_layers.sum(1)
    out["E_tot/E_inc"] = e_tot / (energy_gev * 1000.0)
    for i, s in enumerate(sl):
        ei = e_layers[:, i]
        safe = np.where(ei > 0, ei, 1.0)
        out[f"E_{i} [GeV]"] = ei / 1000.0
        out[f"E_{i}/E_tot"] = ei / np.where(e_tot > 0, e_tot, 1.0)
        out[f"sparsity_{i}"] = (v[:, s] > 0).mean(1)
        top = -np.sort(-v[:, s], axis=1)[:, :brightest]
        for k in range(min(brightest, top.shape[1])):
            out[f"brightest{k + 1}_{i}/E_{i}"] = top[:, k] / safe
        shape = tuple(layer_shapes[i])
        if cell_mm is not None and len(shape) == 2 and i < len(cell_mm):
            img = v[:, s].reshape(n, *shape)
            ry, rx = cell_mm[i]
            yc = (np.arange(shape[0]) - (shape[0] - 1) / 2.0) * ry
            xc = (np.arange(shape[1]) - (shape[1] - 1) / 2.0) * rx
            px, py = img.sum(1), img.sum(2)  # [N, cols], [N, rows]
            mx = (px * xc).sum(1) / safe
            my = (py * yc).sum(1) / safe
            wx = np.sqrt(np.clip((px * xc ** 2).sum(1) / safe - mx ** 2, 0.0, None))
            wy = np.sqrt(np.clip((py * yc ** 2).sum(1) / safe - my ** 2, 0.0, None))
            out[f"centroid_x_{i} [mm]"] = mx
            out[f"centroid_y_{i} [mm]"] = my
            out[f"width_x_{i} [mm]"] = wx
            out[f"width_y_{i} [mm]"] = wy
    return out


def feature_bins(truth: np.ndarray, other: np.ndarray, bins: int = 50) -> np.ndarray:
    """Common bin edges covering the central 99.8 % of both samples (log-spaced for energies
    spanning more than two decades)."""
    both = np.concatenate([truth, other])
    both = both[np.isfinite(both)]
    if len(both) == 0:
        return np.linspace(0, 1, bins + 1)
    lo, hi = np.percentile(both, [0.1, 99.9])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    if lo > 0 and hi / lo > 100:
        return np.geomspace(lo, hi, bins + 1)
    return np.linspace(lo, hi, bins + 1)


def separation_power(a: np.ndarray, b: np.ndarray, edges: np.ndarray) -> float:
    """½ Σ (p − q)² / (p + q) of the normalised histograms (0 = identical, 1 = disjoint).

    Entries outside the edges go to the first/last bin.
    """
    def hist(x: np.ndarray) -> np.ndarray:
        x = np.clip(x[np.isfinite(x)], edges[0], edges[-1])
        h = np.histogram(x, edges)[0].astype(np.float64)
        return h / max(h.sum(), 1.0)

    p, q = hist(a), hist(b)
    return float(0.5 * np.sum((p - q) ** 2 / (p + q + 1e-16)))


def separation_powers(truth: dict[str, np.ndarray], gen: dict[str, np.ndarray],
                      bins: int = 50) -> dict[str, float]:
    """Separation power of every feature present in both dicts."""
    return {k: separation_power(truth[k], gen[k], feature_bins(truth[k], gen[k], bins))
            for k in truth if k in gen}


def classifier_inputs(energy_gev: np.ndarray, voxels_mev: np.ndarray,
                      layer_shapes: Sequence[Sequence[int]], normalized: bool = False,
                      threshold_mev: float = 1e-2) -> np.ndarray:
    """CaloFlow's DNN input ``[N, V + 1 + L]`` (reference §2.3).

    Voxels below ``threshold_mev`` are zeroed; then the voxels (in units of 100 GeV, or divided
    by their layer energy when ``normalized``), ``log10(E_inc/10 GeV)`` and
    ``log10(E_i/GeV + 1e-6)`` per layer.
    """
    v = np.where(voxels_mev >= threshold_mev, voxels_mev, 0.0).astype(np.float64)
    sl = layer_slices(layer_shapes)
    e_layers = np.stack([v[:, s].sum(1) for s in sl], 1)
    if normalized:
        x = np.concatenate([v[:, s] / np.where(e_layers[:, i:i + 1] > 0,
                                                e_layers[:, i:i + 1], 1.0)
                            for i, s in enumerate(sl)], 1)
    else:
        x = v / 1e5
    ctx = np.concatenate([np.log10(energy_gev / 10.0)[:, None],
                          np.log10(e_layers / 1000.0 + 1e-6)], 1)
    return np.concatenate([x, ctx], 1)
