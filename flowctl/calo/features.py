"""The CaloChallenge's high-level features and classifier inputs (arXiv:2410.21611; the
challenge's ``HighLevelFeatures.py`` and ``evaluate.py``, reference/caloflow.md §2.2).

Arrays in, arrays out: incident energies ``[N]`` MeV, showers ``[N, V]`` MeV and a
:class:`~flowctl.calo.geometry.Geometry`. Voxels below ``min_energy_mev`` are zeroed first,
as the challenge does before computing anything (its ``min_energy``: 1 MeV for DS1,
0.5 keV / 0.033 for DS2/DS3).

Per binned layer ``l`` (the XML's layer id): ``E_l`` (MeV), ``EC_r_l`` / ``width_r_l`` (mm,
energy-weighted centre and width in r at the bin centres), ``sparsity_l`` (fraction of empty
voxels), and for layers binned in alpha also ``EC_eta_l``, ``EC_phi_l``, ``width_eta_l``,
``width_phi_l`` (mm; eta = r cos(alpha), phi = r sin(alpha)). Plus ``E_tot/E_inc``.
"""

from __future__ import annotations

import numpy as np

from flowctl.calo.geometry import Geometry

__all__ = ["MIN_ENERGY_MEV", "classifier_high", "classifier_low", "high_level_features",
           "threshold"]

#: The challenge's per-voxel threshold for evaluation, by dataset (evaluate.py).
MIN_ENERGY_MEV = {"1-photons": 1.0, "1-pions": 1.0, "2": 0.5e-3 / 0.033, "3": 0.5e-3 / 0.033}


def threshold(showers_mev: np.ndarray, min_energy_mev: float) -> np.ndarray:
    """Voxels below ``min_energy_mev`` set to 0 (float64 copy)."""
    v = np.asarray(showers_mev, np.float64)
    return np.where(v < min_energy_mev, 0.0, v)


def _centre_width(coord: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tot = e.sum(1) + 1e-16
    c = (e * coord).sum(1) / tot
    w2 = (e * coord * coord).sum(1) / tot - c * c
    return c, np.sqrt(np.clip(w2, 0.0, None))


def high_level_features(g: Geometry, e_inc_mev: np.ndarray, showers_mev: np.ndarray,
                        min_energy_mev: float = 0.0) -> dict[str, np.ndarray]:
    """The challenge's high-level features ``{name: [N]}`` (see the module docstring)."""
    v = threshold(showers_mev, min_energy_mev)
    x, y, r, _ = g.centres()
    out: dict[str, np.ndarray] = {"E_tot/E_inc": v.sum(1) / np.asarray(e_inc_mev, np.float64)}
    for lay, sl in zip(g.layers, g.layer_slices):
        e = v[:, sl]
        i = lay.id
        out[f"E_{i}"] = e.sum(1)
        out[f"EC_r_{i}"], out[f"width_r_{i}"] = _centre_width(r[sl], e)
        out[f"sparsity_{i}"] = 1.0 - (e > 0).mean(1)
        if lay.n_alpha > 1:
            out[f"EC_eta_{i}"], out[f"width_eta_{i}"] = _centre_width(x[sl], e)
            out[f"EC_phi_{i}"], out[f"width_phi_{i}"] = _centre_width(y[sl], e)
    return out


def classifier_low(g: Geometry, e_inc_mev: np.ndarray, showers_mev: np.ndarray,
                   min_energy_mev: float = 0.0, normed: bool = True) -> np.ndarray:
    """cls-low input ``[N, 1 + V (+ L)]``: ``log10 E_inc`` and the voxels divided by E_inc,
    or (``normed``, the challenge's cls-low-normed) by their layer energy plus
    ``log10(E_layer + 1e-8)`` per layer."""
    v = threshold(showers_mev, min_energy_mev)
    e = np.asarray(e_inc_mev, np.float64)[:, None]
    if not normed:
        return np.concatenate([np.log10(e), v / e], 1)
    el = np.stack([v[:, sl].sum(1) for sl in g.layer_slices], 1)
    rep = np.repeat(el, g.layer_sizes, axis=1)
    return np.concatenate([np.log10(e), v / (rep + 1e-16), np.log10(el + 1e-8)], 1)


def classifier_high(g: Geometry, e_inc_mev: np.ndarray, showers_mev: np.ndarray,
                    min_energy_mev: float = 0.0) -> np.ndarray:
    """cls-high input ``[N, F]``: ``log10 E_inc``, ``log10(E_l + 1e-8)``, EC_eta, EC_phi,
    width_eta, width_phi (/100, alpha-binned layers), ``log10(E_tot + 1e-8)``, sparsity,
    EC_r and width_r (/100), in the challenge's order."""
    f = high_level_features(g, e_inc_mev, showers_mev, min_energy_mev)
    ids = [lay.id for lay in g.layers]
    alpha_ids = [lay.id for lay in g.layers if lay.n_alpha > 1]
    e_tot = threshold(showers_mev, min_energy_mev).sum(1)
    cols = [np.log10(np.asarray(e_inc_mev, np.float64))]
    cols += [np.log10(f[f"E_{i}"] + 1e-8) for i in ids]
    for key in ("EC_eta", "EC_phi", "width_eta", "width_phi"):
        cols += [f[f"{key}_{i}"] / 100.0 for i in alpha_ids]
    cols.append(np.log10(e_tot + 1e-8))
    cols += [f[f"sparsity_{i}"] for i in ids]
    cols += [f[f"EC_r_{i}"] / 100.0 for i in ids]
    cols += [f[f"width_r_{i}"] / 100.0 for i in ids]
    return np.stack(cols, 1)
