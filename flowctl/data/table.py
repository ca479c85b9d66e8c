"""Loader for users' own tables: HDF5 datasets, ``.npy`` arrays and ``.csv`` files.

A table is a float array ``[N, D]`` (rows are events/objects, columns are features).

>>> x = load_table("events.h5", key="jets", columns=[0, 2])   # doctest: +SKIP
>>> train, val, test = split(x, (0.8, 0.1, 0.1), seed=0)      # doctest: +SKIP
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["DataError", "check_trainable", "load_table", "split"]


class DataError(ValueError):
    """A user's data file is missing, malformed or does not match the configuration."""


def _read_h5(path: Path, key: str | None) -> tuple[np.ndarray, list[str] | None]:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: cannot open as HDF5 ({exc})") from None
    with f:
        names: list[str] = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        if key is None:
            if len(names) != 1:
                raise DataError(
                    f"{path}: holds {len(names)} datasets, set data.key to one of: "
                    f"{', '.join(names) or '(none)'}"
                )
            key = names[0]
        if key not in f or not isinstance(f[key], h5py.Dataset):
            raise DataError(
                f"{path}: no dataset {key!r}; available: {', '.join(names) or '(none)'}"
            )
        ds = f[key]
        if ds.dtype.names:  # compound dataset: columns by field name
            fields = list(ds.dtype.names)
            arr = ds[()]
            return np.stack([np.asarray(arr[n], dtype=np.float64) for n in fields], 1), fields
        return np.asarray(ds[()]), None


def _read_csv(path: Path, delimiter: str | None) -> tuple[np.ndarray, list[str] | None]:
    with open(path, newline="") as fh:
        head = fh.read(4096)
        fh.seek(0)
        if delimiter is None:
            try:
                delimiter = csv.Sniffer().sniff(head, delimiters=",;\t ").delimiter
            except csv.Error:
                delimiter = ","
        rows = [r for r in csv.reader(fh, delimiter=delimiter) if r and any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{path}: empty csv file")
    header: list[str] | None = None
    try:
        [float(c) for c in rows[0]]
    except ValueError:
        header = [c.strip() for c in rows[0]]
        rows = rows[1:]
    width = len(rows[0]) if rows else len(header or [])
    data = np.empty((len(rows), width), dtype=np.float64)
    for i, r in enumerate(rows):
        if len(r) != width:
            raise DataError(
                f"{path}: line {i + 1 + (header is not None)} has {len(r)} fields, expected {width}"
            )
        try:
            data[i] = [float(c) if c.strip() else np.nan for c in r]
        except ValueError:
            raise DataError(
                f"{path}: line {i + 1 + (header is not None)} has a non-numeric field: {r}"
            ) from None
    return data, header


def _select(data: np.ndarray, names: list[str] | None, columns: Sequence[int | str] | None,
            path: Path) -> np.ndarray:
    if columns is None:
        return data
    idx: list[int] = []
    d = data.shape[1]
    for c in columns:
        if isinstance(c, str) and not c.lstrip("-").isdigit():
            if names is None:
                raise DataError(f"{path}: column {c!r} given by name but the file has no header")
            if c not in names:
                raise DataError(f"{path}: no column {c!r}; columns: {', '.join(names)}")
            idx.append(names.index(c))
        else:
            i = int(c)
            if not -d <= i < d:
                raise DataError(f"{path}: column index {i} out of range for {d} columns")
            idx.append(i % d)
    return data[:, idx]


def load_table(path: str | Path, key: str | None = None,
               columns: Sequence[int | str] | None = None,
               delimiter: str | None = None) -> np.ndarray:
    """Read a table ``[N, D]`` as float32 from ``.h5/.hdf5``, ``.npy`` or ``.csv``.

    ``key`` names the HDF5 dataset (optional when the file holds one); ``columns`` picks
    columns by index or, for csv headers and compound HDF5 datasets, by name. Rows holding
    NaN or inf are rejected with a message saying how many and where.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5", ".hdf"):
        data, names = _read_h5(path, key)
    elif suffix == ".npy":
        try:
            data, names = np.load(path, allow_pickle=False), None
        except ValueError as exc:
            raise DataError(f"{path}: cannot read as .npy ({exc})") from None
    elif suffix in (".csv", ".tsv", ".txt"):
        data, names = _read_csv(path, "\t" if suffix == ".tsv" else delimiter)
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r}; use .h5, .npy or .csv")
    if data.dtype.kind not in "fiub":
        raise DataError(f"{path}: expected a numeric array, got dtype {data.dtype}")
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2:
        where = f" dataset {key!r}" if key else ""
        raise DataError(
            f"{path}{where}: expected a table of shape [N, D], got shape {tuple(data.shape)}"
        )
    data = _select(data.astype(np.float64, copy=False), names, columns, path)
    if data.shape[0] == 0:
        raise DataError(f"{path}: the table has no rows")
    bad = ~np.all(np.isfinite(data), axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        shown = ", ".join(str(r) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
        raise DataError(
            f"{path}: {len(rows)} of {len(data)} rows contain NaN or inf (rows {shown}, "
            "0-based); remove or impute them"
        )
    return data.astype(np.float32)


def split(x: np.ndarray, fractions: Sequence[float] = (0.8, 0.1, 0.1),
          seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle rows with ``seed`` and split into train/val/test by ``fractions``."""
    f = np.asarray(list(fractions), dtype=np.float64)
    if f.shape != (3,) or np.any(f < 0) or f.sum() <= 0:
        raise DataError(f"data.split must be three non-negative fractions, got {list(fractions)}")
    f = f / f.sum()
    n = len(x)
    perm = np.random.default_rng(seed).permutation(n)
    n_train = round(float(f[0]) * n)
    n_val = round(float(f[1]) * n)
    if n_train == 0 or (f[1] > 0 and n_val == 0):
        raise DataError(f"{n} rows are too few to split as {list(fractions)}")
    tr, va, te = np.split(perm, [n_train, n_train + n_val])
    return x[tr], x[va], x[te]


def check_trainable(x: np.ndarray, source: str, what: str = "training set",
                    min_rows: int = 2) -> None:
    """Refuse data a density cannot be fitted to: fewer than ``min_rows`` rows or a constant
    column (its density is a delta: the likelihood grows without bound as the flow narrows,
    so training "succeeds" to meaningless numbers). Raises :class:`DataError` naming it."""
    if len(x) < min_rows:
        raise DataError(f"{source}: the {what} has {len(x)} row(s); at least {min_rows} are needed")
    spread = np.ptp(x, axis=0) if len(x) else np.zeros(x.shape[1])
    const = np.flatnonzero(spread == 0)
    if len(const):
        shown = ", ".join(f"{int(j)} (= {float(x[0, j]):g})" for j in const[:5])
        raise DataError(
            f"{source}: column(s) {shown}{', ...' if len(const) > 5 else ''} of the {what} are "
            "constant; a density on a constant column is unbounded: drop them with "
            "data.columns=[...]"
        )

