"""Gaia archive tables: reader, writer, sky-patch rotation and the Via Machinae fiducial cuts.

A Gaia table is what the archive exports (CSV, or HDF5) with at least the columns
:data:`COLUMNS` (``ra dec`` deg, ``pmra`` = μ_α* = μ_α cos δ and ``pmdec`` mas/yr, ``parallax``
mas, ``phot_g_mean_mag`` and ``bp_rp`` mag). Extra columns are ignored, except an optional truth
column (``stream``, 0/1) that is kept for evaluation only.

Patches (reference/anomaly.md §4): a cap of radius ``radius`` deg around ``(ra0, dec0)`` is
rotated so that its centre is at ``(φ, λ) = (0, 0)``; proper motions are rotated with the
positions, giving ``μ_φ* = μ_φ cos λ`` and ``μ_λ`` (mas/yr, ``|μ|`` is preserved).

HDF5 layouts read: one compound dataset (astropy ``Table.write(..., path=KEY)``), a group of
1-D datasets (one per column), or a pandas ``DataFrame.to_hdf`` store (via
:func:`flowctl.data.lhco.read_pandas_hdf`).

>>> patch = load_patch("gaia.csv", center=(148.6, 24.2), radius=15.0)   # doctest: +SKIP
>>> patch["phi"], patch["pmlam"], fiducial_mask(patch)                  # doctest: +SKIP
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from flowctl.data.table import DataError

__all__ = [
    "COLUMNS",
    "FEATURES",
    "GaiaPatch",
    "fiducial_mask",
    "from_patch_frame",
    "load_patch",
    "patch_rotation",
    "read_gaia",
    "to_patch_frame",
    "write_gaia",
]

#: Gaia archive columns the reader needs.
COLUMNS: tuple[str, ...] = ("ra", "dec", "pmra", "pmdec", "parallax", "phot_g_mean_mag",
                            "bp_rp")
#: Per-star quantities of a :class:`GaiaPatch` (patch frame, deg / mas/yr / mag).
FEATURES: tuple[str, ...] = ("phi", "lam", "pmphi", "pmlam", "bp_rp", "g")
_H5 = (".h5", ".hdf5", ".hdf")
_CSV = (".csv", ".txt")


# --------------------------------------------------------------------------- reading


def _read_csv(path: Path, want: Sequence[str]) -> dict[str, np.ndarray]:
    """Columns ``want`` (those present) of a CSV with a header; ``#`` lines (ECSV) skipped."""
    with open(path, newline="") as fh:
        lines = (ln for ln in fh if ln.strip() and not ln.lstrip().startswith("#"))
        reader = csv.reader(lines)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: empty file (no header row)")
        names = [h.strip().strip('"').lower() for h in header]
        idx = {c: names.index(c) for c in want if c in names}
        cols: dict[str, list[str]] = {c: [] for c in idx}
        for lineno, row in enumerate(reader, start=2):
            if len(row) != len(names):
                raise DataError(f"{path}: line {lineno} has {len(row)} fields, "
                                f"expected {len(names)}")
            for c, j in idx.items():
                cols[c].append(row[j])
    out: dict[str, np.ndarray] = {}
    for c, vals in cols.items():
        arr = np.empty(len(vals), np.float64)
        for i, v in enumerate(vals):
            v = v.strip()
            try:  # Gaia exports null as an empty field; it becomes NaN and is reported below
                arr[i] = float(v) if v and v.lower() not in ("null", "nan", "--") else np.nan
            except ValueError:
                raise DataError(f"{path}: column {c!r}, line {i + 2}: not a number: {v!r}"
                                ) from None
        out[c] = arr
    out["__columns__"] = np.asarray(names)
    return out


def _read_h5(path: Path, key: str | None, want: Sequence[str]) -> dict[str, np.ndarray]:
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: cannot open as HDF5 ({exc})") from None
    with f:
        if any("pandas_type" in g.attrs for g in [f, *f.values()] if isinstance(g, h5py.Group)):
            pandas = True
        else:
            pandas = False
            node: h5py.Group | h5py.Dataset = f
            if key is not None:
                if key not in f:
                    raise DataError(f"{path}: no dataset or group {key!r}; "
                                    f"available: {', '.join(f) or '(none)'}")
                node = f[key]
            elif len(f) == 1:  # one table (compound dataset) or one group of columns
                node = next(iter(f.values()))
            if isinstance(node, h5py.Dataset):
                if not node.dtype.names:
                    raise DataError(f"{path}: dataset {node.name!r} is not a table with named "
                                    "columns (compound dtype); write one dataset per column "
                                    "or a compound table")
                data = node[()]
                names = [n.lower() for n in node.dtype.names]
                out = {n.lower(): np.asarray(data[n], np.float64) for n in node.dtype.names
                       if n.lower() in want}
            else:
                names = [n.lower() for n in node if isinstance(node[n], h5py.Dataset)]
                out = {n.lower(): np.asarray(node[n][()], np.float64).reshape(-1)
                       for n in node if n.lower() in want and isinstance(node[n], h5py.Dataset)}
            out["__columns__"] = np.asarray(names)
            return out
    if pandas:
        from flowctl.data.lhco import read_pandas_hdf

        cols = read_pandas_hdf(path, key)
        out = {c.lower(): np.asarray(v, np.float64) for c, v in cols.items() if c.lower() in want}
        out["__columns__"] = np.asarray([c.lower() for c in cols])
        return out
    raise AssertionError("unreachable")


def read_gaia(path: str | Path, key: str | None = None,
              extra: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Read :data:`COLUMNS` (plus the ``extra`` columns that exist) of a Gaia table.

    Returns ``{column: [N] float64}``. A missing file or required column, an empty table or a
    NaN/inf value fail with one :class:`DataError` line naming the file and the column."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"Gaia table not found: {p} (set data.path=FILE)")
    want = [*COLUMNS, *[e.lower() for e in extra]]
    suffix = p.suffix.lower()
    if suffix in _H5:
        cols = _read_h5(p, key, want)
    elif suffix in _CSV:
        cols = _read_csv(p, want)
    else:
        raise DataError(f"{p}: unsupported file type {suffix!r}; use .csv or .h5/.hdf5")
    found = [str(c) for c in cols.pop("__columns__")]
    missing = [c for c in COLUMNS if c not in cols]
    if missing:
        raise DataError(f"{p}: missing Gaia column(s) {', '.join(missing)}; "
                        f"found: {', '.join(found) or 'none'}")
    n = len(cols["ra"])
    if n == 0:
        raise DataError(f"{p}: the table has no rows")
    for c in want:
        if c in cols:
            if len(cols[c]) != n:
                raise DataError(f"{p}: column {c!r} has {len(cols[c])} rows, 'ra' has {n}")
            bad = ~np.isfinite(cols[c])
            if bad.any():
                raise DataError(f"{p}: column {c!r} has {int(bad.sum())} NaN/inf/empty value(s) "
                                f"(first at row {int(np.flatnonzero(bad)[0])}, 0-based); "
                                "remove those stars")
    return {c: cols[c] for c in want if c in cols}


def write_gaia(path: str | Path, columns: Mapping[str, np.ndarray], key: str = "gaia") -> Path:
    """Write ``{column: [N]}`` as a Gaia-archive-like CSV (header row) or, for ``.h5``, one
    compound dataset ``key`` (the astropy table layout). Written atomically."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    names = list(columns)
    arrays = [np.asarray(columns[c]) for c in names]
    tmp = p.with_name(p.name + ".tmp")
    suffix = p.suffix.lower()
    if suffix in _H5:
        dtype = [(c, np.int64 if a.dtype.kind in "iub" else np.float64)
                 for c, a in zip(names, arrays)]
        table = np.empty(len(arrays[0]), dtype=dtype)
        for c, a in zip(names, arrays):
            table[c] = a
        with h5py.File(tmp, "w") as f:
            f.create_dataset(key, data=table, compression="gzip", compression_opts=1)
    elif suffix in _CSV:
        fmts = ["%d" if a.dtype.kind in "iub" else "%.10g" for a in arrays]
        with open(tmp, "w", newline="") as fh:
            fh.write(",".join(names) + "\n")
            rows = np.stack([a.astype(np.float64) for a in arrays], 1)
            np.savetxt(fh, rows, fmt=fmts, delimiter=",")
    else:
        raise DataError(f"{p}: unsupported file type {suffix!r}; use .csv or .h5")
    tmp.replace(p)
    return p


# --------------------------------------------------------------------------- rotation


def patch_rotation(ra0: float, dec0: float) -> np.ndarray:
    """Rotation matrix ``[3, 3]`` taking ICRS unit vectors to the patch frame, in which the
    centre ``(ra0, dec0)`` (deg) is ``(φ, λ) = (0, 0)``: ``R = R_y(δ0) R_z(-α0)``."""
    a, d = np.radians(ra0), np.radians(dec0)
    rz = np.array([[np.cos(a), np.sin(a), 0.0], [-np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[np.cos(d), 0.0, np.sin(d)], [0.0, 1.0, 0.0], [-np.sin(d), 0.0, np.cos(d)]])
    return ry @ rz


def _rotate(lon: np.ndarray, lat: np.ndarray, pm_lon: np.ndarray, pm_lat: np.ndarray,
            rot: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rotate positions (deg) and proper motions (``μ_lon cos(lat)``, ``μ_lat``; mas/yr) ``[N]``
    by ``rot`` ``[3, 3]``: the tangent vector ``μ_lon* e_lon + μ_lat e_lat`` is rotated and
    projected on the new frame's ``e_lon, e_lat``, so ``|μ|`` is exactly preserved."""
    lo, la = np.radians(lon), np.radians(lat)
    cl, sl, cb, sb = np.cos(lo), np.sin(lo), np.cos(la), np.sin(la)
    pos = np.stack([cb * cl, cb * sl, sb], -1)
    e_lon = np.stack([-sl, cl, np.zeros_like(cl)], -1)
    e_lat = np.stack([-sb * cl, -sb * sl, cb], -1)
    vel = pm_lon[:, None] * e_lon + pm_lat[:, None] * e_lat
    pos2, vel2 = pos @ rot.T, vel @ rot.T
    lon2 = np.arctan2(pos2[:, 1], pos2[:, 0])
    lat2 = np.arcsin(np.clip(pos2[:, 2], -1.0, 1.0))
    c2, s2, cb2, sb2 = np.cos(lon2), np.sin(lon2), np.cos(lat2), np.sin(lat2)
    f_lon = np.stack([-s2, c2, np.zeros_like(c2)], -1)
    f_lat = np.stack([-sb2 * c2, -sb2 * s2, cb2], -1)
    return (np.degrees(lon2), np.degrees(lat2), (vel2 * f_lon).sum(-1), (vel2 * f_lat).sum(-1))


def to_patch_frame(ra: np.ndarray, dec: np.ndarray, pmra: np.ndarray, pmdec: np.ndarray,
                   center: Sequence[float]) -> tuple[np.ndarray, ...]:
    """``(φ, λ, μ_φ*, μ_λ)`` ``[N]`` (deg, deg, mas/yr, mas/yr) from ICRS ``ra, dec`` (deg),
    ``pmra`` (= μ_α*), ``pmdec`` (mas/yr), for a patch centred at ``center = (ra0, dec0)``."""
    rot = patch_rotation(float(center[0]), float(center[1]))
    return _rotate(np.asarray(ra, np.float64), np.asarray(dec, np.float64),
                   np.asarray(pmra, np.float64), np.asarray(pmdec, np.float64), rot)


def from_patch_frame(phi: np.ndarray, lam: np.ndarray, pmphi: np.ndarray, pmlam: np.ndarray,
                     center: Sequence[float]) -> tuple[np.ndarray, ...]:
    """Inverse of :func:`to_patch_frame`: ``(ra, dec, pmra, pmdec)``, ``ra`` in [0, 360)."""
    rot = patch_rotation(float(center[0]), float(center[1]))
    ra, dec, pmra, pmdec = _rotate(np.asarray(phi, np.float64), np.asarray(lam, np.float64),
                                   np.asarray(pmphi, np.float64),
                                   np.asarray(pmlam, np.float64), rot.T)
    return np.mod(ra, 360.0), dec, pmra, pmdec


# --------------------------------------------------------------------------- patches


@dataclass
class GaiaPatch:
    """Stars of one patch: ``cols`` maps :data:`FEATURES` plus ``ra dec parallax`` (and the
    truth column, if read) to ``[N]`` float64 arrays."""

    cols: dict[str, np.ndarray]
    center: tuple[float, float]
    radius: float
    source: str = ""
    truth: str | None = None
    meta: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.cols["phi"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.cols[name]

    @property
    def labels(self) -> np.ndarray | None:
        """``[N]`` int 0/1 truth labels (``None`` when the table has no truth column)."""
        return None if self.truth is None else self.cols[self.truth].astype(np.int64)

    def array(self, names: Sequence[str]) -> np.ndarray:
        """Columns ``names`` stacked as ``[N, len(names)]`` float32."""
        return np.stack([self.cols[n] for n in names], 1).astype(np.float32)

    def subset(self, mask: np.ndarray) -> GaiaPatch:
        """The stars where ``mask`` ``[N]`` is true."""
        return GaiaPatch({k: v[mask] for k, v in self.cols.items()}, self.center, self.radius,
                         self.source, self.truth, dict(self.meta))


def load_patch(path: str | Path, center: Sequence[float] = (148.6, 24.2), radius: float = 15.0,
               key: str | None = None, truth: str | None = "stream") -> GaiaPatch:
    """Read a Gaia table, keep the stars within ``radius`` deg of ``center = (ra, dec)`` (deg)
    and rotate them to patch coordinates. ``truth`` names an optional 0/1 column kept for
    evaluation (ignored when absent)."""
    if not 0.0 < float(radius) <= 90.0:
        raise DataError(f"patch radius must be in (0, 90] deg, got {radius}")
    extra = [truth] if truth else []
    cols = read_gaia(path, key, extra)
    phi, lam, pmphi, pmlam = to_patch_frame(cols["ra"], cols["dec"], cols["pmra"],
                                            cols["pmdec"], center)
    # angular distance from the centre = angle between (φ, λ) and (0, 0)
    dist = np.degrees(np.arccos(np.clip(np.cos(np.radians(lam)) * np.cos(np.radians(phi)),
                                        -1.0, 1.0)))
    keep = dist <= float(radius)
    if not keep.any():
        raise DataError(f"{path}: no star within {radius} deg of (ra, dec) = "
                        f"({center[0]}, {center[1]}); check data.center")
    out = {"phi": phi, "lam": lam, "pmphi": pmphi, "pmlam": pmlam, "bp_rp": cols["bp_rp"],
           "g": cols["phot_g_mean_mag"], "parallax": cols["parallax"], "ra": cols["ra"],
           "dec": cols["dec"]}
    t = truth.lower() if truth else None
    if t and t in cols:
        if not np.isin(cols[t], (0, 1)).all():
            raise DataError(f"{path}: truth column {t!r} must hold 0/1 values")
        out[t] = cols[t]
    else:
        t = None
    out = {k: v[keep] for k, v in out.items()}
    return GaiaPatch(out, (float(center[0]), float(center[1])), float(radius), str(path), t,
                     {"n_read": float(len(keep)), "n_patch": float(keep.sum())})


def fiducial_mask(patch: GaiaPatch | Mapping[str, np.ndarray], g_max: float = 20.2,
                  color: Sequence[float] = (0.5, 1.0), pm_min: float = 2.0) -> np.ndarray:
    """``[N]`` bool: the Via Machinae fiducial cuts (reference/anomaly.md §4.1): ``g < g_max``,
    ``color[0] <= b−r <= color[1]`` and ``|μ_φ*| > pm_min or |μ_λ| > pm_min`` (mas/yr)."""
    g, br = patch["g"], patch["bp_rp"]
    pm = (np.abs(patch["pmphi"]) > pm_min) | (np.abs(patch["pmlam"]) > pm_min)
    return (g < g_max) & (br >= color[0]) & (br <= color[1]) & pm
