"""CaloFlow preprocessing: incident-energy tables and draws, the Flow I / Flow II inputs of a
set of showers (reference/caloflow.md §3.1), and CaloFlow's within-layer permutations
(§3.3). Arrays and plain dicts in, arrays out; no files, no configs beyond plain dicts."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from flowctl.data.calo import (
    CALOGAN_LAYERS,
    Showers,
    add_noise,
    energy_context,
    energy_features,
    shower_context,
    voxel_features,
)

__all__ = ["Prepared", "draw_energies", "energy_table", "expand_spec", "prepare",
           "within_layer_permutations"]


def energy_table(e_gev: np.ndarray) -> dict[str, Any]:
    """The training set's incident energies, kept in the run config for sampling: the
    distinct values and their weights (<= 64 values, e.g. DS1), else 257 quantiles of
    ``log10 E``."""
    vals, counts = np.unique(np.asarray(e_gev, np.float64), return_counts=True)
    if len(vals) <= 64:
        return {"kind": "discrete", "values_gev": [float(v) for v in vals],
                "weights": [float(c) / len(e_gev) for c in counts]}
    q = np.quantile(np.log10(e_gev), np.linspace(0.0, 1.0, 257))
    return {"kind": "quantiles", "log10_gev": [float(v) for v in q]}


def draw_energies(cfg: dict[str, Any], n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` incident energies (GeV, float64) as the config says (``data.e_sampling``)."""
    d = cfg.get("data") or {}
    tab = cfg.get("incident_energy")
    if d.get("e_sampling", "uniform") == "training" and tab:
        if tab["kind"] == "discrete":
            w = torch.tensor(tab["weights"], dtype=torch.float64)
            idx = torch.multinomial(w, n, replacement=True, generator=gen)
            return torch.tensor(tab["values_gev"], dtype=torch.float64)[idx]
        q = torch.tensor(tab["log10_gev"], dtype=torch.float64)
        u = torch.rand(n, generator=gen, dtype=torch.float64) * (len(q) - 1)
        i = u.floor().long().clamp(max=len(q) - 2)
        return 10.0 ** (q[i] + (u - i) * (q[i + 1] - q[i]))
    lo, hi = float(d.get("e_min", 1.0)), float(d.get("e_max", 100.0))
    return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)


@dataclass
class Prepared:
    """CaloFlow inputs of a set of showers (float32)."""

    u: np.ndarray       # Flow I input [N, L] in [0, 1]
    e_ctx: np.ndarray   # Flow I context [N, 1]
    x: np.ndarray       # Flow II input [N, V] in [0, 1] (layer-normalised voxels)
    ctx: np.ndarray     # Flow II context [N, 1 + L]


def prepare(s: Showers, noise_mev: float, seed: int, scale: float = 1.0,
            e_ref_gev: float = 10.0) -> Prepared:
    """Noise U[0, noise) on every voxel, then the layer energies and features (ref §3.1)."""
    rng = np.random.default_rng(seed)
    v = add_noise(s.voxels, rng, noise_mev)
    e = np.stack([v[:, sl].sum(1) for sl in s.layer_slices], 1)
    f32 = np.float32
    return Prepared(energy_features(e, s.energy, scale).astype(f32),
                    energy_context(s.energy, e_ref_gev).astype(f32),
                    voxel_features(v, s.layer_slices).astype(f32),
                    shower_context(s.energy, e, e_ref_gev).astype(f32))


def within_layer_permutations(layer_sizes: list[int], transforms: int,
                              seed: int) -> list[list[int]]:
    """CaloFlow's permutations between MADE blocks (ref §3.3): alternately reverse the order
    within each calorimeter layer and shuffle within each layer (seeded); voxels never cross
    layers. ``transforms - 1`` index lists."""
    edges = np.cumsum([0, *layer_sizes])
    gen = np.random.default_rng(seed)
    out = []
    for j in range(transforms - 1):
        perm = []
        for a, b in itertools.pairwise(edges):
            block = np.arange(a, b)
            perm += list(block[::-1] if j % 2 == 0 else gen.permutation(block))
        out.append([int(i) for i in perm])
    return out


def expand_spec(spec: dict[str, Any], layer_sizes: list[int] | None = None) -> dict[str, Any]:
    """A flow spec for :func:`flowctl.flows.build`: ``permutation: within_layers`` expanded."""
    spec = dict(spec)
    if spec.get("permutation") == "within_layers":
        sizes = layer_sizes or [int(np.prod(s)) for s in CALOGAN_LAYERS]
        if sum(sizes) != int(spec["features"]):
            sizes = [int(spec["features"])]  # one layer (iCaloFlow's per-layer flows)
        spec["permutation"] = within_layer_permutations(sizes, int(spec.get("transforms", 1)),
                                                        int(spec.get("seed", 0)))
    return spec
