"""Calorimeter showers: CaloGAN and CaloChallenge HDF5 readers/writers, CaloFlow features.

Formats (reference/caloflow.md §1):

* **CaloGAN** (arXiv:1705.02355): ``energy [N, 1]`` incident energy in **GeV**;
  ``layer_0 [N, 3, 96]``, ``layer_1 [N, 12, 12]``, ``layer_2 [N, 12, 6]`` voxel energies in
  **MeV**; ``overflow [N, 3]`` (MeV outside each layer's image, optional when reading).
* **CaloChallenge** (arXiv:2410.21611): ``incident_energies [N, 1]`` and ``showers [N, V]``,
  both in **MeV**; the layer boundaries come from the binning XML, so here the user passes
  them (``layer_sizes``) or the whole shower is one "layer".

Everything is converted once, on reading, into :class:`Showers`: incident energy in GeV and
the flattened voxels in MeV with the layer boundaries. The dtype is read from the file and
kept (``Showers.voxels.dtype``).

CaloFlow features (Krause & Shih, arXiv:2106.05285, reference §3.1), pure numpy:
:func:`energy_features` / :func:`energies_from_features` (Flow I's unit-space ``u``),
:func:`voxel_features` / :func:`voxels_from_features` (Flow II's layer-normalised voxels) and
:func:`shower_context` (Flow II's 4-number context).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import h5py

from flowctl.data.table import DataError

__all__ = [
    "CALOGAN_LAYERS",
    "NOISE_MEV",
    "Showers",
    "energies_from_features",
    "energy_context",
    "energy_features",
    "read_calochallenge",
    "read_calogan",
    "read_showers",
    "shower_context",
    "split_showers",
    "voxel_features",
    "voxels_from_features",
    "write_calochallenge",
    "write_calogan",
]

#: CaloGAN layer image shapes (rows, columns): 288 + 144 + 72 = 504 voxels.
CALOGAN_LAYERS: tuple[tuple[int, int], ...] = ((3, 96), (12, 12), (12, 6))
#: CaloFlow's noise: uniform in [0, 1 keV) per voxel (reference §3.1 item 2), in MeV.
NOISE_MEV = 1e-3


@dataclass
class Showers:
    """A set of showers.

    Attributes:
        energy: incident energies ``[N]`` in GeV.
        voxels: flattened voxel energies ``[N, V]`` in MeV (layer after layer, row-major).
        layer_shapes: image shape of each layer (``(n_voxels,)`` for flat layers).
        overflow: energy outside each layer's image ``[N, L]`` in MeV, or None.
        source: file the showers came from (for messages).
    """

    energy: np.ndarray
    voxels: np.ndarray
    layer_shapes: tuple[tuple[int, ...], ...] = CALOGAN_LAYERS
    overflow: np.ndarray | None = None
    source: str = ""
    attrs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.voxels.shape[0])

    @property
    def layer_sizes(self) -> list[int]:
        return [int(np.prod(s)) for s in self.layer_shapes]

    @property
    def layer_slices(self) -> list[slice]:
        edges = np.cumsum([0, *self.layer_sizes])
        return [slice(int(a), int(b)) for a, b in itertools.pairwise(edges)]

    def layer(self, i: int) -> np.ndarray:
        """Voxels of layer ``i`` as images ``[N, *layer_shapes[i]]`` (MeV)."""
        return self.voxels[:, self.layer_slices[i]].reshape(len(self), *self.layer_shapes[i])

    def layer_energies(self) -> np.ndarray:
        """Energy deposited in each layer ``[N, L]`` in MeV."""
        return np.stack([self.voxels[:, s].sum(1) for s in self.layer_slices], 1)

    def subset(self, idx: np.ndarray | slice) -> Showers:
        return Showers(self.energy[idx], self.voxels[idx], self.layer_shapes,
                       None if self.overflow is None else self.overflow[idx], self.source,
                       dict(self.attrs))


# --------------------------------------------------------------------------- reading


def _open(path: str | Path):
    import h5py

    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file (set data.path=FILE)")
    try:
        return h5py.File(p, "r")
    except OSError as exc:
        raise DataError(f"{p}: cannot open as HDF5 ({exc})") from None


def _dataset(f, path: str | Path, key: str, shape_tail: tuple[int, ...] | None,
             n: int | None) -> np.ndarray:
    """Read ``f[key]`` and check it: present, shape ``[N, *shape_tail]``, finite, >= 0."""
    import h5py

    if key not in f or not isinstance(f[key], h5py.Dataset):
        keys = ", ".join(sorted(f.keys())) or "(none)"
        raise DataError(f"{path}: missing key {key!r} (the file has: {keys})")
    ds = f[key]
    if ds.dtype.kind not in "fiu":
        raise DataError(f"{path}: key {key!r} has non-numeric dtype {ds.dtype}")
    if shape_tail is not None and (ds.ndim != 1 + len(shape_tail)
                                   or tuple(ds.shape[1:]) != shape_tail):
        want = "[N, " + ", ".join(map(str, shape_tail)) + "]"
        raise DataError(f"{path}: key {key!r} has shape {list(ds.shape)}, expected {want}")
    if ds.shape[0] == 0:
        raise DataError(f"{path}: key {key!r} is empty (0 showers)")
    if n is not None and ds.shape[0] != n:
        raise DataError(f"{path}: key {key!r} has {ds.shape[0]} rows but the other keys {n}")
    arr = np.asarray(ds[()])
    if arr.dtype.kind in "iu":
        arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise DataError(f"{path}: key {key!r} has {int(bad.sum())} non-finite values "
                        f"(first in row {row})")
    neg = arr < 0
    if neg.any():
        row = int(np.argwhere(neg)[0][0])
        raise DataError(f"{path}: key {key!r} has {int(neg.sum())} negative energies "
                        f"(first in row {row}, value {arr.reshape(len(arr), -1)[row].min():g})")
    return arr


def _energy_column(f: h5py.File, path: str | Path, key: str) -> np.ndarray:
    """Dataset ``key`` of shape [N, 1] (or [N]) as a vector [N]."""
    e = _dataset(f, path, key, None, None)
    if e.ndim == 2 and e.shape[1] == 1:
        return e[:, 0]
    if e.ndim != 1:
        raise DataError(f"{path}: key '{key}' has shape {list(e.shape)}, expected [N, 1]")
    return e


def read_calogan(path: str | Path, max_showers: int | None = None) -> Showers:
    """Read a CaloGAN file (``energy`` GeV, ``layer_0/1/2`` MeV, optional ``overflow``).

    Raises :class:`DataError` naming the file and key for a missing key, a wrong shape, an
    empty file, or negative / non-finite energies.
    """
    with _open(path) as f:
        if len(f.keys()) == 0:
            raise DataError(f"{path}: empty file (no datasets; expected energy, layer_0, "
                            "layer_1, layer_2)")
        energy = _energy_column(f, path, "energy")
        n = len(energy)
        layers = [_dataset(f, path, f"layer_{i}", shp, n)
                  for i, shp in enumerate(CALOGAN_LAYERS)]
        overflow = _dataset(f, path, "overflow", (3,), n) if "overflow" in f else None
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    if (energy <= 0).any():
        raise DataError(f"{path}: key 'energy' has {int((energy <= 0).sum())} incident "
                        "energies <= 0")
    voxels = np.concatenate([a.reshape(n, -1) for a in layers], 1)
    s = Showers(energy, voxels, CALOGAN_LAYERS, overflow, str(path), attrs)
    return s.subset(slice(0, max_showers)) if max_showers else s


def read_calochallenge(path: str | Path, layer_sizes: Sequence[int] | None = None,
                       max_showers: int | None = None, binning: str | None = None) -> Showers:
    """Read a CaloChallenge file (``incident_energies`` and ``showers``, both MeV).

    ``layer_sizes``: voxels per layer (from the binning XML ``binning``, e.g. DS1 photons
    ``[8, 160, 190, 5, 5]``); their sum must equal the number of voxels, else a
    :class:`DataError` names both counts and both files. Without it the shower is one layer.
    """
    with _open(path) as f:
        if len(f.keys()) == 0:
            raise DataError(f"{path}: empty file (no datasets; expected incident_energies, "
                            "showers)")
        e = _energy_column(f, path, "incident_energies")
        showers = _dataset(f, path, "showers", None, len(e))
    if showers.ndim != 2:
        raise DataError(f"{path}: key 'showers' has shape {list(showers.shape)}, expected [N, V]")
    if (e <= 0).any():
        raise DataError(f"{path}: key 'incident_energies' has {int((e <= 0).sum())} "
                        "energies <= 0")
    v = showers.shape[1]
    sizes = list(layer_sizes) if layer_sizes else [v]
    if sum(sizes) != v:
        where = f"the binning {binning} has" if binning else "data.layer_sizes sums to"
        raise DataError(f"{path}: {v} voxels per shower, but {where} {sum(sizes)}; pass the "
                        "data.binning that matches the file")
    s = Showers(e / 1000.0, showers, tuple((int(k),) for k in sizes), None, str(path))
    return s.subset(slice(0, max_showers)) if max_showers else s


def read_showers(path: str | Path, fmt: str = "auto", layer_sizes: Sequence[int] | None = None,
                 max_showers: int | None = None, binning: str | None = None) -> Showers:
    """Read CaloGAN or CaloChallenge showers; ``fmt``: ``auto`` | ``calogan`` | ``calochallenge``."""
    if fmt == "auto":
        with _open(path) as f:
            keys = set(f.keys())
        fmt = "calochallenge" if "showers" in keys or "incident_energies" in keys else "calogan"
    if fmt == "calogan":
        return read_calogan(path, max_showers)
    if fmt == "calochallenge":
        return read_calochallenge(path, layer_sizes, max_showers, binning)
    raise DataError(f"unknown calorimeter format {fmt!r}; expected auto, calogan or "
                    "calochallenge")


def write_calogan(path: str | Path, showers: Showers, dtype: str | np.dtype = "float32",
                  attrs: dict | None = None) -> Path:
    """Write showers as a CaloGAN file (atomically: temp file + rename).

    ``energy [N, 1]`` GeV, ``layer_i`` images in MeV, ``overflow [N, 3]`` (zeros if unknown).
    """

    if tuple(showers.layer_shapes) != CALOGAN_LAYERS:
        raise DataError(f"cannot write {showers.layer_shapes} layers as CaloGAN "
                        f"(needs {CALOGAN_LAYERS})")
    from flowctl.atomic import write_h5

    n = len(showers)
    overflow = showers.overflow if showers.overflow is not None else np.zeros((n, 3))
    sets = {"energy": showers.energy.reshape(n, 1).astype(dtype)}
    sets.update({f"layer_{i}": showers.layer(i).astype(dtype) for i in range(3)})
    sets["overflow"] = np.asarray(overflow).astype(dtype)
    return write_h5(path, sets, dict(attrs or {}))


def write_calochallenge(path: str | Path, incident_energies_mev: np.ndarray, showers_mev: np.ndarray,
                    dtype: str = "float32", attrs: dict | None = None) -> Path:
    """Write a CaloChallenge file: ``incident_energies [N, 1]``, ``showers [N, V]`` (MeV,
    gzip), atomically (temp file in the same folder + rename)."""

    from flowctl.atomic import write_h5

    e = np.asarray(incident_energies_mev).reshape(-1, 1).astype(dtype)
    s = np.asarray(showers_mev).astype(dtype)
    return write_h5(path, {"incident_energies": e, "showers": s}, dict(attrs or {}))


def split_showers(s: Showers, fractions: Sequence[float] = (0.7, 0.3),
                  seed: int = 0) -> list[Showers]:
    """Shuffle and split into parts (CaloFlow: 70 % train / 30 % test)."""
    if abs(sum(fractions) - 1.0) > 1e-6 or any(f < 0 for f in fractions):
        raise DataError(f"split fractions must be >= 0 and sum to 1, got {list(fractions)}")
    idx = np.random.default_rng(seed).permutation(len(s))
    edges = np.round(np.cumsum([0.0, *fractions]) * len(s)).astype(int)
    return [s.subset(np.sort(idx[a:b])) for a, b in itertools.pairwise(edges)]


# --------------------------------------------------------------------------- CaloFlow features

ALPHA = 1e-6


def add_noise(voxels: np.ndarray, rng: np.random.Generator,
              scale_mev: float = NOISE_MEV) -> np.ndarray:
    """``voxels + U[0, scale)`` (MeV): CaloFlow's noise that removes exact zeros."""
    if scale_mev <= 0:
        return voxels.astype(np.float64)
    return voxels + rng.uniform(0.0, scale_mev, size=voxels.shape)


def energy_context(energy_gev: np.ndarray, e_ref_gev: float = 10.0) -> np.ndarray:
    """Flow I context ``log10(E_inc / e_ref)`` ``[N, 1]`` (in [-1, 1] for 1-100 GeV and the
    default 10 GeV)."""
    return np.log10(np.asarray(energy_gev, np.float64) / e_ref_gev)[:, None]


def energy_features(layer_e_mev: np.ndarray, energy_gev: np.ndarray,
                    scale: float = 1.0) -> np.ndarray:
    """Flow I input ``u [N, L]`` in [0, 1] for L layers (arXiv:2210.14245; reference §3.1).

    ``u0 = E_tot / (scale E_inc)`` and ``u_i = E_{i-1} / sum_{j >= i-1} E_j`` for
    ``i = 1 .. L-1`` (0 where the remaining layers are empty). For CaloGAN's 3 layers with
    ``scale = 1`` this is CaloFlow v1's ``(E_tot/E_inc, E0/E_tot, E1/(E1+E2))``. Values above 1
    (E_tot > scale E_inc) are clipped.
    """
    e = np.asarray(layer_e_mev, np.float64) / 1000.0
    if e.ndim != 2 or e.shape[1] < 1:
        raise DataError(f"layer energies must be [N, L], got shape {list(e.shape)}")
    tail = np.cumsum(e[:, ::-1], 1)[:, ::-1]  # sum_{j >= i} E_j
    u0 = tail[:, 0] / (scale * np.asarray(energy_gev, np.float64))
    rest = e[:, :-1] / np.where(tail[:, :-1] > 0, tail[:, :-1], 1.0)
    return np.clip(np.concatenate([u0[:, None], rest], 1), 0.0, 1.0)


def energies_from_features(u: np.ndarray, energy_gev: np.ndarray,
                           scale: float = 1.0) -> np.ndarray:
    """Inverse of :func:`energy_features`: ``u [N, L]`` -> layer energies ``[N, L]`` MeV."""
    u = np.clip(np.asarray(u, np.float64), 0.0, 1.0)
    n, n_layers = u.shape
    out = np.empty((n, n_layers))
    rem = u[:, 0] * scale * np.asarray(energy_gev, np.float64) * 1000.0
    for i in range(n_layers - 1):
        out[:, i] = u[:, i + 1] * rem
        rem = rem - out[:, i]
    out[:, -1] = rem
    return np.clip(out, 0.0, None)


def shower_context(energy_gev: np.ndarray, layer_e_mev: np.ndarray,
                   e_ref_gev: float = 10.0) -> np.ndarray:
    """Flow II context ``[N, 1 + L]``: ``log10(E_inc/e_ref)`` and ``log10(E_i/GeV + 1e-6)``.

    (CaloFlow's ``log10(E_i + 1e-8) + 2`` with E in units of 100 GeV, i.e. a 1 keV floor.)
    """
    e = np.asarray(layer_e_mev, np.float64) / 1000.0
    return np.concatenate([energy_context(energy_gev, e_ref_gev), np.log10(e + 1e-6)], 1)


def voxel_features(voxels_mev: np.ndarray, layer_slices: Sequence[slice]) -> np.ndarray:
    """Flow II input ``[N, V]``: each voxel divided by its layer's energy (plus 1e-16 MeV).

    Returns values in [0, 1]; the logit (α = 1e-6) is the flow's first (preprocessing) layer.
    """
    out = np.empty_like(voxels_mev, dtype=np.float64)
    for s in layer_slices:
        out[:, s] = voxels_mev[:, s] / (voxels_mev[:, s].sum(1, keepdims=True) + 1e-16)
    return np.clip(out, 0.0, 1.0)


def voxels_from_features(x: np.ndarray, layer_e_mev: np.ndarray,
                         layer_slices: Sequence[slice], threshold_mev: float = NOISE_MEV
                         ) -> np.ndarray:
    """Inverse of :func:`voxel_features` for generated showers (reference §3.3 "Sampling").

    Clamps to >= 0, renormalises each layer to sum 1, multiplies by the layer energy and
    zeroes voxels below ``threshold_mev`` (the noise level: such voxels are empty in truth).
    """
    x = np.clip(np.nan_to_num(np.asarray(x, np.float64), nan=0.0), 0.0, None)
    out = np.empty_like(x)
    for i, s in enumerate(layer_slices):
        norm = x[:, s].sum(1, keepdims=True)
        out[:, s] = x[:, s] / np.where(norm > 0, norm, 1.0) * layer_e_mev[:, i:i + 1]
    if threshold_mev > 0:
        out[out < threshold_mev] = 0.0
    return out
